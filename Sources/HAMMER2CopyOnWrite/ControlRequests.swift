// Requests the hammer2 utility sends to a mounted filesystem, as ioctls on any file or
// directory of the mount (DragonFly's hammer2 directives are ioctls too). FUSE passes
// "restricted" ioctls whose argument size is encoded in the command, so every request is
// a fixed 64-byte little-endian structure read and written in place.

import HAMMER2Format

public enum ControlRequest {
    /// _IOWR('h', 92, 64 bytes): the number DragonFly gives HAMMER2IOC_BULKFREE_SCAN.
    public static let bulkfree: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 92, size: argumentBytes)
    public static let argumentBytes = 64
    /// _IOWR('h', 81/82/84, 512 bytes): DragonFly's HAMMER2IOC_PFS_CREATE, _DELETE and
    /// _SNAPSHOT numbers with our argument: label[256] at 0 (the snapshot's label comes
    /// back there), pfs_type at 256, pfs_subtype at 257, pfs_clid at 272 (zero: random).
    public static let pfsCreate: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 81, size: pfsArgumentBytes)
    public static let pfsDelete: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 82, size: pfsArgumentBytes)
    public static let pfsSnapshot: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 84, size: pfsArgumentBytes)
    public static let pfsArgumentBytes = 512

    public struct PFSArgument: Equatable, Sendable {
        public var label: String
        public var type: PFSType = .master
        public var subtype: UInt8 = 0
        public var clusterID: HAMMER2UUID?

        public init(label: String, type: PFSType = .master, subtype: UInt8 = 0, clusterID: HAMMER2UUID? = nil) {
            self.label = label
            self.type = type
            self.subtype = subtype
            self.clusterID = clusterID
        }

        public func encoded() -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: pfsArgumentBytes)
            let name = Array(label.utf8.prefix(255))
            bytes.replaceSubrange(0..<name.count, with: name)
            bytes[256] = type.rawValue
            bytes[257] = subtype
            if let clusterID { bytes.replaceSubrange(272..<288, with: clusterID.bytes) }
            return bytes
        }

        public init(decoding bytes: [UInt8]) {
            let name = bytes.prefix(256).prefix { $0 != 0 }
            label = String(decoding: name, as: UTF8.self)
            type = PFSType(rawValue: bytes[256])
            subtype = bytes[257]
            let clid = Array(bytes[272..<288])
            clusterID = clid.allSatisfy { $0 == 0 } ? nil : HAMMER2UUID(bytes: clid)
        }
    }

    static func ioctlReadWrite(type: UInt8, number: UInt8, size: Int) -> UInt32 {
        (3 << 30) | (UInt32(size) << 16) | (UInt32(type) << 8) | UInt32(number)
    }

    /// The bulkfree reply: scanned blockrefs, referenced, freed bytes, repaired blocks.
    public static func encode(_ result: BulkfreeResult) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: argumentBytes)
        for (i, value) in [UInt64(result.blockrefsScanned), result.referencedBytes, result.freedBytes,
                           UInt64(result.repairedBlocks)].enumerated() {
            for b in 0..<8 { bytes[i * 8 + b] = UInt8(truncatingIfNeeded: value >> UInt64(b * 8)) }
        }
        return bytes
    }

    public static func decodeBulkfree(_ bytes: [UInt8]) -> BulkfreeResult {
        let words = bytes.withUnsafeBytes { raw in (0..<4).map { raw.le64($0 * 8) } }
        return BulkfreeResult(blockrefsScanned: Int(words[0]), referencedBytes: words[1], freedBytes: words[2],
                              repairedBlocks: Int(words[3]))
    }
}
