// PFSes and snapshots through the engine: a snapshot shares the origin's blocks, and
// changes on either side never show on the other, across flushes, bulkfree and reopening.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class SnapshotTests: XCTestCase {
    var image = ""
    let caller = Caller(uid: 0, gid: 0)

    override func setUpWithError() throws {
        image = FileManager.default.temporaryDirectory.appendingPathComponent("h2-snap-\(UUID().uuidString.prefix(8)).img").path
        FileManager.default.createFile(atPath: image, contents: nil)
        XCTAssertEqual(truncate(image, 1 << 30), 0)
        _ = try Formatter.format(device: FileBlockDevice(path: image, writable: true), options: FormatOptions(labels: ["DATA"]))
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: image) }

    func write(_ pfs: PFSHandle, _ name: String, _ bytes: [UInt8]) throws {
        let inum: UInt64
        if let existing = try? pfs.lookup(1, Array(name.utf8)) {
            inum = existing.meta.inum
            _ = try pfs.setAttributes(inum, AttributeChanges(size: 0))
        } else {
            inum = try pfs.create(in: 1, name: Array(name.utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        }
        _ = try bytes.withUnsafeBytes { try pfs.write(inum, offset: 0, $0) }
    }

    func read(_ pfs: PFSHandle, _ name: String) throws -> [UInt8]? {
        guard let status = try? pfs.lookup(1, Array(name.utf8)) else { return nil }
        return try pfs.read(status.meta.inum, offset: 0, count: Int(status.meta.size))
    }

    func testSnapshotsAreIndependentOfTheirOrigin() throws {
        var random = SplitMix64(seed: 61)
        let a = random.bytes(300_000), b = random.bytes(5000), c = random.bytes(100)
        do {  // the writer is closed at the end of this scope (one writer per image)
            let fs = try MutableFilesystem(paths: [image], writable: true)
            let data = try fs.openPFS("DATA")
            try write(data, "a", a)
            try write(data, "b", b)
            try fs.snapshot(of: "DATA", label: "snap1")  // flushes DATA first, unflushed changes included
            XCTAssertEqual(try fs.pfsLabels().sorted(), ["DATA", "LOCAL", "snap1"])
            let snap = try fs.openPFS("snap1")
            XCTAssertEqual(try read(snap, "a").map(sha256Hex), sha256Hex(a))

            // Change the origin: the snapshot keeps the old state; and the other way round.
            try write(data, "a", c)
            try data.unlink(in: 1, name: Array("b".utf8))
            try write(data, "new-in-origin", c)
            try write(snap, "new-in-snapshot", b)
            try fs.flush()
            XCTAssertEqual(try read(snap, "a").map(sha256Hex), sha256Hex(a))
            XCTAssertEqual(try read(snap, "b").map(sha256Hex), sha256Hex(b))
            XCTAssertNil(try read(snap, "new-in-origin"))
            XCTAssertNil(try read(data, "new-in-snapshot"))
            XCTAssertEqual(try read(data, "a"), c)

            // bulkfree must keep every block either side still uses.
            let result = try fs.bulkfree()
            XCTAssertGreaterThan(result.referencedBytes, 0)
        }
        let reopened = try MutableFilesystem(paths: [image], writable: true)
        let snapAgain = try reopened.openPFS("snap1"), dataAgain = try reopened.openPFS("DATA")
        XCTAssertEqual(try read(snapAgain, "a").map(sha256Hex), sha256Hex(a))
        XCTAssertEqual(try read(snapAgain, "new-in-snapshot").map(sha256Hex), sha256Hex(b))
        XCTAssertEqual(try read(dataAgain, "a"), c)
        // The snapshot is a MASTER of subtype SNAPSHOT with its own ids.
        let entries = try Filesystem(paths: [image]).pfsEntries()
        let snapInode = entries.first { $0.name == "snap1" }!.inode.meta
        let dataInode = entries.first { $0.name == "DATA" }!.inode.meta
        XCTAssertEqual(snapInode.pfsType, .master)
        XCTAssertEqual(snapInode.pfsSubtype, PFSSubtype.snapshot)
        XCTAssertNotEqual(snapInode.pfsClusterID, dataInode.pfsClusterID)
        XCTAssertNotEqual(snapInode.pfsFilesystemID, dataInode.pfsFilesystemID)
        XCTAssertGreaterThan(dataInode.pfsLastSnapshotTID, 0)
        let fsck = try Binaries.run("fsck_hammer2", [image])
        XCTAssertEqual(fsck.status, 0, fsck.stdout + fsck.stderr)
    }

    func testCreateAndDeletePFS() throws {
        let fs = try MutableFilesystem(paths: [image], writable: true)
        try fs.createPFS(label: "EXTRA")
        XCTAssertThrowsError(try fs.createPFS(label: "EXTRA")) { XCTAssertEqual(($0 as? EngineError)?.errno, EEXIST) }
        XCTAssertThrowsError(try fs.createPFS(label: "a/b")) { XCTAssertEqual(($0 as? EngineError)?.errno, EINVAL) }
        let extra = try fs.openPFS("EXTRA")
        try write(extra, "f", [1, 2, 3])
        XCTAssertThrowsError(try fs.deletePFS(label: "EXTRA")) { XCTAssertEqual(($0 as? EngineError)?.errno, EBUSY) }
        try fs.createPFS(label: "GONE")
        try fs.deletePFS(label: "GONE")
        XCTAssertThrowsError(try fs.deletePFS(label: "GONE")) { XCTAssertEqual(($0 as? EngineError)?.errno, ENOENT) }
        try fs.flush()
        XCTAssertEqual(try fs.pfsLabels().sorted(), ["DATA", "EXTRA", "LOCAL"])
        let meta = try Filesystem(paths: [image]).pfsEntries().first { $0.name == "EXTRA" }!.inode.meta
        XCTAssertEqual(meta.compressionAlgorithm, .lz4)
        XCTAssertEqual(meta.checkAlgorithm, .xxhash64)
        XCTAssertEqual(meta.pfsType, .master)
        XCTAssertEqual(try Binaries.run("fsck_hammer2", [image]).status, 0)
    }
}
