# Write benchmarks for scripts/bench, which sources this file (it is not run on its own) and
# provides: $bin $workdir $mnt $runs $pool $keep $verify, the option values $write_mib
# $rand_seconds $files $corpus_mib, and log, check_time, left, now_ns, median,
# drop_caches, mount_h2, unmount_h2, $measured and the result array.
#
# Four workloads, each run --runs times on a freshly made filesystem (median reported), on
# our mount (newfs_hammer2 image, LZ4 + xxhash64, the defaults), ext4 and btrfs
# (compress=zstd) on loop devices and a zfs-fuse dataset with compression=lzjb:
#   seq    dd of --write-mib MiB of random data, bs=1M conv=fsync          MB/s
#   rand   fio 4 KiB random writes in a prefilled 256 MiB file, end fsync   IOPS
#   files  create / cold stat / delete of --files files of 100 bytes        files/s per phase
#   corpus tar -xf of a --corpus-mib MiB mixed corpus, then a flush          MB/s and space used
#
# "Flush" makes everything written so far durable, by whatever reaches each filesystem:
# fsync of a directory on our mount (it flushes the whole volume), syncfs(2) on ext4 and
# btrfs, and on zfs-fuse a zfs property change, which waits for a transaction group sync
# (syncfs does not reach a FUSE daemon, and zfs-fuse's fsync commits one file's intent log).

w_fs=(hammer2 ext4 btrfs zfs)
w_rand_mib=256            # file size for the random writes (fio --size)
w_file_bytes=100          # content of each small file
w_helper=scripts/bench-write.py
w_src="$workdir/random-src.bin"
w_corpus="$workdir/corpus-$corpus_mib.tar"
w_h2_image="$workdir/hammer2-write.img"
w_ext4_image="$workdir/ext4-write.img"
w_btrfs_image="$workdir/btrfs-write.img"
w_zfs_image="$workdir/zpool-write.img"
w_pool="${pool}w"
w_ext4_loop=""
w_btrfs_loop=""
w_pool_created=0
w_fio=0                   # 1: fio is installed; per filesystem w_tool[FS] says what ran
declare -A w_tool w_note

w_mount_point() { echo "$mnt/w-$1"; }

write_cleanup() {  # called from scripts/bench's cleanup, with set +e
    local fs
    for fs in ext4 btrfs; do
        mountpoint -q "$(w_mount_point "$fs")" 2>/dev/null && umount "$(w_mount_point "$fs")"
    done
    [ -n "$w_ext4_loop" ] && losetup -d "$w_ext4_loop"
    [ -n "$w_btrfs_loop" ] && losetup -d "$w_btrfs_loop"
    [ "$w_pool_created" -eq 1 ] && zpool destroy -f "$w_pool" 2>/dev/null
    if [ "$keep" -eq 0 ]; then
        rm -f "$w_h2_image" "$w_ext4_image" "$w_btrfs_image" "$w_zfs_image" "$w_src" \
            "$w_corpus" "$w_corpus.info" "$workdir/fio.json" "$workdir/fio.log"
    fi
}

write_setup() {
    local biggest=$write_mib
    [ "$corpus_mib" -gt "$biggest" ] && biggest=$corpus_mib
    [ "$w_rand_mib" -gt "$biggest" ] && biggest=$w_rand_mib
    # Sparse images. Ours gets twice the room: copy-on-write keeps every overwritten block
    # until a bulkfree, and the random writes overwrite the whole file every flush (5 s).
    w_space_mib=$((2 * biggest + 1024))
    w_h2_gib=$(( (2 * w_space_mib + 1023) / 1024 ))
    local fs
    for fs in "${w_fs[@]}"; do mkdir -p "$(w_mount_point "$fs")"; done

    log "write benchmarks: ext4 and btrfs images ($w_space_mib MiB) on loop devices, zfs-fuse pool $w_pool"
    rm -f "$w_ext4_image" "$w_btrfs_image" "$w_zfs_image"
    truncate -s "${w_space_mib}M" "$w_ext4_image" "$w_btrfs_image"
    w_ext4_loop="$(losetup --find --show "$w_ext4_image")"
    w_btrfs_loop="$(losetup --find --show "$w_btrfs_image")"
    truncate -s "$((w_space_mib + 512))M" "$w_zfs_image"
    zpool create -f -m none -O atime=off "$w_pool" "$w_zfs_image"
    w_pool_created=1

    if command -v fio >/dev/null; then w_fio=1; fi

    check_time
    local src_mib=$write_mib
    [ "$w_rand_mib" -gt "$src_mib" ] && src_mib=$w_rand_mib
    if [ "$(stat -c %s "$w_src" 2>/dev/null || echo 0)" -ne $((src_mib << 20)) ]; then
        log "write source: $src_mib MiB of random data in $w_src"
        timeout "$(left)" head -c "$((src_mib << 20))" /dev/urandom > "$w_src"
    fi
    if [ ! -s "$w_corpus" ] || [ ! -s "$w_corpus.info" ]; then
        log "corpus: $corpus_mib MiB from /usr/share, /usr/lib and random data in $w_corpus"
        timeout "$(left)" python3 "$w_helper" corpus "$w_corpus" "$corpus_mib" > "$w_corpus.info"
    fi
    # bytes files symlinks share lib random
    read -r w_corpus_bytes w_corpus_files w_corpus_links w_corpus_share w_corpus_lib w_corpus_random < "$w_corpus.info"
}

w_retry() {  # w_retry COMMAND...: zfs-fuse may call a dataset busy for a moment after a write
    for _ in $(seq 50); do "$@" 2>/dev/null && return 0; sleep 0.2; done
    "$@"
}

# Unmounts the filesystem FS was using in the previous run and gives it a fresh, empty one,
# mounted; then drops the page cache so every run starts alike.
w_fresh() {
    local fs="$1" m
    m="$(w_mount_point "$fs")"
    case "$fs" in
        hammer2)
            unmount_h2
            rm -f "$w_h2_image"
            "$bin/newfs_hammer2" -s "${w_h2_gib}g" -L DATA "$w_h2_image" >/dev/null
            mount_h2 "$w_h2_image" "$m" ;;
        ext4)
            if mountpoint -q "$m"; then umount "$m"; fi
            mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$w_ext4_loop"
            mount -o noatime "$w_ext4_loop" "$m" ;;
        btrfs)
            if mountpoint -q "$m"; then umount "$m"; fi
            mkfs.btrfs -q -f "$w_btrfs_loop" >/dev/null
            mount -o noatime,compress=zstd "$w_btrfs_loop" "$m" ;;
        zfs)
            if zfs list "$w_pool/w" >/dev/null 2>&1; then w_retry zfs destroy -r "$w_pool/w"; fi
            zfs create -o compression=lzjb -o mountpoint="$m" "$w_pool/w" ;;
    esac
    drop_caches
}

w_flush_spec() {
    case "$1" in
        hammer2) echo "fsync:$(w_mount_point "$1")" ;;
        ext4|btrfs) echo "syncfs:$(w_mount_point "$1")" ;;
        zfs) echo "zfs:$w_pool/w" ;;
    esac
}
w_flush() { timeout "$(left)" python3 "$w_helper" flush "$(w_flush_spec "$1")"; }

w_cold() {  # make the next access to FS's files cold (see prepare in scripts/bench)
    case "$1" in
        hammer2) unmount_h2; drop_caches; mount_h2 "$w_h2_image" "$(w_mount_point hammer2)" ;;
        ext4|btrfs) drop_caches ;;
        zfs) w_retry zpool export "$w_pool"; drop_caches; zpool import -d "$workdir" "$w_pool" ;;
    esac
}

w_used() {  # bytes in use on FS
    case "$1" in
        zfs) zfs get -Hp -o value used "$w_pool/w" ;;
        *) df -B1 --output=used "$(w_mount_point "$1")" | tail -1 | tr -d ' ' ;;
    esac
}

w_mbps() { awk -v b="$1" -v ns="$2" 'BEGIN { printf "%.6f", b / 1e6 / (ns / 1e9) }'; }  # w_mbps BYTES NS

w_seq() {  # w_seq FS: median MB/s of dd bs=1M conv=fsync of $write_mib MiB of random data
    local fs="$1" path values="" start end
    path="$(w_mount_point "$fs")/seq.bin"
    for run in $(seq "$runs"); do
        check_time
        w_fresh "$fs"
        cat "$w_src" > /dev/null  # the source is read from the page cache
        start=$(now_ns)
        timeout "$(left)" dd if="$w_src" of="$path" bs=1M count="$write_mib" conv=fsync status=none
        end=$(now_ns)
        values+="$(w_mbps $((write_mib << 20)) $((end - start)))"$'\n'
        if [ "$fs" = hammer2 ] && [ "$run" -eq 1 ] && [ "$verify" -eq 1 ]; then
            w_cold hammer2
            timeout "$(left)" cmp -n "$((write_mib << 20))" "$w_src" "$path"
            [ "$(stat -c %s "$path")" -eq $((write_mib << 20)) ] || { echo "bench: $path has the wrong size" >&2; exit 1; }
        fi
    done
    measured="$(printf '%s' "$values" | median)"
}

w_rand() {  # w_rand FS: median IOPS of 4 KiB random writes for $rand_seconds, then fsync
    local fs="$1" path values="" out
    path="$(w_mount_point "$fs")/rand.bin"
    [ -n "${w_tool[$fs]:-}" ] || { [ "$w_fio" -eq 1 ] && w_tool[$fs]=fio || w_tool[$fs]=python; }
    for _ in $(seq "$runs"); do
        check_time
        w_fresh "$fs"
        timeout "$(left)" dd if="$w_src" of="$path" bs=1M count="$w_rand_mib" conv=fsync status=none  # untimed fill
        out=""
        if [ "${w_tool[$fs]}" = fio ]; then
            if timeout "$(left)" fio --name=randw --filename="$path" --size="${w_rand_mib}M" --bs=4k \
                    --rw=randwrite --ioengine=psync --iodepth=1 --runtime="$rand_seconds" --time_based \
                    --end_fsync=1 --output-format=json --output="$workdir/fio.json" >"$workdir/fio.log" 2>&1; then
                out="$(python3 "$w_helper" fio-ios "$workdir/fio.json")"
            else
                echo "bench: fio failed on $fs; falling back to os.pwrite in Python for $fs:" >&2
                tail -5 "$workdir/fio.log" "$workdir/fio.json" >&2 2>/dev/null
                w_tool[$fs]=python
                w_note[$fs]="fio failed on $fs, Python os.pwrite loop used instead"
            fi
        fi
        if [ -z "$out" ]; then
            out="$(timeout "$(left)" python3 "$w_helper" randwrite "$path" "$rand_seconds")"
        fi
        values+="$(echo "$out" | awk '{ printf "%.6f", $1 / $2 }')"$'\n'
    done
    measured="$(printf '%s' "$values" | median)"
}

w_files() {  # w_files FS: medians (files/s) of create+flush, cold stat and delete+flush
    local fs="$1" dir spec create="" stats="" delete="" secs
    dir="$(w_mount_point "$fs")/files"
    spec="$(w_flush_spec "$fs")"
    for _ in $(seq "$runs"); do
        check_time
        w_fresh "$fs"
        mkdir "$dir"
        w_flush "$fs"
        secs="$(timeout "$(left)" python3 "$w_helper" create "$dir" "$files" "$w_file_bytes" "$spec")"
        create+="$(awk -v n="$files" -v s="$secs" 'BEGIN { printf "%.6f", n / s }')"$'\n'
        w_cold "$fs"
        secs="$(timeout "$(left)" python3 "$w_helper" stat "$dir" "$files" "$w_file_bytes")"
        stats+="$(awk -v n="$files" -v s="$secs" 'BEGIN { printf "%.6f", n / s }')"$'\n'
        secs="$(timeout "$(left)" python3 "$w_helper" delete "$dir" "$files" "$spec")"
        delete+="$(awk -v n="$files" -v s="$secs" 'BEGIN { printf "%.6f", n / s }')"$'\n'
        [ -z "$(ls -A "$dir")" ] || { echo "bench: $dir not empty after the deletes on $fs" >&2; exit 1; }
    done
    result["$fs,w-create"]="$(printf '%s' "$create" | median)"
    result["$fs,w-stat"]="$(printf '%s' "$stats" | median)"
    result["$fs,w-delete"]="$(printf '%s' "$delete" | median)"
}

w_extract() {  # w_extract FS: medians of MB/s (tar -xf + flush) and of the space used
    local fs="$1" m values="" space="" start end before
    m="$(w_mount_point "$fs")"
    for run in $(seq "$runs"); do
        check_time
        w_fresh "$fs"
        cat "$w_corpus" > /dev/null
        before="$(w_used "$fs")"
        start=$(now_ns)
        timeout "$(left)" tar -xf "$w_corpus" -C "$m"
        w_flush "$fs"
        end=$(now_ns)
        values+="$(w_mbps "$w_corpus_bytes" $((end - start)))"$'\n'
        space+="$(( $(w_used "$fs") - before ))"$'\n'
        if [ "$run" -eq 1 ]; then
            case "$fs" in
                hammer2)
                    w_note[du]="$(du -s -B1 "$m" | cut -f1)"
                    if [ "$verify" -eq 1 ]; then
                        w_cold hammer2
                        timeout "$(left)" tar -df "$w_corpus" -C "$m" >&2 \
                            || { echo "bench: the corpus on our mount differs from the tar" >&2; exit 1; }
                    fi ;;
                btrfs)
                    command -v compsize >/dev/null \
                        && w_note[compsize]="$(compsize -b "$m" 2>/dev/null | awk '$1 == "TOTAL" { print $3 }')" ;;
            esac
        fi
    done
    result["$fs,w-corpus"]="$(printf '%s' "$values" | median)"
    result["$fs,w-space"]="$(printf '%s' "$space" | median)"
}

write_measure() {
    local fs
    w_load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
    for fs in "${w_fs[@]}"; do
        log "sequential write of $write_mib MiB on $fs ($runs runs)"
        w_seq "$fs"
        result["$fs,w-seq"]="$measured"
        log "random 4 KiB writes for $rand_seconds s on $fs ($runs runs)"
        w_rand "$fs"
        result["$fs,w-rand"]="$measured"
        log "create / cold stat / delete of $files files on $fs ($runs runs)"
        w_files "$fs"
        log "extracting the $corpus_mib MiB corpus on $fs ($runs runs)"
        w_extract "$fs"
    done
    unmount_h2
    w_load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
}

# --- Report ----------------------------------------------------------------------------

w_row() {  # w_row LABEL KEY UNIT [SCALE]: one table row, values divided by SCALE
    local scale="${4:-1}" cells="" fs h e z
    for fs in "${w_fs[@]}"; do
        cells+=" $(awk -v v="${result[$fs,$2]}" -v s="$scale" 'BEGIN { printf "%.0f", v / s }') $3 |"
    done
    h="${result[hammer2,$2]}" e="${result[ext4,$2]}" z="${result[zfs,$2]}"
    echo "| $1 |$cells $(ratio "$h" "$e") | $(ratio "$h" "$z") |"
}

w_mb() { awk -v v="$1" 'BEGIN { printf "%.0f", v / 1e6 }'; }

write_report() {  # prints the markdown block for docs/benchmarks.md
    local tools verified fs
    if [ "${w_tool[hammer2]}" = fio ] && [ "${w_tool[ext4]}" = fio ] && [ "${w_tool[btrfs]}" = fio ] && [ "${w_tool[zfs]}" = fio ]; then
        tools="fio $(fio --version | sed 's/^fio-//') on all four (psync, iodepth 1, buffered), IOPS = writes / fio's runtime, which includes the end fsync"
    else
        tools="$(for fs in "${w_fs[@]}"; do printf '%s: %s; ' "$fs" "${w_tool[$fs]}"; done)(python = os.pwrite loop + fsync, scripts/bench-write.py)"
        for fs in "${w_fs[@]}"; do [ -n "${w_note[$fs]:-}" ] && tools+="; ${w_note[$fs]}"; done
    fi
    if [ "$verify" -eq 1 ]; then
        verified="yes: after a remount, our sequentially written file equals its source and \`tar -d\` finds no difference between the corpus and our copy"
    else
        verified="skipped (--no-verify)"
    fi
    cat <<EOF
Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`scripts/bench --write-mib $write_mib --rand-seconds $rand_seconds --files $files --corpus-mib $corpus_mib --runs $runs\`
(median of $runs runs, each on a freshly made filesystem; MB = 10^6 bytes).

$(machine_info "$w_load_before" "$w_load_after")
  btrfs-progs $(dpkg-query -W -f='${Version}' btrfs-progs 2>/dev/null || echo '?'), fio $(dpkg-query -W -f='${Version}' fio 2>/dev/null || echo 'not installed')
- Filesystems: ours \`newfs_hammer2 -s ${w_h2_gib}g\` (new files LZ4 + xxhash64), mounted with the defaults
  (5 s periodic flush); ext4 and btrfs (\`compress=zstd\`) on ${w_space_mib} MiB loop devices; zfs-fuse dataset with compression=lzjb.
  Flush = fsync of a directory on ours (flushes the volume), syncfs on ext4/btrfs, a property change (txg sync) on zfs-fuse
- Random writes: $tools
- Corpus: $(w_mb "$w_corpus_bytes") MB in $w_corpus_files files and $w_corpus_links symlinks: $(w_mb "$w_corpus_share") MB sampled from /usr/share, $(w_mb "$w_corpus_lib") MB from /usr/lib, $(w_mb "$w_corpus_random") MB random;
  space = \`df\` used after minus before (zfs: the dataset's \`used\`); for comparison \`du -s\` on ours $(w_mb "${w_note[du]:-0}") MB, btrfs data extents (compsize) $(w_mb "${w_note[compsize]:-0}") MB
- Content check: $verified

| write | hammer2 (ours, FUSE, lz4) | ext4 (loop) | btrfs (loop, zstd) | zfs-fuse (lzjb) | ours / ext4 | ours / zfs-fuse |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
$(w_row "sequential, $write_mib MiB random data, \`dd bs=1M conv=fsync\`" w-seq "MB/s")
$(w_row "random 4 KiB in a $w_rand_mib MiB file, ${rand_seconds} s + fsync" w-rand "IOPS")
$(w_row "create $files files of $w_file_bytes B + flush" w-create "files/s")
$(w_row "stat the $files files, cold" w-stat "files/s")
$(w_row "delete the $files files + flush" w-delete "files/s")
$(w_row "extract the $corpus_mib MiB corpus (\`tar -xf\`) + flush" w-corpus "MB/s")
$(w_row "space used by the corpus, lower is better" w-space "MB" 1e6)

Higher is better except in the last row.
EOF
}
