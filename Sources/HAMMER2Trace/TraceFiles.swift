// Where a mount's segment lives and how tools find it: /dev/shm/hammer2.<pid>.ktr (shared
// memory; /tmp when /dev/shm is missing), its "mount" text object naming the mount point.
// A clean unmount removes the file; a daemon that dies leaves it for a post-mortem. The next
// mount of the same image, and `hammer2 cleanup`, keep only the newest few such files.
// The directories are shared with every local user: files are created exclusively, links
// are never followed, and only the caller's own files are ever reused or removed.

import Glibc

public enum TraceFiles {
    public static let prefix = "hammer2.", suffix = ".ktr"
    /// Segments of dead daemons kept for post-mortems (about 9 MiB of memory each): the
    /// newest two of each image, and at most eight in all.
    public static let keptDeadSegmentsPerImage = 2, keptDeadSegments = 8

    public static var directory: String {
        var st = stat()
        return stat("/dev/shm", &st) == 0 && st.st_mode & S_IFMT == S_IFDIR && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
    }

    /// Where tools look for default-named segments.
    public static let searched = ["/dev/shm", "/tmp"]

    public static func defaultPath(pid: Int32 = getpid()) -> String { "\(directory)/\(prefix)\(pid)\(suffix)" }

    /// Whether `path` is named as a default segment is: hammer2.<pid>.ktr, or
    /// hammer2.<pid>-<hex>.ktr when someone else's file held the first name.
    public static func isDefaultName(_ path: String) -> Bool {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        guard name.hasPrefix(prefix) && name.hasSuffix(suffix), name.count > prefix.count + suffix.count else { return false }
        let middle = name.dropFirst(prefix.count).dropLast(suffix.count)
        let parts = middle.split(separator: "-", omittingEmptySubsequences: false)
        guard let pid = parts.first, Int32(pid) != nil, parts.count <= 2 else { return false }
        return parts.count == 1 || (!parts[1].isEmpty && parts[1].allSatisfy(\.isHexDigit))
    }

    /// Runs `make` on the default path; when a file there may not be used (someone else's,
    /// a symbolic link: TraceError.unsafeFile), on a fresh name beside it, so that a file
    /// planted under the predictable name neither redirects nor disables the trace.
    public static func atDefaultPath<T>(_ make: (String) throws -> T) throws -> T {
        do {
            return try make(defaultPath())
        } catch TraceError.unsafeFile(let refused, let why) {
            var random = SystemRandomNumberGenerator()
            for _ in 0..<4 {
                let alternate = "\(directory)/\(prefix)\(getpid())-\(String(random.next() as UInt64, radix: 16))\(suffix)"
                do { return try make(alternate) } catch TraceError.unsafeFile { continue }
            }
            throw TraceError.unsafeFile(refused, why)
        }
    }

    /// Every default-named segment in the shared-memory directories, newest first.
    public static func segments(in directories: [String] = searched) -> [(path: String, modified: Int)] {
        var found: [(path: String, modified: Int)] = []
        for dir in Set(directories) {
            guard let handle = opendir(dir) else { continue }
            defer { closedir(handle) }
            while let entry = readdir(handle) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                let path = "\(dir)/\(name)"
                guard isDefaultName(path) else { continue }
                var st = stat()
                guard lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
                found.append((path, Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec)))
            }
        }
        return found.sorted { $0.modified > $1.modified }
    }

    /// Removes the caller's default-named segments of dead writers beyond the newest
    /// `perImage` of each image (the "source" their mount text names) and the newest
    /// `total` in all. Returns the paths removed. Other users' files are left alone.
    @discardableResult
    public static func pruneDeadSegments(perImage: Int = keptDeadSegmentsPerImage, total: Int = keptDeadSegments,
                                         in directories: [String] = searched) -> [String] {
        var kept = 0, keptOf: [String: Int] = [:], removed: [String] = []
        for segment in segments(in: directories) {
            var st = stat()
            guard lstat(segment.path, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_uid == geteuid(),
                  let reader = try? TraceReader(path: segment.path) else { continue }
            if reader.writerAlive { continue }
            let source = reader.text("mount")["source"] ?? ""
            if kept < total && keptOf[source, default: 0] < perImage {
                kept += 1
                keptOf[source, default: 0] += 1
            } else if unlink(segment.path) == 0 {
                removed.append(segment.path)
            }
        }
        return removed
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
        // link + unlink rather than rename: a file someone put under the new name stays
        // as it is (rename would replace it) and the segment keeps its old name.
        if renamed != current && link(current, renamed) == 0 {
            unlink(current)
            segment.path = renamed
        }
        return segment.path
    }

    /// A clean end: a default-named file goes (a chosen path stays, as its owner chose it).
    public func finish() {
        segment.heartbeat()
        if TraceFiles.isDefaultName(segment.path) { unlink(segment.path) }
    }
}
