// Directives a non-root user may run on a mount: as DragonFly's hammer2_ioctl, reading an
// inode's settings is open to anyone; changing settings, snapshots, PFS management and
// bulkfree need root.

import Foundation
import HAMMER2TestSupport
import XCTest

final class PrivilegeTests: XCTestCase {
    /// Runs hammer2 as user nobody (setpriv from util-linux).
    func asNobody(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", try Binaries.path("hammer2")] + arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, stdout, stderr)
    }

    func testNonRootMayReadSettingsButNotChangeAnything() throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else {
            throw XCTSkip("needs root and setpriv to switch to an unprivileged user")
        }
        let volume = try ScratchVolume(options: ["allow_other"])
        XCTAssertEqual(chmod(volume.root, 0o777), 0)
        XCTAssertEqual(mkdir(volume.path("d"), 0o777), 0)
        let stat = try asNobody(["stat", volume.path("d")])
        XCTAssertEqual(stat.status, 0, stat.stderr)
        XCTAssertTrue(stat.stdout.contains("lz4:default"), stat.stdout)
        let setcomp = try asNobody(["setcomp", "zlib", volume.path("d")])
        XCTAssertEqual(setcomp.status, 3)
        XCTAssertTrue(setcomp.stderr.contains("Operation not permitted"), setcomp.stderr)
        // Every directive that changes or reveals more than an inode's settings: root only,
        // with allow_other too (issue 18: whatever the mount options).
        for arguments in [["snapshot", volume.root, "s"], ["-s", volume.root, "pfs-create", "P"],
                          ["-s", volume.root, "pfs-delete", "DATA"], ["-s", volume.root, "bulkfree"],
                          ["destroy", volume.path("d")], ["-s", volume.root, "destroy-inum", "1"],
                          ["-s", volume.root, "scrub"], ["-s", volume.root, "growfs"],
                          ["setcheck", "sha192", volume.path("d")], ["setcopies", "2", volume.path("d")],
                          ["-s", volume.root, "dumpchain"], ["reencrypt", volume.root]] {
            let run = try asNobody(arguments)
            XCTAssertNotEqual(run.status, 0, "\(arguments) as nobody")
            XCTAssertTrue(run.stdout.contains("Operation not permitted") || run.stderr.contains("Operation not permitted"),
                          "\(arguments): \(run.stdout) \(run.stderr)")
        }
        // Nothing changed.
        let after = try Binaries.run("hammer2", ["stat", volume.path("d")])
        XCTAssertTrue(after.stdout.contains("lz4:default"), after.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: volume.path("d")))
        XCTAssertFalse(try Binaries.run("hammer2", ["-s", volume.root, "pfs-list"]).stdout.contains(" s\n"))
    }
}
