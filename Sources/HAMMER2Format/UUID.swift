// hammer2_uuid_t: 16 bytes stored as DragonFly's struct uuid (time_low, time_mid and
// time_hi_and_version in little-endian, then clock_seq and node as bytes).

public struct HAMMER2UUID: Hashable, Sendable, CustomStringConvertible {
    public var bytes: [UInt8]  // exactly 16

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 16, "a UUID is 16 bytes")
        self.bytes = bytes
    }

    public static let zero = HAMMER2UUID(bytes: [UInt8](repeating: 0, count: 16))

    /// The unix id of a "degenerate" uid/gid UUID: DragonFly's hammer2_to_unix_xid reads the
    /// 32-bit little-endian value at node[2], i.e. bytes 12..15.
    public var unixID: UInt32 {
        UInt32(bytes[12]) | UInt32(bytes[13]) << 8 | UInt32(bytes[14]) << 16 | UInt32(bytes[15]) << 24
    }

    /// The conventional text form, as uuid_to_string prints a DragonFly uuid.
    public var description: String {
        let timeLow = UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24
        let timeMid = UInt16(bytes[4]) | UInt16(bytes[5]) << 8
        let timeHi = UInt16(bytes[6]) | UInt16(bytes[7]) << 8
        func hex(_ v: UInt64, _ width: Int) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        let node = bytes[10..<16].map { hex(UInt64($0), 2) }.joined()
        return "\(hex(UInt64(timeLow), 8))-\(hex(UInt64(timeMid), 4))-\(hex(UInt64(timeHi), 4))-"
            + "\(hex(UInt64(bytes[8]), 2))\(hex(UInt64(bytes[9]), 2))-\(node)"
    }
}

extension UnsafeRawBufferPointer {
    func uuid(_ offset: Int) -> HAMMER2UUID { HAMMER2UUID(bytes: bytes(offset, 16)) }
}
