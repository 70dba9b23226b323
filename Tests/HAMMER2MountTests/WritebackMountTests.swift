// The kernel's writeback cache on our mount (the default): write() fills the page cache
// and the daemon gets the data later, so what fsync, close and unmount promise must hold
// through it, and `-o nowriteback` must give back errors from write() itself.

import Foundation
import Glibc
import HAMMER2TestSupport
import Synchronization
import XCTest

final class WritebackMountTests: XCTestCase {
    /// Writes `bytes` at `offset` in full.
    static func pwriteAll(_ fd: Int32, _ bytes: [UInt8], at offset: Int) -> Bool {
        bytes.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) } == bytes.count
    }

    /// Eight threads overwrite 4 KiB blocks of one file at random (each thread its own
    /// blocks, several times over); after fsync returns the daemon is killed, and the file
    /// on the image must be exactly the last thing each thread wrote: fsync writes every
    /// dirty page of the kernel's cache back before the daemon flushes.
    func testFsyncWritesBackEveryConcurrentWriteBeforeAKill() throws {
        let image = FileManager.default.temporaryDirectory.appendingPathComponent("hammer2-wb-\(getpid()).img")
        defer { try? FileManager.default.removeItem(at: image) }
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", image.path]).status, 0)
        let mount = try MountedImage("\(image.path)@DATA", options: ["-o", "rw,flush=3600"])
        let path = mount.mountpoint.path + "/shared.bin"
        let blocks = 2048, threads = 8
        let fd = open(path, O_CREAT | O_RDWR, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(ftruncate(fd, off_t(blocks * 4096)), 0)
        let expected = Mutex([[UInt8]](repeating: [UInt8](repeating: 0, count: 4096), count: blocks))
        let failures = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            var random = SplitMix64(seed: UInt64(100 + t))
            let mine = stride(from: t, to: blocks, by: threads).map { $0 }
            for _ in 0..<(mine.count * 3) {
                let block = mine[Int(random.next() % UInt64(mine.count))]
                let data = random.bytes(4096)
                if !Self.pwriteAll(fd, data, at: block * 4096) { failures.withLock { $0 += 1 } }
                expected.withLock { $0[block] = data }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, 0)
        XCTAssertEqual(fsync(fd), 0)
        let want = expected.withLock { $0.flatMap { $0 } }
        Glibc.kill(mount.daemonPID, SIGKILL)
        while !mount.isStopped { usleep(10_000) }
        close(fd)
        try mount.unmount()
        let fsck = try Binaries.run("fsck_hammer2", [image.path])
        XCTAssertEqual(fsck.status, 0, fsck.stdout + fsck.stderr)
        let check = try MountedImage("\(image.path)@DATA")
        let got = FileManager.default.contents(atPath: check.mountpoint.path + "/shared.bin").map { [UInt8]($0) }
        XCTAssertEqual(got?.count, want.count)
        XCTAssertTrue(got == want, "the file after the kill differs from what was written before fsync")
        try check.unmount()
    }

    /// Data written and closed without fsync reaches the image at unmount, with the size and
    /// modification time the kernel kept for it; appends from two descriptors interleave.
    func testUnmountWritesBackClosedFilesWithTheirTimesAndAppends() throws {
        let volume = try ScratchVolume()
        var random = SplitMix64(seed: 31)
        let data = random.bytes(3 << 20 + 123)
        let fd = open(volume.path("plain.bin"), O_CREAT | O_WRONLY, 0o644)
        XCTAssertTrue(Self.pwriteAll(fd, data, at: 0))
        close(fd)
        let first = open(volume.path("log.txt"), O_CREAT | O_WRONLY | O_APPEND, 0o644)
        let second = open(volume.path("log.txt"), O_WRONLY | O_APPEND)
        var expectedLog: [UInt8] = []
        for i in 0..<200 {
            let line = Array("line \(i) from \(i % 2 == 0 ? "first" : "second")\n".utf8)
            XCTAssertEqual(line.withUnsafeBytes { write(i % 2 == 0 ? first : second, $0.baseAddress, $0.count) }, line.count)
            expectedLog += line
        }
        close(first)
        close(second)
        var before = stat()
        XCTAssertEqual(stat(volume.path("plain.bin"), &before), 0)
        XCTAssertEqual(Int(before.st_size), data.count)
        try volume.verifyAfterRemount()  // the whole tree, times included, equal after fsck
        XCTAssertEqual(FileManager.default.contents(atPath: volume.path("plain.bin")).map { [UInt8]($0) }, data)
        XCTAssertEqual(FileManager.default.contents(atPath: volume.path("log.txt")).map { [UInt8]($0) }, expectedLog)
        var after = stat()
        XCTAssertEqual(stat(volume.path("plain.bin"), &after), 0)
        XCTAssertEqual(after.st_mtim.tv_sec, before.st_mtim.tv_sec)
        XCTAssertEqual(after.st_mtim.tv_nsec / 1000, before.st_mtim.tv_nsec / 1000)
    }

    /// A full volume: without the writeback cache the error comes from write() or fsync
    /// (the daemon sees each write at once), with it from fsync (write() only fills the page
    /// cache). Either way nothing synced is lost. `-o nowriteback` really hands every
    /// write() to the daemon: the data is in its memory before write() returns.
    func testFullVolumeErrorsWithAndWithoutWritebackCache() throws {
        for options in [["nowriteback"], []] {
            let volume = try ScratchVolume(size: "96m", options: options + ["flush=3600"])
            var random = SplitMix64(seed: 37)
            var failedIn = ""
            var synced: [String: [UInt8]] = [:]
            fill: for i in 0..<100 {
                let data = random.bytes(2 << 20)
                let fd = open(volume.path("f\(i)"), O_CREAT | O_WRONLY, 0o644)
                XCTAssertGreaterThanOrEqual(fd, 0)
                defer { close(fd) }
                if !Self.pwriteAll(fd, data, at: 0) {
                    failedIn = "write"
                    XCTAssertEqual(errno, ENOSPC, "write: \(String(cString: strerror(errno)))")
                    break fill
                }
                if i == 0 && options == ["nowriteback"] {
                    let dump = try Binaries.run("hammer2", ["-s", volume.root, "dumpchain"])
                    XCTAssertEqual(dump.status, 0)
                    usleep(200_000)
                    let line = volume.mount!.log.split(separator: "\n").last { $0.contains("dumpchain: pfs DATA") } ?? ""
                    let dirty = line.split(separator: " ").first { $0.hasPrefix("dirty_bytes=") }.flatMap { Int($0.dropFirst(12)) }
                    XCTAssertEqual(dirty, data.count, "the daemon holds the written data before any fsync: \(line)")
                }
                if fsync(fd) != 0 {
                    failedIn = "fsync"
                    XCTAssertEqual(errno, ENOSPC, "fsync: \(String(cString: strerror(errno)))")
                    break fill
                }
                synced["f\(i)"] = data
            }
            if options.isEmpty {
                XCTAssertEqual(failedIn, "fsync", "with the writeback cache the error comes from fsync")
            } else {
                XCTAssertFalse(failedIn.isEmpty, "a 96 MiB volume must fill up")
            }
            XCTAssertGreaterThan(synced.count, 20)
            try volume.remount(readOnly: true)
            for (name, data) in synced {
                XCTAssertEqual(FileManager.default.contents(atPath: volume.path(name)).map { [UInt8]($0) }, data, name)
            }
        }
    }
}
