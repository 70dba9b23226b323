// hammer2 destroy / destroy-inum / recover / cleanup: repairs that remove names and inodes
// without reading them, copying trees out of snapshots, and bulkfree over every mount.

import Foundation
import HAMMER2TestSupport
import XCTest

final class RepairDirectiveTests: XCTestCase {
    func testDestroyDestroyInumRecoverAndCleanup() throws {
        let volume = try ScratchVolume()
        XCTAssertEqual(mkdir(volume.path("d"), 0o750), 0)
        XCTAssertTrue(FileManager.default.createFile(atPath: volume.path("d/keep"), contents: Data("keep".utf8)))
        XCTAssertEqual(symlink("keep", volume.path("d/link")), 0)
        XCTAssertTrue(FileManager.default.createFile(atPath: volume.path("victim"), contents: Data("bad".utf8)))
        var st = stat()
        XCTAssertEqual(stat(volume.path("victim"), &st), 0)
        let inum = st.st_ino
        let dump = try Binaries.run("hammer2", ["dumpchain", volume.root, "1"])
        XCTAssertEqual(dump.status, 0, dump.stderr)
        usleep(100_000)
        XCTAssertTrue(volume.mount!.log.contains("dumpchain: pfs DATA"), volume.mount!.log)
        XCTAssertTrue(volume.mount!.log.contains("dumpchain:   inode \(inum) "), volume.mount!.log)
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", volume.root, "before"]).status, 0)

        let destroy = try Binaries.run("hammer2", ["destroy", volume.path("victim"), volume.path("absent")])
        XCTAssertEqual(destroy.status, 1, "one of the two paths does not exist")
        XCTAssertEqual(destroy.stdout, "\(volume.path("victim"))\tok\n\(volume.path("absent"))\tNo such file or directory\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: volume.path("victim")))
        // The inode is still in the index (an orphan) until destroy-inum removes it.
        let inodes = try Binaries.run("hammer2", ["-s", volume.root, "destroy-inum", String(inum), "424242"])
        XCTAssertEqual(inodes.status, 1)
        XCTAssertTrue(inodes.stdout.contains("\(inum) ok"), inodes.stdout)
        XCTAssertTrue(inodes.stdout.contains("424242 No such file or directory"), inodes.stdout)
        XCTAssertEqual(try Binaries.run("hammer2", ["destroy"]).status, 2)
        XCTAssertEqual(try Binaries.run("hammer2", ["-s", volume.root, "destroy-inum", "x1"]).status, 2)
        let cleanup = try Binaries.run("hammer2", ["cleanup", volume.root])
        XCTAssertEqual(cleanup.status, 0, cleanup.stderr)
        XCTAssertTrue(cleanup.stdout.contains("bulkfree:"), cleanup.stdout)
        try volume.remount(readOnly: true)

        // recover: the file out of the snapshot taken before, and a whole directory.
        let destination = FileManager.default.temporaryDirectory.appendingPathComponent("h2-recover-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: destination) }
        let file = try Binaries.run("hammer2", ["recover", "\(volume.image.path)@before", "/victim", destination])
        XCTAssertEqual(file.status, 0, file.stderr)
        XCTAssertEqual(try String(contentsOfFile: destination + "/victim", encoding: .utf8), "bad")
        let tree = try Binaries.run("hammer2", ["recover", "\(volume.image.path)@before", "d", destination])
        XCTAssertEqual(tree.status, 0, tree.stderr)
        XCTAssertEqual(try String(contentsOfFile: destination + "/d/keep", encoding: .utf8), "keep")
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: destination + "/d/link"), "keep")
        XCTAssertEqual(stat(destination + "/d", &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o750)
        XCTAssertEqual(try Binaries.run("hammer2", ["recover", "\(volume.image.path)@before", "/nothing", destination]).status, 1)
        XCTAssertEqual(try Binaries.run("hammer2", ["recover", volume.image.path]).status, 2)
    }

    func testRecoverFindsADeletedFileInAnOlderState() throws {
        // header copies at 0 and 2 GiB; fsync flushes (not the intent log), making each state
        let volume = try ScratchVolume(size: "4g", options: ["fsync=flush"])
        func flush() {
            let fd = open(volume.root, O_RDONLY | O_DIRECTORY)
            XCTAssertEqual(fsync(fd), 0)
            close(fd)
        }
        XCTAssertTrue(FileManager.default.createFile(atPath: volume.path("old"), contents: Data("from before".utf8)))
        flush()
        XCTAssertEqual(unlink(volume.path("old")), 0)
        flush()
        try volume.unmount()
        let destination = FileManager.default.temporaryDirectory.appendingPathComponent("h2-recover-old-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: destination) }
        let run = try Binaries.run("hammer2", ["recover", volume.image.path, "/old", destination])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stdout.contains("found in the state of volume header"), run.stdout)
        XCTAssertEqual(try String(contentsOfFile: destination + "/old", encoding: .utf8), "from before")
    }

    func testOfflineDirectivesOnAnImage() throws {
        let volume = try ScratchVolume()
        XCTAssertEqual(mkdir(volume.path("d"), 0o755), 0)
        XCTAssertTrue(FileManager.default.createFile(atPath: volume.path("d/f"), contents: Data("f".utf8)))
        XCTAssertTrue(FileManager.default.createFile(atPath: volume.path("g"), contents: Data("g".utf8)))
        var st = stat()
        XCTAssertEqual(stat(volume.path("g"), &st), 0)
        let inumG = st.st_ino
        try volume.unmount()
        let image = volume.image.path
        let inode = try Binaries.run("hammer2", ["-f", image, "printinode", "/d/f"])
        XCTAssertEqual(inode.status, 0, inode.stderr)
        XCTAssertTrue(inode.stdout.contains("type = 2 (FILE)") && inode.stdout.contains("size = 1"), inode.stdout)
        XCTAssertEqual(try Binaries.run("hammer2", ["-f", image, "printinode", "/nothing"]).status, 1)
        let check = try Binaries.run("hammer2", ["-f", "\(image)@DATA", "-r", "setcheck", "sha192", "/d"])
        XCTAssertEqual(check.status, 0, check.stderr)
        XCTAssertEqual(check.stdout, "/d\tcheck_algo=0x04\n/d/f\tcheck_algo=0x04\n")
        let destroy = try Binaries.run("hammer2", ["-f", image, "destroy", "/d/f"])
        XCTAssertEqual(destroy.stdout, "/d/f\tok\n", destroy.stderr)
        let inodes = try Binaries.run("hammer2", ["-f", image, "destroy-inum", String(inumG)])
        XCTAssertEqual(inodes.status, 0, inodes.stderr)
        XCTAssertTrue(inodes.stdout.contains("\(inumG) ok"), inodes.stdout)
        let fsck = try Binaries.run("fsck_hammer2", ["-v", image])
        // /d/f's inode is now an orphan (counted, not a failure); g's entry names nothing.
        XCTAssertTrue(fsck.stdout.contains("unreachable inodes"), fsck.stdout)
        XCTAssertTrue(fsck.stderr.contains("\"g\""), fsck.stderr)
        XCTAssertEqual(try Binaries.run("hammer2", ["-f", image, "destroy", "/g"]).stdout, "/g\tok\n")
        XCTAssertEqual(try Binaries.run("fsck_hammer2", [image]).status, 0, "after removing the dangling entry")
        let mount = try MountedImage("\(image)@DATA")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: mount.mountpoint.path), ["d"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: mount.mountpoint.path + "/d"), [])
        try mount.unmount()
    }
}
