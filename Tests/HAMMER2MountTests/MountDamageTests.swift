// Damaged images through the real mount: a mount that cannot work is refused with a
// message and exit status 1; a damaged block gives EIO on exactly the file it belongs to,
// with a log line naming it, while every other file still reads correctly.

import Foundation
import Glibc
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import HAMMER2Trace
import XCTest

final class MountDamageTests: XCTestCase {
    var scratch: [URL] = []

    override func tearDown() {
        scratch.forEach { try? FileManager.default.removeItem(at: $0) }
    }

    /// A writable sparse copy of a fixture image.
    func copy(_ name: String) throws -> URL {
        let target = FileManager.default.temporaryDirectory.appendingPathComponent("hammer2-damaged-\(name)-\(getpid()).img")
        try? FileManager.default.removeItem(at: target)
        XCTAssertEqual(try Fixtures.run("/usr/bin/env", ["cp", "--sparse=always", try Fixtures.image(name).path, target.path]), 0)
        XCTAssertEqual(chmod(target.path, 0o644), 0)
        scratch.append(target)
        return target
    }

    func overwrite(_ image: URL, at offset: UInt64, _ bytes: [UInt8]) throws {
        let fd = open(image.path, O_WRONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        XCTAssertEqual(bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }, bytes.count)
    }

    func testMountRefusesUnusableImagesWithAMessage() throws {
        let truncated = try copy("tiny")
        XCTAssertEqual(truncate(truncated.path, 32 << 20), 0)
        var result = try Binaries.run("mount_hammer2", ["-f", truncated.path + "@DATA", "/tmp"])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("truncated"), result.stderr)

        let zeroed = try copy("tiny")
        try overwrite(zeroed, at: 0, [UInt8](repeating: 0, count: 65_536))
        result = try Binaries.run("mount_hammer2", ["-f", zeroed.path + "@DATA", "/tmp"])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("no valid volume headers"), result.stderr)

        result = try Binaries.run("mount_hammer2", ["-f", "/nonexistent/image@DATA", "/tmp"])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("No such file or directory"), result.stderr)

        result = try Binaries.run("mount_hammer2", ["-f", truncated.path])
        XCTAssertEqual(result.status, 2, "missing mount point is a usage error")
    }

    func testDamagedDataBlockIsEIOOnlyForItsFileAndIsLogged() throws {
        let image = try copy("sizes")
        let fs = try Filesystem(paths: [image.path])
        let pfs = try fs.openPFS("DATA")
        let dir = try pfs.inode(try pfs.lookup(in: pfs.root, name: Array("sizes".utf8)).inum)
        let victim = try pfs.lookup(in: dir, name: Array("1MiB".utf8))
        let inode = try pfs.inode(victim.inum)
        var target: Blockref?
        try pfs.tree.forEachLeaf(in: inode.blockset, from: 0, through: UInt64.max) { bref in
            if bref.type == .data && bref.key == 3 << 16 { target = bref; return false }
            return true
        }
        let bref = try XCTUnwrap(target)
        let original = try FileBlockDevice(path: image.path).read(at: bref.mediaOffset, count: 1)[0]
        try overwrite(image, at: bref.mediaOffset, [original ^ 0x40])

        let mount = try MountedImage(image.path + "@DATA")
        let path = mount.mountpoint.path + "/sizes/1MiB"
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0, "metadata of the damaged file is intact")
        let fd = open(path, O_RDONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        var buffer = [UInt8](repeating: 0, count: 65_536)
        // Blocks before the damaged one read fine; the damaged one is EIO.
        XCTAssertEqual(buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }, 65_536)
        XCTAssertEqual(buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(3 << 16)) }, -1)
        XCTAssertEqual(errno, EIO)
        close(fd)
        // The trace has the failure: an event naming the block, and the counters.
        let trace = try TraceReader(path: TraceFiles.defaultPath(pid: mount.daemonPID))
        let checkFailed = try XCTUnwrap(trace.catalog().events.values.first { $0.name == "check.failed" }?.id)
        let failures = trace.events().filter { $0.event == checkFailed }
        XCTAssertFalse(failures.isEmpty, "a check.failed event")
        XCTAssertTrue(failures.allSatisfy { $0.arguments[0] == bref.mediaOffset && $0.arguments[1] == UInt64(bref.physicalBytes) })
        XCTAssertEqual(trace.statistics("pfs.DATA")?["check_failures"], UInt64(failures.count))
        XCTAssertEqual(trace.statistics("volume.0")?["check_failures"], UInt64(failures.count))

        let manifest = try Fixtures.manifest("sizes").pfs.first { $0.name == "DATA" }!
        for entry in manifest.entries where entry.type == "file" && entry.path != "/sizes/1MiB" {
            let data = try Data(contentsOf: URL(fileURLWithPath: mount.mountpoint.path + entry.path!))
            XCTAssertEqual(sha256Hex(data), entry.sha256, "\(entry.path!) still reads correctly")
        }
        try mount.unmount()
        let log = mount.log
        XCTAssertTrue(log.contains("check code mismatch"), "log: \(log)")
        XCTAssertTrue(log.contains("inode \(victim.inum)"), "the log names the inode: \(log)")
        XCTAssertTrue(log.contains(Text(hex: bref.dataOffset)), "the log names the block: \(log)")
    }
}

private func Text(hex value: UInt64) -> String {
    let s = String(value, radix: 16)
    return String(repeating: "0", count: max(0, 16 - s.count)) + s
}
