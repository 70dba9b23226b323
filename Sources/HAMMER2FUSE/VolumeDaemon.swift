// One daemon per volume (issue 22), as DragonFly has one hammer2_dev per device however many
// PFSes are mounted from it: the first mount_hammer2 of an image opens it, mounts its PFS and
// listens on a control socket beside the image lock; a later mount_hammer2 of another PFS
// of the same image (read-write or read-only) asks it, over that socket, to mount that PFS
// too. One freemap, one flush, one cache, one trace segment; the daemon ends when its last
// mount is gone, after the final flush (docs/architecture.md, "One daemon per volume").

import CFUSE3
import CMalloc
import Foundation
import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Trace
import Synchronization

/// What a mount_hammer2 asks the daemon of its volume for: one PFS on one mount point.
public struct AttachRequest: Codable, Sendable {
    public var label: String
    /// Absolute, symbolic links resolved by the client.
    public var mountpoint: String
    public var readOnly: Bool
    public var allowOther: Bool
    public var extraOptions: [String]
    public var maxThreads: UInt32
    public var readaheadKiB: Int
    public var writebackCache: Bool
    public var posixACL: Bool
    public var kernelDirtyMiB: Int
    /// The key of an encrypted PFS, read by the client (a key file's contents, or a
    /// passphrase from its terminal or standard input).
    public var keyFile: [UInt8]?
    public var passphrase: [UInt8]?
    public var requireEncryption: Bool
    public var rollbackAccepted: Bool
    /// A foreground client (-f): the mount ends when the client goes away, and the client
    /// waits for the mount to end, as a foreground first mount does.
    public var follow: Bool

    public init(label: String, mountpoint: String, options: MountOptions, readOnly: Bool, follow: Bool) {
        self.label = label
        self.mountpoint = mountpoint
        self.readOnly = readOnly
        allowOther = options.allowOther
        extraOptions = options.extraOptions
        maxThreads = options.maxThreads
        readaheadKiB = options.readaheadKiB
        writebackCache = options.writebackCache
        posixACL = options.posixACL
        kernelDirtyMiB = options.kernelDirtyMiB
        requireEncryption = false
        rollbackAccepted = false
        self.follow = follow
    }

    public func mountOptions(fsname: String) -> MountOptions {
        var options = MountOptions(mountpoint: mountpoint, fsname: fsname)
        options.allowOther = allowOther
        options.extraOptions = extraOptions
        options.maxThreads = maxThreads
        options.readaheadKiB = readaheadKiB
        options.writebackCache = writebackCache
        options.posixACL = posixACL
        options.kernelDirtyMiB = kernelDirtyMiB
        return options
    }
}

/// The daemon's answers, one JSON line each.
public struct AttachReply: Codable, Sendable {
    public enum Event: String, Codable, Sendable { case mounted, failed, ended }
    public var event: Event
    public var message: String?
}

public final class VolumeDaemon: @unchecked Sendable {
    public let filesystem: MutableFilesystem
    let logger: @Sendable (String) -> Void
    let flushInterval: Double
    let automaticReclaim: Bool
    let socketPath: String?
    /// Makes a server for an attach request (the mount tool's checks: PFS, key, rollback)
    /// and what to run when that mount ends.
    public typealias Attach = @Sendable (AttachRequest) throws -> (FUSEServer, @Sendable () -> Void)
    private let attach: Attach

    private struct State {
        var servers: [ObjectIdentifier: FUSEServer] = [:]
        var stopping = false
        var mountCount = 0
        /// Receives running through the control socket (DaemonReceive.swift): the daemon
        /// stays, even with no mount left, until they end.
        var receives = 0
    }
    private let state = Mutex(State())
    private let ended = DispatchSemaphore(value: 0)

    public init(filesystem: MutableFilesystem, flushInterval: Double, automaticReclaim: Bool, socketPath: String?,
                logger: @escaping @Sendable (String) -> Void, attach: @escaping Attach) {
        self.filesystem = filesystem
        self.flushInterval = flushInterval
        self.automaticReclaim = automaticReclaim
        self.socketPath = socketPath
        self.logger = logger
        self.attach = attach
    }

    /// Mounts `first`, detaches into the background unless `foreground`, serves it and
    /// every PFS mounted later through the control socket, and returns after the last
    /// mount ended and the final flush.
    public func run(first: FUSEServer, foreground: Bool) throws {
        try first.mount()
        guard fuse_daemonize(foreground ? 1 : 0) == 0 else {
            first.stop()
            first.run()
            throw FUSEServer.ServeError.session("cannot detach into the background")
        }
        // In the child of fuse_daemonize's fork this thread has its parent's cached thread
        // id: any Swift lock it would contend for (a lazy global's one-time initialization,
        // a Mutex) could never be handed to it and would hang the daemon, as it did in the
        // final flush. Everything runs on a fresh thread; this one only waits.
        let work = DetachedWork { [self] in try serveDetached(first: first) }
        let started = h2fuse_run_on_new_thread({ context in
            Unmanaged<DetachedWork>.fromOpaque(context!).takeUnretainedValue().run()
        }, Unmanaged.passUnretained(work).toOpaque())
        withExtendedLifetime(work) {}
        guard started == 0 else {
            first.stop()
            first.run()
            throw FUSEServer.ServeError.session("cannot start the daemon's thread: \(String(cString: strerror(started)))")
        }
        if let error = work.error { throw error }
    }

    /// `run` after detaching, on a thread of the daemon's own.
    private func serveDetached(first: FUSEServer) throws {
        guard h2fuse_stop_signals_install() == 0 else { throw FUSEServer.ServeError.session("cannot install signal handlers") }
        if let trace = Trace.session {
            logger("\(first.options.fsname): trace segment \(trace.adoptCurrentProcess()) (hammer2 ktrdump, hammer2 stat)")
            startHeartbeat(trace)
        }
        startSignalWatcher()
        startFlushTimer()
        if automaticReclaim && !filesystem.readOnly { filesystem.startReclaimer() }
        let listener = socketPath.flatMap { try? listen(at: $0) }
        serve(first, cleanup: {}, client: nil)
        ended.wait()  // the last mount is gone
        if let listener { close(listener) }
        if let socketPath { unlink(socketPath) }
        h2fuse_stop_signals_wake()
        filesystem.stopReclaimer()
        if !filesystem.readOnly {
            do {
                try filesystem.flushReclaimingIfFull()
            } catch {
                logger("final flush of \(first.options.fsname) failed: \(error)")
            }
        }
    }

    /// Serves a mounted server on its own thread; when it ends, its PFS is flushed and
    /// closed, and the daemon ends with its last one.
    @discardableResult
    private func serve(_ server: FUSEServer, cleanup: @escaping @Sendable () -> Void, client: Int32?) -> Bool {
        let registered = state.withLock { state -> Bool in
            guard !state.stopping else { return false }
            state.servers[ObjectIdentifier(server)] = server
            state.mountCount += 1
            return true
        }
        guard registered else {
            // The daemon is ending: this mount goes again at once.
            server.stop()
            server.run()
            cleanup()
            return false
        }
        let thread = Thread { [self] in
            server.run()
            if state.withLock({ $0.servers.count }) > 1 {
                do { try filesystem.closePFS(server.pfs.label) } catch {
                    logger("flush at the unmount of \(server.options.fsname) failed: \(error)")
                }
            }
            cleanup()
            if let client {
                // The thread watching a following client closes it once this wakes it.
                Self.send(AttachReply(event: .ended, message: nil), to: client)
                shutdown(client, Int32(SHUT_RDWR))
            }
            let last = state.withLock { state -> Bool in
                state.servers[ObjectIdentifier(server)] = nil
                guard state.servers.isEmpty && state.receives == 0 else { return false }
                state.stopping = true
                return true
            }
            if last { ended.signal() }
        }
        thread.start()
        return true
    }

    /// Unmounts everything (a stop signal).
    func stopAll() {
        let servers = state.withLock { state -> [FUSEServer] in
            state.stopping = true
            return Array(state.servers.values)
        }
        for server in servers { server.stop() }
    }

    private func startSignalWatcher() {
        Thread { [self] in
            while true {
                let signal = h2fuse_stop_signals_wait()
                if signal < 0 { return }
                if signal == 0 && state.withLock({ $0.stopping && $0.servers.isEmpty }) { return }
                if signal > 0 { stopAll() }
            }
        }.start()
    }

    /// Flushes every `flushInterval` seconds while mounted, as DragonFly's syncer does, and
    /// at once when a stream has filled a quarter of the dirty limit (their data is then written
    /// while they go on, instead of when they hit the limit); after a periodic flush, gives
    /// the memory freed back to the kernel (a flush frees the changes it wrote; reads free cache evictions
    /// and decoded inodes), so resident memory follows what is live rather than the peak.
    private func startFlushTimer() {
        Thread { [self] in
            while true {
                let asked = filesystem.waitForFlushRequest(seconds: flushInterval)
                if state.withLock({ $0.stopping }) { return }
                if !filesystem.readOnly {
                    do {
                        try filesystem.flushReclaimingIfFull()
                    } catch {
                        logger("periodic flush failed: \(error)")
                    }
                }
                // Not while a stream asks for flushes: the memory it freed would be faulted
                // in again at once (page faults were an eighth of a stream's processor time).
                if !asked { _ = h2_malloc_trim() }
            }
        }.start()
    }

    /// Once a second: the trace segment's gauges (memory, cache) and heartbeat, so readers
    /// see the daemon alive; a daemon stuck on its lock stops beating, which they show.
    private func startHeartbeat(_ trace: TraceSession) {
        let started = Trace.now
        Thread { [self] in
            var reportedLoss = false
            while !state.withLock({ $0.stopping }) {
                if !reportedLoss && TraceSegment.anyMappingLost {
                    reportedLoss = true
                    logger("trace segment \(trace.segment.path) was truncated by someone; events go on in memory only")
                }
                var gauges = TraceSession.Gauges()
                gauges.uptime = Trace.now &- started
                gauges.resident = FUSEServer.residentBytes()
                let cache = filesystem.reader.cache
                gauges.cacheBytes = UInt64(cache.cachedBytes)
                let (hits, misses) = cache.statistics
                gauges.cacheHits = UInt64(hits)
                gauges.cacheMisses = UInt64(misses)
                let memory = filesystem.memoryGauges
                gauges.dirtyBytes = UInt64(memory.dirtyBytes)
                gauges.inodesInMemory = UInt64(memory.inodes)
                trace.publish(gauges)
                Thread.sleep(forTimeInterval: 1)
            }
        }.start()
    }

    // MARK: The control socket

    /// Where the daemon of the volume whose first device is `device` listens: a directory
    /// only its user can enter (/run/hammer2 for root, else $XDG_RUNTIME_DIR/hammer2 or
    /// /tmp/hammer2-UID), named by the device's identity (st_dev, st_ino), so that every
    /// path naming the image finds the same daemon. Nil when there is no such directory.
    public static func socketPath(forDevice device: String, create: Bool) -> String? {
        var st = stat()
        guard stat(device, &st) == 0 else { return nil }
        let uid = geteuid()
        let base: String
        if uid == 0 {
            base = "/run/hammer2"
        } else if let runtime = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/") {
            base = runtime + "/hammer2"
        } else {
            base = "/tmp/hammer2-\(uid)"
        }
        if create && mkdir(base, 0o700) != 0 && errno != EEXIST { return nil }
        var dir = stat()
        // Ours, a directory (not a link to one), and closed to others: nobody else can plant
        // a socket there for a mount to talk to.
        guard lstat(base, &dir) == 0, dir.st_mode & S_IFMT == S_IFDIR, dir.st_uid == uid, dir.st_mode & 0o077 == 0 else { return nil }
        return base + "/volume-\(String(st.st_dev, radix: 16))-\(String(st.st_ino, radix: 16)).sock"
    }

    static func address(_ path: String) -> sockaddr_un? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    /// Binds the control socket (a stale one from a dead daemon is replaced: the volume lock
    /// this daemon holds says no other daemon owns the volume) and accepts on a thread.
    private func listen(at path: String) throws -> Int32 {
        guard var address = Self.address(path) else { throw EngineError.invalidArgument("socket path too long: \(path)") }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw EngineError.posix(errno, "socket") }
        unlink(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, chmod(path, 0o600) == 0, Glibc.listen(fd, 16) == 0 else {
            let code = errno
            close(fd)
            logger("control socket \(path): \(String(cString: strerror(code))); other PFSes of this volume cannot be mounted beside it")
            throw EngineError.posix(code, "control socket")
        }
        let owner = geteuid()
        Thread { [self] in
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if errno == EINTR { continue }
                    return  // closed at the end
                }
                _ = fcntl(client, F_SETFD, FD_CLOEXEC)
                var peer: UInt32 = 0
                guard h2fuse_peer_uid(client, &peer) == 0, peer == owner else {
                    Self.send(AttachReply(event: .failed, message: "the daemon of this volume belongs to another user"), to: client)
                    close(client)
                    continue
                }
                Thread { [self] in handle(client) }.start()
            }
        }.start()
        return fd
    }

    private func handle(_ client: Int32) {
        func refuse(_ message: String) {
            Self.send(AttachReply(event: .failed, message: message), to: client)
            close(client)
        }
        guard let line = Self.readLine(client) else { return refuse("unreadable request") }
        if state.withLock({ $0.stopping }) { return refuse("busy: the volume is being unmounted, try again") }
        if let receive = try? JSONDecoder().decode(ReceiveRequest.self, from: Data(line)) {
            let admitted = state.withLock { state -> Bool in
                guard !state.stopping else { return false }
                state.receives += 1
                return true
            }
            guard admitted else { return refuse("busy: the volume is being unmounted, try again") }
            handleReceive(receive, client: client)  // DaemonReceive.swift
            // The last mount went while it ran: the daemon ends now.
            let last = state.withLock { state -> Bool in
                state.receives -= 1
                guard state.servers.isEmpty && state.receives == 0 && !state.stopping else { return false }
                state.stopping = true
                return true
            }
            if last { ended.signal() }
            return
        }
        guard let request = try? JSONDecoder().decode(AttachRequest.self, from: Data(line)) else {
            return refuse("unreadable request")
        }
        let server: FUSEServer
        let cleanup: @Sendable () -> Void
        do {
            (server, cleanup) = try attach(request)
        } catch {
            return refuse("\(error)")
        }
        do {
            try server.mount()
        } catch {
            // The PFS was opened for this mount: closed again, so a later attempt may mount it.
            try? filesystem.closePFS(request.label)
            cleanup()
            return refuse("\(error)")
        }
        guard serve(server, cleanup: cleanup, client: request.follow ? client : nil) else {
            return refuse("busy: the volume is being unmounted, try again")
        }
        Trace.session?.addMount(source: server.options.fsname, mountpoint: request.mountpoint, pfs: request.label)
        logger("\(server.options.fsname) mounted on \(request.mountpoint) by this volume's daemon")
        Self.send(AttachReply(event: .mounted, message: nil), to: client)
        if request.follow {
            // A foreground client gone (killed, interrupted) takes its mount with it.
            Thread {
                var byte: UInt8 = 0
                while recv(client, &byte, 1, 0) > 0 {}
                server.stop()
                close(client)
            }.start()
        } else {
            close(client)
        }
    }

    static func send(_ reply: AttachReply, to fd: Int32) {
        guard var data = try? JSONEncoder().encode(reply) else { return }
        data.append(UInt8(ascii: "\n"))
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n <= 0 { return }
                offset += n
            }
        }
    }

    static func readLine(_ fd: Int32) -> [UInt8]? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while line.count < 1 << 20 {
            let n = recv(fd, &byte, 1, 0)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return nil }
            if byte == UInt8(ascii: "\n") { return line }
            line.append(byte)
        }
        return nil
    }

    // MARK: The client side

    public enum AttachOutcome {
        /// No daemon serves the volume: mount it yourself.
        case noDaemon
        /// Mounted; the connection stays open for a following client.
        case mounted(connection: Int32)
        case failed(String)
    }

    /// Asks the daemon of the volume at `socketPath`, if one listens, to mount a PFS.
    public static func requestAttach(_ request: AttachRequest, socketPath: String) -> AttachOutcome {
        guard var address = address(socketPath) else { return .noDaemon }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .noDaemon }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0, var data = try? JSONEncoder().encode(request) else {
            close(fd)
            return .noDaemon
        }
        data.append(UInt8(ascii: "\n"))
        let sent = data.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == data.count, let line = readLine(fd),
              let reply = try? JSONDecoder().decode(AttachReply.self, from: Data(line)) else {
            close(fd)
            return .failed("the daemon of this volume did not answer")
        }
        switch reply.event {
        case .mounted: return .mounted(connection: fd)
        case .failed, .ended:
            close(fd)
            return .failed(reply.message ?? "refused")
        }
    }

    /// For a following client: waits until the daemon says the mount ended (or the daemon
    /// is gone). Returns whether it ended normally.
    public static func waitForEnd(_ connection: Int32) -> Bool {
        defer { close(connection) }
        guard let line = readLine(connection), let reply = try? JSONDecoder().decode(AttachReply.self, from: Data(line)) else {
            return false
        }
        return reply.event == .ended
    }
}

/// A throwing body run on another thread, and what it threw.
private final class DetachedWork: @unchecked Sendable {
    private let body: () throws -> Void
    /// Set by `run` before its thread ends; read after the join.
    private(set) var error: Error?

    init(_ body: @escaping () throws -> Void) { self.body = body }

    func run() {
        do { try body() } catch { self.error = error }
    }
}
