// The union's FUSE side: the same session set-up and request loop as mount_hammer2's
// (CFUSE3: libfuse's low-level API, our worker pool, FUSE over io_uring when the kernel
// offers it), with the union's operation table (UnionOperations.swift).

import CFUSE3
import Foundation
import Glibc
import Synchronization

public final class UnionServer: Sendable {
    public let filesystem: UnionFilesystem
    public let mountpoint: String
    let fuseOptions: [String]
    let debug: Bool
    let threads: UInt32
    let logger: @Sendable (String) -> Void
    private let session = Mutex<SessionPointer?>(nil)
    /// The session's /dev/fuse descriptor (passthrough's ioctls), -1 before mount.
    let device = Atomic<Int32>(-1)
    /// Opens whose reads and writes the kernel passes to the layer file, and the reads and
    /// writes the daemon served itself (said at unmount).
    let passthroughOpens = Atomic<Int>(0)
    let servedReads = Atomic<Int>(0)
    let servedWrites = Atomic<Int>(0)

    struct SessionPointer: @unchecked Sendable {
        let pointer: OpaquePointer
        let loop: OpaquePointer
    }

    public init(filesystem: UnionFilesystem, mountpoint: String, fuseOptions: [String], debug: Bool = false,
                threads: UInt32 = UInt32(max(2, 2 * ProcessInfo.processInfo.activeProcessorCount)),
                logger: @escaping @Sendable (String) -> Void) {
        self.filesystem = filesystem
        self.mountpoint = mountpoint
        self.fuseOptions = fuseOptions
        self.debug = debug
        self.threads = threads
        self.logger = logger
    }

    public struct MountError: Error, CustomStringConvertible {
        public let description: String
    }

    public func mount() throws {
        let source = filesystem.configuration.lowers.first ?? "unionfs"
        var options = [filesystem.configuration.readOnly ? "ro" : "rw", "fsname=\(source)", "subtype=unionfs", "default_permissions"]
        options += fuseOptions
        var arguments = ["mount_unionfs", "-o", options.joined(separator: ",")]
        if debug { arguments.append("-d") }
        var cArguments: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        defer { cArguments.forEach { free($0) } }
        var operations = UnionOperations.table()
        let userdata = Unmanaged.passUnretained(self).toOpaque()
        let created: OpaquePointer? = cArguments.withUnsafeMutableBufferPointer { argv in
            var args = h2fuse_args(Int32(arguments.count), argv.baseAddress)
            defer { fuse_opt_free_args(&args) }
            return fuse_session_new(&args, &operations, MemoryLayout<fuse_lowlevel_ops>.size, userdata)
        }
        guard let created else { throw MountError(description: "cannot create the FUSE session (bad options?)") }
        guard let resolved = realpath(mountpoint, nil) else {
            fuse_session_destroy(created)
            throw MountError(description: "\(mountpoint): \(String(cString: strerror(errno)))")
        }
        defer { free(resolved) }
        guard fuse_session_mount(created, resolved) == 0 else {
            fuse_session_destroy(created)
            throw MountError(description: "cannot mount on \(mountpoint) (is /dev/fuse available and the mount point a directory?)")
        }
        guard h2fuse_take_over_io(created) == 0, let loop = h2fuse_loop_new(created, threads, 2, nil, nil, userdata) else {
            fuse_session_unmount(created)
            fuse_session_destroy(created)
            throw MountError(description: "cannot set up the request loop of \(mountpoint)")
        }
        if filesystem.configuration.passthrough { h2fuse_want_passthrough(created) }
        device.store(fuse_session_fd(created), ordering: .releasing)
        session.withLock { $0 = SessionPointer(pointer: created, loop: loop) }
    }

    /// The FUSE device when the kernel took passthrough at INIT, else nil.
    var passthroughDevice: Int32? {
        let fd = device.load(ordering: .acquiring)
        return fd >= 0 && h2fuse_passthrough_negotiated(fd) != 0 ? fd : nil
    }

    /// Serves until unmounted (or `stop`).
    public func run() {
        guard let current = session.withLock({ $0 }) else { return }
        _ = h2fuse_loop_run(current.loop)
        logger("\(mountpoint): \(passthroughOpens.load(ordering: .relaxed)) opens passed through to their layer file, "
               + "\(servedReads.load(ordering: .relaxed)) reads and \(servedWrites.load(ordering: .relaxed)) writes served by the daemon")
        session.withLock { $0 = nil }
        fuse_session_unmount(current.pointer)
        fuse_session_destroy(current.pointer)
        h2fuse_loop_free(current.loop)
    }

    /// Serves (until unmounted or a stop signal) on a thread started now: after
    /// fuse_daemonize's fork the calling thread keeps its parent's thread id in the Swift
    /// runtime's lock caches, and any lock it contended for could hang. False when the
    /// thread could not start.
    public func serveOnNewThread() -> Bool {
        let started = h2fuse_run_on_new_thread({ context in
            Unmanaged<UnionServer>.fromOpaque(context!).takeUnretainedValue().serveUntilStopped()
        }, Unmanaged.passUnretained(self).toOpaque())
        return started == 0
    }

    /// `run`, with SIGTERM/SIGINT/SIGHUP unmounting.
    func serveUntilStopped() {
        guard h2fuse_stop_signals_install() == 0 else { return run() }
        let watcher = Thread { [self] in
            while true {
                let signal = h2fuse_stop_signals_wait()
                if signal > 0 { stop() } else { return }
            }
        }
        watcher.start()
        run()
        h2fuse_stop_signals_wake()
    }

    public func stop() {
        session.withLock { current in
            if let current { h2fuse_loop_stop(current.loop) }
        }
    }
}
