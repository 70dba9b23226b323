// The highest root generation this machine has seen of each encrypted PFS (issue 18,
// item 4). Someone who can rewrite the image can put back an older, authentic root (or the
// whole older image): nothing on the image can show that, so the counter's last value is
// kept off the image, here. Each line is "<id> <generation>", the id a keyed hash of the
// PFS's cluster id (PFSKeys.rollbackIdentifier), so the file names no volume or PFS.
//
// Where: $HAMMER2_STATE_DIR, else /var/lib/hammer2 for root, else $XDG_STATE_HOME/hammer2
// (~/.local/state/hammer2). Updates take an flock and replace the file by rename.

import Foundation
import Glibc

public struct RollbackState: Sendable {
    public let directory: String
    var file: String { directory + "/rollback" }

    public static func defaultDirectory() -> String {
        let environment = ProcessInfo.processInfo.environment
        if let chosen = environment["HAMMER2_STATE_DIR"], !chosen.isEmpty { return chosen }
        if geteuid() == 0 { return "/var/lib/hammer2" }
        if let xdg = environment["XDG_STATE_HOME"], xdg.hasPrefix("/") { return xdg + "/hammer2" }
        return (environment["HOME"] ?? "/tmp") + "/.local/state/hammer2"
    }

    public init(directory: String = RollbackState.defaultDirectory()) {
        self.directory = directory
    }

    /// The generation last recorded for `id`, nil if never.
    public func seen(_ id: String) -> UInt64? {
        entries()[id]
    }

    /// Records `generation` for `id`: the higher of it and what is there, or exactly it
    /// when `replacing` (a rollback the user accepted).
    public func record(_ id: String, _ generation: UInt64, replacing: Bool = false) throws {
        try withLock {
            var all = entries()
            if !replacing, let old = all[id], old >= generation { return }
            all[id] = generation
            try write(all)
        }
    }

    func entries() -> [String: UInt64] {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return [:] }
        var out: [String: UInt64] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count == 2, let value = UInt64(fields[1]) else { continue }
            out[String(fields[0])] = max(out[String(fields[0])] ?? 0, value)
        }
        return out
    }

    private func withLock(_ body: () throws -> Void) throws {
        try makeDirectory()
        let fd = open(directory + "/rollback.lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ToolError.failed("\(directory)/rollback.lock: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else { throw ToolError.failed("lock \(directory): \(String(cString: strerror(errno)))") }
        defer { flock(fd, LOCK_UN) }
        try body()
    }

    private func makeDirectory() throws {
        var st = stat()
        if lstat(directory, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFDIR, st.st_uid == geteuid() else {
                throw ToolError.failed("\(directory) is not a directory of this user's")
            }
            return
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
    }

    private func write(_ all: [String: UInt64]) throws {
        let text = all.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)\n" }.joined()
        let temporary = file + ".new"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ToolError.failed("\(temporary): \(String(cString: strerror(errno)))") }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == bytes.count, synced == 0, rename(temporary, file) == 0 else {
            unlink(temporary)
            throw ToolError.failed("\(file): \(String(cString: strerror(errno)))")
        }
    }
}
