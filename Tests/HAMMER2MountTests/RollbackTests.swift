// Issue 18, item 4: silent rollbacks. Someone who can write the image damages the newest
// volume header copy (the mount would fall back to an older one) or points the super-root
// back at an older, authentic root of an encrypted PFS. Both are reported, and a
// read-write mount needs -o rollback-ok, since its next flush would erase the evidence.

import Foundation
import Glibc
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class RollbackTests: XCTestCase {
    var folder: URL!
    var image: String { folder.appendingPathComponent("rollback.img").path }
    var keyFile: String { folder.appendingPathComponent("key").path }
    var stateDirectory: String { folder.appendingPathComponent("state").path }

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("h2-rollback-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var random = SplitMix64(seed: 4)
        try Data(random.bytes(64)).write(to: URL(fileURLWithPath: keyFile))
        setenv("HAMMER2_STATE_DIR", stateDirectory, 1)  // the daemons' rollback state, this test's own
    }

    override func tearDownWithError() throws {
        unsetenv("HAMMER2_STATE_DIR")
        try? FileManager.default.removeItem(at: folder)
    }

    func write(_ path: String, _ text: String) {
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
    }

    func testADamagedNewestHeaderIsReportedAndReadWriteNeedsConsent() throws {
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "5g", image]).status, 0)  // three header copies
        let first = try MountedImage("\(image)@DATA", options: ["-o", "rw"])
        write(first.mountpoint.path + "/old", "before")
        XCTAssertEqual(try first.unmount(), 0)
        let second = try MountedImage("\(image)@DATA", options: ["-o", "rw"])
        write(second.mountpoint.path + "/new", "after")
        XCTAssertEqual(try second.unmount(), 0)

        // Damage the copy in use (a byte inside its CRC'd area; the magic stays).
        let volumes = try VolumeSet(paths: [image])
        let used = volumes.volumes[0].headerIndex, newest = volumes.header.mirrorTID
        XCTAssertNil(volumes.headerRollback, "a sound image raises nothing")
        let offset = volumes.volumes[0].copies[used].deviceOffset
        let surgeon = ImageSurgeon(image)
        var byte = try surgeon.read(offset + 0x100, 1)
        byte[0] ^= 0xFF
        try surgeon.write(byte, at: offset + 0x100)
        let damaged = try VolumeSet(paths: [image])
        let rollback = try XCTUnwrap(damaged.headerRollback)
        XCTAssertEqual(rollback.damagedSlot, used)
        XCTAssertEqual(rollback.claimedTID, newest)
        XCTAssertLessThan(rollback.usedTID, newest)

        XCTAssertThrowsError(try MountedImage("\(image)@DATA", options: ["-o", "rw"])) {
            XCTAssertTrue("\($0)".contains("volume header copy \(used) is damaged"), "\($0)")
            XCTAssertTrue("\($0)".contains("claims transaction \(newest), newer than the copy in use"), "\($0)")
            XCTAssertTrue("\($0)".contains("-o rollback-ok"), "\($0)")
        }
        XCTAssertEqual(try Binaries.run("fsck_hammer2", [image]).status, 1, "fsck reports the damaged copy")
        // Read-only: allowed, and said.
        let look = try MountedImage("\(image)@DATA", options: ["-o", "ro"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: look.mountpoint.path + "/old"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: look.mountpoint.path + "/new"), "the older state")
        XCTAssertEqual(try look.unmount(), 0)
        XCTAssertTrue(look.log.contains("claims transaction \(newest)"), look.log)
        // With consent: read-write from the older state; its flush replaces the damaged copy.
        let accepted = try MountedImage("\(image)@DATA", options: ["-o", "rw,rollback-ok"])
        write(accepted.mountpoint.path + "/again", "x")
        XCTAssertEqual(try accepted.unmount(), 0)
        XCTAssertNil(try VolumeSet(paths: [image]).headerRollback)
        let plain = try MountedImage("\(image)@DATA", options: ["-o", "rw"])
        XCTAssertEqual(try plain.unmount(), 0)
    }

    func testAnEncryptedPFSPutBackToAnOlderRootIsDetected() throws {
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", "-L", "SECRET", "-k", keyFile, image]).status, 0)
        let first = try MountedImage("\(image)@SECRET", options: ["-o", "rw,keyfile=\(keyFile)"])
        write(first.mountpoint.path + "/statement", "balance 100")
        XCTAssertEqual(try first.unmount(), 0)
        let older = try ImageSurgeon(image).pfsRoot("SECRET")
        XCTAssertGreaterThan(older.inode.meta.rootGeneration, 0, "the root carries its signing transaction")

        let second = try MountedImage("\(image)@SECRET", options: ["-o", "rw,keyfile=\(keyFile)"])
        write(second.mountpoint.path + "/statement", "balance 0, all transferred")
        XCTAssertEqual(try second.unmount(), 0)
        let newer = try ImageSurgeon(image).pfsRoot("SECRET").inode.meta.rootGeneration
        XCTAssertGreaterThan(newer, older.inode.meta.rootGeneration)

        // The attacker points the super-root back at the older root, every check code fixed:
        // the older root is authentic (its MAC is right), only its generation tells.
        try ImageSurgeon(image).pointPFSRoot("SECRET", at: older.bref)
        XCTAssertThrowsError(try MountedImage("\(image)@SECRET", options: ["-o", "rw,keyfile=\(keyFile)"])) {
            XCTAssertTrue("\($0)".contains("PFS SECRET was rolled back: this machine saw it at transaction \(newer), "
                                            + "the image holds transaction \(older.inode.meta.rootGeneration)"), "\($0)")
        }
        let look = try MountedImage("\(image)@SECRET", options: ["-o", "ro,keyfile=\(keyFile)"])
        XCTAssertEqual(try String(contentsOfFile: look.mountpoint.path + "/statement", encoding: .utf8), "balance 100")
        XCTAssertEqual(try look.unmount(), 0)
        XCTAssertTrue(look.log.contains("was rolled back"), look.log)
        XCTAssertThrowsError(try MountedImage("\(image)@SECRET", options: ["-o", "rw,keyfile=\(keyFile)"]),
                             "a read-only look does not lower what was seen")

        // Accepted: the older state becomes what this machine has seen.
        let accepted = try MountedImage("\(image)@SECRET", options: ["-o", "rw,rollback-ok,keyfile=\(keyFile)"])
        XCTAssertEqual(try accepted.unmount(), 0)
        let plain = try MountedImage("\(image)@SECRET", options: ["-o", "rw,keyfile=\(keyFile)"])
        XCTAssertEqual(try plain.unmount(), 0)

        // The state file names no PFS: one keyed id per PFS, and nothing of the label.
        let state = try String(contentsOfFile: stateDirectory + "/rollback", encoding: .utf8)
        XCTAssertEqual(state.split(separator: "\n").count, 1, state)
        XCTAssertFalse(state.contains("SECRET"))
        var st = stat()
        XCTAssertEqual(stat(stateDirectory, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o700)
    }

    /// A state directory that cannot be used costs the rollback check, never the mount.
    func testAnUnusableStateDirectoryIsAWarningNotAFailedMount() throws {
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", "-L", "SECRET", "-k", keyFile, image]).status, 0)
        FileManager.default.createFile(atPath: stateDirectory, contents: Data("not a directory".utf8))
        let mount = try MountedImage("\(image)@SECRET", options: ["-o", "rw,keyfile=\(keyFile)"])
        write(mount.mountpoint.path + "/still", "works")
        XCTAssertEqual(try mount.unmount(), 0)
        XCTAssertTrue(mount.log.contains("warning: rollback state not kept"), mount.log)
        XCTAssertTrue(mount.log.contains("is not a directory of this user's"), mount.log)
        XCTAssertEqual(try String(contentsOfFile: stateDirectory, encoding: .utf8), "not a directory", "left as it was")
    }
}
