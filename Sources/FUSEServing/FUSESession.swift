// A libfuse low-level session on our request loop (CFUSE3: worker pool, FUSE over
// io_uring when the kernel offers it), mounted: the part mount_hammer2 and mount_unionfs
// share. Each brings its operation table and its loop's options; what they serve stays
// with them.

import CFUSE3
import Glibc
import Synchronization

public final class FUSESession: Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// libfuse's session and our loop, from `mount` until `run` ends.
    public struct Handles: @unchecked Sendable {
        public let session: OpaquePointer
        public let loop: OpaquePointer
    }

    private let handles = Mutex<Handles?>(nil)

    public init() {}

    /// Creates the session as `program -o options [-d]` would, mounts it on `mountpoint`
    /// (absolute: libfuse unmounts by the name it was given, after the daemon changed to
    /// "/"), takes over its I/O and makes the request loop with `makeLoop`. Resolve the
    /// mount point before: once mounted, any call on it would wait for this very daemon,
    /// which is not serving yet.
    public func mount(program: String, options: [String], debug: Bool, operations: fuse_lowlevel_ops,
                      userdata: UnsafeMutableRawPointer, mountpoint: String,
                      makeLoop: (OpaquePointer) -> OpaquePointer?) throws {
        var arguments = [program, "-o", options.joined(separator: ",")]
        if debug { arguments.append("-d") }
        var cArguments: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        defer { cArguments.forEach { free($0) } }
        var operations = operations
        let created: OpaquePointer? = cArguments.withUnsafeMutableBufferPointer { argv in
            var args = h2fuse_args(Int32(arguments.count), argv.baseAddress)
            defer { fuse_opt_free_args(&args) }
            return fuse_session_new(&args, &operations, MemoryLayout<fuse_lowlevel_ops>.size, userdata)
        }
        guard let created else { throw Failure(description: "cannot create the FUSE session (bad options?)") }
        guard fuse_session_mount(created, mountpoint) == 0 else {
            fuse_session_destroy(created)
            throw Failure(description: "cannot mount on \(mountpoint) (is /dev/fuse available and the mount point a directory?)")
        }
        // Our loop reads /dev/fuse itself (shims.c: the INIT reply is ours to extend).
        guard h2fuse_take_over_io(created) == 0, let loop = makeLoop(created) else {
            fuse_session_unmount(created)
            fuse_session_destroy(created)
            throw Failure(description: "cannot set up the request loop of \(mountpoint)")
        }
        handles.withLock { $0 = Handles(session: created, loop: loop) }
    }

    /// The session while it serves (notifications to the kernel), else nil.
    public var current: Handles? { handles.withLock { $0 } }

    /// Serves requests until the kernel ends the session (unmount) or `stop()`, then
    /// unmounts (if still mounted) and frees the session.
    public func run() {
        guard let current else { return }
        _ = h2fuse_loop_run(current.loop)
        handles.withLock { $0 = nil }
        fuse_session_unmount(current.session)
        fuse_session_destroy(current.session)
        h2fuse_loop_free(current.loop)
    }

    /// Ends `run()` from another thread (a signal, the daemon stopping).
    public func stop() {
        handles.withLock { current in
            if let current { h2fuse_loop_stop(current.loop) }
        }
    }
}
