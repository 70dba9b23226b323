// POSIX behaviour of a read-write mount, with the errors a POSIX user expects. Every test
// ends by unmounting, running fsck_hammer2 and mounting again to compare the whole tree.

import Foundation
import HAMMER2TestSupport
import XCTest

/// Linux's makedev for small numbers (major < 4096, minor < 256).
func makedev(_ major: UInt32, _ minor: UInt32) -> dev_t { dev_t(major) << 8 | dev_t(minor) }

/// Helpers of the tests that work through a mount like a user program.
class MountTestCase: XCTestCase {
    /// Subclasses for encrypted PFSes run the same tests again on one.
    class var encrypted: Bool { false }
    /// Reading a file moves its atime (relatime of a union's layer filesystem).
    class var readsMoveAtime: Bool { false }

    func newVolume() throws -> ScratchVolume { try ScratchVolume(encrypted: Self.encrypted) }

    func write(_ path: String, _ bytes: [UInt8], flags: Int32 = O_CREAT | O_WRONLY | O_TRUNC, at offset: off_t = 0) {
        let fd = open(path, flags, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0, "open \(path): \(String(cString: strerror(errno)))")
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, offset) }
        XCTAssertEqual(n, bytes.count, "write \(path)")
        close(fd)
    }

    /// fsync on the root directory flushes the whole volume (sync(2) does not reach a FUSE
    /// daemon without FUSE_SYNCFS).
    func flush(_ volume: ScratchVolume) {
        let fd = open(volume.root, O_RDONLY | O_DIRECTORY)
        XCTAssertEqual(fsync(fd), 0)
        close(fd)
    }

    func digest(_ bytes: [UInt8]?) -> String { bytes.map { "\($0.count) bytes, sha256 \(sha256Hex($0))" } ?? "missing" }

    func read(_ path: String) -> [UInt8]? {
        FileManager.default.contents(atPath: path).map { [UInt8]($0) }
    }

    func expectError(_ code: Int32, _ result: Int32, _ what: String, line: UInt = #line) {
        XCTAssertEqual(result, -1, "\(what) should fail", line: line)
        XCTAssertEqual(errno, code, "\(what): got \(String(cString: strerror(errno)))", line: line)
    }

}

class PosixTests: MountTestCase {
    func testFilesSparseWritesAppendsOverwritesAndTruncation() throws {
        let volume = try newVolume()
        var random = SplitMix64(seed: 7)
        // A compressible file overwritten in the middle of a compressed block.
        let text = Array((0..<200_000).map { "line \($0)\n" }.joined().utf8)
        write(volume.path("text"), text)
        var expected = text
        let patch = Array("PATCHED".utf8)
        write(volume.path("text"), patch, flags: O_WRONLY, at: 100_003)
        expected.replaceSubrange(100_003..<100_003 + patch.count, with: patch)
        XCTAssertEqual(digest(read(volume.path("text"))), digest(expected))
        // Rewriting a file through open(O_TRUNC) (as shell redirection and cp do) leaves
        // only the new content, before and after a flush.
        write(volume.path("rewritten"), Array("the first, longer content\n".utf8))
        write(volume.path("rewritten"), Array("short\n".utf8))
        XCTAssertEqual(read(volume.path("rewritten")), Array("short\n".utf8))
        write(volume.path("big-then-small"), random.bytes(600_000))
        flush(volume)
        write(volume.path("big-then-small"), Array("tiny".utf8))
        XCTAssertEqual(read(volume.path("big-then-small")), Array("tiny".utf8))
        let fd = open(volume.path("rewritten"), O_WRONLY | O_TRUNC)
        XCTAssertGreaterThanOrEqual(fd, 0)
        close(fd)
        var st = stat()
        XCTAssertEqual(stat(volume.path("rewritten"), &st), 0)
        XCTAssertEqual(st.st_size, 0, "open(O_TRUNC) alone empties the file")
        // Sparse: data at 0 and at 10 MiB, zeros between.
        let head = random.bytes(5000)
        write(volume.path("sparse"), head)
        write(volume.path("sparse"), [1, 2, 3], flags: O_WRONLY, at: 10 << 20)
        var sparse = [UInt8](repeating: 0, count: (10 << 20) + 3)
        sparse.replaceSubrange(0..<5000, with: head)
        sparse.replaceSubrange((10 << 20)..<((10 << 20) + 3), with: [1, 2, 3])
        XCTAssertEqual(digest(read(volume.path("sparse"))), digest(sparse))
        // Appends, small (embedded in the inode) growing past 512 bytes.
        write(volume.path("log"), Array("first\n".utf8))
        var log = Array("first\n".utf8)
        for i in 0..<300 {
            let line = Array("append \(i)\n".utf8)
            write(volume.path("log"), line, flags: O_WRONLY | O_APPEND)
            log += line
        }
        XCTAssertEqual(digest(read(volume.path("log"))), digest(log))
        // Truncate down inside a block, then up again: the cut part reads as zeros.
        let data = random.bytes(300_000)
        write(volume.path("cut"), data)
        XCTAssertEqual(truncate(volume.path("cut"), 70_000), 0)
        XCTAssertEqual(truncate(volume.path("cut"), 200_000), 0)
        XCTAssertEqual(digest(read(volume.path("cut"))), digest(Array(data[0..<70_000]) + [UInt8](repeating: 0, count: 130_000)))
        XCTAssertEqual(truncate(volume.path("cut"), 0), 0)
        XCTAssertEqual(read(volume.path("cut")), [])
        expectError(EISDIR, truncate(volume.root, 0), "truncate of a directory")
        // The same, across a flush in between (the on-disk blocks must be cut too).
        write(volume.path("cut2"), data)
        flush(volume)
        XCTAssertEqual(truncate(volume.path("cut2"), 1000), 0)
        flush(volume)
        XCTAssertEqual(truncate(volume.path("cut2"), 150_000), 0)
        XCTAssertEqual(digest(read(volume.path("cut2"))), digest(Array(data[0..<1000]) + [UInt8](repeating: 0, count: 149_000)))
        try volume.verifyAfterRemount()
        XCTAssertTrue(read(volume.path("text")) == expected, "text after remount")
        XCTAssertTrue(read(volume.path("sparse")) == sparse, "sparse after remount")
    }

    func testDirectoriesAndTheirErrors() throws {
        let volume = try newVolume()
        XCTAssertEqual(mkdir(volume.path("a"), 0o750), 0)
        XCTAssertEqual(mkdir(volume.path("a/b"), 0o755), 0)
        expectError(EEXIST, mkdir(volume.path("a"), 0o755), "mkdir of an existing name")
        expectError(ENOENT, mkdir(volume.path("missing/x"), 0o755), "mkdir under a missing directory")
        write(volume.path("a/file"), [1])
        expectError(ENOTDIR, mkdir(volume.path("a/file/x"), 0o755), "mkdir under a file")
        expectError(ENOTEMPTY, rmdir(volume.path("a")), "rmdir of a non-empty directory")
        expectError(ENOTDIR, rmdir(volume.path("a/file")), "rmdir of a file")
        expectError(EISDIR, unlink(volume.path("a/b")), "unlink of a directory")
        expectError(ENOENT, unlink(volume.path("a/none")), "unlink of a missing name")
        expectError(ENAMETOOLONG, mkdir(volume.path(String(repeating: "n", count: 256)), 0o755), "a 256-byte name")
        XCTAssertEqual(mkdir(volume.path(String(repeating: "n", count: 255)), 0o755), 0)
        XCTAssertEqual(rmdir(volume.path("a/b")), 0)
        var st = stat()
        XCTAssertEqual(stat(volume.path("a"), &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o750)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFDIR)
        // Many entries: the directory grows indirect blocks, listing and lookup still agree.
        XCTAssertEqual(mkdir(volume.path("many"), 0o755), 0)
        for i in 0..<600 { write(volume.path("many/entry-\(i)"), Array("\(i)".utf8)) }
        for i in stride(from: 0, to: 600, by: 3) { XCTAssertEqual(unlink(volume.path("many/entry-\(i)")), 0) }
        let names = try FileManager.default.contentsOfDirectory(atPath: volume.path("many"))
        XCTAssertEqual(names.count, 400)
        XCTAssertEqual(read(volume.path("many/entry-599")), Array("599".utf8))
        try volume.verifyAfterRemount()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: volume.path("many")).count, 400)
    }

    func testRenameInAllItsForms() throws {
        let volume = try newVolume()
        XCTAssertEqual(mkdir(volume.path("d1"), 0o755), 0)
        XCTAssertEqual(mkdir(volume.path("d2"), 0o755), 0)
        write(volume.path("d1/f"), Array("f".utf8))
        XCTAssertEqual(rename(volume.path("d1/f"), volume.path("d1/g")), 0)  // same directory
        XCTAssertEqual(rename(volume.path("d1/g"), volume.path("d2/g")), 0)  // across directories
        XCTAssertNil(read(volume.path("d1/g")))
        XCTAssertEqual(read(volume.path("d2/g")), Array("f".utf8))
        write(volume.path("d2/victim"), Array("old".utf8))
        XCTAssertEqual(rename(volume.path("d2/g"), volume.path("d2/victim")), 0)  // replaces a file
        XCTAssertEqual(read(volume.path("d2/victim")), Array("f".utf8))
        XCTAssertEqual(mkdir(volume.path("empty"), 0o755), 0)
        XCTAssertEqual(mkdir(volume.path("d1/sub"), 0o755), 0)
        write(volume.path("d1/sub/inner"), [9])
        XCTAssertEqual(rename(volume.path("d1/sub"), volume.path("empty")), 0)  // replaces an empty directory
        XCTAssertEqual(read(volume.path("empty/inner")), [9])
        XCTAssertEqual(mkdir(volume.path("full"), 0o755), 0)
        write(volume.path("full/x"), [1])
        expectError(ENOTEMPTY, rename(volume.path("empty"), volume.path("full")), "rename over a non-empty directory")
        expectError(EINVAL, rename(volume.path("empty"), volume.path("empty/inside")), "rename into itself")
        XCTAssertEqual(mkdir(volume.path("empty/deep"), 0o755), 0)
        expectError(EINVAL, rename(volume.path("empty"), volume.path("empty/deep/x")), "rename into a descendant")
        expectError(EISDIR, rename(volume.path("d2/victim"), volume.path("full")), "a file over a directory")
        expectError(ENOTDIR, rename(volume.path("full"), volume.path("d2/victim")), "a directory over a file")
        expectError(ENOENT, rename(volume.path("nothing"), volume.path("x")), "rename of a missing name")
        // The moved directory's ".." follows it.
        var parent = stat(), moved = stat()
        XCTAssertEqual(stat(volume.root, &parent), 0)
        XCTAssertEqual(stat(volume.path("empty/.."), &moved), 0)
        XCTAssertEqual(parent.st_ino, moved.st_ino)
        try volume.verifyAfterRemount()
    }

    func testHardLinksSymlinksAndSpecialFiles() throws {
        let volume = try newVolume()
        write(volume.path("target"), Array("linked".utf8))
        XCTAssertEqual(link(volume.path("target"), volume.path("second")), 0)
        expectError(EEXIST, link(volume.path("target"), volume.path("second")), "link over an existing name")
        XCTAssertEqual(mkdir(volume.path("dir"), 0o755), 0)
        expectError(EPERM, link(volume.path("dir"), volume.path("dirlink")), "hard link to a directory")
        var st = stat()
        XCTAssertEqual(stat(volume.path("second"), &st), 0)
        XCTAssertEqual(st.st_nlink, 2)
        XCTAssertEqual(unlink(volume.path("target")), 0)
        XCTAssertEqual(stat(volume.path("second"), &st), 0)
        XCTAssertEqual(st.st_nlink, 1)
        XCTAssertEqual(read(volume.path("second")), Array("linked".utf8))
        XCTAssertEqual(symlink("second", volume.path("sym")), 0)
        let longTarget = String(repeating: "t/", count: 400)  // past 512 bytes: stored in a block
        XCTAssertEqual(symlink(longTarget, volume.path("longsym")), 0)
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: volume.path("sym")), "second")
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: volume.path("longsym")), longTarget)
        XCTAssertEqual(read(volume.path("sym")), Array("linked".utf8))
        XCTAssertEqual(mkfifo(volume.path("fifo"), 0o600), 0)
        XCTAssertEqual(mknod(volume.path("chr"), S_IFCHR | 0o644, makedev(4, 64)), 0)
        XCTAssertEqual(lstat(volume.path("chr"), &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFCHR)
        XCTAssertEqual(st.st_rdev, makedev(4, 64))
        XCTAssertEqual(lstat(volume.path("fifo"), &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFIFO)
        try volume.verifyAfterRemount()
    }

    func testAttributesAndTimes() throws {
        let volume = try newVolume()
        write(volume.path("f"), [1, 2, 3])
        XCTAssertEqual(chown(volume.path("f"), 1234, 5678), 0)
        XCTAssertEqual(chmod(volume.path("f"), 0o4711), 0)  // after chown, which clears set-id bits
        var times = [timespec(tv_sec: 1_000_000_000, tv_nsec: 0), timespec(tv_sec: 1_500_000_000, tv_nsec: 250_000_000)]
        XCTAssertEqual(utimensat(AT_FDCWD, volume.path("f"), &times, 0), 0)
        var st = stat()
        XCTAssertEqual(stat(volume.path("f"), &st), 0)
        XCTAssertEqual(st.st_mode & 0o7777, 0o4711)
        XCTAssertEqual(st.st_uid, 1234)
        XCTAssertEqual(st.st_gid, 5678)
        XCTAssertEqual(st.st_mtim.tv_sec, 1_500_000_000)
        XCTAssertEqual(st.st_mtim.tv_nsec, 250_000_000)
        XCTAssertEqual(st.st_atim.tv_sec, 1_000_000_000)
        // A directory's mtime moves when an entry is added.
        var before = stat(), after = stat()
        XCTAssertEqual(stat(volume.root, &before), 0)
        usleep(20_000)
        write(volume.path("g"), [1])
        XCTAssertEqual(stat(volume.root, &after), 0)
        XCTAssertGreaterThan(after.st_mtim.tv_sec * 1_000_000_000 + after.st_mtim.tv_nsec,
                             before.st_mtim.tv_sec * 1_000_000_000 + before.st_mtim.tv_nsec)
        try volume.verifyAfterRemount()
        XCTAssertEqual(stat(volume.path("f"), &st), 0)
        // A union's files are its layers' files: their filesystem's relatime moves atime
        // when the remount's check reads them (so does overlayfs; docs/unionfs.md).
        if !Self.readsMoveAtime { XCTAssertEqual(st.st_atim.tv_sec, 1_000_000_000) }
    }

    func testUnlinkedOpenFileStaysReadableUntilClosed() throws {
        let volume = try newVolume()
        let initial = try FileManager.default.contentsOfDirectory(atPath: volume.root)
        var random = SplitMix64(seed: 3)
        let data = random.bytes(200_000)
        write(volume.path("doomed"), data)
        flush(volume)
        let fd = open(volume.path("doomed"), O_RDWR)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(unlink(volume.path("doomed")), 0)
        XCTAssertNil(read(volume.path("doomed")))
        flush(volume)  // a flush while it is open and unlinked
        var buffer = [UInt8](repeating: 0, count: data.count)
        XCTAssertEqual(buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }, data.count)
        XCTAssertTrue(buffer == data, "the unlinked file's data changed")
        XCTAssertEqual([UInt8](repeating: 7, count: 10).withUnsafeBytes { pwrite(fd, $0.baseAddress, 10, 0) }, 10)
        XCTAssertEqual(buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 10, 0) }, 10)
        XCTAssertEqual(Array(buffer[0..<10]), [UInt8](repeating: 7, count: 10))
        XCTAssertEqual(fsync(fd), 0)
        close(fd)
        try volume.verifyAfterRemount()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: volume.root), initial)
    }

    func testFsyncStatfsAndExclusiveCreate() throws {
        let volume = try newVolume()
        var before = statvfs(), after = statvfs()
        XCTAssertEqual(statvfs(volume.root, &before), 0)
        XCTAssertEqual(before.f_flag & UInt(ST_RDONLY), 0)
        var random = SplitMix64(seed: 11)
        let fd = open(volume.path("durable"), O_CREAT | O_EXCL | O_WRONLY, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0)
        let data = random.bytes(4 << 20)
        XCTAssertEqual(data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }, data.count)
        XCTAssertEqual(fsync(fd), 0)
        close(fd)
        expectError(EEXIST, open(volume.path("durable"), O_CREAT | O_EXCL | O_WRONLY, 0o600), "O_EXCL on an existing file")
        let dirFD = open(volume.root, O_RDONLY | O_DIRECTORY)
        XCTAssertEqual(fsync(dirFD), 0)
        close(dirFD)
        XCTAssertEqual(statvfs(volume.root, &after), 0)
        // Random data does not compress: at least its size came off the free space.
        XCTAssertLessThanOrEqual(UInt64(after.f_bfree) * 65_536 + UInt64(data.count), UInt64(before.f_bfree) * 65_536)
        try volume.verifyAfterRemount()
    }
}

/// The whole POSIX suite on an encrypted PFS (names, metadata and data sealed; the same
/// behaviour expected, fsck given the key).
final class EncryptedPosixTests: PosixTests {
    override class var encrypted: Bool { true }

    // Linux's test discovery lists only methods a class declares itself.
    override func testFilesSparseWritesAppendsOverwritesAndTruncation() throws { try super.testFilesSparseWritesAppendsOverwritesAndTruncation() }
    override func testDirectoriesAndTheirErrors() throws { try super.testDirectoriesAndTheirErrors() }
    override func testRenameInAllItsForms() throws { try super.testRenameInAllItsForms() }
    override func testHardLinksSymlinksAndSpecialFiles() throws { try super.testHardLinksSymlinksAndSpecialFiles() }
    override func testAttributesAndTimes() throws { try super.testAttributesAndTimes() }
    override func testUnlinkedOpenFileStaysReadableUntilClosed() throws { try super.testUnlinkedOpenFileStaysReadableUntilClosed() }
    override func testFsyncStatfsAndExclusiveCreate() throws { try super.testFsyncStatfsAndExclusiveCreate() }
}
