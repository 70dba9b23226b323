// hammer2(8): DragonFly's management utility. Directives that read a filesystem work
// offline on an image or device (`-f IMAGE`, or DragonFly's `show <devpath>`), and on a
// mounted volume (`-s MOUNTPOINT`, or the current directory), which is resolved through
// /proc/self/mountinfo to the image behind it, read after the daemon was asked to flush
// (an fsync of the mount point), so it shows every change made through the mount. Directives that change a mounted filesystem (bulkfree) are sent to
// the mount_hammer2 daemon as ioctls on a file of the mount.

import Foundation
import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format

public enum Hammer2Command {
    public static let usage = """
    hammer2 [options] command [argument ...]
        -s path            Select filesystem (a mount point of mount_hammer2)
        -f image           Select an image file or device offline (dev1:dev2:... for several volumes)
        -r                 Recurse (setcomp, setcheck, setcopies)
        -j                 JSON output (info, pfs-list), with the space report
        -t type            PFS type for pfs-create
        -u uuid            Cluster id for pfs-create
        -v                 More verbose (repeatable)
        -q                 Quieter
        --version          Print the version

        hash [<filename>...]              Print directory hash (key) for name
        dhash [<filename>...]             Print data hash for long directory entry
        info [<devpath>...]               Info on all offline or online H2 partitions; -v adds
                                          each PFS's space: used, exclusive, logical and
                                          compressed data, compressratio; volume free space
        flush [<path>...]                 Write every change of the mount and a new volume
                                          header now (fsync only appends to the intent log)
        pfs-list [<path>...]              List PFSs (-v: with the space report of info -v)
        pfs-clid <label>                  Print cluster id for specific PFS
        pfs-create [-t type] [-c clid] [-n copies] [-e] [-k keyfile] [-w log2N] [-F] <label>
                                      Create a PFS (type MASTER by default); -n copies of
                                      its data (1-4, see setcopies); -e encrypted,
                                      passphrase asked (or read from stdin; at least 12
                                      bytes unless -F), -k key file; -w scrypt cost
                                      (log2 N, 14-21, default 18)
        key-status [-k keyfile|-K] [label...]
                                      Show which PFSes are encrypted, key ids and wrapping;
                                      with a key, the older keys a rekey left
        key-change [-o oldkeyfile] [-k newkeyfile] [-w log2N] [-F] <label>
                                      Wrap an encrypted PFS's key anew in it and its
                                      snapshots, erase the old wrapping (offline, -f IMAGE)
        rekey [-k keyfile] [-w log2N] <label>
                                      A new key for new writes; the old one kept for older
                                      blocks until reencrypt (offline, -f IMAGE)
        reencrypt [<path>]            Rewrite what is under older keys and retire them
                                      (on a mount; offline: -f IMAGE reencrypt [-k keyfile] <label>)
        pfs-delete <label>                Delete a PFS (not while it is mounted)
        snapshot [<path>] [<label>]       Snapshot the PFS mounted at path (default label:
                                          PFS.YYYYMMDD.HHMMSS); offline: -f image snapshot <pfs> [<label>]
        pfs-fsid <label>                  Print private id for specific PFS
        send [-n] [-i <base>] <snapshot>  Write a snapshot (or what changed since the older
                                          snapshot <base>) as a stream to standard output;
                                          -n: only say how large it would be
        send -t <token>                   Go on with a stream where a receive stopped
        receive [-F] [-c comp] <label>    Make the stream on standard input snapshot <label>
                                          of -f IMAGE, or of the mount selected (through its
                                          daemon); -F replaces an existing <label>; -c: this
                                          compression instead of the sender's
                                          (docs/send-receive.md)
        receive -T | -A                   Resume tokens of interrupted receives; -A drops them
        setcomp <comp[:level]> <path>...  Set comp algo {none, autozero, lz4, zlib} & level
        setcheck <check> <path>...        Set check algo {none, crc32, xxhash64, sha192}
        setcopies <n> <path>...           Set copies of data written from now on (1-4, 3 when
                                          encrypted; metadata gets one more); inherited
        scrub [<path>]                    Read every copy of every block, repair bad copies
                                          from good ones, report what could not be (online
                                          on a mount, or offline with -f image)
        stat [<path>...]                  Return inode quota & config
        stat -w [-i secs] [-n count] [-a] <mountpoint>
                                          Live statistics of a mount from its trace
                                          segment (also: top); -a shows zero fields
        ktrdump [-f] [-m mask] [-n count] <mountpoint|segment>
                                          Print the daemon's trace events merged by time;
                                          -f follows, -m subsystems shown, -n the last count;
                                          a dead daemon's segment file reads too
        ktrmask <mountpoint|segment> [mask]
                                          Show or set the subsystems recorded (fuse,io,
                                          check,compress,flush,alloc,bulkfree,copies,keys,
                                          all, none; +name/-name change the current mask)
        printinode <path>                 Dump inode
        destroy <path>...                 Destroy directory entries (only use if inode bad)
        destroy-inum <inum>...            Destroy inodes (only use if inode bad)
        recover <devpath[@label]> <path> <destdir>  Copy a file or tree out of any PFS or snapshot
        cleanup [<path>]                  Run cleanup passes (bulkfree)
        dumpchain [<path> [<chnflags>]]   Dump the daemon's in-memory state to its log
        growfs [<path>...]                Grow a filesystem into its enlarged image or partition
        bulkfree [<path>]                 Return unreachable blocks to the freemap (root only;
                                          online on a mount, or offline with -f image)
        show <devpath>                    Raw hammer2 media dump for topology
        freemap <devpath>                 Raw hammer2 media dump for freemap
        volhdr <devpath>                  Raw hammer2 media dump for the volume header(s)

    Environment for show/freemap/volhdr: HAMMER2_SHOW_TAB, HAMMER2_SHOW_DEPTH,
    HAMMER2_SHOW_MIN_MIRROR_TID, HAMMER2_SHOW_MIN_MODIFY_TID, HAMMER2_SHOW_ALL_VOLUME_HEADERS.

    Exit status: 0 success, 1 the directive failed, 2 bad command line.
    """

    struct Context {
        var selectedPath: String?
        var image: String?
        var verbose = 0
        var quiet = 0
        var recurse = false
        var json = false
        var pfsType: String?
        var uuid: String?
    }

    public static func main(_ arguments: [String]) -> Int32 {
        let parsed: GetOpt
        do { parsed = try GetOpt(arguments, spec: "s:f:vqt:u:m:rj") } catch {
            return usageError("hammer2", "\(error)", usage: usage)
        }
        if parsed.wantsHelp { print(usage); return ExitCode.success.rawValue }
        if parsed.wantsVersion { print(Release.versionLine("hammer2")); return ExitCode.success.rawValue }
        var context = Context()
        for (letter, value) in parsed.options {
            switch letter {
            case "s": context.selectedPath = value
            case "f": context.image = value
            case "v": if context.quiet > 0 { context.quiet -= 1 } else { context.verbose += 1 }
            case "q": if context.verbose > 0 { context.verbose -= 1 } else { context.quiet += 1 }
            case "r": context.recurse = true
            case "j": context.json = true
            case "t": context.pfsType = value
            case "u": context.uuid = value
            default: break
            }
        }
        guard let directive = parsed.operands.first else {
            return usageError("hammer2", "Missing command", usage: usage)
        }
        let operands = Array(parsed.operands.dropFirst())
        var status: Int32 = 0  // what a directive with DragonFly's own exit codes returned
        do {
            switch directive {
            case "show", "freemap", "volhdr":
                let which: ShowWhich = directive == "show" ? .topology : directive == "freemap" ? .freemap : .volumeHeader
                let device = try deviceFor(directive, operands, context)
                var options = ShowOptions()
                options.verbose = context.verbose
                options.quiet = context.quiet
                options.applyEnvironment(ProcessInfo.processInfo.environment)
                ShowCommand(volumes: try VolumeSet(paths: device), options: options, out: TextOutput()).run(which)
            case "hash":
                for name in operands { print("\(Text.hex(DirectoryHash.key(for: name))) \(name)") }
            case "dhash":
                for name in operands {
                    var buffer = [UInt8](repeating: 0, count: 1024)
                    let bytes = Array(name.utf8.prefix(1024))
                    buffer.replaceSubrange(0..<bytes.count, with: bytes)
                    print("\(Text.hex(buffer.withUnsafeBytes { CheckCode.xxhash64($0) })) \(name)")
                }
            case "flush":
                // Ours: what sync(1) would do if it reached the daemon.
                let paths = operands.isEmpty ? [context.selectedPath ?? FileManager.default.currentDirectoryPath] : operands
                for path in paths {
                    guard let mount = mountedFilesystem(containing: path) else {
                        throw ToolError.failed("'\(path)' is not a hammer2 mount")
                    }
                    let failure = flushMount(mount.mountpoint)
                    guard failure == 0 else { throw ToolError.failed("flush of \(mount.mountpoint): \(String(cString: strerror(failure)))") }
                }
            case "pfs-list", "info":
                // info takes devices (DragonFly's) and, ours, mount points too.
                let targets = directive == "info" && !operands.isEmpty
                    ? try operands.flatMap { operand -> [Target] in
                        var isDirectory: ObjCBool = false
                        if FileManager.default.fileExists(atPath: operand, isDirectory: &isDirectory), isDirectory.boolValue {
                            return try targetsFor([operand], context)
                        }
                        return [Target(display: operand, devices: operand.split(separator: ":").map(String.init))]
                    }
                    : try targetsFor(operands, context)
                let reports = try targets.map { try SpaceDirectives.report($0, space: context.verbose > 0 || context.json) }
                if context.json {
                    try SpaceDirectives.printJSON(reports)
                } else {
                    for (i, report) in reports.enumerated() {
                        if directive == "info" { SpaceDirectives.printInfo(report); continue }
                        if i > 0 { print("") }
                        SpaceDirectives.printPFSList(report)
                    }
                }
            case "send":
                status = try SendReceiveDirectives.send(operands, context: context)
            case "receive":
                status = try SendReceiveDirectives.receive(operands, context: context)
            case "snapshot":
                try PFSDirectives.snapshot(operands, image: context.image, selected: context.selectedPath)
            case "pfs-create":
                // DragonFly's global -t type / -u uuid apply to pfs-create, as do local ones.
                let global = (context.pfsType.map { ["-t", $0] } ?? []) + (context.uuid.map { ["-c", $0] } ?? [])
                try PFSDirectives.create(global + operands, image: context.image, selected: context.selectedPath)
            case "setcomp", "setcheck", "setcopies":
                status = try InodeDirectives.set(directive, operands, image: context.image, recurse: context.recurse)
            case "destroy":
                status = try RepairDirectives.destroy(operands, image: context.image)
            case "destroy-inum":
                status = try RepairDirectives.destroyInodes(operands, image: context.image, selected: context.selectedPath)
            case "recover":
                status = try RepairDirectives.recover(operands)
            case "dumpchain":
                status = try RepairDirectives.dumpchain(operands, selected: context.selectedPath)
            case "growfs":
                status = try RepairDirectives.growfs(operands, image: context.image, selected: context.selectedPath)
            case "cleanup":
                status = try RepairDirectives.cleanup(operands)
            case "printinode":
                try InodeDirectives.printInode(operands, image: context.image, verbose: context.verbose)
            case "stat" where operands.first == "-w":
                status = try StatWatch.run(operands)
            case "top":
                status = try StatWatch.run(["-w"] + operands)
            case "stat":
                status = try InodeDirectives.stat(operands, image: context.image)
            case "ktrdump":
                status = try TraceDirectives.ktrdump(operands)
            case "ktrmask":
                status = try TraceDirectives.ktrmask(operands)
            case "key-status":
                status = try KeyDirectives.status(operands, image: context.image, selected: context.selectedPath)
            case "key-change":
                status = try KeyDirectives.change(operands, image: context.image, selected: context.selectedPath)
            case "rekey":
                status = try KeyDirectives.rekey(operands, image: context.image)
            case "reencrypt":
                status = try KeyDirectives.reencrypt(operands, image: context.image, selected: context.selectedPath,
                                                     quiet: context.quiet > 0)
            case "pfs-delete":
                try PFSDirectives.delete(operands, image: context.image, selected: context.selectedPath)
            case "scrub":
                status = try ScrubDirective.run(operands, image: context.image, selected: context.selectedPath, quiet: context.quiet > 0)
            case "bulkfree":
                try BulkfreeDirective.run(operands, image: context.image, selected: context.selectedPath, quiet: context.quiet > 0)
            case "pfs-clid", "pfs-fsid":
                guard operands.count == 1 else { throw ToolError.usage("\(directive): requires name") }
                let target = try targetsFor([], context)[0]
                let filesystem = try Filesystem(paths: target.devices)
                guard let entry = try filesystem.pfsEntries().first(where: { $0.name == operands[0] }) else {
                    throw ToolError.failed("\(directive): PFS \(operands[0]) not found on \(target.display)")
                }
                print(directive == "pfs-clid" ? entry.inode.meta.pfsClusterID.description : entry.inode.meta.pfsFilesystemID.description)
            default:
                return usageError("hammer2", "Unrecognized command: \(directive)", usage: usage)
            }
        } catch let error as ToolError {
            if case .usage = error { return usageError("hammer2", error.description, usage: usage) }
            printError("hammer2", error.description)
            return ExitCode.failure.rawValue
        } catch {
            printError("hammer2", "\(error)")
            return ExitCode.failure.rawValue
        }
        return status
    }

    /// The device list for show/freemap/volhdr: DragonFly's <devpath> operand, else -f,
    /// else the image behind the selected mount.
    static func deviceFor(_ directive: String, _ operands: [String], _ context: Context) throws -> [String] {
        if operands.count == 1 { return operands[0].split(separator: ":").map(String.init) }
        guard operands.isEmpty else { throw ToolError.usage("\(directive): requires device path") }
        if let image = context.image { return image.split(separator: ":").map(String.init) }
        if context.selectedPath != nil { return try targetsFor([], context)[0].devices }
        throw ToolError.usage("\(directive): requires device path")
    }

    struct Target {
        var display: String
        var devices: [String]
        var label: String?
    }

    /// What pfs-list and friends operate on: -f image, the mounts named by -s or the
    /// operands, or the mount holding the current directory.
    static func targetsFor(_ operands: [String], _ context: Context) throws -> [Target] {
        if let image = context.image {
            return [Target(display: image, devices: image.split(separator: ":").map(String.init))]
        }
        let paths = context.selectedPath.map { [$0] } ?? (operands.isEmpty ? ["."] : operands)
        return try paths.map { path in
            guard let mount = mountedFilesystem(containing: path) else {
                throw ToolError.failed("'\(path)' is not a hammer2 filesystem (use -f IMAGE for an unmounted image)")
            }
            let specifier = try VolumeSpecifier(mount.source)
            flushMount(mount.mountpoint)
            return Target(display: mount.mountpoint, devices: specifier.devices, label: specifier.label)
        }
    }

    /// Directives that read a mount's image first have the daemon flush, so they see every
    /// change made through it so far (an fsync only appends to the intent log, which the
    /// image's readers do not replay). A daemon without the request gets an fsync.
    @discardableResult
    static func flushMount(_ mountpoint: String) -> Int32 {
        let fd = open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: ControlRequest.argumentBytes)
        if buffer.withUnsafeMutableBytes({ ioctl(fd, UInt(ControlRequest.flush), $0.baseAddress!) }) == 0 { return 0 }
        let failure = errno
        guard failure == ENOTTY else { return failure }
        return fsync(fd) == 0 ? 0 : errno
    }

}
