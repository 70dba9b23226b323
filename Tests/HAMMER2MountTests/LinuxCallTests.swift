// What real Linux programs call beyond classic POSIX, and the POSIX corners issue 19 found
// wrong: ENAMETOOLONG everywhere, parent directory times, times that must not move across
// a remount, times before 1970, SEEK_DATA/SEEK_HOLE, fallocate, renameat2 flags, O_TMPFILE,
// nlink 0 of an unlinked open file, st_blocks after fsync.

import Foundation
import HAMMER2TestSupport
import XCTest

/// Calls Glibc does not export to Swift (they need _GNU_SOURCE), looked up at run time.
enum GNUCalls {
    typealias Renameat2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32
    typealias Fallocate = @convention(c) (Int32, Int32, off_t, off_t) -> Int32
    static let renameat2Function = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "renameat2"), to: Renameat2.self)
    static let fallocateFunction = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "fallocate"), to: Fallocate.self)

    static func renameat2(_ from: String, _ to: String, _ flags: UInt32) -> Int32 {
        renameat2Function(AT_FDCWD, from, AT_FDCWD, to, flags)
    }

    static func fallocate(_ fd: Int32, _ mode: Int32, _ offset: off_t, _ length: off_t) -> Int32 {
        fallocateFunction(fd, mode, offset, length)
    }

    static let renameNoReplace: UInt32 = 1, renameExchange: UInt32 = 2, renameWhiteout: UInt32 = 4
    static let keepSize: Int32 = 1, punchHole: Int32 = 2, collapseRange: Int32 = 8, zeroRange: Int32 = 0x10
    static let seekData: Int32 = 3, seekHole: Int32 = 4
    static let tmpfile: Int32 = 0o20_200_000  // O_TMPFILE = __O_TMPFILE | O_DIRECTORY
}

class LinuxCallTests: MountTestCase {
    func newVolume(size: String) throws -> ScratchVolume { try ScratchVolume(size: size, encrypted: Self.encrypted) }

    func nanoseconds(_ ts: timespec) -> Int { ts.tv_sec * 1_000_000_000 + ts.tv_nsec }

    func status(_ path: String, line: UInt = #line) -> stat {
        var st = stat()
        XCTAssertEqual(lstat(path, &st), 0, "lstat \(path): \(String(cString: strerror(errno)))", line: line)
        return st
    }

    /// Every call that takes a name: ENAMETOOLONG for 256 bytes (HAMMER2's limit is 255),
    /// success for 255, and the usual ENOENT / ENOTDIR / EEXIST.
    func testEveryCallTakingANameReportsItsErrors() throws {
        let volume = try newVolume()
        let long = volume.path(String(repeating: "L", count: 256))
        let fits = volume.path(String(repeating: "F", count: 255))
        write(volume.path("file"), [1])
        XCTAssertEqual(mkdir(volume.path("dir"), 0o755), 0)
        var st = stat()
        var times = [timespec(tv_sec: 1, tv_nsec: 0), timespec(tv_sec: 1, tv_nsec: 0)]
        let calls: [(String, (String) -> Int32)] = [
            ("stat", { stat($0, &st) }), ("lstat", { lstat($0, &st) }), ("access", { access($0, F_OK) }),
            ("open", { let fd = open($0, O_RDONLY); if fd >= 0 { close(fd) }; return fd < 0 ? -1 : 0 }),
            ("chmod", { chmod($0, 0o600) }), ("chown", { chown($0, 1, 1) }), ("truncate", { truncate($0, 0) }),
            ("utimensat", { utimensat(AT_FDCWD, $0, &times, 0) }), ("unlink", { unlink($0) }), ("rmdir", { rmdir($0) }),
            ("rename from", { rename($0, volume.path("renamed")) }), ("link from", { link($0, volume.path("linked")) }),
            ("readlink", { var buffer = [CChar](repeating: 0, count: 64); return readlink($0, &buffer, 64) < 0 ? -1 : 0 }),
        ]
        for (name, call) in calls {
            expectError(ENAMETOOLONG, call(long), "\(name) of a 256-byte name")
            expectError(ENOENT, call(volume.path("missing")), "\(name) of a missing name")
            expectError(ENOTDIR, call(volume.path("file/x")), "\(name) under a file")
        }
        let creators: [(String, (String) -> Int32)] = [
            ("creat", { let fd = open($0, O_CREAT | O_WRONLY | O_EXCL, 0o644); if fd >= 0 { close(fd) }; return fd < 0 ? -1 : 0 }),
            ("mkdir", { mkdir($0, 0o755) }), ("mkfifo", { mkfifo($0, 0o644) }), ("mknod", { mknod($0, S_IFCHR | 0o600, makedev(1, 3)) }),
            ("symlink", { symlink("target", $0) }), ("link to", { link(volume.path("file"), $0) }),
        ]
        for (name, call) in creators {
            expectError(ENAMETOOLONG, call(long), "\(name) of a 256-byte name")
            expectError(ENOENT, call(volume.path("missing/x")), "\(name) under a missing directory")
            expectError(ENOTDIR, call(volume.path("file/x")), "\(name) under a file")
            expectError(EEXIST, call(volume.path("dir")), "\(name) over an existing name")
            XCTAssertEqual(call(fits), 0, "\(name) of a 255-byte name: \(String(cString: strerror(errno)))")
            XCTAssertEqual(lstat(fits, &st), 0)
            XCTAssertEqual(st.st_mode & S_IFMT == S_IFDIR ? rmdir(fits) : unlink(fits), 0, "removing \(name)'s 255-byte name")
        }
        write(volume.path("src"), [2])
        expectError(ENAMETOOLONG, rename(volume.path("src"), long), "rename to a 256-byte name")
        expectError(ENOENT, rename(volume.path("src"), volume.path("missing/x")), "rename into a missing directory")
        expectError(ENOTDIR, rename(volume.path("src"), volume.path("file/x")), "rename under a file")
        expectError(EISDIR, rename(volume.path("src"), volume.path("dir")), "rename of a file over a directory")
        XCTAssertEqual(rename(volume.path("src"), fits), 0)
        try volume.verifyAfterRemount()
    }

    /// Creating, removing and renaming entries update the directory's mtime and ctime.
    func testEntryChangesUpdateTheParentsTimes() throws {
        let volume = try newVolume()
        XCTAssertEqual(mkdir(volume.path("d"), 0o755), 0)
        XCTAssertEqual(mkdir(volume.path("other"), 0o755), 0)
        let steps: [(String, () -> Int32)] = [
            ("mkdir", { mkdir(volume.path("d/sub"), 0o755) }), ("mkfifo", { mkfifo(volume.path("d/fifo"), 0o644) }),
            ("mknod", { mknod(volume.path("d/null"), S_IFCHR | 0o600, makedev(1, 3)) }),
            ("symlink", { symlink("x", volume.path("d/sym")) }),
            ("creat", { let fd = open(volume.path("d/f"), O_CREAT | O_WRONLY, 0o644); close(fd); return fd < 0 ? -1 : 0 }),
            ("link", { link(volume.path("d/f"), volume.path("d/f2")) }), ("unlink", { unlink(volume.path("d/f2")) }),
            ("rename within", { rename(volume.path("d/f"), volume.path("d/g")) }),
            ("rename out", { rename(volume.path("d/g"), volume.path("other/g")) }),
            ("rename in", { rename(volume.path("other/g"), volume.path("d/g")) }),
            ("rmdir", { rmdir(volume.path("d/sub")) }),
        ]
        for (name, step) in steps {
            let before = status(volume.path("d"))
            usleep(5_000)
            XCTAssertEqual(step(), 0, "\(name): \(String(cString: strerror(errno)))")
            let after = status(volume.path("d"))
            XCTAssertGreaterThan(nanoseconds(after.st_mtim), nanoseconds(before.st_mtim), "\(name) moves the parent's mtime")
            XCTAssertGreaterThan(nanoseconds(after.st_ctim), nanoseconds(before.st_ctim), "\(name) moves the parent's ctime")
        }
        try volume.verifyAfterRemount()
    }

    /// What stat shows is what the volume keeps: the kernel owns a file's mtime and ctime
    /// with the writeback cache, and microseconds are the granularity on both sides.
    func testTimesDoNotMoveAcrossARemount() throws {
        let volume = try newVolume()
        write(volume.path("overwritten"), Array("a\n".utf8))
        write(volume.path("appended"), Array("a\n".utf8))
        usleep(20_000)
        write(volume.path("overwritten"), Array("b\n".utf8))  // open(O_TRUNC) and a write, as `echo b > f`
        write(volume.path("appended"), Array("more\n".utf8), flags: O_WRONLY | O_APPEND)
        var random = SplitMix64(seed: 19)
        write(volume.path("large"), random.bytes(3 << 20))
        let fd = open(volume.path("mapped"), O_CREAT | O_RDWR, 0o644)
        XCTAssertEqual(ftruncate(fd, 65_536), 0)
        let map = mmap(nil, 65_536, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
        map.storeBytes(of: 0x5A, toByteOffset: 100, as: UInt8.self)
        XCTAssertEqual(msync(map, 65_536, MS_SYNC), 0)
        munmap(map, 65_536)
        close(fd)
        let names = ["overwritten", "appended", "large", "mapped"]
        let before = names.map { status(volume.path($0)) }
        for st in before {
            XCTAssertEqual(st.st_mtim.tv_nsec % 1000, 0, "mtime finer than HAMMER2 stores")
            XCTAssertEqual(st.st_ctim.tv_nsec % 1000, 0, "ctime finer than HAMMER2 stores")
        }
        try volume.remount()
        for (name, old) in zip(names, before) {
            let new = status(volume.path(name))
            XCTAssertEqual(nanoseconds(new.st_mtim), nanoseconds(old.st_mtim), "\(name): mtime moved across the remount")
            XCTAssertEqual(nanoseconds(new.st_ctim), nanoseconds(old.st_ctim), "\(name): ctime moved across the remount")
        }
    }

    /// Times before 1970 are stored as DragonFly's hammer2_timespec_to_time does (the two's
    /// complement of the signed microsecond count) and read back as signed.
    func testTimesBefore1970AndFarInTheFutureRoundTrip() throws {
        let volume = try newVolume()
        let cases: [(String, timespec)] = [
            ("minus-one", timespec(tv_sec: -1, tv_nsec: 0)), ("minus-one-and-a-half", timespec(tv_sec: -2, tv_nsec: 500_000_000)),
            ("1900", timespec(tv_sec: -2_208_988_800, tv_nsec: 123_456_000)), ("zero", timespec(tv_sec: 0, tv_nsec: 0)),
            ("2100", timespec(tv_sec: 4_102_444_800, tv_nsec: 999_999_000)), ("2242", timespec(tv_sec: 1 << 33, tv_nsec: 1000)),
        ]
        for (name, time) in cases {
            write(volume.path(name), [1])
            var times = [time, time]
            XCTAssertEqual(utimensat(AT_FDCWD, volume.path(name), &times, 0), 0)
        }
        for pass in ["mounted", "after remount"] {
            for (name, time) in cases {
                let st = status(volume.path(name))
                XCTAssertEqual(nanoseconds(st.st_mtim), nanoseconds(time), "\(name) mtime \(pass)")
                XCTAssertEqual(nanoseconds(st.st_atim), nanoseconds(time), "\(name) atime \(pass)")
            }
            if pass == "mounted" { try volume.remount() }
        }
    }

    func seek(_ fd: Int32, _ offset: off_t, _ whence: Int32) -> off_t { lseek(fd, offset, whence) }

    /// SEEK_DATA and SEEK_HOLE at 64 KiB block granularity, before and after a flush and
    /// a remount, on a 1 TiB sparse file and on a punched one.
    func testSeekDataAndSeekHole() throws {
        let volume = try newVolume()
        let tib: off_t = 1 << 40
        for pass in ["in the page cache", "after fsync", "after remount"] {
            if pass == "after remount" { try volume.remount() }
            let path = volume.path("sparse")  // a remount mounts at a new mount point
            let fd = open(path, O_CREAT | O_RDWR, 0o644)
            XCTAssertGreaterThanOrEqual(fd, 0, "\(pass): \(String(cString: strerror(errno)))")
            if pass == "in the page cache" {
                XCTAssertEqual([UInt8](repeating: 1, count: 1).withUnsafeBytes { pwrite(fd, $0.baseAddress, 1, 0) }, 1)
                XCTAssertEqual([UInt8](repeating: 2, count: 1).withUnsafeBytes { pwrite(fd, $0.baseAddress, 1, tib) }, 1)
                XCTAssertEqual([UInt8](repeating: 3, count: 100).withUnsafeBytes { pwrite(fd, $0.baseAddress, 100, 5 << 20) }, 100)
            } else if pass == "after fsync" {
                XCTAssertEqual(fsync(fd), 0)
            }
            XCTAssertEqual(seek(fd, 0, GNUCalls.seekData), 0, pass)
            XCTAssertEqual(seek(fd, 0, GNUCalls.seekHole), 65_536, pass)
            XCTAssertEqual(seek(fd, 1, GNUCalls.seekData), 1, pass)
            XCTAssertEqual(seek(fd, 65_536, GNUCalls.seekData), 5 << 20, pass)
            XCTAssertEqual(seek(fd, 5 << 20, GNUCalls.seekHole), (5 << 20) + 65_536, pass)
            XCTAssertEqual(seek(fd, (5 << 20) + 65_536, GNUCalls.seekData), tib, pass)
            XCTAssertEqual(seek(fd, tib, GNUCalls.seekHole), tib + 1, "the end of the file is the last hole, \(pass)")
            errno = 0
            XCTAssertEqual(seek(fd, tib + 1, GNUCalls.seekData), -1, pass)
            XCTAssertEqual(errno, ENXIO, pass)
            XCTAssertEqual(seek(fd, tib + 1, GNUCalls.seekHole), -1, pass)
            close(fd)
        }
        // A hole punched in the middle of data.
        var random = SplitMix64(seed: 5)
        write(volume.path("punched"), random.bytes(1 << 20))
        let fd = open(volume.path("punched"), O_RDWR)
        XCTAssertEqual(GNUCalls.fallocate(fd, GNUCalls.punchHole | GNUCalls.keepSize, 200_000, 300_000), 0)
        XCTAssertEqual(seek(fd, 0, GNUCalls.seekHole), 262_144, "the first whole block inside the punched range")
        XCTAssertEqual(seek(fd, 262_144, GNUCalls.seekData), 458_752)
        close(fd)
        XCTAssertEqual(unlink(volume.path("sparse")), 0)  // the tree comparison would read the terabyte
        try volume.verifyAfterRemount()
    }

    /// st_blocks counts a file's data once the daemon has it (after fsync at the latest),
    /// without waiting for the kernel's attribute cache to expire.
    func testBlocksCountWrittenDataAfterFsync() throws {
        let volume = try newVolume()
        var random = SplitMix64(seed: 23)
        let fd = open(volume.path("fresh"), O_CREAT | O_RDWR, 0o644)
        let data = random.bytes(1 << 20)
        XCTAssertEqual(data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }, data.count)
        XCTAssertEqual(fsync(fd), 0)
        usleep(50_000)  // the kernel is told asynchronously
        var st = stat()
        XCTAssertEqual(fstat(fd, &st), 0)
        XCTAssertGreaterThanOrEqual(Int(st.st_blocks) * 512, data.count, "random data occupies at least its size")
        close(fd)
    }

    func testFallocatePunchZeroRangeAndPreallocation() throws {
        let volume = try newVolume(size: "256m")
        var random = SplitMix64(seed: 29)
        var expected = random.bytes(2 << 20)
        write(volume.path("file"), expected)
        flush(volume)
        let fd = open(volume.path("file"), O_RDWR)
        let blocksBefore = status(volume.path("file")).st_blocks
        // A punched range reads as zeros, keeps the size, and its whole blocks are freed.
        XCTAssertEqual(GNUCalls.fallocate(fd, GNUCalls.punchHole | GNUCalls.keepSize, 100_000, 1_000_000), 0)
        expected.replaceSubrange(100_000..<1_100_000, with: [UInt8](repeating: 0, count: 1_000_000))
        XCTAssertEqual(fsync(fd), 0)
        usleep(50_000)
        XCTAssertEqual(digest(read(volume.path("file"))), digest(expected))
        var st = stat()
        XCTAssertEqual(fstat(fd, &st), 0)
        XCTAssertEqual(st.st_size, off_t(2 << 20))
        XCTAssertLessThanOrEqual(Int(blocksBefore - st.st_blocks) * 512, 1_000_000)
        XCTAssertGreaterThanOrEqual(Int(blocksBefore - st.st_blocks) * 512, 14 * 65_536, "the 14 whole blocks punched are gone")
        // ZERO_RANGE past the end extends the file; with KEEP_SIZE it does not.
        XCTAssertEqual(GNUCalls.fallocate(fd, GNUCalls.zeroRange, (2 << 20) - 10, 100), 0)
        expected.replaceSubrange(((2 << 20) - 10)..., with: [UInt8](repeating: 0, count: 100))
        XCTAssertEqual(GNUCalls.fallocate(fd, GNUCalls.zeroRange | GNUCalls.keepSize, 50, 10_000_000), 0)
        expected.replaceSubrange(50..., with: [UInt8](repeating: 0, count: expected.count - 50))
        XCTAssertEqual(digest(read(volume.path("file"))), digest(expected))
        // Mode 0 extends, KEEP_SIZE does not; neither changes data.
        XCTAssertEqual(GNUCalls.fallocate(fd, 0, 0, 4 << 20), 0)
        XCTAssertEqual(GNUCalls.fallocate(fd, GNUCalls.keepSize, 0, 8 << 20), 0)
        expected += [UInt8](repeating: 0, count: (4 << 20) - expected.count)
        XCTAssertEqual(fstat(fd, &st), 0)
        XCTAssertEqual(st.st_size, off_t(4 << 20))
        // More than the volume has: ENOSPC, nothing changed. Unsupported modes: EOPNOTSUPP.
        expectError(ENOSPC, GNUCalls.fallocate(fd, 0, 0, 1 << 30), "preallocating more than the volume")
        expectError(EOPNOTSUPP, GNUCalls.fallocate(fd, GNUCalls.collapseRange, 0, 65_536), "COLLAPSE_RANGE")
        expectError(EOPNOTSUPP, GNUCalls.fallocate(fd, GNUCalls.punchHole, 0, 65_536), "PUNCH_HOLE without KEEP_SIZE")
        XCTAssertEqual(fstat(fd, &st), 0)
        XCTAssertEqual(st.st_size, off_t(4 << 20))
        close(fd)
        try volume.verifyAfterRemount()
        XCTAssertEqual(digest(read(volume.path("file"))), digest(expected))
    }

    func testRenameExchangeNoReplaceAndWhiteout() throws {
        let volume = try newVolume()
        XCTAssertEqual(mkdir(volume.path("d1"), 0o755), 0)
        XCTAssertEqual(mkdir(volume.path("d1/sub"), 0o755), 0)
        write(volume.path("a"), Array("a".utf8))
        write(volume.path("b"), Array("b".utf8))
        XCTAssertEqual(GNUCalls.renameat2(volume.path("a"), volume.path("b"), GNUCalls.renameExchange), 0)
        XCTAssertEqual(read(volume.path("a")), Array("b".utf8))
        XCTAssertEqual(read(volume.path("b")), Array("a".utf8))
        // A file and a directory in different parents: the directory's ".." follows it.
        XCTAssertEqual(GNUCalls.renameat2(volume.path("a"), volume.path("d1/sub"), GNUCalls.renameExchange), 0)
        XCTAssertEqual(status(volume.path("a")).st_mode & S_IFMT, S_IFDIR)
        XCTAssertEqual(read(volume.path("d1/sub")), Array("b".utf8))
        XCTAssertEqual(status(volume.path("a/..")).st_ino, status(volume.root).st_ino)
        expectError(ENOENT, GNUCalls.renameat2(volume.path("a"), volume.path("none"), GNUCalls.renameExchange), "exchange with a missing name")
        expectError(EINVAL, GNUCalls.renameat2(volume.path("a"), volume.path("b"), GNUCalls.renameExchange | GNUCalls.renameNoReplace),
                    "EXCHANGE with NOREPLACE")
        XCTAssertEqual(mkdir(volume.path("a/inner"), 0o755), 0)
        expectError(EINVAL, GNUCalls.renameat2(volume.path("a"), volume.path("a/inner"), GNUCalls.renameExchange),
                    "exchanging a directory with its own subdirectory")
        expectError(EEXIST, GNUCalls.renameat2(volume.path("b"), volume.path("d1/sub"), GNUCalls.renameNoReplace), "NOREPLACE over a file")
        // WHITEOUT leaves overlayfs's whiteout, a 0/0 character device, at the old name.
        XCTAssertEqual(GNUCalls.renameat2(volume.path("b"), volume.path("c"), GNUCalls.renameWhiteout), 0)
        let whiteout = status(volume.path("b"))
        XCTAssertEqual(whiteout.st_mode & S_IFMT, S_IFCHR)
        XCTAssertEqual(whiteout.st_rdev, 0)
        XCTAssertEqual(read(volume.path("c")), Array("a".utf8))
        try volume.verifyAfterRemount()
    }

    func testTmpfileIsPublishedByLinkat() throws {
        let volume = try newVolume()
        var random = SplitMix64(seed: 31)
        let data = random.bytes(300_000)
        let fd = open(volume.root, GNUCalls.tmpfile | O_RDWR, 0o640)
        XCTAssertGreaterThanOrEqual(fd, 0, "O_TMPFILE: \(String(cString: strerror(errno)))")
        XCTAssertEqual(data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }, data.count)
        var st = stat()
        XCTAssertEqual(fstat(fd, &st), 0)
        XCTAssertEqual(st.st_nlink, 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o640)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: volume.root), [], "an O_TMPFILE file has no name")
        XCTAssertEqual(linkat(AT_FDCWD, "/proc/self/fd/\(fd)", AT_FDCWD, volume.path("published"), AT_SYMLINK_FOLLOW), 0,
                       "linkat: \(String(cString: strerror(errno)))")
        close(fd)
        XCTAssertEqual(digest(read(volume.path("published"))), digest(data))
        // With O_EXCL it can never be linked; closed unnamed, it leaves nothing behind.
        let exclusive = open(volume.root, GNUCalls.tmpfile | O_RDWR | O_EXCL, 0o600)
        XCTAssertGreaterThanOrEqual(exclusive, 0)
        expectError(ENOENT, linkat(AT_FDCWD, "/proc/self/fd/\(exclusive)", AT_FDCWD, volume.path("x"), AT_SYMLINK_FOLLOW),
                    "linkat of an O_TMPFILE|O_EXCL file")
        close(exclusive)
        let discarded = open(volume.root, GNUCalls.tmpfile | O_WRONLY, 0o600)
        XCTAssertEqual(random.bytes(100_000).withUnsafeBytes { Glibc.write(discarded, $0.baseAddress, $0.count) }, 100_000)
        close(discarded)
        write(volume.path("file"), [1])
        expectError(ENOTDIR, open(volume.path("file"), GNUCalls.tmpfile | O_RDWR, 0o600), "O_TMPFILE on a file")
        try volume.verifyAfterRemount()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: volume.root).sorted(), ["file", "published"])
        XCTAssertEqual(digest(read(volume.path("published"))), digest(data))
    }

    /// An open file that lost its last name has nlink 0, whether the kernel's cached
    /// attributes or the daemon's answer it.
    func testUnlinkedOrReplacedOpenFileHasNoLinks() throws {
        let volume = try newVolume()
        write(volume.path("unlinked"), [1])
        write(volume.path("replaced"), [2])
        write(volume.path("replacement"), [3])
        let first = open(volume.path("unlinked"), O_RDWR), second = open(volume.path("replaced"), O_RDWR)
        XCTAssertEqual(unlink(volume.path("unlinked")), 0)
        XCTAssertEqual(rename(volume.path("replacement"), volume.path("replaced")), 0)
        var st = stat()
        for fd in [first, second] {
            XCTAssertEqual(fstat(fd, &st), 0)
            XCTAssertEqual(st.st_nlink, 0, "the kernel's view")
            XCTAssertEqual(fchmod(fd, 0o600), 0)  // the attributes the daemon returns
            XCTAssertEqual(fstat(fd, &st), 0)
            XCTAssertEqual(st.st_nlink, 0, "the daemon's view")
            close(fd)
        }
        try volume.verifyAfterRemount()
    }

    /// hammer2 -r setcomp walks the tree without following symlinks (or opening fifos).
    func testRecursiveSetcompSkipsSymlinksAndSpecialFiles() throws {
        let volume = try newVolume()
        XCTAssertEqual(mkdir(volume.path("tree"), 0o755), 0)
        XCTAssertEqual(mkdir(volume.path("tree/sub"), 0o755), 0)
        XCTAssertEqual(mkdir(volume.path("outside"), 0o755), 0)
        write(volume.path("tree/sub/file"), [1])
        XCTAssertEqual(symlink("sub", volume.path("tree/to-sub")), 0)
        XCTAssertEqual(symlink("../outside", volume.path("tree/to-outside")), 0)
        XCTAssertEqual(symlink("nowhere", volume.path("tree/dangling")), 0)
        XCTAssertEqual(symlink(".", volume.path("tree/sub/loop")), 0)
        XCTAssertEqual(mkfifo(volume.path("tree/fifo"), 0o644), 0)
        let set = try Binaries.run("hammer2", ["-r", "setcomp", "zlib:9", volume.path("tree")])
        XCTAssertEqual(set.status, 0, set.stdout + set.stderr)
        XCTAssertFalse(set.stderr.contains("symbolic links"), set.stderr)
        XCTAssertTrue(set.stdout.contains("tree/sub/file\tcomp_algo=0x93"), set.stdout)
        let outside = try Binaries.run("hammer2", ["stat", volume.path("outside")])
        XCTAssertTrue(outside.stdout.contains("lz4"), "a symlinked directory outside the tree kept its method: \(outside.stdout)")
        try volume.verifyAfterRemount()
    }
}

/// The same on an encrypted PFS (names sealed: exchange, whiteouts and O_TMPFILE take the
/// other naming path).
final class EncryptedLinuxCallTests: LinuxCallTests {
    override class var encrypted: Bool { true }

    // XCTest on Linux discovers only the methods a class declares: each test again.
    override func testEveryCallTakingANameReportsItsErrors() throws { try super.testEveryCallTakingANameReportsItsErrors() }
    override func testEntryChangesUpdateTheParentsTimes() throws { try super.testEntryChangesUpdateTheParentsTimes() }
    override func testTimesDoNotMoveAcrossARemount() throws { try super.testTimesDoNotMoveAcrossARemount() }
    override func testTimesBefore1970AndFarInTheFutureRoundTrip() throws { try super.testTimesBefore1970AndFarInTheFutureRoundTrip() }
    override func testSeekDataAndSeekHole() throws { try super.testSeekDataAndSeekHole() }
    override func testBlocksCountWrittenDataAfterFsync() throws { try super.testBlocksCountWrittenDataAfterFsync() }
    override func testFallocatePunchZeroRangeAndPreallocation() throws { try super.testFallocatePunchZeroRangeAndPreallocation() }
    override func testRenameExchangeNoReplaceAndWhiteout() throws { try super.testRenameExchangeNoReplaceAndWhiteout() }
    override func testTmpfileIsPublishedByLinkat() throws { try super.testTmpfileIsPublishedByLinkat() }
    override func testUnlinkedOrReplacedOpenFileHasNoLinks() throws { try super.testUnlinkedOrReplacedOpenFileHasNoLinks() }
    override func testRecursiveSetcompSkipsSymlinksAndSpecialFiles() throws { try super.testRecursiveSetcompSkipsSymlinksAndSpecialFiles() }
}
