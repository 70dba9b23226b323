// Multi-volume sets (HAMMER2_VOL_VERSION_MULTI_VOLUMES): logical offsets map to the right
// device, device order on the command line does not matter, and incomplete or mixed sets
// are refused with a reason.

import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class VolumeSetTests: XCTestCase {
    static let volumeSize: UInt64 = 1 << 30  // volumes other than the last are 1 GiB aligned

    /// Headers for an n-volume set derived from a DragonFly-made header.
    func makeSet(count: Int, fsidOverride: [Int: HAMMER2UUID] = [:]) throws -> [MemoryDevice] {
        let template = try VolumeSet(paths: [Fixtures.image("tiny").path]).header
        var devices: [MemoryDevice] = []
        for id in 0..<count {
            var header = template
            header.version = HAMMER2.volumeVersionMultiVolumes
            header.volumeCount = UInt8(count)
            header.volumeID = UInt8(id)
            header.volumeSize = Self.volumeSize
            header.totalSize = Self.volumeSize * UInt64(count)
            header.volumeOffsets = (0..<HAMMER2.maxVolumes).map { $0 < count ? UInt64($0) * Self.volumeSize : UInt64.max }
            if let fsid = fsidOverride[id] { header.fsid = fsid }
            let device = MemoryDevice(name: "vol\(id)", size: Self.volumeSize)
            device.write(header.encoded(), at: 0)
            // A marker at the same device offset on every volume.
            device.write(Array("volume \(id)".utf8), at: 5 << 20)
            devices.append(device)
        }
        return devices
    }

    func testLogicalOffsetsMapToTheirVolume() throws {
        let devices = try makeSet(count: 3)
        let set = try VolumeSet(devices: [devices[2], devices[0], devices[1]])  // any order
        XCTAssertEqual(set.volumes.map(\.id), [0, 1, 2])
        XCTAssertEqual(set.totalSize, 3 * Self.volumeSize)
        for id in 0..<3 {
            var buffer = [UInt8](repeating: 0, count: 8)
            try buffer.withUnsafeMutableBytes { try set.read(into: $0, at: UInt64(id) * Self.volumeSize + (5 << 20)) }
            XCTAssertEqual(buffer, Array("volume \(id)".utf8))
        }
        var buffer = [UInt8](repeating: 0, count: 16)
        XCTAssertThrowsError(try buffer.withUnsafeMutableBytes { try set.read(into: $0, at: 3 * Self.volumeSize) })
        XCTAssertThrowsError(try buffer.withUnsafeMutableBytes { try set.read(into: $0, at: Self.volumeSize - 8) },
                             "a block may not straddle two volumes")
    }

    func testIncompleteOrMixedSetsAreRefused() throws {
        let devices = try makeSet(count: 2)
        XCTAssertThrowsError(try VolumeSet(devices: [devices[0]])) { error in
            XCTAssertTrue("\(error)".contains("requires 2 devices, 1 specified"), "\(error)")
        }
        XCTAssertThrowsError(try VolumeSet(devices: [devices[1]])) { error in
            XCTAssertTrue("\(error)".contains("no root volume"), "\(error)")
        }
        let foreign = try makeSet(count: 2, fsidOverride: [1: HAMMER2UUID(bytes: [UInt8](repeating: 7, count: 16))])
        XCTAssertThrowsError(try VolumeSet(devices: [devices[0], foreign[1]])) { error in
            XCTAssertTrue("\(error)".contains("belongs to another filesystem"), "\(error)")
        }
    }
}

/// Blocks whose check code is right but whose method codes this implementation does not
/// know must not be returned (a future DragonFly, or our own encryption, may use them).
final class UnknownMethodTests: XCTestCase {
    func testUnknownCompressionAndCheckCodesAreErrorsNotBytes() throws {
        let header = try VolumeSet(paths: [Fixtures.image("tiny").path]).header
        let device = MemoryDevice(name: "unknown-methods", size: header.volumeSize)
        device.write(header.encoded(), at: 0)
        let payload = [UInt8](repeating: 0x5A, count: 1024)
        let offset: UInt64 = 64 << 20
        device.write(payload, at: offset)
        let reader = BlockReader(volumes: try VolumeSet(devices: [device]))

        var bref = Blockref.empty
        bref.type = .data
        bref.keybits = 16
        bref.dataOffset = offset | 10
        bref.methods = Blockref.methods(check: .xxhash64, compression: CompressionMethod(rawValue: 9))
        bref.check = CheckArea.computed(.xxhash64, over: payload)
        XCTAssertThrowsError(try reader.logicalData(bref)) { error in
            guard case EngineError.unknownMethod = error else { return XCTFail("\(error)") }
            XCTAssertEqual((error as? EngineError)?.errno, EIO)
        }

        bref.methods = (11 << 4) | CompressionMethod.none.rawValue
        XCTAssertThrowsError(try reader.logicalData(bref)) { error in
            guard case EngineError.unknownMethod = error else { return XCTFail("\(error)") }
        }

        // The same block with known methods reads back.
        bref.methods = Blockref.methods(check: .xxhash64, compression: .none)
        XCTAssertEqual(try reader.logicalData(bref), payload)
    }
}

/// Hostile trees (blocks that point at themselves, siblings that overlap) must end in an
/// error quickly instead of a traversal that never finishes.
final class HostileTreeTests: XCTestCase {
    func makeReader(indirectEntries: [Blockref], at offset: UInt64) throws -> BlockReader {
        let header = try VolumeSet(paths: [Fixtures.image("tiny").path]).header
        let device = MemoryDevice(name: "hostile", size: header.volumeSize)
        device.write(header.encoded(), at: 0)
        device.write(encodeBlockrefs(indirectEntries, bytes: 65_536), at: offset)
        return BlockReader(volumes: try VolumeSet(devices: [device]))
    }

    func indirect(key: UInt64, keybits: UInt8, to offset: UInt64) -> Blockref {
        var bref = Blockref.empty
        bref.type = .indirect
        bref.key = key
        bref.keybits = keybits
        bref.dataOffset = offset | 16  // 64 KiB, check none
        return bref
    }

    /// An indirect block's used slots may sit anywhere among empty ones and out of key
    /// order: a walk decodes the used ones only and visits them once each, in key order.
    func testScatteredUnorderedSlotsAreWalkedInKeyOrder() throws {
        let offset: UInt64 = 64 << 20
        let root = [indirect(key: 0, keybits: 64, to: offset)]
        var slots = [Blockref](repeating: .empty, count: 512)
        let keys: [UInt64] = [900, 5, 77, 4096, 12, 300]
        for (i, key) in keys.enumerated() {
            var leaf = Blockref.empty
            leaf.type = .data
            leaf.key = key
            slots[(i * 97) % 512] = leaf
        }
        let tree = BlockTree(reader: try makeReader(indirectEntries: slots, at: offset))
        var visited: [UInt64] = []
        try tree.forEachLeaf(in: root, from: 0, through: UInt64.max) { visited.append($0.key); return true }
        XCTAssertEqual(visited, keys.sorted())
        var ranged: [UInt64] = []
        try tree.forEachLeaf(in: root, from: 10, through: 800) { ranged.append($0.key); return true }
        XCTAssertEqual(ranged, [12, 77, 300])
    }

    func testSelfReferencesAndOverlapsAreCorruptNotEndless() throws {
        let offset: UInt64 = 64 << 20
        let root = [indirect(key: 0, keybits: 64, to: offset)]
        let cases: [[Blockref]] = [
            // 512 siblings, all the same block over the same range.
            [Blockref](repeating: indirect(key: 0, keybits: 63, to: offset), count: 512),
            // One child covering its whole parent, pointing back at itself.
            [indirect(key: 0, keybits: 64, to: offset)],
            // Two overlapping siblings.
            [indirect(key: 0, keybits: 40, to: offset), indirect(key: 1 << 20, keybits: 20, to: offset)],
        ]
        for entries in cases {
            let tree = BlockTree(reader: try makeReader(indirectEntries: entries, at: offset))
            let started = Date()
            XCTAssertThrowsError(try tree.forEachLeaf(in: root, from: 0, through: UInt64.max) { _ in true }) { error in
                guard case EngineError.corrupt = error else { return XCTFail("\(error)") }
            }
            XCTAssertLessThan(Date().timeIntervalSince(started), 5)
        }
    }
}
