// Access to the reference images in ../shared/fixtures (made by DragonFly's own HAMMER2
// code) and their manifests. Images are decompressed once into a cache folder and reused;
// a missing fixtures folder is a loud failure naming the path that was searched.

import Foundation

public struct FixtureManifest: Decodable, Sendable {
    public struct Makefs: Decodable, Sendable {
        public var options: String
        public var populated_pfs: String
        public var offline_ops_after_populate: [String]
    }

    public struct PFS: Decodable, Sendable {
        public var name: String
        public var pfs_type: String
        public var pfs_subtype: String
        public var inode_count: Int
        public var orphan_inums: [UInt64]
        public var entries: [Entry]
    }

    public struct Entry: Decodable, Sendable {
        public var path: String?
        public var path_hex: String?
        public var type: String
        public var mode: UInt32
        public var uid: UInt32
        public var gid: UInt32
        public var size: UInt64
        public var mtime_us: UInt64
        public var nlink: UInt64
        public var inum: UInt64
        public var sha256: String?
        public var target: String?
        public var target_hex: String?

        /// The raw bytes of the path (path_hex when the name is not UTF-8).
        public var pathBytes: [UInt8] {
            if let path { return Array(path.utf8) }
            return hexDecode(path_hex ?? "")
        }

        public var targetBytes: [UInt8]? {
            if let target { return Array(target.utf8) }
            if let target_hex { return hexDecode(target_hex) }
            return nil
        }
    }

    public var image: String
    public var compressed_file: String
    public var image_size: UInt64
    public var makefs: Makefs
    public var pfs: [PFS]
}

func hexDecode(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var chars = Array(s.utf8)[...]
    while chars.count >= 2 {
        out.append(UInt8(String(decoding: chars.prefix(2), as: UTF8.self), radix: 16) ?? 0)
        chars = chars.dropFirst(2)
    }
    return out
}

public enum FixtureError: Error, CustomStringConvertible {
    case missingFolder(String)
    case decompressionFailed(String, Int32)

    public var description: String {
        switch self {
        case let .missingFolder(path):
            return "fixtures folder not found at \(path) (set HAMMER2_FIXTURES to override); "
                + "the test suite needs DragonFly-made images and will not pass without them"
        case let .decompressionFailed(name, status): return "zstd -d of \(name) failed with status \(status)"
        }
    }
}

public enum Fixtures {
    /// The repository root, found from this source file's location.
    public static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// ../shared/fixtures from the repository root, or $HAMMER2_FIXTURES.
    public static func folder() throws -> URL {
        let path: String
        if let override = ProcessInfo.processInfo.environment["HAMMER2_FIXTURES"] {
            path = override
        } else {
            path = packageRoot.appendingPathComponent("../shared/fixtures").standardizedFileURL.path
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw FixtureError.missingFolder(path)
        }
        return URL(fileURLWithPath: path)
    }

    /// Every fixture name (NAME of NAME.manifest.json), sorted.
    public static func names() throws -> [String] {
        let folder = try folder()
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path)
        let names = files.filter { $0.hasSuffix(".manifest.json") }.map { String($0.dropLast(".manifest.json".count)) }
        guard !names.isEmpty else { throw FixtureError.missingFolder(folder.path + " (no manifests in it)") }
        return names.sorted()
    }

    public static func manifest(_ name: String) throws -> FixtureManifest {
        let url = try folder().appendingPathComponent("\(name).manifest.json")
        return try JSONDecoder().decode(FixtureManifest.self, from: Data(contentsOf: url))
    }

    /// Where decompressed images are kept between runs.
    public static var cacheFolder: URL {
        let base = ProcessInfo.processInfo.environment["HAMMER2_FIXTURE_CACHE"]
            ?? (NSTemporaryDirectory() + "hammer2-fixture-cache")
        return URL(fileURLWithPath: base)
    }

    /// The decompressed image of fixture `name` (sparse), decompressing it on first use.
    public static func image(_ name: String) throws -> URL {
        let manifest = try manifest(name)
        let source = try folder().appendingPathComponent(manifest.compressed_file)
        try FileManager.default.createDirectory(at: cacheFolder, withIntermediateDirectories: true)
        let target = cacheFolder.appendingPathComponent(manifest.image)
        let lock = open(cacheFolder.appendingPathComponent(".lock").path, O_CREAT | O_RDWR, 0o644)
        if lock >= 0 { flock(lock, LOCK_EX) }
        defer { if lock >= 0 { flock(lock, LOCK_UN); close(lock) } }
        // The stamp records the image's size and modification time when it was
        // decompressed: an image some test or tool wrote to since is decompressed again.
        let stampPath = target.path + ".stamp"
        if let stamp = try? String(contentsOfFile: stampPath, encoding: .utf8), stamp == Self.stamp(target.path),
           Self.stamp(target.path).hasPrefix("\(manifest.image_size) ") {
            return target
        }
        let partial = target.path + ".partial"
        let status = try run("/usr/bin/env", ["zstd", "-d", "-q", "-f", "--sparse", source.path, "-o", partial])
        guard status == 0 else { throw FixtureError.decompressionFailed(name, status) }
        guard rename(partial, target.path) == 0 else {
            throw FixtureError.decompressionFailed(name + " (rename: errno \(errno))", -1)
        }
        try Self.stamp(target.path).write(toFile: stampPath, atomically: true, encoding: .utf8)
        return target
    }

    /// "SIZE MTIME_SEC.MTIME_NSEC" of a file, or "" if it does not exist.
    static func stamp(_ path: String) -> String {
        var st = stat()
        guard stat(path, &st) == 0 else { return "" }
        return "\(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
    }

    /// Runs a program and waits for it; returns its exit status.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}
