// Check codes, directory hash and decoders against known values: standard test vectors
// where they exist, and values read off DragonFly-made images otherwise.

import HAMMER2Codecs
import HAMMER2Format
import XCTest

final class CheckCodeTests: XCTestCase {
    func testCRC32CStandardVector() {
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum([UInt8]()), 0)
        // 32 bytes of zeros (RFC 3720 B.4).
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
    }

    func testCRC32CSlicedPathMatchesBytewise() {
        // Lengths around the 8-byte stride must agree with a plain bitwise CRC.
        func bitwise(_ data: [UInt8]) -> UInt32 {
            var crc: UInt32 = 0xFFFF_FFFF
            for byte in data {
                crc ^= UInt32(byte)
                for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
            }
            return ~crc
        }
        var data: [UInt8] = []
        for length in 0..<70 {
            XCTAssertEqual(CRC32C.checksum(data), bitwise(data), "length \(length)")
            data.append(UInt8(truncatingIfNeeded: length &* 37 &+ 11))
        }
    }

    func testXXHash64MatchesTheReferenceVector() {
        // XXH64 of the empty input with seed 0 is 0xEF46DB3751D8E999.
        let empty = [UInt8]()
        XCTAssertEqual(empty.withUnsafeBytes { CheckCode.xxhash64($0, seed: 0) }, 0xEF46_DB37_51D8_E999)
    }

    func testDirectoryHashMatchesDragonFly() {
        // Keys of the PFS inodes under the super-root of a DragonFly-made image.
        XCTAssertEqual(DirectoryHash.key(for: "DATA"), 0xc78f_ff92_381d_8000)
        XCTAssertEqual(DirectoryHash.key(for: "LOCAL"), 0xde25_e1c4_3fe1_8000)
        for name in ["a", "file.txt", "a-b_c~d.e", String(repeating: "x", count: 255)] {
            let key = DirectoryHash.key(for: name)
            XCTAssertEqual(key & HAMMER2.dirhashVisible, HAMMER2.dirhashVisible, "bit 63 set")
            XCTAssertEqual(key & 0x8000, 0x8000, "bit 15 set")
            XCTAssertEqual(key & 0x7FFF, 0, "low bits free for collisions")
        }
    }

    func testSHA192FoldsTheFourthWordIntoTheThird() {
        let data = Array("hammer2".utf8)
        let folded = data.withUnsafeBytes { CheckCode.sha192($0) }
        XCTAssertEqual(folded.count, 24)
        XCTAssertNotEqual(folded, [UInt8](repeating: 0, count: 24))
    }

    func testUnknownCheckMethodIsNeverTrusted() {
        var bref = Blockref.empty
        bref.type = .data
        bref.methods = 0x90
        XCTAssertEqual(CheckCode.verify(bref, [1, 2, 3]), .unknownMethod(9))
    }

    func testBlockrefDecodesHAMMER2Offsets() throws {
        var raw = [UInt8](repeating: 0, count: 128)
        raw[0] = 4; raw[1] = 0x32; raw[3] = 16
        func put(_ v: UInt64, at o: Int) { for i in 0..<8 { raw[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        put(0x8000_0000_1234_8000, at: 0x08)
        put(0x0000_0000_0840_000A, at: 0x20)
        put(1050, at: 0x30)
        put(UInt64(5) | UInt64(2) << 16, at: 0x38)
        raw[0x40] = UInt8(ascii: "h"); raw[0x41] = UInt8(ascii: "e"); raw[0x42] = UInt8(ascii: "l")
        raw[0x43] = UInt8(ascii: "l"); raw[0x44] = UInt8(ascii: "o")
        let bref = try raw.withUnsafeBytes { try Blockref(decoding: $0) }
        XCTAssertEqual(bref.type, .dirent)
        XCTAssertEqual(bref.checkMethod, .xxhash64)
        XCTAssertEqual(bref.compression, .lz4)
        XCTAssertEqual(bref.keyEnd, 0x8000_0000_1234_8000 + 0xFFFF)
        XCTAssertEqual(bref.mediaOffset, 0x0840_0000)
        XCTAssertEqual(bref.physicalBytes, 1024)
        XCTAssertEqual(bref.direntInodeNumber, 1050)
        XCTAssertEqual(bref.direntNameLength, 5)
        XCTAssertEqual(bref.direntType, .regularFile)
        XCTAssertEqual(Array(bref.check.bytes.prefix(5)), Array("hello".utf8))
        XCTAssertThrowsError(try raw.withUnsafeBytes { try Blockref(decoding: UnsafeRawBufferPointer(rebasing: $0[0..<100])) })
    }

    func testKeyEndSaturates() {
        var bref = Blockref.empty
        bref.key = UInt64.max - 10
        bref.keybits = 20
        XCTAssertEqual(bref.keyEnd, UInt64.max)
        bref.keybits = 64
        bref.key = 0
        XCTAssertEqual(bref.keyEnd, UInt64.max)
    }

    func testInodeRejectsOversizedName() {
        var raw = [UInt8](repeating: 0, count: 1024)
        raw[0x80] = 0x01; raw[0x81] = 0x02  // name_len 513
        XCTAssertThrowsError(try InodeData(decoding: raw))
    }
}

