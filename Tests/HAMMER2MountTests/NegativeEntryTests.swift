// Negative entries (issue 24): the kernel remembers that a name is missing, so repeated
// lookups of it never reach the daemon, and a name made through the mount in any way
// (create, mkdir, symlink, link, rename, O_TMPFILE + linkat) is seen at once; a name
// removed is missing at once, and stays so across a remount.

import Foundation
import Glibc
import HAMMER2TestSupport
import HAMMER2Trace
import XCTest

final class NegativeEntryTests: XCTestCase {
    var image = ""

    override func setUpWithError() throws {
        image = FileManager.default.temporaryDirectory.appendingPathComponent("hammer2-negative-\(getpid())-\(UUID().uuidString.prefix(6)).img").path
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", image]).status, 0)
    }

    override func tearDown() {
        unlink(image)
        super.tearDown()
    }

    private func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    private func missing(_ path: String, _ line: UInt = #line) {
        var st = stat()
        XCTAssertEqual(lstat(path, &st), -1, "\(path) is there", line: line)
        XCTAssertEqual(errno, ENOENT, line: line)
    }

    func testMissingNamesStayInTheKernelAndNamesMadeThroughTheMountAreSeenAtOnce() throws {
        let mount = try MountedImage("\(image)@DATA", options: ["-o", "rw"])
        let root = mount.mountpoint.path
        let reader = try TraceReader(path: TraceFiles.defaultPath(pid: mount.daemonPID))
        func lookups() -> UInt64 { reader.statistics("fuse")?["lookup.requests"] ?? 0 }

        // Twenty lookups of a missing name: the daemon answers the first.
        var before = lookups()
        for _ in 0..<20 { missing("\(root)/journal") }
        XCTAssertLessThanOrEqual(lookups() - before, 2, "repeated lookups of a missing name reached the daemon")

        // Every way of making a name, each over a name the kernel holds as missing.
        let fd = open("\(root)/journal", O_CREAT | O_WRONLY | O_EXCL, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(write(fd, "data", 4), 4)
        close(fd)
        XCTAssertEqual(try String(contentsOfFile: "\(root)/journal", encoding: .utf8), "data")
        missing("\(root)/dir")
        XCTAssertEqual(mkdir("\(root)/dir", 0o755), 0)
        XCTAssertTrue(exists("\(root)/dir"))
        missing("\(root)/dir/link")
        XCTAssertEqual(symlink("../journal", "\(root)/dir/link"), 0)
        XCTAssertEqual(try String(contentsOfFile: "\(root)/dir/link", encoding: .utf8), "data")
        missing("\(root)/hard")
        XCTAssertEqual(link("\(root)/journal", "\(root)/hard"), 0)
        XCTAssertTrue(exists("\(root)/hard"))
        missing("\(root)/moved")
        XCTAssertEqual(rename("\(root)/hard", "\(root)/moved"), 0)
        XCTAssertTrue(exists("\(root)/moved"))
        missing("\(root)/hard")
        missing("\(root)/published")
        let temporary = open(root, GNUCalls.tmpfile | O_WRONLY, 0o600)
        XCTAssertGreaterThanOrEqual(temporary, 0)
        XCTAssertEqual(linkat(AT_FDCWD, "/proc/self/fd/\(temporary)", AT_FDCWD, "\(root)/published", AT_SYMLINK_FOLLOW), 0)
        close(temporary)
        XCTAssertTrue(exists("\(root)/published"))

        // Removed names are missing at once, also for the lookups the kernel answers itself,
        // and made again they are there.
        XCTAssertEqual(unlink("\(root)/journal"), 0)
        before = lookups()
        for _ in 0..<20 { missing("\(root)/journal") }
        XCTAssertLessThanOrEqual(lookups() - before, 2)
        let again = open("\(root)/journal", O_CREAT | O_WRONLY | O_EXCL, 0o644)
        XCTAssertGreaterThanOrEqual(again, 0)
        close(again)
        XCTAssertTrue(exists("\(root)/journal"))
        XCTAssertEqual(unlink("\(root)/dir/link"), 0)
        XCTAssertEqual(rmdir("\(root)/dir"), 0)
        missing("\(root)/dir")

        // The same names after a remount: what the kernel was told is what is on disk.
        XCTAssertEqual(try mount.unmount(), 0)
        let remounted = try MountedImage("\(image)@DATA", options: ["-o", "rw"])
        let again2 = remounted.mountpoint.path
        for name in ["journal", "moved", "published"] { XCTAssertTrue(exists("\(again2)/\(name)"), name) }
        for name in ["dir", "hard"] { missing("\(again2)/\(name)") }
        XCTAssertEqual(try remounted.unmount(), 0)
    }
}
