// The union's FUSE side: the same session set-up and request loop as mount_hammer2's
// (FUSEServing over CFUSE3: libfuse's low-level API, our worker pool, FUSE over io_uring
// when the kernel offers it), with the union's operation table (UnionOperations.swift).

import CFUSE3
import FUSEServing
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
    private let fuse = FUSESession()
    /// The session's /dev/fuse descriptor (passthrough's ioctls), -1 before mount.
    let device = Atomic<Int32>(-1)
    /// Opens whose reads and writes the kernel passes to the layer file, and the reads and
    /// writes the daemon served itself (said at unmount).
    let passthroughOpens = Atomic<Int>(0)
    let servedReads = Atomic<Int>(0)
    let servedWrites = Atomic<Int>(0)

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
        let options = [filesystem.configuration.readOnly ? "ro" : "rw", "fsname=\(source)", "subtype=unionfs", "default_permissions"]
            + fuseOptions
        guard let resolved = realpath(mountpoint, nil) else {
            throw MountError(description: "\(mountpoint): \(String(cString: strerror(errno)))")
        }
        defer { free(resolved) }
        let userdata = Unmanaged.passUnretained(self).toOpaque()
        do {
            try fuse.mount(program: "mount_unionfs", options: options, debug: debug, operations: UnionOperations.table(),
                           userdata: userdata, mountpoint: String(cString: resolved)) { session in
                h2fuse_loop_new(session, threads, 2, nil, nil, userdata)
            }
        } catch let failure as FUSESession.Failure {
            throw MountError(description: failure.description)
        }
        guard let current = fuse.current else { return }
        if filesystem.configuration.passthrough { h2fuse_want_passthrough(current.session) }
        device.store(fuse_session_fd(current.session), ordering: .releasing)
    }

    /// The FUSE device when the kernel took passthrough at INIT, else nil.
    var passthroughDevice: Int32? {
        let fd = device.load(ordering: .acquiring)
        return fd >= 0 && h2fuse_passthrough_negotiated(fd) != 0 ? fd : nil
    }

    /// Serves until unmounted (or `stop`).
    public func run() {
        fuse.run()
        logger("\(mountpoint): \(passthroughOpens.load(ordering: .relaxed)) opens passed through to their layer file, "
               + "\(servedReads.load(ordering: .relaxed)) reads and \(servedWrites.load(ordering: .relaxed)) writes served by the daemon")
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

    public func stop() { fuse.stop() }
}
