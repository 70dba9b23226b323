// mount_hammer2: mounts a PFS of a HAMMER2 volume through FUSE.
//
//   mount_hammer2 [-f] [-d] [-o options] special[@label] node

import Foundation
import Glibc
import Synchronization
import HAMMER2CopyOnWrite
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2FUSE
import HAMMER2Format
import HAMMER2Tools
import HAMMER2Trace

DaemonMemory.limitArenas()

let usageText = """
usage: mount_hammer2 [-f] [-d] [-o options] special[@label] node

Mounts PFS <label> of the HAMMER2 filesystem on <special> (an image file or block
device; dev1:dev2:... for a multi-volume filesystem) at directory <node>.
Without @label the label follows DragonFly: partition 'a' -> BOOT, 'd' -> ROOT,
anything else -> DATA. Unmount with: fusermount3 -u <node>

  -f            stay in the foreground (log to stderr instead of syslog)
  -d            FUSE debug output (implies -f)
  -o options    comma-separated: rw (default) or ro, allow_other, cache=<MiB>
                (memory for file data: block cache and, half of it up to 512,
                data written but not yet flushed; default 1/32 of RAM, 64 to 1024),
                threads=<n> (default: two per CPU),
                uring[=<n>] (FUSE over io_uring where the kernel offers it: Linux
                6.14+ with the fuse module's enable_uring=Y; <n> threads per CPU,
                default 2; the default), nouring (/dev/fuse only),
                readahead=<KiB> (default 1024, 0 = kernel default; needs root),
                flush=<seconds> (background flush interval, default 5),
                dirtymax=<MiB> (dirty pages the kernel may cache for the mount,
                default 256, 0 = kernel default of 1% of its dirty limit; needs root),
                nowriteback (no kernel writeback cache: every write() is a request
                and errors such as ENOSPC come back from write() itself; with the
                default writeback cache they come back from fsync and close),
                noacl (no POSIX ACLs: system.posix_acl_* is refused and the kernel
                checks the mode bits alone; by default ACLs are stored and enforced,
                and new files take their directory's default ACL),
                noreclaim (no automatic bulkfree: space that copy-on-write leaves
                behind comes back only from hammer2 bulkfree / cleanup, as on
                DragonFly; by default a background pass starts when free space is
                under a quarter of the volume and writers that find it full wait
                for one, docs/reclaim.md),
                keyfile=<path> (key file of an encrypted PFS; without it the
                passphrase is asked on the terminal, or read from standard input
                when that is not a terminal), encrypted (refuse the PFS unless it
                is encrypted: keyfile= implies it, and so does a passphrase waiting
                on standard input, so that a PFS replaced by a clear one never
                takes data meant to be encrypted), fsync=log|flush (fsync appends the
                changes to the intent log, the default, or flushes the whole volume as
                DragonFly does: docs/format.md, "Intent log"), rollback-ok (mount read-write
                although a damaged volume header copy may have been newer than
                the one used, or an encrypted PFS is older than this machine last
                saw it: see docs/encryption.md, "Rollback"), degraded (a volume set with volumes
                missing, read-only: blocks with a copy on the volumes given read,
                docs/copies.md), ktr=<path> (the trace segment; default
                /dev/shm/hammer2.<pid>.ktr, removed at a clean unmount), noktr (no
                trace segment), ktrmask=<mask> (subsystems recorded: a number, or
                names separated by colons: fuse:io:check:compress:flush:alloc:
                bulkfree:copies:keys; default all; hammer2 ktrmask changes it while
                mounted), and libfuse's mount options (nosuid, nodev, noexec,
                noatime, sync, dirsync, default_permissions, allow_root,
                auto_unmount, max_read=). fstab's auto, noauto, nofail, _netdev,
                defaults, user(s), x-* and comment= are passed over; any other
                option is an error (exit 2).
  -h, --help    this text
  --version     the version

As a mount(8) helper (installed as mount.hammer2 and mount.fuse.hammer2, for
mount -t hammer2 / fuse.hammer2 and fstab lines of those types):
  mount.hammer2 special[@label] node [-sfnvrw] [-o options]
  -f only checks (mounts nothing), -s drops unknown options with a warning.

Exit status: 0 mounted (and, with -f, unmounted cleanly), 1 mount failed
(including a wrong passphrase or key file: nothing is read or written then),
2 bad command line.
"""

/// How mount(8) calls a helper (`mount.hammer2`, `mount.fuse.hammer2`):
/// `SPEC DIR [-sfnvrw] [-N namespace] [-o options] [-t type]`.
struct HelperInvocation {
    var arguments: [String] = []  // as mount_hammer2 takes them
    /// -f: validate, mount nothing.
    var fake = false
    /// -s: options nobody knows are dropped with a warning instead of refused.
    var sloppy = false

    init(_ helperArguments: [String]) throws {
        guard helperArguments.count >= 2, !helperArguments[0].hasPrefix("-"), !helperArguments[1].hasPrefix("-") else {
            throw ToolError.usage("called as a mount helper: SPEC DIR [-sfnvrw] [-o options] [-t type]")
        }
        var options: [String] = []
        var rest = ArraySlice(helperArguments.dropFirst(2))
        while let argument = rest.popFirst() {
            switch argument {
            case "-o":
                guard let value = rest.popFirst() else { throw ToolError.usage("option requires an argument -- o") }
                options.append(value)
            case "-t", "-N":
                guard rest.popFirst() != nil else { throw ToolError.usage("option requires an argument -- \(argument.dropFirst())") }
                if argument == "-N" { throw ToolError.usage("-N (another mount namespace) is not supported") }
            default:
                guard argument.hasPrefix("-"), argument.count > 1 else { throw ToolError.usage("unexpected argument \(argument)") }
                for letter in argument.dropFirst() {
                    switch letter {
                    case "f": fake = true
                    case "s": sloppy = true
                    case "n", "v": break  // no mtab to write; nothing more to say
                    case "r": options.append("ro")
                    case "w": options.append("rw")
                    default: throw ToolError.usage("unknown option -- \(letter)")
                    }
                }
            }
        }
        arguments = (options.isEmpty ? [] : ["-o", options.joined(separator: ",")]) + Array(helperArguments.prefix(2))
    }
}

func main() -> Int32 {
    var arguments = Array(CommandLine.arguments.dropFirst())
    if URL(fileURLWithPath: CommandLine.arguments[0]).lastPathComponent.hasPrefix("umount.") {
        if arguments.contains("--help") || arguments.contains("-h") { print(unmountUsage); return ExitCode.success.rawValue }
        return unmountHelper(arguments)
    }
    var helper: HelperInvocation?
    if URL(fileURLWithPath: CommandLine.arguments[0]).lastPathComponent.hasPrefix("mount.") && !arguments.contains("--help")
        && !arguments.contains("-h") && !arguments.contains("--version") {
        do {
            helper = try HelperInvocation(arguments)
        } catch {
            return usageError("mount.hammer2", "\(error)", usage: usageText)
        }
        arguments = helper!.arguments
    }
    var keyFile: String?
    var requireEncryption = false
    var rollbackAccepted = false
    let parsed: GetOpt
    do {
        parsed = try GetOpt(arguments, spec: "fdo:u")
    } catch {
        return usageError("mount_hammer2", "\(error)", usage: usageText)
    }
    if parsed.wantsHelp {
        print(usageText)
        return ExitCode.success.rawValue
    }
    if parsed.wantsVersion {
        print(Release.versionLine("mount_hammer2"))
        return ExitCode.success.rawValue
    }
    var foreground = false, debug = false
    var cacheMiB = defaultCacheMiB()
    // One FUSE worker per CPU: more only switch contexts around the filesystem lock.
    let defaults = MountOptions(mountpoint: "", fsname: "")
    var threads = defaults.maxThreads
    var uringThreads = defaults.uringThreads
    var allowOther = false
    var readaheadKiB = 1024
    var readOnly = false
    var flushInterval = 5.0
    var degraded = false
    var writeback = defaults.writebackCache
    var reclaim = defaults.automaticReclaim
    var posixACL = defaults.posixACL
    var kernelDirtyMiB = defaults.kernelDirtyMiB
    var fsyncThroughLog = true
    var extra: [String] = []
    var tracePath: String?
    var tracing = true
    var traceMask = TraceSubsystem.all
    for (letter, value) in parsed.options {
        switch letter {
        case "f": foreground = true
        case "d": debug = true; foreground = true
        case "u":
            printError("mount_hammer2", "-u (changing a mounted filesystem's options) is not supported; unmount and mount again")
            return ExitCode.usage.rawValue
        case "o":
            guard let classified = MountOptionClasses(value ?? "") else {
                return usageError("mount_hammer2", "cannot parse the mount options \"\(value ?? "")\"", usage: usageText)
            }
            if let refused = classified.refused.first {
                printError("mount_hammer2", "-o \(refused): mount_hammer2 sets \(refused.prefix { $0 != "=" }) itself (hammer2 finds its mounts by it)")
                return ExitCode.usage.rawValue
            }
            if !classified.unknown.isEmpty {
                let list = classified.unknown.joined(separator: ",")
                guard helper?.sloppy == true else {
                    printError("mount_hammer2", "unknown mount option(s): \(list) (mount_hammer2 --help lists them)")
                    return ExitCode.usage.rawValue
                }
                printError("mount_hammer2", "warning: unknown mount option(s) ignored (-s): \(list)")
            }
            extra += classified.fuse
            for option in classified.ours {
                switch option {
                case "local": break
                case "ro", "rdonly": readOnly = true
                case "rw": readOnly = false
                case "allow_other": allowOther = true
                case "debug": debug = true; foreground = true
                case "degraded": degraded = true
                case "writeback": writeback = true
                case "nowriteback": writeback = false
                case "reclaim": reclaim = true
                case "noreclaim": reclaim = false
                case "acl": posixACL = true
                case "noacl": posixACL = false
                case "noktr": tracing = false
                case "encrypted": requireEncryption = true
                case "rollback-ok": rollbackAccepted = true
                case "fsync=log": fsyncThroughLog = true
                case "fsync=flush": fsyncThroughLog = false
                case "uring": uringThreads = 2
                case "nouring": uringThreads = 0
                default:
                    if option.hasPrefix("cache=") {
                        guard let value = Int(option.dropFirst(6)), value >= 1, value <= 65_536 else {
                            printError("mount_hammer2", "cache=<MiB> wants a number from 1 to 65536")
                            return ExitCode.usage.rawValue
                        }
                        cacheMiB = value
                    } else if option.hasPrefix("readahead=") {
                        guard let value = Int(option.dropFirst(10)), value >= 0, value <= 65_536 else {
                            printError("mount_hammer2", "readahead=<KiB> wants a number from 0 to 65536")
                            return ExitCode.usage.rawValue
                        }
                        readaheadKiB = value
                    } else if option.hasPrefix("dirtymax=") {
                        guard let value = Int(option.dropFirst(9)), value >= 0, value <= 65_536 else {
                            printError("mount_hammer2", "dirtymax=<MiB> wants a number from 0 to 65536")
                            return ExitCode.usage.rawValue
                        }
                        kernelDirtyMiB = value
                    } else if option.hasPrefix("flush=") {
                        guard let value = Double(option.dropFirst(6)), value >= 1, value <= 3600 else {
                            printError("mount_hammer2", "flush=<seconds> wants a number from 1 to 3600")
                            return ExitCode.usage.rawValue
                        }
                        flushInterval = value
                    } else if option.hasPrefix("ktr=") {
                        let path = String(option.dropFirst(4))
                        guard !path.isEmpty else {
                            printError("mount_hammer2", "ktr=<path> wants a file name")
                            return ExitCode.usage.rawValue
                        }
                        tracePath = URL(fileURLWithPath: path).standardizedFileURL.path
                    } else if option.hasPrefix("ktrmask=") {
                        guard let mask = TraceSubsystem.parseMask(String(option.dropFirst(8)), base: TraceSubsystem.all) else {
                            printError("mount_hammer2", "ktrmask= wants subsystem names separated by colons (\(TraceSubsystem.allCases.map(\.name).joined(separator: ":"))) or a number")
                            return ExitCode.usage.rawValue
                        }
                        traceMask = mask
                    } else if option.hasPrefix("keyfile=") {
                        keyFile = String(option.dropFirst(8))
                    } else if option.hasPrefix("uring=") {
                        guard let value = UInt32(option.dropFirst(6)), value >= 1, value <= 64 else {
                            printError("mount_hammer2", "uring=<n> wants a number of threads per CPU from 1 to 64")
                            return ExitCode.usage.rawValue
                        }
                        uringThreads = value
                    } else if option.hasPrefix("threads=") {
                        guard let value = UInt32(option.dropFirst(8)), value >= 1, value <= 256 else {
                            printError("mount_hammer2", "threads=<n> wants a number from 1 to 256")
                            return ExitCode.usage.rawValue
                        }
                        threads = value
                    } else {
                        printError("mount_hammer2", "bad mount option \(option)")
                        return ExitCode.usage.rawValue
                    }
                }
            }
        default: break
        }
    }
    guard parsed.operands.count == 2 else {
        return usageError("mount_hammer2", "missing parameter(s) (special[@label] node)", usage: usageText)
    }
    let specifier: VolumeSpecifier
    do {
        specifier = try VolumeSpecifier(parsed.operands[0])
    } catch {
        printError("mount_hammer2", "\(error)")
        return ExitCode.usage.rawValue
    }
    let mountpoint = parsed.operands[1]
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: mountpoint, isDirectory: &isDirectory), isDirectory.boolValue else {
        printError("mount_hammer2", "\(mountpoint): mount point is not a directory")
        return ExitCode.failure.rawValue
    }
    let label = specifier.labelOrDefault
    if helper?.fake == true { return ExitCode.success.rawValue }  // mount -f: checked, nothing mounted
    if !foreground { closeInheritedDescriptors() }
    // Absolute device paths in the mount source, so hammer2 finds them from anywhere.
    let devices = specifier.devices.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
    var options = MountOptions(mountpoint: mountpoint, fsname: devices.joined(separator: ":") + "@" + label)
    options.foreground = foreground
    options.debug = debug
    options.allowOther = allowOther
    options.extraOptions = extra
    options.maxThreads = threads
    options.uringThreads = uringThreads
    options.readaheadKiB = readaheadKiB
    options.writebackCache = writeback
    options.automaticReclaim = reclaim
    options.posixACL = posixACL
    options.kernelDirtyMiB = kernelDirtyMiB
    options.flushInterval = flushInterval
    // A daemon already serving this volume mounts this PFS too (issue 22).
    var attach = AttachRequest(label: label, mountpoint: FUSEServer.resolvedPath(mountpoint), options: options,
                               readOnly: readOnly, follow: foreground)
    attach.requireEncryption = requireEncryption
    attach.rollbackAccepted = rollbackAccepted
    let socketPath = degraded ? nil : VolumeDaemon.socketPath(forDevice: devices[0], create: false)
    if let socketPath, let status = attachToDaemon(attach, socketPath: socketPath, devices: devices, keyFile: keyFile) {
        return status
    }
    // The trace segment first, so that opening and unlocking are in it too.
    var traceSession: TraceSession?
    if tracing {
        TraceFiles.pruneDeadSegments()  // this image's and everyone's dead segments beyond the bound
        let resolved = FUSEServer.resolvedPath(mountpoint)
        do {
            // A ring per FUSE thread and some for the timer, heartbeat and dispatch workers.
            let rings = min(TraceLayout.maxRings, max(32, Int(threads) + 16))
            let make = { (path: String) in
                try TraceSession(path: path, volumes: devices.count, pfsLabel: label,
                                 mount: [("source", devices.joined(separator: ":") + "@" + label), ("mountpoint", resolved)],
                                 rings: rings, mask: traceMask)
            }
            let session = try tracePath.map(make) ?? TraceFiles.atDefaultPath(make)
            Trace.install(session)
            traceSession = session
        } catch {
            printError("mount_hammer2", "warning: no trace segment (\(error)); mounting without one")
        }
    }
    defer { traceSession?.finish() }
    do {
        if degraded { readOnly = true }
        let logger: @Sendable (String) -> Void
        if foreground {
            logger = { message in FileHandle.standardError.write(Data("mount_hammer2: \(message)\n".utf8)) }
        } else {
            openlog("mount_hammer2", LOG_PID, LOG_DAEMON)
            logger = { message in withVaList([message]) { vsyslog(LOG_ERR, "%s", $0) } }
        }
        // Repairs of bad copies (and blocks lost) are logged from the first read on.
        // cache= is the memory for file data: half of it (at most 512 MiB) holds written
        // data until a flush, the rest is the block cache, so that resident memory stays
        // under cache= plus a fixed overhead whether the mount reads or writes. Half, because
        // a random overwrite working set larger than the dirty data is flushed whole each
        // time the limit is reached (64 KiB blocks rewritten per 4 KiB changed), while reads
        // past the block cache still hit the kernel's page cache.
        let dirtyBytes = readOnly ? 0 : min(512 << 20, (cacheMiB << 20) / 2)
        let opened = try openWaitingForPreviousWriter(specifier.devices, writable: !readOnly,
                                                      cacheBytes: (cacheMiB << 20) - dirtyBytes,
                                                      degraded: degraded, logger: logger) {
            // A daemon that started meanwhile holds the volume: ask it.
            socketPath.flatMap { attachToDaemon(attach, socketPath: $0, devices: devices, keyFile: keyFile) }
        }
        let filesystem: MutableFilesystem
        switch opened {
        case let .attached(status): return status
        case let .opened(fs): filesystem = fs
        }
        if dirtyBytes > 0 { filesystem.dirtyLimit = dirtyBytes }
        // A damaged header copy that may have been the newest: said, and read-write only
        // with consent, since the next flush would overwrite the evidence.
        if let rollback = filesystem.volumes.headerRollback {
            logger("\(devices.joined(separator: ":")): \(rollback)")
            if !readOnly && !rollbackAccepted {
                throw ToolError.failed("\(rollback). Mount read-only (-o ro) to look, or with -o rollback-ok to go on "
                                       + "read-write from transaction \(rollback.usedTID) (the next flush replaces the damaged copy)")
            }
            if !readOnly { try filesystem.replayDeferredIntentLog() }
        }
        filesystem.intentLogEnabled = fsyncThroughLog
        if let replay = filesystem.intentLogReplay, replay.problem == nil {
            logger("\(devices.joined(separator: ":")): intent log replayed\(readOnly ? " in memory (read-only mount)" : ""): \(replay.commits) commits, "
                   + "\(replay.inodes) inode changes (what fsync made durable after the last flush)")
        }
        if try filesystem.encryptionStatus(label) != nil {
            let source = try KeyInput.source(keyFile: keyFile, prompt: "Passphrase for \(label): ")
            try filesystem.unlockPFS(label, source: source)
        } else if keyFile != nil {
            throw ToolError.failed("keyfile= given, but PFS \(label) is not encrypted (if it should be, it was replaced)")
        } else if requireEncryption {
            throw ToolError.failed("-o encrypted given, but PFS \(label) is not encrypted (if it should be, it was replaced)")
        } else if KeyInput.standardInputHoldsData() {
            throw ToolError.failed("a passphrase waits on standard input, but PFS \(label) is not encrypted (if it should be, "
                                   + "it was replaced); refusing to mount it (give standard input from /dev/null to mount it in clear)")
        }
        let pfs = try filesystem.openPFS(label)
        var rollbackRecorder: RollbackRecorder?
        if let (keys, meta) = pfs.encryptedRoot {
            rollbackRecorder = try checkRollback(keys: keys, meta: meta, label: label, filesystem: filesystem,
                                                 readOnly: readOnly, accepted: rollbackAccepted, logger: logger)
        }
        if !filesystem.volumes.missingVolumes.isEmpty {
            logger("\(options.fsname): degraded, volumes \(filesystem.volumes.missingVolumes) missing; mounted read-only")
        }
        let server = FUSEServer(filesystem: filesystem, pfs: pfs, options: options, logger: logger)
        defer { filesystem.reader.keyring.removeAll() }  // keys are wiped at unmount
        // Only a read-write daemon takes other PFSes of its volume: a later read-write
        // mount could not write through a read-only one.
        let daemon = VolumeDaemon(filesystem: filesystem, flushInterval: flushInterval, automaticReclaim: reclaim,
                                  socketPath: readOnly ? nil : VolumeDaemon.socketPath(forDevice: devices[0], create: true),
                                  logger: logger, attach: attachHandler(filesystem: filesystem, devices: devices, logger: logger))
        try daemon.run(first: server, foreground: foreground)
        rollbackRecorder?.finish()  // the generation of the final flush
        return ExitCode.success.rawValue
    } catch {
        printError("mount_hammer2", "\(specifier.devices.joined(separator: ":"))@\(label): \(error)")
        return ExitCode.failure.rawValue
    }
}

/// An encrypted PFS older than this machine last saw it (its authenticated root generation
/// below the recorded one) was rolled back by whoever can write the image: said, and a
/// read-write mount needs -o rollback-ok (which then records the older state as seen).
/// A read-write mount returns the recorder of the generations its flushes sign.
func checkRollback(keys: PFSKeys, meta: InodeMeta, label: String, filesystem: MutableFilesystem, readOnly: Bool,
                   accepted: Bool, logger: @escaping @Sendable (String) -> Void) throws -> RollbackRecorder? {
    let state = RollbackState()
    let id = keys.rollbackIdentifier(clusterID: meta.pfsClusterID.bytes)
    if let seen = state.seen(id), seen > meta.rootGeneration {
        let message = "PFS \(label) was rolled back: this machine saw it at transaction \(seen), the image holds "
            + "transaction \(meta.rootGeneration) (an older copy of the PFS or of the image was put back)"
        logger(message)
        if !readOnly && !accepted {
            throw ToolError.failed(message + ". Mount read-only (-o ro) to look, or with -o rollback-ok to accept it")
        }
        if !accepted { return nil }  // read-only: the record keeps the newer generation
    }
    do {
        try state.record(id, meta.rootGeneration, replacing: accepted)
    } catch {
        logger("warning: rollback state not kept (\(error)); rollbacks of PFS \(label) cannot be detected")
        return nil
    }
    guard !readOnly else { return nil }
    let recorder = RollbackRecorder(state: state, id: id, label: label, logger: logger)
    // Each encrypted PFS of the daemon records its own generations.
    let previous = filesystem.rootSigned
    filesystem.rootSigned = { signedLabel, signedMeta in
        previous?(signedLabel, signedMeta)
        if signedLabel == label { recorder.signed(signedMeta.rootGeneration) }
    }
    return recorder
}

/// Writes the root generations the mount's flushes sign into the rollback state at most
/// once every few seconds: each write is an fsync of the state file, which must not ride
/// on every fsync an application makes. The newest is written at unmount; a crash can
/// leave the record that much behind (docs/encryption.md, "Rollback").
final class RollbackRecorder: Sendable {
    static let interval: UInt64 = 5_000_000_000  // ns, the default flush interval
    let state: RollbackState
    let id: String, label: String
    let logger: @Sendable (String) -> Void
    private let progress = Mutex<(pending: UInt64?, written: UInt64)>((nil, 0))

    init(state: RollbackState, id: String, label: String, logger: @escaping @Sendable (String) -> Void) {
        self.state = state; self.id = id; self.label = label; self.logger = logger
    }

    func signed(_ generation: UInt64) {
        let now = Trace.now
        let due = progress.withLock { p -> Bool in
            p.pending = max(p.pending ?? 0, generation)
            guard now &- p.written >= Self.interval else { return false }
            p.written = now
            return true
        }
        if due { finish() }
    }

    /// Writes what is pending now.
    func finish() {
        guard let generation = progress.withLock({ p -> UInt64? in defer { p.pending = nil }; return p.pending }) else { return }
        do { try state.record(id, generation) } catch {
            logger("warning: rollback state of PFS \(label) not updated: \(error)")
        }
    }
}

/// Opens the filesystem. A daemon that was just unmounted may still be writing its final
/// flush (fusermount3 returns before it ends), holding the image's writer lock: when the
/// image is not mounted anywhere, wait up to 30 s for that lock instead of failing.
enum OpenedVolume {
    case opened(MutableFilesystem)
    /// Another daemon took the mount (its exit status).
    case attached(Int32)
}

/// Opens the volume; while another process holds it (a daemon starting, or finishing its
/// final flush), asks `attach` (a daemon that listens by now mounts the PFS) and waits.
func openWaitingForPreviousWriter(_ devices: [String], writable: Bool, cacheBytes: Int, degraded: Bool,
                                  logger: @escaping @Sendable (String) -> Void,
                                  attach: () -> Int32?) throws -> OpenedVolume {
    let deadline = Date().addingTimeInterval(30)
    while true {
        do {
            return .opened(try MutableFilesystem(paths: devices, writable: writable, cacheBytes: cacheBytes, degraded: degraded,
                                                 copyLogger: logger))
        } catch let error as EngineError where error.errno == EBUSY {
            if let status = attach() { return .attached(status) }
            if Date() >= deadline { throw error }
            usleep(100_000)
        }
    }
}

/// The block cache's default size: 1/32 of physical memory, from 64 MiB to 1 GiB. A read
/// of part of a 64 KiB block (random 4 KiB reads, read-modify-write) needs the whole block
/// verified, decompressed and decrypted; cached, the next read of it costs none of that,
/// as DragonFly's buffer cache (which may use all free memory) keeps its 64 KiB buffers.
func defaultCacheMiB() -> Int {
    let bytes = Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))
    return min(1024, max(64, (bytes >> 20) / 32))
}

/// A daemon must not hold its parent's descriptors (a pipe the caller waits on, say)
/// beyond standard input, output and error, which fuse_daemonize points at /dev/null.
func closeInheritedDescriptors() {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
    for fd in names.compactMap({ Int32($0) }) where fd > 2 {
        close(fd)
    }
}

exit(main())
