// Faults under the filesystem: failed writes and barriers during a flush report an error,
// keep the changes in memory for a retry and leave the last flushed state on the device
// intact; a device returning wrong data gives EIO for what it hit, never wrong bytes.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class FaultInjectionTests: XCTestCase {
    let caller = Caller(uid: 0, gid: 0)
    var recording: RecordingDevice!
    var device: FaultyDevice!

    override func setUpWithError() throws {
        recording = RecordingDevice(size: (2 << 30) + (64 << 20))
        _ = try Formatter.format(device: recording, options: FormatOptions(labels: ["DATA"]))
        device = FaultyDevice(base: recording)
    }

    /// What a fresh mount of the device as it is now would read: name -> content.
    func onDisk() throws -> [String: [UInt8]] {
        let copy = RecordingDevice(size: recording.size, pages: recording.contents)
        let pfs = try Filesystem(volumes: VolumeSet(devices: [copy])).openPFS("DATA")
        var result: [String: [UInt8]] = [:]
        try pfs.readDirectory(pfs.root, from: 0) { entry in
            let inode = try pfs.inode(entry.inum)
            result[String(decoding: entry.name, as: UTF8.self)] = try pfs.read(inode, offset: 0, count: Int(inode.meta.size))
            return true
        }
        return result
    }

    func put(_ pfs: PFSHandle, _ name: String, _ bytes: [UInt8]) throws {
        let inum = try pfs.create(in: 1, name: Array(name.utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        _ = try bytes.withUnsafeBytes { try pfs.write(inum, offset: 0, $0) }
    }

    func testFailedWritesAndBarriersLeaveTheLastFlushIntactAndCanBeRetried() throws {
        var random = SplitMix64(seed: 91)
        let fs = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: false)
        let pfs = try fs.openPFS("DATA")
        let first = random.bytes(300_000)
        try put(pfs, "first", first)
        try pfs.flush()
        XCTAssertEqual(try onDisk(), ["first": first])

        for (label, faults, code) in [("write error", FaultyDevice.Faults(failWritesFrom: 2), EIO),
                                      ("device full", FaultyDevice.Faults(failWritesFrom: 5, writeErrno: ENOSPC), ENOSPC),
                                      ("first write refused", FaultyDevice.Faults(failWritesFrom: 0, writeErrno: ENOSPC), ENOSPC),
                                      ("barrier error", FaultyDevice.Faults(failBarriers: true), EIO)] {
            let bytes = random.bytes(200_000)
            try put(pfs, label, bytes)
            device.set(faults)
            XCTAssertThrowsError(try pfs.flush(), label) { XCTAssertEqual(($0 as? EngineError)?.errno, code, label) }
            // The change is still there for readers and for the next flush...
            XCTAssertEqual(sha256Hex(try pfs.read(try pfs.lookup(1, Array(label.utf8)).meta.inum, offset: 0, count: bytes.count)),
                           sha256Hex(bytes))
            // ...and the device still holds the last good flush (a barrier error may have let
            // the header through; then it is the new state, complete).
            let disk = try onDisk()
            XCTAssertTrue(disk[label] == nil || disk[label] == bytes, label)
            XCTAssertEqual(disk["first"], first, label)
            device.set(FaultyDevice.Faults())
            try pfs.flush()
            XCTAssertEqual(try onDisk()[label], bytes, "\(label): retried")
        }
        XCTAssertTrue(Verifier(volumes: try VolumeSet(devices: [RecordingDevice(size: recording.size, pages: recording.contents)]))
            .verifyTree(.topology, header: fs.volumes.header).1.isEmpty)
    }

    func testWrongDataFromTheDeviceIsEIONeverWrongBytes() throws {
        var random = SplitMix64(seed: 92)
        let bytes = random.bytes(500_000), other = random.bytes(70_000)
        do {
            let fs = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: false)
            let pfs = try fs.openPFS("DATA")
            try put(pfs, "victim", bytes)
            try put(pfs, "other", other)
            try pfs.flush()
        }
        // Corrupt what the device returns for the victim's third data block.
        let reader = try Filesystem(volumes: VolumeSet(devices: [device])).openPFS("DATA")
        let victim = try reader.inode(try reader.lookup(in: reader.root, name: Array("victim".utf8)).inum)
        var target: Blockref?
        try BlockTree(reader: reader.reader).forEachLeaf(in: victim.blockset, from: 2 << 16, through: 2 << 16) {
            target = $0
            return false
        }
        let block = try XCTUnwrap(target)
        device.set(FaultyDevice.Faults(corruptReads: [block.mediaOffset...(block.mediaOffset + 100)]))
        let fresh = try Filesystem(volumes: VolumeSet(devices: [device])).openPFS("DATA")
        let inode = try fresh.inode(try fresh.lookup(in: fresh.root, name: Array("victim".utf8)).inum)
        XCTAssertThrowsError(try fresh.read(inode, offset: 0, count: bytes.count)) {
            XCTAssertEqual(($0 as? EngineError)?.errno, EIO)
        }
        // The blocks before it and the other file read correctly.
        XCTAssertEqual(try fresh.read(inode, offset: 0, count: 2 << 16), Array(bytes[0..<(2 << 16)]))
        let otherInode = try fresh.inode(try fresh.lookup(in: fresh.root, name: Array("other".utf8)).inum)
        XCTAssertEqual(sha256Hex(try fresh.read(otherInode, offset: 0, count: other.count)), sha256Hex(other))
        // Through the read-write engine as well.
        let fs = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: true)
        let pfs = try fs.openPFS("DATA")
        XCTAssertThrowsError(try pfs.read(try pfs.lookup(1, Array("victim".utf8)).meta.inum, offset: 2 << 16, count: 1000))
    }
}
