// hammer2 snapshot / pfs-create / pfs-delete on a mounted volume and offline, and
// snapshots mounted by label: a snapshot shows the tree as it was, whatever the origin
// does afterwards.

import Foundation
import HAMMER2TestSupport
import XCTest

final class SnapshotMountTests: XCTestCase {
    func writeFile(_ path: String, _ text: String) {
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)), path)
    }

    func testSnapshotsOnlineAndOfflineMountByLabel() throws {
        let volume = try ScratchVolume()
        writeFile(volume.path("a"), "version 1")
        XCTAssertEqual(mkdir(volume.path("dir"), 0o755), 0)
        writeFile(volume.path("dir/b"), String(repeating: "b", count: 200_000))
        let atSnapshot = try TreeSnapshot.take(volume.root)
        let made = try Binaries.run("hammer2", ["snapshot", volume.root, "snap1"])
        XCTAssertEqual(made.status, 0, made.stderr)
        XCTAssertTrue(made.stdout.contains("snap1"), made.stdout)
        let again = try Binaries.run("hammer2", ["snapshot", volume.root, "snap1"])
        XCTAssertEqual(again.status, 1, "a second snapshot with the same label must fail")
        XCTAssertTrue(again.stderr.contains("exists"), again.stderr)
        // A default label: PFS name and time.
        let unnamed = try Binaries.run("hammer2", ["-s", volume.root, "snapshot"])
        XCTAssertEqual(unnamed.status, 0, unnamed.stderr)
        XCTAssertTrue(unnamed.stdout.contains("snapshot DATA."), unnamed.stdout)
        // The origin changes after the snapshot.
        writeFile(volume.path("a"), "version 2")
        XCTAssertEqual(unlink(volume.path("dir/b")), 0)
        writeFile(volume.path("c"), "new")
        // PFS management online.
        XCTAssertEqual(try Binaries.run("hammer2", ["-s", volume.root, "pfs-create", "-t", "SLAVE", "EXTRA"]).status, 0)
        XCTAssertEqual(try Binaries.run("hammer2", ["-s", volume.root, "pfs-create"]).status, 2)
        XCTAssertEqual(try Binaries.run("hammer2", ["-s", volume.root, "pfs-create", "-t", "BOGUS", "X"]).status, 2)
        XCTAssertEqual(try Binaries.run("hammer2", ["-s", volume.root, "pfs-delete", "DATA"]).status, 1, "the mounted PFS")
        let list = try Binaries.run("hammer2", ["-s", volume.root, "pfs-list"])
        XCTAssertTrue(list.stdout.contains("SLAVE") && list.stdout.contains("EXTRA") && list.stdout.contains("snap1"), list.stdout)
        XCTAssertEqual(try Binaries.run("hammer2", ["-s", volume.root, "pfs-delete", "EXTRA"]).status, 0)
        let origin = try TreeSnapshot.take(volume.root)
        try volume.unmount()
        XCTAssertEqual(try Binaries.run("fsck_hammer2", [volume.image.path]).status, 0)

        // Offline: another snapshot, of the changed origin.
        let offline = try Binaries.run("hammer2", ["-f", volume.image.path, "snapshot", "DATA", "snap2"])
        XCTAssertEqual(offline.status, 0, offline.stderr)
        XCTAssertEqual(try Binaries.run("hammer2", ["-f", volume.image.path, "snapshot", "NOPE", "x"]).status, 1)
        let snap1 = try MountedImage("\(volume.image.path)@snap1")
        XCTAssertEqual(try TreeSnapshot.take(snap1.mountpoint.path).entries.filter { $0.key != "/" },
                       atSnapshot.entries.filter { $0.key != "/" }, "snap1 is the tree at the snapshot")
        try snap1.unmount()
        let snap2 = try MountedImage("\(volume.image.path)@snap2")
        XCTAssertEqual(try TreeSnapshot.take(snap2.mountpoint.path).entries.filter { $0.key != "/" },
                       origin.entries.filter { $0.key != "/" })
        try snap2.unmount()
        // Writing to a snapshot leaves the origin alone.
        let writable = try MountedImage("\(volume.image.path)@snap1", options: ["-o", "rw"])
        writeFile(writable.mountpoint.path + "/only-in-snap1", "x")
        XCTAssertEqual(try writable.unmount(), 0)
        let data = try MountedImage("\(volume.image.path)@DATA")
        XCTAssertEqual(try TreeSnapshot.take(data.mountpoint.path), origin)
        try data.unmount()
        let fsck = try Binaries.run("fsck_hammer2", [volume.image.path])
        XCTAssertEqual(fsck.status, 0, fsck.stdout + fsck.stderr)
    }
}
