// The freemap allocator: DragonFly's placement rules, rotation of freemap blocks across
// flushes, node levels above more than four leaves, and reloading what was written.

@testable import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class FreemapTests: XCTestCase {
    var image = ""

    override func setUpWithError() throws {
        image = FileManager.default.temporaryDirectory.appendingPathComponent("h2-freemap-\(UUID().uuidString.prefix(8)).img").path
        FileManager.default.createFile(atPath: image, contents: nil)
        XCTAssertEqual(truncate(image, 8 << 30), 0)
        _ = try Formatter.format(device: FileBlockDevice(path: image, writable: true), options: FormatOptions(labels: ["DATA"]))
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: image) }

    func testAllocationsFollowDragonFlysPlacementRules() throws {
        let fs = try MutableFilesystem(paths: [image], writable: true)
        let begin = fs.header.allocatorBegin
        var seen: [UInt64] = []
        try fs.withLock {
            for (bytes, type) in [(65_536, BlockrefType.data), (1024, .inode), (1024, .inode), (4096, .indirect),
                                  (16_384, .data), (32_768, .data), (2048, .dirent), (1024, .inode)] {
                let offset = try fs.allocator.allocate(bytes, type: type)
                XCTAssertGreaterThanOrEqual(offset, begin)
                XCTAssertGreaterThanOrEqual(offset % (1 << 30), 4 << 20, "outside the reserved 4 MiB of each GiB")
                XCTAssertEqual(offset % UInt64(bytes), 0, "naturally aligned")
                XCTAssertTrue(fs.allocator.isAllocated(offset))
                for other in seen { XCTAssertNotEqual(other, offset) }
                seen.append(offset)
            }
        }
        // Small blocks of one type pack into one 16 KiB block; types keep to their segments.
        XCTAssertEqual(seen[2] - seen[1], 1024)
        XCTAssertNotEqual(seen[1] >> 22, seen[0] >> 22, "inodes and data in different 4 MiB segments")
    }

    func testFreemapBlocksRotateAndNodesAppearAboveFourLeaves() throws {
        var fs: MutableFilesystem! = try MutableFilesystem(paths: [image], writable: true)
        // Allocations in six different GiBs: more leaves than a blockset holds.
        let marked: [UInt64] = (1...6).map { UInt64($0) << 30 + (8 << 20) }
        var previous: [Blockref] = []
        for round in 0..<3 {
            try fs.withLock {
                for offset in marked { fs.allocator.markAllocated(offset + UInt64(round) * 65_536, bytes: 65_536) }
                try fs.commitFreemapLocked(allHeaderCopies: false)
            }
            let top = fs.header.freemapBlockset.filter { $0.type != .empty }
            XCTAssertEqual(top.map(\.type), [.freemapNode], "round \(round): one level-2 node over the leaves")
            XCTAssertEqual(top.first?.keybits, 38)
            if let old = previous.first, let new = top.first {
                XCTAssertNotEqual(old.mediaOffset, new.mediaOffset, "a rewritten freemap block moves to the next rotation")
                XCTAssertLessThan(new.mediaOffset % (1 << 30), 4 << 20, "freemap blocks live in the reserved area")
            }
            previous = top
        }
        fs = nil
        let reopened = try MutableFilesystem(paths: [image], writable: true)
        for offset in marked { XCTAssertTrue(reopened.allocator.isAllocated(offset + 2 * 65_536)) }
        XCTAssertFalse(reopened.allocator.isAllocated((7 << 30) + (8 << 20)))
        let fsck = try Binaries.run("fsck_hammer2", [image])
        XCTAssertEqual(fsck.status, 0, fsck.stdout + fsck.stderr)
    }
}
