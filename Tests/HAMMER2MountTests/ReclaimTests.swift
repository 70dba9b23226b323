// Space comes back by itself (issue 20, docs/reclaim.md): overwrites and deletes never fill
// a volume whose live data fits, nobody running bulkfree; a volume full of live data says
// ENOSPC cleanly, lets rm work at once and takes new data again after it; snapshots keep
// what they hold through background passes.

import Foundation
import HAMMER2TestSupport
import XCTest

final class ReclaimTests: XCTestCase {
    func flush(_ root: String) {
        let fd = open(root, O_RDONLY | O_DIRECTORY)
        XCTAssertEqual(fsync(fd), 0)
        close(fd)
    }

    /// Bytes the volume reports in use (df: the reserve counts as used, as on DragonFly).
    func usedBytes(_ root: String) -> UInt64 {
        var st = statvfs()
        XCTAssertEqual(statvfs(root, &st), 0)
        return UInt64(st.f_blocks - st.f_bfree) * UInt64(st.f_frsize)
    }

    func writeAll(_ fd: Int32, _ bytes: [UInt8], at offset: off_t) -> Int32 {
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, offset) }
        return n == bytes.count ? 0 : errno
    }

    func statistics(_ root: String) throws -> String {
        try Binaries.run("hammer2", ["stat", "-w", "-n", "1", root]).stdout
    }

    /// A file overwritten in place many times the volume's size, at random and whole: no
    /// write or fsync fails, and used space stays under twice the live data.
    func testOverwritesNeverFillTheVolume() throws {
        let volume = try ScratchVolume(size: "384m")
        var random = SplitMix64(seed: 20)
        let live = 64 << 20
        let fd = open(volume.path("database"), O_CREAT | O_RDWR, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var expected = random.bytes(live)
        XCTAssertEqual(writeAll(fd, expected, at: 0), 0)
        XCTAssertEqual(fsync(fd), 0)
        // 1.5 GiB of random 64 KiB overwrites (each replaces a whole block), fsync every 64.
        for i in 0..<(24 * 1024) {
            let block = Int(random.next() % UInt64(live / 65_536))
            let data = random.bytes(65_536)
            expected.replaceSubrange(block * 65_536..<(block + 1) * 65_536, with: data)
            let status = writeAll(fd, data, at: off_t(block * 65_536))
            XCTAssertEqual(status, 0, "overwrite \(i): \(String(cString: strerror(status)))")
            if status != 0 { return }
            if i % 64 == 63 { XCTAssertEqual(fsync(fd), 0, "fsync after overwrite \(i): \(String(cString: strerror(errno)))") }
        }
        // Three sequential rewrites of the whole file.
        for pass in 0..<3 {
            expected = random.bytes(live)
            XCTAssertEqual(writeAll(fd, expected, at: 0), 0, "rewrite \(pass)")
            XCTAssertEqual(fsync(fd), 0, "fsync of rewrite \(pass)")
        }
        // Nobody runs bulkfree: the reclaimer brings used space under twice the live data
        // (the reserve, 1/20 of the volume, counts as used).
        let reserve = UInt64(384 << 20) / 20
        let limit = 2 * UInt64(live) + reserve
        let deadline = Date().addingTimeInterval(30)
        while usedBytes(volume.root) > limit && Date() < deadline {
            flush(volume.root)
            usleep(200_000)
        }
        XCTAssertLessThanOrEqual(usedBytes(volume.root), limit, "used space stays under twice the live data")
        let stats = try statistics(volume.root)
        XCTAssertTrue(stats.contains("automatic_bulkfree_passes"), stats)
        var buffer = [UInt8](repeating: 0, count: live)
        XCTAssertEqual(buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, live, 0) }, live)
        XCTAssertTrue(buffer == expected, "the file's content")
        close(fd)
        try volume.verifyAfterRemount()
    }

    /// Filled with live data: ENOSPC, a clean volume, rm at once, and new data after it
    /// without anyone running bulkfree.
    func testFullVolumeTakesDataAgainAfterRm() throws {
        let volume = try ScratchVolume(size: "128m")
        var random = SplitMix64(seed: 21)
        var written: [String] = []
        var sawENOSPC = false
        for i in 0..<100 {
            let fd = open(volume.path("f\(i)"), O_CREAT | O_WRONLY, 0o644)
            let status = writeAll(fd, random.bytes(4 << 20), at: 0)
            let synced = status == 0 ? (fsync(fd) == 0 ? 0 : errno) : status
            close(fd)
            if synced != 0 {
                XCTAssertEqual(synced, ENOSPC, "a full volume says ENOSPC, not \(String(cString: strerror(synced)))")
                sawENOSPC = true
                XCTAssertEqual(unlink(volume.path("f\(i)")), 0)
                break
            }
            written.append("f\(i)")
        }
        XCTAssertTrue(sawENOSPC)
        XCTAssertGreaterThan(written.count, 15)
        // rm works on the full volume (the reserve takes the flush of the deletion)...
        let removed = written.prefix(written.count / 2)
        for name in removed { XCTAssertEqual(unlink(volume.path(name)), 0, name) }
        flush(volume.root)
        // ...and the space comes back for new data, nobody running bulkfree.
        for i in 0..<removed.count {
            let fd = open(volume.path("again\(i)"), O_CREAT | O_WRONLY, 0o644)
            XCTAssertEqual(writeAll(fd, random.bytes(4 << 20), at: 0), 0, "again\(i)")
            XCTAssertEqual(fsync(fd), 0, "fsync of again\(i): \(String(cString: strerror(errno)))")
            close(fd)
        }
        try volume.verifyAfterRemount()
    }

    /// Background passes while a snapshot holds the old version of a file being rewritten:
    /// the snapshot keeps it, the origin has the new one.
    func testSnapshotKeepsItsDataThroughBackgroundPasses() throws {
        let volume = try ScratchVolume(size: "256m")
        var random = SplitMix64(seed: 22)
        let original = random.bytes(24 << 20)
        let fd = open(volume.path("file"), O_CREAT | O_RDWR, 0o644)
        XCTAssertEqual(writeAll(fd, original, at: 0), 0)
        XCTAssertEqual(fsync(fd), 0)
        let snapshot = try Binaries.run("hammer2", ["snapshot", volume.root, "before"])
        XCTAssertEqual(snapshot.status, 0, snapshot.stderr)
        var current = original
        for _ in 0..<12 {  // 288 MiB of rewrites on a 256 MiB volume holding 48 MiB live
            current = random.bytes(24 << 20)
            XCTAssertEqual(writeAll(fd, current, at: 0), 0)
            XCTAssertEqual(fsync(fd), 0, String(cString: strerror(errno)))
        }
        close(fd)
        XCTAssertTrue(try statistics(volume.root).contains("automatic_bulkfree_passes"))
        // hammer2 -v pfs-list: the snapshot alone holds the original 24 MiB.
        let list = try Binaries.run("hammer2", ["-v", "-s", volume.root, "pfs-list"])
        XCTAssertEqual(list.status, 0, list.stderr)
        let held = list.stdout.split(separator: "\n").first { $0.hasPrefix("snapshots hold ") }
        let megabytes = held.flatMap { Double($0.dropFirst("snapshots hold ".count).prefix { $0 != "M" }) } ?? 0
        XCTAssertTrue((24.0...25.0).contains(megabytes), list.stdout)
        try volume.remount()
        XCTAssertEqual(sha256Hex(try Data(contentsOf: URL(fileURLWithPath: volume.path("file")))), sha256Hex(current))
        try volume.unmount()
        let snap = try MountedImage(volume.image.path + "@before")
        XCTAssertEqual(sha256Hex(try Data(contentsOf: URL(fileURLWithPath: snap.mountpoint.path + "/file"))), sha256Hex(original))
        try snap.unmount()
    }

    /// SIGKILL while a file is overwritten fast enough that background passes run all the
    /// time: each round the image passes fsck, and every block of the file holds what the
    /// last fsync saw or something written after it.
    func testKilledDuringBackgroundPassesKeepsWhatWasSynced() throws {
        let image = FileManager.default.temporaryDirectory.appendingPathComponent("hammer2-reclaim-kill-\(getpid()).img")
        defer { try? FileManager.default.removeItem(at: image) }
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "192m", image.path]).status, 0)
        var random = SplitMix64(seed: 25)
        let blocks = 384  // a 24 MiB file of 64 KiB blocks
        var synced: [String] = []  // per block: the sha256 its last fsync saw
        var acceptable: [Set<String>] = []  // per block: that, or what was written since
        for round in 0..<5 {
            let mount = try MountedImage("\(image.path)@DATA", options: ["-o", "rw,flush=1"])
            let path = mount.mountpoint.path + "/database"
            let fd = open(path, O_CREAT | O_RDWR, 0o644)
            XCTAssertGreaterThanOrEqual(fd, 0)
            if round == 0 {
                for _ in 0..<blocks {
                    let data = random.bytes(65_536)
                    XCTAssertEqual(writeAll(fd, data, at: off_t(synced.count * 65_536)), 0)
                    synced.append(sha256Hex(data))
                }
                XCTAssertEqual(fsync(fd), 0)
                acceptable = synced.map { [$0] }
            }
            let pid = mount.daemonPID
            let killAfter = Double(random.next() % 2000) / 1000 + 0.5
            let killer = Thread {
                Thread.sleep(forTimeInterval: killAfter)
                Glibc.kill(pid, SIGKILL)
            }
            killer.start()
            var pending: [Int: String] = [:]
            writing: for i in 0... {
                let block = Int(random.next() % UInt64(blocks))
                let data = random.bytes(65_536)
                acceptable[block].insert(sha256Hex(data))
                pending[block] = sha256Hex(data)
                if writeAll(fd, data, at: off_t(block * 65_536)) != 0 { break writing }
                if i % 16 == 15 {
                    guard fsync(fd) == 0 else { break writing }
                    for (block, digest) in pending { synced[block] = digest; acceptable[block] = [digest] }
                    pending = [:]
                }
            }
            close(fd)
            while !mount.isStopped { usleep(10_000) }
            try mount.unmount()
            let fsck = try Binaries.run("fsck_hammer2", [image.path])
            XCTAssertEqual(fsck.status, 0, "round \(round): fsck after the kill:\n\(fsck.stdout)\n\(fsck.stderr)")
            let check = try MountedImage("\(image.path)@DATA")
            let data = [UInt8](FileManager.default.contents(atPath: check.mountpoint.path + "/database") ?? Data())
            XCTAssertEqual(data.count, blocks * 65_536, "round \(round)")
            if data.count == blocks * 65_536 {
                for block in 0..<blocks {
                    let digest = sha256Hex(Array(data[block * 65_536..<(block + 1) * 65_536]))
                    XCTAssertTrue(acceptable[block].contains(digest), "round \(round): block \(block) holds neither its synced nor a later content")
                    // What survived is the new baseline: fsynced or not, it is what the file holds now.
                    synced[block] = digest
                    acceptable[block] = [digest]
                }
            }
            try check.unmount()
        }
    }
}
