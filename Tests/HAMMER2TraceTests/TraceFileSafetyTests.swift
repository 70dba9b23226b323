// Attacks on the trace segment's file (issue 18, item 1): /dev/shm is writable by every local
// user and the default name is predictable, so a planted symbolic link, hard link, FIFO or
// file of another user must never be followed, truncated or taken over; a segment that its
// owner truncates under the writer or a reader must not kill them with SIGBUS; dead
// daemons' segments are bounded per image.

import Foundation
import Glibc
import HAMMER2Trace
import XCTest

final class TraceFileSafetyTests: TraceFileTestCase {
    var scratch = ""

    override func setUp() {
        super.setUp()
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("h2-trace-safety-\(UUID().uuidString.prefix(8))").path
        mkdir(scratch, 0o700)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: scratch)
        super.tearDown()
    }

    /// A file with known contents that an attack would overwrite.
    func victim() -> (path: String, contents: Data) {
        let path = scratch + "/victim"
        let contents = Data("precious contents that no daemon may touch\n".utf8)
        FileManager.default.createFile(atPath: path, contents: contents)
        return (path, contents)
    }

    func assertRefused(_ path: String, _ reason: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try TraceSegment(path: path), file: file, line: line) { error in
            guard case let TraceError.unsafeFile(refused, why) = error else {
                return XCTFail("\(error)", file: file, line: line)
            }
            XCTAssertEqual(refused, path, file: file, line: line)
            XCTAssertTrue(why.contains(reason), why, file: file, line: line)
        }
    }

    func testASymbolicLinkAtTheSegmentsPathIsNeverFollowed() throws {
        let target = victim()
        XCTAssertEqual(symlink(target.path, path), 0)
        assertRefused(path, "symbolic link")
        XCTAssertEqual(FileManager.default.contents(atPath: target.path), target.contents, "the link's target is untouched")
        // A dangling link is no way to create a file elsewhere either.
        unlink(path)
        let elsewhere = scratch + "/created-through-link"
        XCTAssertEqual(symlink(elsewhere, path), 0)
        assertRefused(path, "symbolic link")
        XCTAssertFalse(FileManager.default.fileExists(atPath: elsewhere))
    }

    func testAHardLinkAFIFOAndAFileThatIsNoSegmentAreRefused() throws {
        let target = victim()
        XCTAssertEqual(link(target.path, path), 0)
        assertRefused(path, "2 links")
        XCTAssertEqual(FileManager.default.contents(atPath: target.path), target.contents)
        unlink(path)

        XCTAssertEqual(mkfifo(path, 0o600), 0)
        assertRefused(path, "not a regular file")
        unlink(path)

        // The caller's own file, but not a segment: an admin's ktr=/etc/something mistake.
        FileManager.default.createFile(atPath: path, contents: target.contents)
        assertRefused(path, "something other than a trace segment")
        XCTAssertEqual(FileManager.default.contents(atPath: path), target.contents)
    }

    func testAnotherUsersFileIsNotTakenOver() throws {
        try XCTSkipUnless(geteuid() == 0, "needs root to give a file to another user")
        // A user who plants an empty file would own the segment and could truncate it.
        FileManager.default.createFile(atPath: path, contents: nil)
        XCTAssertEqual(chown(path, 65534, 65534), 0)
        assertRefused(path, "belongs to uid 65534")
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        XCTAssertEqual(st.st_size, 0, "nothing written to it")
    }

    func testALiveSegmentIsNotTakenOverButADeadOneOfOursIsReused() throws {
        do {
            let other = try TraceSegment(path: path, bytes: 1 << 20)
            other.setWriterPID(1)  // another daemon that still runs
        }
        assertRefused(path, "live segment of process 1")
        // The same file once its writer is gone (a crash): reused, made ours anew.
        let fd = open(path, O_RDWR)
        var deadPID = Int32.max - 1
        XCTAssertEqual(pwrite(fd, &deadPID, 4, off_t(TraceLayout.pidOffset)), 4)
        close(fd)
        let reused = try TraceSegment(path: path, bytes: 1 << 20)
        XCTAssertEqual(try TraceReader(path: path).writerPID, getpid(), "the file was made ours anew")
        _ = reused
    }

    func testThePlantedDefaultNameGivesAFreshNameNotARedirect() throws {
        let target = victim()
        let planted = TraceFiles.defaultPath()
        unlink(planted)
        XCTAssertEqual(symlink(target.path, planted), 0)
        defer { unlink(planted) }
        let session = try TraceFiles.atDefaultPath { try TraceSession(path: $0, volumes: 1, pfsLabel: "DATA", rings: 2, recordsPerRing: 64) }
        defer { unlink(session.segment.path) }
        XCTAssertNotEqual(session.segment.path, planted)
        XCTAssertTrue(TraceFiles.isDefaultName(session.segment.path), session.segment.path)
        XCTAssertEqual(FileManager.default.contents(atPath: target.path), target.contents)
        var st = stat()
        XCTAssertEqual(lstat(session.segment.path, &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFREG)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        XCTAssertEqual(try TraceReader(path: session.segment.path).text("mount")["pfs"], "DATA")
    }

    func testASegmentTruncatedUnderTheWriterAndAReaderKillsNeither() throws {
        let session = try TraceSession(path: path, volumes: 1, pfsLabel: "DATA", rings: 4, recordsPerRing: 1024)
        for i in 0..<100 { session.segment.record(1, subsystem: 1, UInt64(i)) }
        let reader = try TraceReader(path: path)
        XCTAssertEqual(reader.events().count, 100)
        // The owner (or root) truncates the file while both have it mapped.
        XCTAssertEqual(truncate(path, 4096), 0)
        for i in 0..<5000 { session.segment.record(1, subsystem: 1, UInt64(i)) }
        session.volumeIO(0, write: true, bytes: 4096, failed: false)
        session.publish(TraceSession.Gauges())
        XCTAssertTrue(TraceSegment.anyMappingLost, "the writer noticed the lost pages")
        _ = reader.events()  // zeros past the end, no SIGBUS
        _ = reader.objects()
        // Truncated to nothing: a fresh reader refuses it, the old one still reads.
        XCTAssertEqual(truncate(path, 0), 0)
        session.segment.heartbeat()
        _ = reader.heartbeat
        XCTAssertThrowsError(try TraceReader(path: path))
    }

    /// Writes a segment whose writer is gone (a pid that cannot exist) for `source`.
    func deadSegment(_ directory: String, _ name: String, source: String, age: Int) throws -> String {
        let file = "\(directory)/\(TraceFiles.prefix)\(name)\(TraceFiles.suffix)"
        let session = try TraceSession(path: file, volumes: 1, pfsLabel: "DATA", mount: [("source", source)],
                                       rings: 1, recordsPerRing: 16)
        session.segment.setWriterPID(Int32.max - 1)
        var times = [timespec(tv_sec: time(nil) - age, tv_nsec: 0), timespec(tv_sec: time(nil) - age, tv_nsec: 0)]
        XCTAssertEqual(utimensat(AT_FDCWD, file, &times, 0), 0)
        return file
    }

    func testDeadSegmentsAreBoundedPerImageAndInAll() throws {
        var made: [String: [String]] = [:]
        for i in 0..<5 {  // image A: five crashes, newest first in the list
            made["A", default: []].append(try deadSegment(scratch, "\(1000 + i)", source: "/img/a.img@DATA", age: 100 * i))
        }
        for i in 0..<3 {
            made["B", default: []].append(try deadSegment(scratch, "\(2000 + i)", source: "/img/b.img@DATA", age: 100 * i + 50))
        }
        // Not a segment and not a default name: never touched.
        FileManager.default.createFile(atPath: scratch + "/hammer2.3000.ktr", contents: Data("x".utf8))
        FileManager.default.createFile(atPath: scratch + "/other.ktr", contents: nil)
        let removed = Set(TraceFiles.pruneDeadSegments(perImage: 2, total: 8, in: [scratch]))
        XCTAssertEqual(removed, Set(made["A"]!.suffix(3) + made["B"]!.suffix(1)), "the newest two of each image stay")
        for kept in made["A"]!.prefix(2) + made["B"]!.prefix(2) { XCTAssertTrue(FileManager.default.fileExists(atPath: kept)) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: scratch + "/hammer2.3000.ktr"))

        // hammer2 cleanup's rule: the newest one of each image; and a total bound.
        XCTAssertEqual(Set(TraceFiles.pruneDeadSegments(perImage: 1, in: [scratch])), [made["A"]![1], made["B"]![1]])
        XCTAssertEqual(TraceFiles.pruneDeadSegments(perImage: 1, total: 1, in: [scratch]), [made["B"]![0]])
        XCTAssertEqual(TraceFiles.segments(in: [scratch]).count, 2, "the newest of all and the non-segment")
    }

    func testPruningLeavesOtherUsersFilesAndLiveSegments() throws {
        try XCTSkipUnless(geteuid() == 0, "needs root to give a file to another user")
        let theirs = try deadSegment(scratch, "4000", source: "/img/a.img@DATA", age: 10)
        XCTAssertEqual(chown(theirs, 65534, 65534), 0)
        let live = try TraceSession(path: "\(scratch)/hammer2.\(getpid()).ktr", volumes: 1, pfsLabel: "DATA",
                                    mount: [("source", "/img/a.img@DATA")], rings: 1, recordsPerRing: 16)
        XCTAssertEqual(TraceFiles.pruneDeadSegments(perImage: 0, total: 0, in: [scratch]), [])
        XCTAssertTrue(FileManager.default.fileExists(atPath: theirs))
        XCTAssertTrue(FileManager.default.fileExists(atPath: live.segment.path))
    }

    func testDefaultNamesAreRecognisedStrictly() {
        XCTAssertTrue(TraceFiles.isDefaultName("/dev/shm/hammer2.123.ktr"))
        XCTAssertTrue(TraceFiles.isDefaultName("/dev/shm/hammer2.123-9af0.ktr"))
        XCTAssertFalse(TraceFiles.isDefaultName("/dev/shm/hammer2.123-.ktr"))
        XCTAssertFalse(TraceFiles.isDefaultName("/dev/shm/hammer2.123-xyz.ktr"))
        XCTAssertFalse(TraceFiles.isDefaultName("/dev/shm/hammer2.-1-2-3.ktr"))
        XCTAssertFalse(TraceFiles.isDefaultName("/dev/shm/hammer2..ktr"))
        XCTAssertFalse(TraceFiles.isDefaultName("/dev/shm/hammer2.ktr"))
    }
}
