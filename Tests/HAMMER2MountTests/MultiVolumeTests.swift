// A two-volume filesystem end to end: an image built with data past its first GiB is cut
// into two devices of 1 GiB, each given its volume header (volu_id, nvolumes, volu_loff),
// then read through the engine and mounted with DragonFly's "dev1:dev2@LABEL" syntax.

import Foundation
import Glibc
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class MultiVolumeTests: XCTestCase {
    static let volumeSize: UInt64 = 1 << 30

    func testTwoVolumeFilesystemReadsAndMounts() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("hammer2-multi-\(getpid())")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: base) }
        let whole = base.appendingPathComponent("whole.img").path
        let tail = Array((0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) })
        // 1.1 GiB of zeros stored uncompressed and unchecked (allocated, never written: the
        // image stays sparse) pushes the next file's data into the second GiB.
        let spec = ImageSpec(size: 2 * Self.volumeSize, pfs: [PFSSpec(label: "DATA", entries: [
            .file("zeros", size: 1100 << 20, compression: BlockCompression.none, check: CheckMethod.none) { _, buffer in
                buffer.initializeMemory(as: UInt8.self, repeating: 0)
            },
            .file("tail.bin", tail, compression: BlockCompression.none, check: .xxhash64),
        ])])
        _ = try ImageBuilder.build(spec, at: whole)

        // tail.bin's data must lie on the second volume for the test to mean anything.
        let single = try Filesystem(paths: [whole])
        let pfs = try single.openPFS("DATA")
        let tailInode = try pfs.inode(try pfs.lookup(in: pfs.root, name: Array("tail.bin".utf8)).inum)
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(tailInode.blockset.first { $0.type == .data }).mediaOffset, Self.volumeSize)

        // Cut the image into two devices and give each its own header.
        let vol0 = base.appendingPathComponent("vol0.img").path, vol1 = base.appendingPathComponent("vol1.img").path
        XCTAssertEqual(try Fixtures.run("/usr/bin/env", ["dd", "if=\(whole)", "of=\(vol0)", "bs=1M", "count=1024", "conv=sparse", "status=none"]), 0)
        XCTAssertEqual(try Fixtures.run("/usr/bin/env", ["dd", "if=\(whole)", "of=\(vol1)", "bs=1M", "skip=1024", "count=1024", "conv=sparse", "status=none"]), 0)
        XCTAssertEqual(truncate(vol0, off_t(Self.volumeSize)), 0)
        XCTAssertEqual(truncate(vol1, off_t(Self.volumeSize)), 0)
        var header = single.volumes.header
        header.version = HAMMER2.volumeVersionMultiVolumes
        header.volumeCount = 2
        header.volumeSize = Self.volumeSize
        header.totalSize = 2 * Self.volumeSize
        header.volumeOffsets = (0..<HAMMER2.maxVolumes).map { $0 < 2 ? UInt64($0) * Self.volumeSize : UInt64.max }
        for (id, path) in [vol0, vol1].enumerated() {
            header.volumeID = UInt8(id)
            let fd = open(path, O_WRONLY)
            let bytes = header.encoded()
            XCTAssertEqual(bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }, bytes.count)
            close(fd)
        }

        // Through the engine, devices in either order.
        let multi = try Filesystem(paths: [vol1, vol0])
        XCTAssertEqual(multi.volumes.volumes.count, 2)
        let multiPFS = try multi.openPFS("DATA")
        let inode = try multiPFS.inode(try multiPFS.lookup(in: multiPFS.root, name: Array("tail.bin".utf8)).inum)
        XCTAssertEqual(try multiPFS.read(inode, offset: 0, count: tail.count), tail)
        XCTAssertThrowsError(try Filesystem(paths: [vol0]), "one volume of two is refused")

        // Through the mount, with DragonFly's syntax.
        let mount = try MountedImage("\(vol0):\(vol1)@DATA")
        XCTAssertEqual(Array(try Data(contentsOf: mount.mountpoint.appendingPathComponent("tail.bin"))), tail)
        var st = stat()
        XCTAssertEqual(stat(mount.mountpoint.path + "/zeros", &st), 0)
        XCTAssertEqual(UInt64(st.st_size), 1100 << 20)
        try mount.unmount()

        let fsck = try Binaries.run("fsck_hammer2", ["\(vol0):\(vol1)"])
        XCTAssertTrue(fsck.stdout.contains("volume 1 \(vol1)"), fsck.stdout)
        XCTAssertEqual(fsck.status, 0, fsck.stdout + fsck.stderr)
        XCTAssertEqual(fsck.stderr, "")
    }
}
