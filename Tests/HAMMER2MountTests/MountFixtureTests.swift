// Every PFS of every DragonFly-made fixture, mounted through FUSE with the real
// mount_hammer2 and read with ordinary system calls, must match its manifest field by field.

import Crypto
import Foundation
import Glibc
import HAMMER2Engine
import HAMMER2TestSupport
import XCTest

final class MountFixtureTests: XCTestCase {
    struct Seen {
        var st: stat
        var sha256: String?
        var target: [UInt8]?
    }

    /// Walks a mounted tree with lstat/opendir/readdir/readlink/read.
    func walk(_ root: String) throws -> [[UInt8]: Seen] {
        var out: [[UInt8]: Seen] = [:]
        func visit(_ relative: [UInt8]) throws {
            let full = root + String(decoding: relative, as: UTF8.self)
            var st = stat()
            guard lstat(full, &st) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
            var seen = Seen(st: st)
            switch st.st_mode & S_IFMT {
            case S_IFREG:
                let fd = open(full, O_RDONLY)
                guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
                defer { close(fd) }
                var hasher = SHA256()
                var buffer = [UInt8](repeating: 0, count: 1 << 20)
                while true {
                    let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                    guard n >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
                    if n == 0 { break }
                    hasher.update(data: buffer[0..<n])
                }
                seen.sha256 = hasher.finalize().map { String(format: "%02x", $0) }.joined()
            case S_IFLNK:
                var buffer = [CChar](repeating: 0, count: 8192)
                let n = readlink(full, &buffer, buffer.count)
                guard n >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
                seen.target = buffer[0..<n].map { UInt8(bitPattern: $0) }
            default:
                break
            }
            out[relative.isEmpty ? Array("/".utf8) : relative] = seen
            if st.st_mode & S_IFMT == S_IFDIR {
                guard let dir = opendir(full) else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
                var names: [[UInt8]] = []
                while let entry = readdir(dir) {
                    let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                        Array(raw.prefix(while: { $0 != 0 }))
                    }
                    if name == Array(".".utf8) || name == Array("..".utf8) { continue }
                    names.append(name)
                }
                closedir(dir)
                XCTAssertEqual(names.count, Set(names).count, "duplicate names listed in \(full)")
                for name in names { try visit(relative + Array("/".utf8) + name) }
            }
        }
        try visit([])
        return out
    }

    func typeName(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: return "dir"
        case S_IFREG: return "file"
        case S_IFLNK: return "symlink"
        case S_IFIFO: return "fifo"
        case S_IFSOCK: return "socket"
        case S_IFCHR: return "cdev"
        case S_IFBLK: return "bdev"
        default: return "unknown"
        }
    }

    func testEveryFixtureMountsAndMatchesItsManifest() throws {
        for name in try Fixtures.names() {
            let manifest = try Fixtures.manifest(name)
            let image = try Fixtures.image(name)
            for pfs in manifest.pfs {
                let mount = try MountedImage("\(image.path)@\(pfs.name)")
                let seen = try walk(mount.mountpoint.path)
                let context = "\(name)@\(pfs.name)"
                XCTAssertEqual(Set(seen.keys), Set(pfs.entries.map(\.pathBytes)), "\(context): set of paths")
                for entry in pfs.entries {
                    guard let got = seen[entry.pathBytes] else { continue }
                    let at = "\(context):\(entry.path ?? "?")"
                    XCTAssertEqual(typeName(got.st.st_mode), entry.type, "\(at) type")
                    XCTAssertEqual(UInt32(got.st.st_mode) & 0o7777, entry.mode, "\(at) mode")
                    XCTAssertEqual(got.st.st_uid, entry.uid, "\(at) uid")
                    XCTAssertEqual(got.st.st_gid, entry.gid, "\(at) gid")
                    XCTAssertEqual(UInt64(got.st.st_size), entry.size, "\(at) size")
                    let mtime = UInt64(got.st.st_mtim.tv_sec) * 1_000_000 + UInt64(got.st.st_mtim.tv_nsec / 1000)
                    XCTAssertEqual(mtime, entry.mtime_us, "\(at) mtime")
                    XCTAssertEqual(UInt64(got.st.st_nlink), entry.nlink, "\(at) nlink")
                    XCTAssertEqual(UInt64(got.st.st_ino), entry.inum, "\(at) inode number")
                    if let sha = entry.sha256 { XCTAssertEqual(got.sha256, sha, "\(at) sha256") }
                    if let target = entry.targetBytes { XCTAssertEqual(got.target, target, "\(at) symlink target") }
                }
                XCTAssertEqual(try mount.unmount(), 0, "\(context): mount_hammer2 exit status after unmount")
            }
        }
    }

    func testStatfsReportsTheVolumeHeader() throws {
        let mount = try MountedImage("\(try Fixtures.image("sizes").path)@DATA")
        var st = statvfs()
        XCTAssertEqual(statvfs(mount.mountpoint.path, &st), 0)
        XCTAssertEqual(st.f_bsize, 65_536)
        XCTAssertEqual(st.f_flag & UInt(ST_RDONLY), UInt(ST_RDONLY))
        // sizes.img: allocator_size is just under 2 GiB.
        XCTAssertGreaterThan(UInt64(st.f_blocks) * 65_536, 1 << 30)
        XCTAssertLessThanOrEqual(UInt64(st.f_bfree), UInt64(st.f_blocks))
        // DragonFly reports the PFS root blockref's inode_count statistic.
        let pfs = try Filesystem(paths: [try Fixtures.image("sizes").path]).openPFS("DATA")
        XCTAssertEqual(UInt64(st.f_files - st.f_ffree), pfs.rootBref.statsInodeCount)
        XCTAssertGreaterThan(pfs.rootBref.statsInodeCount, 0)
        try mount.unmount()
    }

    func testWritesAreRefusedOnTheReadOnlyMount() throws {
        let mount = try MountedImage("\(try Fixtures.image("tiny").path)@DATA")
        let fd = open(mount.mountpoint.path + "/new-file", O_CREAT | O_WRONLY, 0o644)
        XCTAssertEqual(fd, -1)
        XCTAssertEqual(errno, EROFS)
        XCTAssertEqual(mkdir(mount.mountpoint.path + "/d", 0o755), -1)
        XCTAssertEqual(errno, EROFS)
        try mount.unmount()
    }

    func testDefaultLabelIsDATAAndUnknownLabelIsAClearError() throws {
        let image = try Fixtures.image("links")  // its PFS is ROOT, not DATA
        let result = try Binaries.run("mount_hammer2", ["-f", image.path, "/tmp"])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("PFS \"DATA\" not found"), result.stderr)
        XCTAssertTrue(result.stderr.contains("ROOT"), "should list the available labels: \(result.stderr)")
        let sizes = try MountedImage(try Fixtures.image("sizes").path)  // no @label: DATA
        var st = stat()
        XCTAssertEqual(stat(sizes.mountpoint.path + "/sizes/10MiB", &st), 0)
        try sizes.unmount()
    }

    func testReaddirCookiesStayValidAcrossALargeDirectory() throws {
        // Reading a 2000-entry directory with a tiny buffer forces hundreds of readdir
        // calls that each resume from a cookie; telldir/seekdir must return to the same entry.
        let mount = try MountedImage("\(try Fixtures.image("bigdir").path)@bigdir")
        let manifest = try Fixtures.manifest("bigdir").pfs.first { $0.name == "bigdir" }!
        var biggest: (String, Int) = ("", 0)
        var counts: [String: Int] = [:]
        for entry in manifest.entries {
            let path = entry.path!
            guard let slash = path.lastIndex(of: "/") else { continue }
            counts[String(path[..<slash]), default: 0] += 1
        }
        for (dir, n) in counts where n > biggest.1 { biggest = (dir, n) }
        let path = mount.mountpoint.path + biggest.0
        guard let dir = opendir(path) else { return XCTFail("opendir \(path)") }
        var names: [String] = []
        var positions: [(Int, String)] = []
        while true {
            let position = telldir(dir)
            guard let entry = readdir(dir) else { break }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            names.append(name)
            if names.count % 97 == 0 { positions.append((position, name)) }
        }
        XCTAssertEqual(names.count - 2, biggest.1, "all entries of \(biggest.0) listed")
        for (position, name) in positions {
            seekdir(dir, position)
            let entry = readdir(dir)
            let again = entry.map { e in withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) } }
            XCTAssertEqual(again, name, "seekdir to a saved cookie returns the same entry")
        }
        closedir(dir)
        try mount.unmount()
    }

    func testBackgroundMountDetachesAndUnmountsCleanly() throws {
        let image = try Fixtures.image("sizes").path
        let mountpoint = FileManager.default.temporaryDirectory.appendingPathComponent("hammer2-bg-\(getpid())")
        try FileManager.default.createDirectory(at: mountpoint, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: mountpoint) }
        let result = try Binaries.runDetaching("mount_hammer2", [image + "@DATA", mountpoint.path])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(MountedImage.isMountpoint(mountpoint.path), "mounted once the command returned")
        let data = try Data(contentsOf: mountpoint.appendingPathComponent("sizes/64KiB"))
        XCTAssertEqual(data.count, 65_536)
        XCTAssertEqual(try Fixtures.run("/usr/bin/env", ["fusermount3", "-u", mountpoint.path]), 0)
        let deadline = Date().addingTimeInterval(10)
        while MountedImage.isMountpoint(mountpoint.path) && Date() < deadline { usleep(20_000) }
        XCTAssertFalse(MountedImage.isMountpoint(mountpoint.path))
    }
}
