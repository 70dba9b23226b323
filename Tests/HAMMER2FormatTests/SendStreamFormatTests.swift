// The send stream's framing and payloads (docs/send-receive.md): what is encoded decodes
// back, and what a receiver must not write is refused at decoding.

import HAMMER2Format
import XCTest

final class SendStreamFormatTests: XCTestCase {
    func testRecordsAndPayloadsRoundTrip() throws {
        let header = SendStreamRecordHeader(type: .blocks, sequence: 7, payloadBytes: 1234, payloadHash: 0xFEED)
        XCTAssertEqual(try header.encoded().withUnsafeBytes { try SendStreamRecordHeader(decoding: $0) }, header)
        let id = HAMMER2UUID(bytes: (0..<16).map { UInt8($0) })
        let begin = SendStreamBegin(snapshotFilesystemID: id, snapshotClusterID: id, baseFilesystemID: .zero, nextInodeNumber: 9,
                                    resumeSequence: 3, resumeHash: 4, label: Array("snap".utf8))
        XCTAssertEqual(try begin.encoded().withUnsafeBytes { try SendStreamBegin(decoding: $0) }, begin)
        var sized = begin
        sized.expectedBytes = 123_456_789
        XCTAssertEqual(sized.encoded().count, begin.encoded().count + 8, "the expected size follows the label")
        XCTAssertEqual(try sized.encoded().withUnsafeBytes { try SendStreamBegin(decoding: $0) }, sized)
        XCTAssertThrowsError(try (begin.encoded() + [1, 2, 3]).withUnsafeBytes { try SendStreamBegin(decoding: $0) })
        let blocks = SendStreamBlocks(blocks: [.init(inum: 5, offset: 65_536, methods: 0x32, stored: [UInt8](repeating: 1, count: 4096))])
        XCTAssertEqual(try blocks.encoded().withUnsafeBytes { try SendStreamBlocks(decoding: $0) }, blocks)
        let token = SendResumeToken(snapshotFilesystemID: id, baseFilesystemID: .zero, sequence: 12, hash: 0xABCDEF)
        XCTAssertEqual(SendResumeToken(token.text), token)
    }

    func testDecodersRefuseWhatAReceiverMustNotWrite() throws {
        func blocks(methods: UInt8 = 0x32, length: Int = 4096, offset: UInt64 = 0) -> [UInt8] {
            SendStreamBlocks(blocks: [.init(inum: 5, offset: offset, methods: methods, stored: [UInt8](repeating: 1, count: length))]).encoded()
        }
        for (bytes, why) in [(blocks(length: 1000), "not a power of two"), (blocks(length: 512), "under 1 KiB"),
                             (blocks(methods: 0x61), "encrypted (sealed blocks do not travel in version 1)"),
                             (blocks(methods: 0x31), "autozero"), (blocks(methods: 0x74), "unknown methods"),
                             (blocks(offset: 100), "offset inside a block"), (Array(blocks().dropLast()), "cut short")] {
            XCTAssertThrowsError(try bytes.withUnsafeBytes { try SendStreamBlocks(decoding: $0) }, why)
        }
        var header = SendStreamRecordHeader(type: .end, sequence: 1, payloadBytes: 16, payloadHash: 1).encoded()
        header[0x08] ^= 1  // the sequence changed: the CRC no longer holds
        XCTAssertThrowsError(try header.withUnsafeBytes { try SendStreamRecordHeader(decoding: $0) })
        var big = SendStreamRecordHeader(type: .inodes, sequence: 1, payloadBytes: UInt32(SendStreamRecordHeader.maximumPayload + 1),
                                         payloadHash: 0).encoded()
        XCTAssertThrowsError(try big.withUnsafeBytes { try SendStreamRecordHeader(decoding: $0) }, "a payload past the limit")
        big[0x06] = 2  // version 2
        XCTAssertThrowsError(try big.withUnsafeBytes { try SendStreamRecordHeader(decoding: $0) })
        XCTAssertNil(SendResumeToken("1-zz"))
        XCTAssertNil(SendResumeToken("2-" + String(repeating: "0", count: 32) + "-" + String(repeating: "0", count: 32) + "-0000000000000001-0000000000000000"))
    }

    /// Raw blocks (sealed, as stored) carry location-free blockrefs of a sealed tree.
    func testRawBlocksRoundTripAndRefuseWhatIsNotSealedOrPlaced() throws {
        func bref(_ type: BlockrefType = .data, check: CheckMethod = .xaes256gcm, radix: Int = 12, offset: UInt64 = 0) -> Blockref {
            var bref = Blockref(type: type, methods: Blockref.methods(check: check, compression: .lz4), key: 65_536, keybits: 16, tid: 0)
            bref.dataOffset = offset | UInt64(radix)
            return bref
        }
        func encoded(_ bref: Blockref, length: Int? = nil) -> [UInt8] {
            SendStreamRawBlocks(blocks: [.init(tree: 1025, bref: bref, stored: [UInt8](repeating: 7, count: length ?? bref.physicalBytes))]).encoded()
        }
        let good = SendStreamRawBlocks(blocks: [.init(tree: 1025, bref: bref(), stored: [UInt8](repeating: 7, count: 4096)),
                                               .init(tree: 0, bref: bref(.inode, radix: 10), stored: [UInt8](repeating: 8, count: 1024))])
        XCTAssertEqual(try good.encoded().withUnsafeBytes { try SendStreamRawBlocks(decoding: $0) }, good)
        var placed = bref()
        placed.mirrorTID = 5
        for (bytes, why) in [(encoded(bref(check: .xxhash64)), "not sealed"), (encoded(bref(offset: 1 << 20)), "with a location"),
                             (encoded(placed), "with a transaction id"), (encoded(bref(radix: 9)), "under 1 KiB"),
                             (encoded(bref(.inode, radix: 12)), "an inode of 4 KiB"), (encoded(bref(.freemapLeaf)), "not in a PFS tree"),
                             (Array(encoded(bref()).dropLast()), "cut short"), (encoded(bref()) + [0], "trailing bytes")] {
            XCTAssertThrowsError(try bytes.withUnsafeBytes { try SendStreamRawBlocks(decoding: $0) }, why)
        }
    }
}
