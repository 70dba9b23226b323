// Where a mount's segment lives and how tools find it: /dev/shm/hammer2.<pid>.ktr (shared
// memory; /tmp when /dev/shm is missing), its "mount" text object naming the mount point.
// A clean unmount removes the file; a daemon that dies leaves it for a post-mortem, and the
// next mount keeps the newest few such files.

import Glibc

public enum TraceFiles {
    public static let prefix = "hammer2.", suffix = ".ktr"
    /// Segments of dead daemons kept for post-mortems; older ones go at the next mount.
    public static let keptDeadSegments = 8

    public static var directory: String {
        var st = stat()
        return stat("/dev/shm", &st) == 0 && st.st_mode & S_IFMT == S_IFDIR && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
    }

    public static func defaultPath(pid: Int32 = getpid()) -> String { "\(directory)/\(prefix)\(pid)\(suffix)" }

    /// Whether `path` is named as a default segment is.
    public static func isDefaultName(_ path: String) -> Bool {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        return name.hasPrefix(prefix) && name.hasSuffix(suffix)
            && Int32(name.dropFirst(prefix.count).dropLast(suffix.count)) != nil
    }

    /// Every default-named segment in the shared-memory directories, newest first.
    public static func segments() -> [(path: String, modified: Int)] {
        var found: [(path: String, modified: Int)] = []
        for dir in Set(["/dev/shm", "/tmp"]) {
            guard let handle = opendir(dir) else { continue }
            defer { closedir(handle) }
            while let entry = readdir(handle) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                let path = "\(dir)/\(name)"
                guard isDefaultName(path) else { continue }
                var st = stat()
                guard stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
                found.append((path, Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec)))
            }
        }
        return found.sorted { $0.modified > $1.modified }
    }

    /// Removes default-named segments of dead writers beyond the newest `keep`.
    public static func pruneDeadSegments(keep: Int = keptDeadSegments) {
        var dead = 0
        for segment in segments() {
            guard let reader = try? TraceReader(path: segment.path) else { continue }
            if reader.writerAlive { continue }
            dead += 1
            if dead > keep { unlink(segment.path) }
        }
    }
}

extension TraceSession {
    /// After fuse_daemonize: the daemon's pid changed; a default-named file follows it.
    /// Returns the segment's path now.
    @discardableResult
    public func adoptCurrentProcess() -> String {
        segment.setWriterPID(getpid())
        let current = segment.path
        guard TraceFiles.isDefaultName(current) else { return current }
        let renamed = TraceFiles.defaultPath()
        if renamed != current && rename(current, renamed) == 0 { segment.path = renamed }
        return segment.path
    }

    /// A clean end: a default-named file goes (a chosen path stays, as its owner chose it).
    public func finish() {
        segment.heartbeat()
        if TraceFiles.isDefaultName(segment.path) { unlink(segment.path) }
    }
}
