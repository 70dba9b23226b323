# bash completion for hammer2(8), newfs_hammer2(8), mount_hammer2(8), fsck_hammer2(8):
# hammer2's directives and options, PFS labels where a directive takes one (read from
# the -f image, the -s mount, or the mount the current directory is in), image@LABEL
# for mount_hammer2.

_hammer2_directives="hash dhash info flush pfs-list pfs-clid pfs-create key-status key-change rekey send receive
reencrypt pfs-delete snapshot pfs-fsid setcomp setcheck setcopies scrub stat top ktrdump ktrmask
printinode destroy destroy-inum recover cleanup dumpchain growfs bulkfree show freemap volhdr"

# The PFS labels of the image given with -f, the mount given with -s, or the current directory.
_hammer2_labels() {
    local image="" select="" i
    for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do
        case "${COMP_WORDS[i]}" in
            -f) image="${COMP_WORDS[i + 1]}" ;;
            -s) select="${COMP_WORDS[i + 1]}" ;;
        esac
    done
    local args=()
    [[ -n $image ]] && args+=(-f "$image")
    [[ -n $select ]] && args+=(-s "$select")
    "${COMP_WORDS[0]}" "${args[@]}" pfs-list 2>/dev/null | awk 'NR > 1 && NF { print $NF }'
}

_hammer2() {
    local cur prev words cword
    _init_completion || return
    case "$prev" in
        -f|-s) _filedir; return ;;
        -t) COMPREPLY=($(compgen -W "MASTER SLAVE SOFT_MASTER SOFT_SLAVE CACHE DUMMY" -- "$cur")); return ;;
        -u) return ;;
    esac
    local i directive=""
    for ((i = 1; i < cword; i++)); do
        case "${words[i]}" in
            -f|-s|-t|-u) ((i++)) ;;
            -*) ;;
            *) directive="${words[i]}"; break ;;
        esac
    done
    if [[ -z $directive ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "-s -f -j -r -t -u -v -q --help --version" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$_hammer2_directives" -- "$cur"))
        fi
        return
    fi
    case "$directive" in
        pfs-delete|pfs-clid|pfs-fsid|key-status|key-change|rekey|send)
            COMPREPLY=($(compgen -W "$(_hammer2_labels)" -- "$cur")) ;;
        snapshot)
            COMPREPLY=($(compgen -W "$(_hammer2_labels)" -- "$cur")); _filedir -d ;;
        receive)
            if [[ $prev == -c ]]; then
                COMPREPLY=($(compgen -W "none autozero lz4 zlib zlib:6 zlib:7 zlib:8 zlib:9" -- "$cur"))
            elif [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "-F -c -T -A" -- "$cur")); fi ;;
        setcomp)
            if [[ $prev == setcomp ]]; then
                COMPREPLY=($(compgen -W "none autozero lz4 zlib zlib:6 zlib:7 zlib:8 zlib:9" -- "$cur"))
            else _filedir; fi ;;
        setcheck)
            if [[ $prev == setcheck ]]; then
                COMPREPLY=($(compgen -W "none crc32 xxhash64 sha192" -- "$cur"))
            else _filedir; fi ;;
        setcopies)
            if [[ $prev == setcopies ]]; then COMPREPLY=($(compgen -W "1 2 3 4" -- "$cur")); else _filedir; fi ;;
        *) _filedir ;;
    esac
}
complete -F _hammer2 hammer2

# image[@LABEL] for mount_hammer2's first operand: the labels after the '@'.
_mount_hammer2() {
    local cur prev words cword
    _init_completion -n @ || return
    case "$prev" in
        -o) COMPREPLY=($(compgen -W "ro rw allow_other cache= threads= uring nouring readahead= flush= dirtymax=
nowriteback noacl noreclaim keyfile= encrypted fsync=log fsync=flush rollback-ok degraded noktr ktr= ktrmask=
nosuid nodev noexec noatime sync dirsync default_permissions" -- "${cur##*,}")); return ;;
    esac
    if [[ $cur == *@* ]]; then
        local image="${cur%@*}"
        COMPREPLY=($(compgen -P "$image@" -W "$(hammer2 -f "$image" pfs-list 2>/dev/null | awk 'NR > 1 && NF { print $NF }')" -- "${cur##*@}"))
        return
    fi
    _filedir
}
complete -F _mount_hammer2 mount_hammer2

