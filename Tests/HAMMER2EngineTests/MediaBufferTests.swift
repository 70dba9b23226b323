// Small blocks are read through cached 64 KiB media buffers; a block written into a
// buffer's range after it was cached (a read-write mount writing while others read) must
// still read correctly, never fail its check against the stale buffer.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class MediaBufferTests: XCTestCase {
    func testABlockWrittenAfterItsMediaBufferWasCachedStillReads() throws {
        let device = RecordingDevice(size: 256 << 20)
        _ = try Formatter.format(device: device, options: FormatOptions(labels: ["DATA"]))
        let reader = BlockReader(volumes: try VolumeSet(devices: [device]))
        let (superRootBref, superRoot) = try reader.superRoot()  // caches the media buffer around it
        // A new inode block in the same 64 KiB, written behind the cache's back.
        var meta = superRoot.meta
        meta.inum = 4242
        let bytes = InodeData(meta: meta, filename: Array("new".utf8), content: .blockset([])).encoded()
        let offset = superRootBref.mediaOffset + 8 * 1024
        XCTAssertEqual(offset & ~0xFFFF, superRootBref.mediaOffset & ~0xFFFF, "same media buffer")
        try bytes.withUnsafeBytes { try device.write($0, at: offset) }
        var bref = superRootBref
        bref.dataOffset = Blockref.dataOffset(offset, radix: 10)
        bref.setCheck(over: bytes)
        XCTAssertEqual(try reader.inode(bref).meta.inum, 4242)
    }
}
