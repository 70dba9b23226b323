// The command-line tools, run as built, against the fixtures: output that DragonFly users
// recognise, --help everywhere, exit codes scripts can rely on, and bad arguments refused
// without touching anything.

import Foundation
import Glibc
import HAMMER2TestSupport
import HAMMER2Tools
import XCTest

final class ToolTests: XCTestCase {
    func testHelpAndUsageErrors() throws {
        for tool in ["hammer2", "mount_hammer2", "fsck_hammer2", "newfs_hammer2"] {
            let help = try Binaries.run(tool, ["--help"])
            XCTAssertEqual(help.status, 0, tool)
            XCTAssertTrue(help.stdout.contains("usage") || help.stdout.contains("hammer2 [options]"), "\(tool): \(help.stdout)")
            let bad = try Binaries.run(tool, ["-Z"])
            XCTAssertEqual(bad.status, 2, "\(tool) -Z: \(bad.stderr)")
            XCTAssertTrue(bad.stderr.contains("unknown option"), bad.stderr)
        }
        XCTAssertEqual(try Binaries.run("hammer2", []).status, 2)
        XCTAssertEqual(try Binaries.run("hammer2", ["frobnicate"]).status, 2)
        XCTAssertEqual(try Binaries.run("hammer2", ["show"]).status, 2, "show without a device")
        XCTAssertEqual(try Binaries.run("fsck_hammer2", []).status, 2)
        XCTAssertEqual(try Binaries.run("fsck_hammer2", ["/nonexistent.img"]).status, 2)
        XCTAssertEqual(try Binaries.run("mount_hammer2", ["-u", "x.img", "/tmp"]).status, 2)
        XCTAssertEqual(try Binaries.run("newfs_hammer2", []).status, 2)
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-V", "7", "x.img"]).status, 2)
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-b", "5m", "x.img"]).status, 2)
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-L", "none", "-L", "A", "x.img"]).status, 2)
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["/nonexistent/dir/x.img"]).status, 1)
        for bad in ["cache=abc", "cache=0", "threads=0", "readahead=-1", "dirtymax=-1", "dirtymax=lots"] {
            let result = try Binaries.run("mount_hammer2", ["-f", "-o", bad, "x.img", "/tmp"])
            XCTAssertEqual(result.status, 2, "-o \(bad): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains("wants a number"), result.stderr)
        }
        XCTAssertEqual(try Binaries.run("mount_hammer2", ["-f", "x.img", "/nonexistent-dir"]).status, 1)
        XCTAssertEqual(try Binaries.run("hammer2", ["pfs-clid"]).status, 2, "pfs-clid without a label")
    }

    func testHashPrintsDragonFlyKeys() throws {
        let result = try Binaries.run("hammer2", ["hash", "DATA", "LOCAL"])
        XCTAssertEqual(result.status, 0)
        XCTAssertEqual(result.stdout, "c78fff92381d8000 DATA\nde25e1c43fe18000 LOCAL\n")
    }

    func testPFSListOfflineAndThroughAMount() throws {
        let image = try Fixtures.image("pfs_snap").path
        let offline = try Binaries.run("hammer2", ["-f", image, "pfs-list"])
        XCTAssertEqual(offline.status, 0, offline.stderr)
        let lines = offline.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, "Type        ClusterId (pfs_clid)                 Label on \(image)")
        XCTAssertEqual(lines.dropFirst().map { $0.split(separator: " ").last.map(String.init) ?? "" },
                       ["DATA", "EXTRA", "LOCAL", "snap1", "snap2"])
        XCTAssertTrue(lines[4].hasPrefix("SNAPSHOT    "), lines[4])
        XCTAssertTrue(lines[1].hasPrefix("MASTER      "), lines[1])

        let mount = try MountedImage(image + "@DATA")
        let online = try Binaries.run("hammer2", ["-s", mount.mountpoint.path, "pfs-list"])
        XCTAssertEqual(online.status, 0, online.stderr)
        XCTAssertEqual(online.stdout.split(separator: "\n").dropFirst(), offline.stdout.split(separator: "\n").dropFirst())
        XCTAssertTrue(online.stdout.hasPrefix("Type        ClusterId (pfs_clid)                 Label on \(mount.mountpoint.path)"))
        try mount.unmount()
        let notMounted = try Binaries.run("hammer2", ["-s", "/tmp", "pfs-list"])
        XCTAssertEqual(notMounted.status, 1)
        XCTAssertTrue(notMounted.stderr.contains("not a hammer2 filesystem"), notMounted.stderr)
    }

    func testVolhdrShowsEveryHeaderFieldAndValidCRCs() throws {
        let result = try Binaries.run("hammer2", ["volhdr", try Fixtures.image("bigdir").path])
        XCTAssertEqual(result.status, 0, result.stderr)
        for needle in ["magic          0x48414d3205172011", "(DragonFly HAMMER2)", "icrc_sects[7]", "(OK)",
                       "sroot_blockset {", "freemap_blockset {", "filename \"SUPROOT\""] {
            XCTAssertTrue(result.stdout.contains(needle), "missing \(needle)")
        }
        XCTAssertFalse(result.stdout.contains("FAILED"))
        // bigdir has all four header copies.
        for i in 0..<4 { XCTAssertTrue(result.stdout.contains("Volume 0 header \(i): mirror_tid=")) }
    }

    func testShowWalksTheWholeTopologyAndVerifiesChecks() throws {
        let result = try Binaries.run("hammer2", ["-v", "show", try Fixtures.image("compress").path])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertFalse(result.stdout.contains("failed)"), "no check failures on an intact image")
        XCTAssertTrue(result.stdout.contains("meth=sha192|zlib:default"), "sha192 zlib data blocks shown")
        XCTAssertTrue(result.stdout.contains("} (volume.0)"))
        let manifest = try Fixtures.manifest("compress")
        for entry in manifest.pfs[0].entries where entry.path != "/" {
            let name = entry.path!.split(separator: "/").last!
            XCTAssertTrue(result.stdout.contains("filename \"\(name)\""), "dirent \(name) shown")
        }
        let freemap = try Binaries.run("hammer2", ["-f", try Fixtures.image("compress").path, "freemap"])
        XCTAssertEqual(freemap.status, 0)
        XCTAssertTrue(freemap.stdout.contains("freemap_leaf"), freemap.stdout)
        XCTAssertTrue(freemap.stdout.contains("Total allocated storage:"))
    }

    func testFsckPassesEveryFixture() throws {
        for name in try Fixtures.names() {
            let result = try Binaries.run("fsck_hammer2", [try Fixtures.image(name).path])
            XCTAssertEqual(result.status, 0, "\(name): \(result.stderr)")
            XCTAssertEqual(result.stderr, "", name)
            for phase in ["volume header", "freemap", "volume", "namespace", "freemap agreement"] {
                XCTAssertTrue(result.stdout.contains("\(phase)\n"), "\(name): phase \(phase)")
            }
            XCTAssertTrue(result.stdout.contains("(best)"), name)
        }
        let bulkfree = try Binaries.run("fsck_hammer2", [try Fixtures.image("bulkfree").path])
        XCTAssertTrue(bulkfree.stdout.contains("13 unreachable inodes (orphans)"), bulkfree.stdout)
    }

    func testFsckFindsDamageAndLeavesTheImageUntouched() throws {
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("hammer2-fsck-\(getpid()).img")
        defer { try? FileManager.default.removeItem(at: copy) }
        XCTAssertEqual(try Fixtures.run("/usr/bin/env", ["cp", "--sparse=always", try Fixtures.image("sizes").path, copy.path]), 0)
        chmod(copy.path, 0o644)
        // Damage one data block of /sizes/10MiB (found with show's dump).
        let show = try Binaries.run("hammer2", ["-f", copy.path, "show"])
        let dataLine = try XCTUnwrap(show.stdout.split(separator: "\n").first { $0.contains("data.") && $0.contains("0000000000030000/16") })
        let dataOffsetField = String(dataLine.split(separator: " ").filter { !$0.isEmpty }[1])
        let dataOffset = UInt64(dataOffsetField, radix: 16)! & ~0x3F
        let fd = open(copy.path, O_RDWR)
        var byte: UInt8 = 0
        pread(fd, &byte, 1, off_t(dataOffset + 100))
        byte ^= 0xFF
        pwrite(fd, &byte, 1, off_t(dataOffset + 100))
        close(fd)
        let before = try Data(contentsOf: copy, options: .alwaysMapped).prefix(1 << 16)
        let result = try Binaries.run("fsck_hammer2", [copy.path])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("Bad HAMMER2_CHECK_XXHASH64"), result.stderr)
        XCTAssertTrue(result.stderr.contains(dataOffsetField + " data"), "names the block: \(result.stderr)")
        XCTAssertEqual(try Data(contentsOf: copy, options: .alwaysMapped).prefix(1 << 16), before, "fsck wrote nothing")
    }

    func testVolumeSpecifierAndGetOpt() throws {
        XCTAssertEqual(try VolumeSpecifier("a.img@ROOT").label, "ROOT")
        XCTAssertEqual(try VolumeSpecifier("/dev/da0s1d").labelOrDefault, "ROOT")
        XCTAssertEqual(try VolumeSpecifier("/dev/da0s1a").labelOrDefault, "BOOT")
        XCTAssertEqual(try VolumeSpecifier("x.img").labelOrDefault, "DATA")
        XCTAssertEqual(try VolumeSpecifier("v1.img:v2.img@L").devices, ["v1.img", "v2.img"])
        XCTAssertThrowsError(try VolumeSpecifier("@DATA"))
        XCTAssertThrowsError(try VolumeSpecifier("a::b"))
        let parsed = try GetOpt(["-fo", "ro,allow_other", "-d", "img", "mnt"], spec: "fdo:")
        XCTAssertEqual(parsed.options.map { String($0.0) }, ["f", "o", "d"])
        XCTAssertEqual(parsed.options[1].1, "ro,allow_other")
        XCTAssertEqual(parsed.operands, ["img", "mnt"])
        XCTAssertThrowsError(try GetOpt(["-o"], spec: "o:"))
    }
}
