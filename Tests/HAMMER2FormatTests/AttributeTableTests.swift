// The attribute table of a hidden attribute inode (docs/format.md, "Extended attributes"):
// exact round trips, Linux names split into namespaces, and every damage refused.

import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class AttributeTableTests: XCTestCase {
    func sample() -> AttributeTable {
        var table = AttributeTable()
        table.set(.init(.user, Array("mime_type".utf8)), Array("text/plain".utf8))
        table.set(.init(.security, Array("selinux".utf8)), Array("system_u:object_r:etc_t:s0\0".utf8))
        table.set(.init(.trusted, Array("overlay.opaque".utf8)), Array("y".utf8))
        table.set(.init(.posixACLAccess, []), [2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255])
        table.set(.init(.user, Array("empty".utf8)), [])
        table.set(.init(.user, Array("big".utf8)), [UInt8](repeating: 0xA5, count: AttributeTable.maximumValueBytes))
        return table
    }

    func decode(_ bytes: [UInt8]) throws -> AttributeTable {
        try bytes.withUnsafeBytes { try AttributeTable(decoding: $0) }
    }

    func testRoundTripIsExactAndSorted() throws {
        let table = sample()
        let bytes = table.encoded()
        XCTAssertEqual(bytes.count, table.encodedBytes)
        XCTAssertEqual(Array(bytes.prefix(4)), Array("H2XA".utf8))
        XCTAssertEqual(try decode(bytes), table)
        // The same attributes set in another order encode to the same bytes.
        var other = AttributeTable()
        for key in table.entries.keys.sorted().reversed() { other.set(key, table[key]) }
        XCTAssertEqual(other.encoded(), bytes)
        XCTAssertEqual(try decode(AttributeTable().encoded()), AttributeTable())
    }

    func testLinuxNamesSplitIntoNamespaces() {
        func split(_ name: String) -> String? {
            AttributeTable.Namespace.split(Array(name.utf8)).map { "\($0.0) \(String(decoding: $0.1, as: UTF8.self))" }
        }
        XCTAssertEqual(split("user.k"), "user k")
        XCTAssertEqual(split("security.capability"), "security capability")
        XCTAssertEqual(split("trusted.overlay.opaque"), "trusted overlay.opaque")
        XCTAssertEqual(split("system.posix_acl_access"), "posixACLAccess ")
        XCTAssertEqual(split("system.posix_acl_default"), "posixACLDefault ")
        XCTAssertNil(split("user."), "a namespace without a name")
        XCTAssertNil(split("system.other"))
        XCTAssertNil(split("os2.name"))
        XCTAssertNil(split("system.posix_acl_accessX"))
        let key = AttributeTable.Key(.security, Array("capability".utf8))
        XCTAssertEqual(String(decoding: key.fullName, as: UTF8.self), "security.capability")
    }

    func testDamageIsRefusedNeverTrusted() throws {
        let good = sample().encoded()
        // Every truncation is an error.
        for length in 0..<good.count where length % 97 == 0 || length < 64 {
            XCTAssertThrowsError(try decode(Array(good.prefix(length))), "truncated to \(length)")
        }
        var bytes = good
        bytes[0] = UInt8(ascii: "X")
        XCTAssertThrowsError(try decode(bytes), "magic")
        bytes = good; bytes[4] = 2
        XCTAssertThrowsError(try decode(bytes), "version")
        bytes = good; bytes[6] = 1
        XCTAssertThrowsError(try decode(bytes), "reserved field")
        bytes = good; bytes[13] = 1
        XCTAssertThrowsError(try decode(bytes), "reserved field")
        bytes = good; bytes[16] = 9
        XCTAssertThrowsError(try decode(bytes), "unknown namespace")
        bytes = good + [0]
        XCTAssertThrowsError(try decode(bytes), "trailing bytes")
        bytes = good; bytes[8] &+= 1
        XCTAssertThrowsError(try decode(bytes), "one record more than there is")
        // Records out of order (two swapped) are refused: a table has one encoding.
        var table = AttributeTable()
        table.set(.init(.user, Array("a".utf8)), [1])
        table.set(.init(.user, Array("b".utf8)), [2])
        var swapped = table.encoded()  // records at 16 ("a" at 22) and 24 ("b" at 30)
        swapped[30] = UInt8(ascii: "c")
        XCTAssertEqual(try decode(swapped)[.init(.user, Array("c".utf8))], [2], "a, c: in order")
        swapped[22] = UInt8(ascii: "d")
        XCTAssertThrowsError(try decode(swapped), "d, c: records out of order")
        swapped[22] = UInt8(ascii: "c")
        XCTAssertThrowsError(try decode(swapped), "c, c: the same name twice")
        // A value longer than the limit.
        var long = AttributeTable().encoded()
        long[8] = 1
        long += [1, 1] + [0x01, 0x00, 0x01, 0x00] + [UInt8(ascii: "x")] + [UInt8](repeating: 0, count: 65_537)
        XCTAssertThrowsError(try decode(long), "a value over 64 KiB")
        // Random bytes behind a valid header never crash.
        var random = SplitMix64(seed: 21)
        for _ in 0..<2000 {
            let junk = Array(good.prefix(16)) + random.bytes(Int(random.next() % 200))
            _ = try? decode(junk)
        }
    }
}
