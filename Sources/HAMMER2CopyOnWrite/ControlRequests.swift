// Requests the hammer2 utility sends to a mounted filesystem, as ioctls on any file or
// directory of the mount (DragonFly's hammer2 directives are ioctls too). FUSE passes
// "restricted" ioctls whose argument size is encoded in the command, so every request is
// a fixed 64-byte little-endian structure read and written in place.

import HAMMER2Format

public enum ControlRequest {
    /// _IOWR('h', 92, 64 bytes): the number DragonFly gives HAMMER2IOC_BULKFREE_SCAN.
    public static let bulkfree: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 92, size: argumentBytes)
    public static let argumentBytes = 64

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
