// Small writes into 64 KiB blocks (databases, fio's random writes): a write into a dirty
// block changes it where it lies, and a block read to be changed in part is cached by the
// flush under its new place, so changing it again after the flush reads nothing back. What
// matters is that the bytes stay right through prewrites, flushes and a reopening.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import Synchronization
import XCTest

/// An in-memory device that counts the bytes read from it.
private final class CountingDevice: BlockDevice, @unchecked Sendable {
    let inner: RecordingDevice
    let bytesRead = Atomic<Int>(0)
    var name: String { inner.name }
    var size: UInt64 { inner.size }

    init(size: UInt64) { inner = RecordingDevice(size: size) }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        bytesRead.add(buffer.count, ordering: .relaxed)
        try inner.read(into: buffer, at: offset)
    }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws { try inner.write(buffer, at: offset) }
    func synchronize() throws { try inner.synchronize() }
}

final class PartialWriteTests: XCTestCase {
    func testSmallWritesIntoBlocksStayRightAcrossFlushesAndAReopening() throws {
        let device = CountingDevice(size: 512 << 20)
        _ = try Formatter.format(device: device, options: FormatOptions(labels: ["DATA"]))
        var model = [UInt8]()
        var random = SplitMix64(seed: 22)
        let inum: UInt64
        do {
            let fs = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: false)
            let pfs = try fs.openPFS("DATA")
            inum = try pfs.create(in: 1, name: Array("db".utf8), type: .regularFile, mode: 0o644, caller: Caller(uid: 0, gid: 0)).meta.inum
            model = random.bytes(1 << 20)  // 16 blocks, written whole
            _ = try model.withUnsafeBytes { try pfs.write(inum, offset: 0, $0) }
            try pfs.flush()

            func write(_ count: Int, at offset: Int) throws {
                let bytes = random.bytes(count)
                _ = try bytes.withUnsafeBytes { try pfs.write(inum, offset: UInt64(offset), $0) }
                if offset + count > model.count { model += [UInt8](repeating: 0, count: offset + count - model.count) }
                model.replaceSubrange(offset..<(offset + count), with: bytes)
            }
            // A clean block changed in part is read from the device once...
            var before = device.bytesRead.load(ordering: .relaxed)
            try write(4096, at: 3 * 65_536 + 8192)
            XCTAssertGreaterThan(device.bytesRead.load(ordering: .relaxed), before, "a clean block is read to be changed")
            // ...changed again while dirty (in place) and across block edges...
            try write(4096, at: 3 * 65_536 + 100)
            try write(10_000, at: 4 * 65_536 - 5000)
            try pfs.flush()
            // ...and after the flush, changing it again reads nothing back.
            before = device.bytesRead.load(ordering: .relaxed)
            try write(4096, at: 3 * 65_536 + 30_000)
            XCTAssertEqual(device.bytesRead.load(ordering: .relaxed), before, "the flushed block came from the cache")
            // Many small writes over few blocks with flushes between them (each flush
            // prewrites the blocks first; writes land in blocks a prewrite holds too).
            for round in 0..<6 {
                for _ in 0..<200 {
                    try write(Int(1 + random.next() % 8192), at: Int(random.next() % UInt64(model.count + 100_000)))
                }
                if round % 2 == 0 { try pfs.flush() }
                XCTAssertEqual(try pfs.read(inum, offset: 0, count: model.count + 10), model, "round \(round)")
            }
            try pfs.flush()
        }
        // What the device holds: the same bytes, read by a fresh mount.
        let reopened = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: true).openPFS("DATA")
        XCTAssertEqual(try reopened.attributes(inum).meta.size, UInt64(model.count))
        XCTAssertEqual(try reopened.read(inum, offset: 0, count: model.count), model)
    }
}
