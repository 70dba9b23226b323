// The FUSE adapter: serves one PFS through libfuse3's low-level API. The engine below
// knows nothing of FUSE; this layer maps requests to engine calls, engine errors to errno,
// and logs media errors with the inode they hit. Per-mount state lives in the session's
// user data (an unretained reference to this server), never in globals.

import CFUSE3
import FUSEServing
import CAtomicMemory
import CMalloc
import Foundation
import Synchronization
import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format
import HAMMER2Trace

public struct MountOptions: Sendable {
    public var mountpoint: String
    public var fsname: String
    public var foreground = false
    public var debug = false
    public var allowOther = false
    /// Extra -o options passed to libfuse unchanged.
    public var extraOptions: [String] = []
    /// Twice the CPUs: more threads on few cores contend on the engine's locks (16 threads on 2
    /// cores served a third of the random reads 4 did).
    public var maxThreads = UInt32(max(2, 2 * ProcessInfo.processInfo.activeProcessorCount))
    /// FUSE over io_uring when the kernel offers it (fuse's enable_uring parameter): this
    /// many threads per CPU queue take requests from their rings; /dev/fuse otherwise.
    /// 0 reads /dev/fuse only (docs/architecture.md, "FUSE over io_uring").
    public var uringThreads: UInt32 = 2
    /// Seconds the kernel may cache attributes and names (every change goes through this mount).
    public var cacheTimeout: Double = 60
    /// Kernel readahead for the mount in KiB (0: leave the kernel's default of 128).
    public var readaheadKiB = 1024
    /// The kernel's writeback cache: write() fills the page cache, the daemon gets the data
    /// in large writes at writeback, fsync and close (docs/architecture.md, "FUSE").
    public var writebackCache = true
    /// Dirty pages the kernel may hold for the mount with the writeback cache, in MiB
    /// (0: the kernel's default, 1% of its dirty limit). Needs root; best effort.
    public var kernelDirtyMiB = 256
    /// Seconds between background flushes of a read-write mount. Shorter than DragonFly's
    /// 30 s syncer because sync(2) cannot reach a libfuse 3.14 daemon (no FUSE_SYNCFS).
    public var flushInterval: Double = 5
    /// Background bulkfree passes when copy-on-write has filled the volume, and writers
    /// waiting for them instead of failing (docs/reclaim.md).
    public var automaticReclaim = true
    /// POSIX ACLs stored and enforced by the kernel (FUSE_CAP_POSIX_ACL); `noacl` turns
    /// them off, and system.posix_acl_* is then refused as on a filesystem without them.
    public var posixACL = true

    public init(mountpoint: String, fsname: String) {
        self.mountpoint = mountpoint
        self.fsname = fsname
    }
}

public final class FUSEServer: Sendable {
    public let pfs: PFSHandle
    public let filesystem: MutableFilesystem
    public let options: MountOptions
    let logger: @Sendable (String) -> Void
    /// The FUSE session; serving between mount and the end of run (notifications to the
    /// kernel use it then).
    private let fuse = FUSESession()
    /// The kernel opens directories itself (zero-message opendir, set at INIT).
    let opendirInKernel = Atomic<Bool>(false)
    /// Directories whose listing the kernel caches with names only (answered by READDIR).
    /// A listing served from that cache brings no attributes, so a walk that stats each
    /// name (`ls -l` after `ls`, `du`, `rsync`) would send a LOOKUP per name: a few
    /// lookups in such a directory drop its cached listing instead, and the kernel lists
    /// the rest by READDIRPLUS, the lookups having advised it to. Values: lookups so far.
    private let namesOnlyListings = Mutex<[UInt64: Int]>([:])
    /// Lookups in a names-only listed directory that drop its cached listing: a walk
    /// makes them at once, opening a file or two after `ls` does not.
    static let lookupsDroppingListing = 4

    public init(filesystem: MutableFilesystem, pfs: PFSHandle, options: MountOptions, logger: @escaping @Sendable (String) -> Void) {
        self.filesystem = filesystem
        self.pfs = pfs
        self.options = options
        self.logger = logger
    }

    public enum ServeError: Error, CustomStringConvertible {
        case session(String)
        public var description: String {
            switch self { case let .session(what): return what }
        }
    }

    /// Creates the FUSE session and mounts it (the mount point resolved first: once mounted,
    /// any call on it would wait for this very daemon, which is not serving yet).
    public func mount() throws {
        var mountOptions = [pfs.isReadOnly ? "ro" : "rw", "fsname=\(options.fsname)", "subtype=hammer2", "default_permissions"]
        if options.allowOther { mountOptions.append("allow_other") }
        mountOptions += options.extraOptions
        let resolvedMountpoint = Self.resolvedPath(options.mountpoint)
        let userdata = Unmanaged.passUnretained(self).toOpaque()
        do {
            // Our loop also offers FUSE_HANDLE_KILLPRIV_V2, which libfuse 3.14 does not know (shims.c).
            try fuse.mount(program: "mount_hammer2", options: mountOptions, debug: options.debug, operations: FUSEOperations.table(),
                           userdata: userdata, mountpoint: resolvedMountpoint) { session in
                h2fuse_loop_new(session, options.maxThreads, options.uringThreads, FUSEOperations.temporaryFile,
                                FUSEOperations.killPrivileges, userdata)
            }
        } catch let failure as FUSESession.Failure {
            throw ServeError.session(failure.description)
        }
        tuneBackingDevice(readaheadKiB: options.readaheadKiB,
                          maxDirtyBytes: options.writebackCache && !pfs.isReadOnly ? options.kernelDirtyMiB << 20 : 0,
                          mountpoint: resolvedMountpoint)
    }

    /// Serves requests until the kernel ends the session (unmount) or `stop()`, then
    /// unmounts (if still mounted) and frees the session.
    public func run() {
        if options.uringThreads > 0 {
            // The rings start once the kernel's INIT is answered: say which transport serves.
            DispatchQueue.global().asyncAfter(deadline: .now() + 1) { [self] in
                let active = fuse.current.map { h2fuse_uring_active($0.loop) != 0 } ?? false
                if active { logger("\(options.fsname) on \(options.mountpoint): requests through FUSE over io_uring") }
            }
        }
        fuse.run()
    }

    /// Ends `run()` from another thread (a signal, the daemon stopping).
    public func stop() { fuse.stop() }

    /// `path` with symbolic links resolved (realpath), or as given when it cannot be. For a
    /// mount point, call it before mounting there.
    public static func resolvedPath(_ path: String) -> String {
        realpath(path, nil).map { p in
            defer { free(p) }
            return String(cString: p)
        } ?? path
    }

    /// Tells the kernel to forget a cached name (after a change that did not come through
    /// the kernel, such as hammer2 destroy), before the request that made it is answered.
    func invalidateEntry(parent: UInt64, name: [UInt8]) {
        notify { session in
            let cName = name.map { CChar(bitPattern: $0) } + [0]
            _ = fuse_lowlevel_notify_inval_entry(session, fuse_ino_t(parent), cName, name.count)
        }
    }

    /// A READDIR (names only) of `directory` was answered: the kernel may cache it.
    func listedNamesOnly(_ directory: UInt64) {
        guard opendirInKernel.load(ordering: .acquiring) else { return }
        namesOnlyListings.withLock { listings in
            if listings.count >= 4096 { listings.removeAll() }  // a forgotten one costs a LOOKUP per name, no more
            if listings[directory] == nil { listings[directory] = 0 }
        }
    }

    /// A name in `directory` was looked up: if the kernel caches its listing with names
    /// only, that listing is dropped at the `lookupsDroppingListing`th such lookup
    /// (asynchronously: the lookup in progress holds the directory), once.
    func lookedUp(in directory: UInt64) {
        let drop = namesOnlyListings.withLock { listings -> Bool in
            guard let count = listings[directory] else { return false }
            if count + 1 < Self.lookupsDroppingListing {
                listings[directory] = count + 1
                return false
            }
            listings.removeValue(forKey: directory)
            return true
        }
        if drop { notifyWithoutWaiting { _ = fuse_lowlevel_notify_inval_inode($0, fuse_ino_t(directory), 0, 0) } }
    }

    /// Tells the kernel to forget an inode's cached attributes and data.
    func invalidateInode(_ inum: UInt64) {
        notify { session in _ = fuse_lowlevel_notify_inval_inode(session, fuse_ino_t(inum), 0, 0) }
    }

    /// Makes the kernel write back its dirty pages of `inum` (invalidating them launders
    /// each dirty one through a write request, which other threads serve) and waits for
    /// that, for an answer that must see all of the file's data (SEEK_DATA / SEEK_HOLE).
    func writeBackKernelPages(_ inum: UInt64) {
        notify(waiting: 30) { session in _ = fuse_lowlevel_notify_inval_inode(session, fuse_ino_t(inum), 0, 0) }
    }

    /// Tells the kernel its cached attributes of `inum` are stale (st_blocks after data
    /// arrived by writeback), without waiting.
    func invalidateAttributes(_ inum: UInt64) {
        notifyWithoutWaiting { _ = fuse_lowlevel_notify_inval_inode($0, fuse_ino_t(inum), -1, 0) }
    }

    /// Runs a kernel notification on another thread, without waiting for it.
    private func notifyWithoutWaiting(_ body: @escaping @Sendable (OpaquePointer) -> Void) {
        DispatchQueue.global().async { [self] in
            if let current = fuse.current { body(current.session) }
        }
    }

    /// Runs a kernel notification on another thread and waits for it a little: the kernel
    /// may need a lock the current request holds, and then the notification lands later.
    private func notify(waiting seconds: Double = 2, _ body: @escaping @Sendable (OpaquePointer) -> Void) {
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async { [self] in
            if let current = fuse.current { body(current.session) }
            done.signal()
        }
        _ = done.wait(timeout: .now() + seconds)
    }

    /// Resident memory from /proc/self/statm (pages).
    static func residentBytes() -> UInt64 {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = UInt64(fields[1]) else { return 0 }
        return pages * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// The kernel caps a FUSE mount's readahead at its backing-device default (128 KiB),
    /// whatever the INIT reply asks for, which splits sequential reads into 128 KiB
    /// requests. Raising the mount's bdi read_ahead_kb gives 1 MiB requests. Best effort:
    /// it needs root, and the mount works without it. The device number comes from
    /// /proc/self/mountinfo because a stat of the mount point would wait for this daemon.
    ///
    /// With the writeback cache, the kernel also limits the mount's dirty pages to 1% of
    /// its dirty limit (a few tens of MiB) and throttles writers at that point, so random
    /// small writes reach the daemon almost one page per request; `max_bytes` raises that
    /// allowance (Linux 6.2 and later).
    func tuneBackingDevice(readaheadKiB: Int, maxDirtyBytes: Int, mountpoint resolved: String) {
        guard let info = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return }
        // mountinfo escapes backslash, space, tab and newline as octal.
        let mountpoint = resolved.replacingOccurrences(of: "\\", with: "\\134").replacingOccurrences(of: " ", with: "\\040")
            .replacingOccurrences(of: "\t", with: "\\011").replacingOccurrences(of: "\n", with: "\\012")
        var device: String?
        for line in info.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count > 4, fields[4] == mountpoint, line.contains(" - fuse.hammer2 ") { device = String(fields[2]) }
        }
        guard let device else { return }
        func set(_ name: String, _ value: Int) {
            guard let handle = FileHandle(forWritingAtPath: "/sys/class/bdi/\(device)/\(name)") else { return }
            try? handle.write(contentsOf: Data("\(value)\n".utf8))
            try? handle.close()
        }
        if readaheadKiB > 0 { set("read_ahead_kb", readaheadKiB) }
        if maxDirtyBytes > 0 { set("max_bytes", maxDirtyBytes) }
    }

    /// A file name as log lines may show it: quoted on a PFS in clear; on an encrypted PFS
    /// only its length, since syslog is readable by more people than the PFS (the inode
    /// numbers in the same line say where).
    func loggable(_ name: [UInt8]) -> String {
        pfs.isEncrypted ? "a name (\(name.count) bytes; names of encrypted PFSes are not logged)"
                        : "\"\(String(decoding: name, as: UTF8.self))\""
    }

    /// Reports an engine failure for `what`; media errors are logged, lookups are not.
    func fail(_ request: fuse_req_t?, _ error: any Error, _ what: @autoclosure () -> String) {
        let code: Int32
        if let engineError = error as? EngineError {
            code = engineError.errno
            if code == EIO { logger("\(what()) on \(options.fsname): \(engineError)") }
        } else {
            code = EIO
            logger("\(what()) on \(options.fsname): \(error)")
        }
        replyError(request, code)
    }

    /// Answers a lookup of a missing name with a negative entry the kernel keeps as long
    /// as names (FUSEOperations' lookup says why that is safe); a failed lookup (ENOENT)
    /// for the request's trace event.
    func replyMissing(_ request: fuse_req_t?) {
        h2_thread_error_set(ENOENT)
        var entry = fuse_entry_param()
        entry.entry_timeout = options.cacheTimeout
        fuse_reply_entry(request, &entry)
    }

    /// Answers with an error, noted for the request's trace event.
    func replyError(_ request: fuse_req_t?, _ code: Int32) {
        h2_thread_error_set(code)
        fuse_reply_err(request, code)
    }

    func statfs() -> Glibc.statvfs {
        let usage = filesystem.spaceUsage()
        let blockSize = UInt64(HAMMER2.physicalBufferSize)
        var st = Glibc.statvfs()
        st.f_bsize = UInt(blockSize)
        st.f_frsize = UInt(blockSize)
        st.f_blocks = fsblkcnt_t(usage.totalBytes / blockSize)
        st.f_bfree = fsblkcnt_t(usage.freeBytes / blockSize)
        st.f_bavail = st.f_bfree
        // Inodes are allocated like any block: as many as 1 KiB pieces of free space.
        st.f_ffree = fsfilcnt_t(usage.freeBytes / UInt64(HAMMER2.inodeBytes))
        st.f_files = st.f_ffree + fsfilcnt_t(usage.inodeCount)
        st.f_favail = st.f_ffree
        st.f_namemax = UInt(HAMMER2.inodeMaxName - 1)
        st.f_flag = pfs.isReadOnly ? UInt(ST_RDONLY) : 0
        return st
    }
}

/// The daemon's use of the C library's allocator.
public enum DaemonMemory {
    /// One malloc arena for the whole process, set before any thread allocates. With one
    /// per thread (glibc's default, up to 8 per core) every request and worker thread kept
    /// its own free memory, and RSS grew to more than twice what was live
    /// (docs/benchmarks.md, "Memory"); allocation is not where the daemon's time goes.
    public static func limitArenas() {
        _ = h2_malloc_limit_arenas(1)
    }
}
