// A fresh HAMMER2 image made by our newfs_hammer2, mounted read-write, and the end-of-test
// ritual every writing test follows: unmount, fsck_hammer2, mount again read-only and
// compare the whole tree with what was there before the unmount.

import Foundation
import XCTest

/// What a tree looked like: per relative path, type, mode, owner, size, links, content hash.
public struct TreeSnapshot: Equatable, CustomStringConvertible {
    public struct Entry: Equatable {
        public var type: mode_t
        public var mode: mode_t
        public var uid: uid_t
        public var gid: gid_t
        public var size: off_t
        public var nlink: nlink_t
        public var mtime: Int
        public var rdev: dev_t
        public var content: String  // sha256 of files, target of symlinks
    }

    public var entries: [String: Entry]

    /// Walks `root` with lstat, reading every file.
    public static func take(_ root: String) throws -> TreeSnapshot {
        var entries: [String: Entry] = [:]
        func visit(_ relative: String) throws {
            let path = relative.isEmpty ? root : root + "/" + relative
            var st = stat()
            guard lstat(path, &st) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
            var content = ""
            switch st.st_mode & S_IFMT {
            case S_IFREG: content = sha256Hex(try Data(contentsOf: URL(fileURLWithPath: path)))
            case S_IFLNK: content = try FileManager.default.destinationOfSymbolicLink(atPath: path)
            default: break
            }
            entries[relative.isEmpty ? "/" : relative] = Entry(
                type: st.st_mode & S_IFMT, mode: st.st_mode & 0o7777, uid: st.st_uid, gid: st.st_gid,
                size: st.st_mode & S_IFMT == S_IFDIR ? 0 : st.st_size, nlink: st.st_nlink, mtime: st.st_mtim.tv_sec,
                rdev: st.st_rdev, content: content)
            if st.st_mode & S_IFMT == S_IFDIR {
                for name in try FileManager.default.contentsOfDirectory(atPath: path).sorted() {
                    try visit(relative.isEmpty ? name : relative + "/" + name)
                }
            }
        }
        try visit("")
        return TreeSnapshot(entries: entries)
    }

    public var description: String {
        entries.keys.sorted().map { "\($0): \(entries[$0]!)" }.joined(separator: "\n")
    }
}

public final class ScratchVolume {
    public let image: URL
    public let label: String
    public private(set) var mount: MountedImage?

    /// Formats a sparse image of `size` bytes with newfs_hammer2 and mounts PFS DATA
    /// read-write (plus `options`).
    /// With `encrypted`, PFS DATA is encrypted with a key file (newfs_hammer2 -k), which
    /// every mount and fsck of this volume is given.
    public init(size: String = "1g", newfsArguments: [String] = [], options: [String] = [], encrypted: Bool = false) throws {
        image = FileManager.default.temporaryDirectory.appendingPathComponent("hammer2-scratch-\(getpid())-\(UUID().uuidString.prefix(8)).img")
        label = "DATA"
        var newfs = ["-s", size] + newfsArguments
        if encrypted {
            let key = image.path + ".key"
            var random = SystemRandomNumberGenerator()
            try Data((0..<64).map { _ in UInt8.random(in: 0...255, using: &random) }).write(to: URL(fileURLWithPath: key))
            keyFile = key
            newfs += ["-k", key]
        }
        let made = try Binaries.run("newfs_hammer2", newfs + [image.path])
        guard made.status == 0 else { throw MountError.mountFailed(status: made.status, stderr: made.stderr) }
        mount = try MountedImage("\(image.path)@\(label)", options: ["-o", (["rw"] + options + keyOptions).joined(separator: ",")])
    }

    /// A union instead of a HAMMER2 volume: `image` is then a directory holding lower,
    /// upper and work, mounted with mount_unionfs (the POSIX suite runs on it too).
    public private(set) var isUnion = false

    public init(unionWithLower populate: (String) throws -> Void) throws {
        image = FileManager.default.temporaryDirectory.appendingPathComponent("unionfs-scratch-\(getpid())-\(UUID().uuidString.prefix(8))")
        label = ""
        isUnion = true
        for layer in ["lower", "upper", "work"] {
            try FileManager.default.createDirectory(atPath: image.path + "/" + layer, withIntermediateDirectories: true)
        }
        try populate(image.path + "/lower")
        mount = try mountUnion()
    }

    public var unionOptions: String {
        "lowerdir=\(image.path)/lower,upperdir=\(image.path)/upper,workdir=\(image.path)/work"
    }

    func mountUnion() throws -> MountedImage {
        try MountedImage(program: "mount_unionfs", arguments: ["-o", unionOptions], what: unionOptions)
    }

    /// The key file of an encrypted volume.
    public private(set) var keyFile: String?
    var keyOptions: [String] { keyFile.map { ["keyfile=\($0)"] } ?? [] }

    deinit {
        try? mount?.unmount()
        try? FileManager.default.removeItem(at: image)  // an image file, or a union's directory
        if let keyFile { try? FileManager.default.removeItem(atPath: keyFile) }
    }

    public var root: String { mount!.mountpoint.path }

    public func path(_ relative: String) -> String { root + "/" + relative }

    /// Unmounts (the daemon flushes), requires fsck_hammer2 to pass, mounts again
    /// read-only and checks the tree is exactly `expected` (default: what it was).
    public func verifyAfterRemount(expected: TreeSnapshot? = nil, file: StaticString = #filePath, line: UInt = #line) throws {
        let before = try expected ?? TreeSnapshot.take(root)
        try remount(readOnly: true)
        let after = try TreeSnapshot.take(root)
        if after != before {
            let keys = Set(before.entries.keys).union(after.entries.keys).sorted()
            let diff = keys.filter { before.entries[$0] != after.entries[$0] }.map {
                "\($0): before \(before.entries[$0].map { "\($0)" } ?? "-") after \(after.entries[$0].map { "\($0)" } ?? "-")"
            }
            XCTFail("tree changed across unmount/fsck/mount:\n" + diff.joined(separator: "\n"), file: file, line: line)
        }
    }

    /// Unmounts, runs fsck_hammer2 (which must pass) and mounts again.
    public func remount(readOnly: Bool = false, file: StaticString = #filePath, line: UInt = #line) throws {
        if isUnion {
            XCTAssertEqual(try mount!.unmount(), 0, "mount_unionfs exit status: \(mount!.log)", file: file, line: line)
            mount = try mountUnion()
            return
        }
        let status = try mount!.unmount()
        XCTAssertEqual(status, 0, "mount_hammer2 exit status: \(mount!.log)", file: file, line: line)
        let fsck = try Binaries.run("fsck_hammer2", (keyFile.map { ["-k", $0] } ?? []) + [image.path])
        XCTAssertEqual(fsck.status, 0, "fsck_hammer2 failed:\n\(fsck.stdout)\n\(fsck.stderr)", file: file, line: line)
        mount = try MountedImage("\(image.path)@\(label)", options: ["-o", ([readOnly ? "ro" : "rw"] + keyOptions).joined(separator: ",")])
    }

    public func unmount() throws { try mount?.unmount() }

    /// Mounts again read-write without fsck (after a test damaged the image on purpose).
    public func remountWithoutFsck() throws {
        try mount?.unmount()
        mount = try MountedImage("\(image.path)@\(label)", options: ["-o", (["rw"] + keyOptions).joined(separator: ",")])
    }
}
