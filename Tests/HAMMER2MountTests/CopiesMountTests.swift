// Redundant copies end to end with the tools (docs/copies.md): newfs_hammer2 -c, setcopies
// through the mount, a damaged copy served and repaired by the mount (and logged), hammer2
// scrub online and offline, fsck reporting a bad copy, a two-volume set made by newfs and
// mounted degraded from either volume, and bad arguments.

import Foundation
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class CopiesMountTests: XCTestCase {
    func write(_ path: String, _ bytes: [UInt8]) {
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)), path)
    }

    func read(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

    /// The data blockrefs of `path` in PFS DATA of the volume set `devices`.
    func dataBlocks(_ devices: [String], _ path: String) throws -> [Blockref] {
        let pfs = try Filesystem(paths: devices).openPFS("DATA")
        var inode = pfs.root
        for part in path.split(separator: "/") { inode = try pfs.inode(try pfs.lookup(in: inode, name: Array(part.utf8)).inum) }
        var refs: [Blockref] = []
        try BlockTree(reader: pfs.reader).forEachLeaf(in: inode.blockset, from: 0, through: .max) { refs.append($0); return true }
        return refs
    }

    func flip(_ image: String, at offset: UInt64) throws {
        let fd = open(image, O_RDWR)
        defer { close(fd) }
        var byte: UInt8 = 0
        XCTAssertEqual(pread(fd, &byte, 1, off_t(offset) + 100), 1)
        byte ^= 0xFF
        XCTAssertEqual(pwrite(fd, &byte, 1, off_t(offset) + 100), 1)
    }

    func testNewfsCopiesSelfHealingScrubAndFsck() throws {
        let volume = try ScratchVolume(newfsArguments: ["-c", "2"])
        let image = volume.image.path
        let first = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 11) }
        write(volume.path("first"), first)
        XCTAssertEqual(mkdir(volume.path("triple"), 0o755), 0)
        let set = try Binaries.run("hammer2", ["setcopies", "3", volume.path("triple")])
        XCTAssertEqual(set.status, 0, set.stderr)
        XCTAssertEqual(set.stdout, "\(volume.path("triple"))\tncopies=3\n")
        let second = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }
        write(volume.path("triple/second"), second)
        let stat = try Binaries.run("hammer2", ["stat", volume.path("first"), volume.path("triple/second")])
        XCTAssertTrue(stat.stdout.contains("first") && stat.stdout.split(separator: "\n")[1].contains("  2 "), stat.stdout)
        XCTAssertTrue(stat.stdout.split(separator: "\n")[2].contains("  3 "), stat.stdout)
        try volume.unmount()

        let firstBlocks = try dataBlocks([image], "first")
        let secondBlocks = try dataBlocks([image], "triple/second")
        XCTAssertTrue(firstBlocks.allSatisfy { $0.copyCount == 2 } && secondBlocks.allSatisfy { $0.copyCount == 3 })
        XCTAssertEqual(try VolumeSet(paths: [image]).header.version, HAMMER2.volumeVersionCopies)
        // Damage copy 0 of one block (a read finds it) and copy 2 of another (only scrub does).
        try flip(image, at: firstBlocks[1].copyMediaOffsets[0])
        try flip(image, at: secondBlocks[0].copyMediaOffsets[2])
        let fsck = try Binaries.run("fsck_hammer2", [image])
        XCTAssertEqual(fsck.status, 1, fsck.stdout)
        XCTAssertTrue(fsck.stderr.contains("copy 0 at") && fsck.stderr.contains("copy 2 at"), fsck.stdout + fsck.stderr)

        try volume.remountWithoutFsck()
        XCTAssertEqual(try read(volume.path("first")), first, "served from the good copy")
        XCTAssertEqual(try read(volume.path("triple/second")), second)
        XCTAssertTrue(volume.mount!.log.contains("repaired copy 0 at 0x"), volume.mount!.log)
        let dump = try Binaries.run("hammer2", ["ktrdump", "-m", "copies,check", volume.root])
        let damaged = "0x" + String(firstBlocks[1].copyMediaOffsets[0], radix: 16)
        XCTAssertTrue(dump.stdout.contains("check.failed             offset=\(damaged) "), dump.stdout)
        XCTAssertTrue(dump.stdout.contains("copies.repaired          offset=\(damaged) size=\(firstBlocks[1].physicalBytes) copy=0 from=1"), dump.stdout)
        let scrub = try Binaries.run("hammer2", ["-s", volume.root, "scrub"])
        XCTAssertEqual(scrub.status, 0, scrub.stdout + scrub.stderr)
        XCTAssertTrue(scrub.stdout.contains(" 1 bad, 1 repaired, 0 without a good copy"), scrub.stdout)
        let again = try Binaries.run("hammer2", ["-s", volume.root, "scrub"])
        XCTAssertTrue(again.stdout.contains(" 0 bad, 0 repaired"), again.stdout)
        try volume.verifyAfterRemount()  // fsck clean after the repairs

        // Offline scrub finds a fresh bad copy too; both copies bad: exit 1 and named.
        try volume.unmount()
        try flip(image, at: firstBlocks[0].copyMediaOffsets[1])
        let offline = try Binaries.run("hammer2", ["-f", image, "scrub"])
        XCTAssertEqual(offline.status, 0, offline.stdout + offline.stderr)
        XCTAssertTrue(offline.stdout.contains(" 1 bad, 1 repaired"), offline.stdout)
        for offset in firstBlocks[2].copyMediaOffsets { try flip(image, at: offset) }
        let lost = try Binaries.run("hammer2", ["-f", image, "scrub"])
        XCTAssertEqual(lost.status, 1, lost.stdout)
        XCTAssertTrue(lost.stdout.contains("1 without a good copy") && lost.stderr.contains("no good copy of blockref data"), lost.stderr)
        try volume.remountWithoutFsck()
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let fd = open(volume.path("first"), O_RDONLY)
        defer { close(fd) }
        XCTAssertEqual(pread(fd, &buffer, buffer.count, 0), buffer.count, "block 0 still reads")
        XCTAssertEqual(pread(fd, &buffer, buffer.count, 131_072), -1, "block 2 has no good copy")
        XCTAssertEqual(errno, EIO)
        XCTAssertTrue(volume.mount!.log.contains("all 2 copies of blockref data"), volume.mount!.log)
    }

    func testTwoVolumeSetMountsDegradedFromEitherVolume() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("hammer2-copies-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let vol0 = base + "/vol0.img", vol1 = base + "/vol1.img"
        let made = try Binaries.run("newfs_hammer2", ["-s", "1g", "-c", "2", "-L", "DATA", vol0, vol1])
        XCTAssertEqual(made.status, 0, made.stderr)
        XCTAssertTrue(made.stdout.contains("Volume \(vol1)") && made.stdout.contains("version:          5"), made.stdout)
        var files: [String: [UInt8]] = [:]
        do {
            let mount = try MountedImage("\(vol0):\(vol1)@DATA", options: ["-o", "rw"])
            for i in 0..<20 {
                let bytes = (0..<(i * 40_000 + 1)).map { UInt8(truncatingIfNeeded: $0 &* (i + 3)) }
                files["file-\(i)"] = bytes
                write(mount.mountpoint.path + "/file-\(i)", bytes)
            }
            XCTAssertEqual(try mount.unmount(), 0, mount.log)
        }
        let fsck = try Binaries.run("fsck_hammer2", ["\(vol0):\(vol1)"])
        XCTAssertEqual(fsck.status, 0, fsck.stdout + fsck.stderr)
        for (present, missing) in [(vol0, vol1), (vol1, vol0)] {
            XCTAssertThrowsError(try MountedImage("\(present)@DATA")) { error in
                XCTAssertTrue("\(error)".contains("-o degraded"), "\(error)")
            }
            let mount = try MountedImage("\(present)@DATA", options: ["-o", "ro,degraded"])
            for (name, bytes) in files {
                XCTAssertEqual(try read(mount.mountpoint.path + "/" + name), bytes, "\(name) without \(missing)")
            }
            XCTAssertTrue(mount.log.contains("degraded"), mount.log)
            XCTAssertEqual(try mount.unmount(), 0, mount.log)
        }
    }

    func testBadCopiesArguments() throws {
        let volume = try ScratchVolume()
        for bad in [["setcopies", "0", volume.root], ["setcopies", "5", volume.root], ["setcopies", "two", volume.root],
                    ["setcopies", "2"], ["-f", volume.image.path, "scrub", "extra"]] {
            XCTAssertEqual(try Binaries.run("hammer2", bad).status, 2, "\(bad)")
        }
        XCTAssertEqual(try Binaries.run("hammer2", ["pfs-create", "-n", "9", "X"]).status, 2)
        let dir = FileManager.default.temporaryDirectory.path
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", "-c", "0", dir + "/never-\(getpid()).img"]).status, 2)
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", "-c", "4", "-e", dir + "/never-\(getpid()).img"]).status, 2)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/never-\(getpid()).img"))
        // Nothing changed: still one copy, version 2 (DragonFly's).
        try volume.unmount()
        XCTAssertEqual(try VolumeSet(paths: [volume.image.path]).header.version, HAMMER2.volumeVersionMultiVolumes)
    }
}
