// Decompressors must reject damaged input with an error, never return partial bytes.

import HAMMER2Codecs
import XCTest

final class DecompressionTests: XCTestCase {
    func testLZ4LengthPrefixBeyondBlockIsRejected() {
        var block = [UInt8](repeating: 0, count: 1024)
        block[0] = 0xFF; block[1] = 0xFF  // 65535 > 1020
        XCTAssertThrowsError(try block.withUnsafeBytes { try Decompressor.lz4($0) }) { error in
            XCTAssertEqual(error as? DecompressionError, .lz4BadLengthPrefix(length: 65_535, available: 1020))
        }
        XCTAssertThrowsError(try [UInt8]([1, 2]).withUnsafeBytes { try Decompressor.lz4($0) })
    }

    func testLZ4GarbageIsRejected() {
        var block: [UInt8] = [16, 0, 0, 0]  // 16 bytes of "compressed" data
        block += [0xF0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        XCTAssertThrowsError(try block.withUnsafeBytes { try Decompressor.lz4($0) })
    }

    func testLZ4LiteralOnlyBlockDecodes() throws {
        // An LZ4 block with a single literal run: token 0x50 = 5 literals, no match.
        let block: [UInt8] = [6, 0, 0, 0, 0x50] + Array("hello".utf8)
        XCTAssertEqual(try block.withUnsafeBytes { try Decompressor.lz4($0) }, Array("hello".utf8))
    }

    func testZlibGarbageAndTruncationAreRejected() {
        XCTAssertThrowsError(try [UInt8](repeating: 0xAB, count: 64).withUnsafeBytes { try Decompressor.zlib($0) })
        // A valid stream ("hello", from zlib.compress) cut short.
        let stream: [UInt8] = [0x78, 0x9c, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x06, 0x2c, 0x02, 0x15]
        XCTAssertEqual(try stream.withUnsafeBytes { try Decompressor.zlib($0) }, Array("hello".utf8))
        XCTAssertThrowsError(try Array(stream.prefix(8)).withUnsafeBytes { try Decompressor.zlib($0) })
    }
}
