// The freemap: a tree of FREEMAP_NODE blocks (32 KiB of blockrefs) over FREEMAP_LEAF blocks.
// A leaf covers 1 GiB as 256 hammer2_bmap_data_t entries of 128 bytes; each entry covers
// 4 MiB with 2 bits per 16 KiB block: 00 free, 10 possibly free (staged by bulkfree),
// 11 allocated (01 is not used).

/// The state of one 16 KiB freemap block.
public enum FreemapBlockState: UInt8, Sendable {
    case free = 0b00
    case reserved = 0b01
    case possiblyFree = 0b10
    case allocated = 0b11
}

/// hammer2_bmap_data_t
public struct BitmapData: Hashable, Sendable {
    public var linear: Int32  // 00 linear sub-granular allocation offset
    public var allocationClass: UInt16  // 04 (type << 8) | radix
    public var avail: UInt32  // 1C
    public var bitmap: [UInt64]  // 40-7F bitmapq[8], 512 bits for 256 blocks

    public static let bytes = 128
    public static let entriesPerLeaf = HAMMER2.freemapBlockBytes / bytes  // 256
    public static let blocksPerEntry = 256  // 4 MiB / 16 KiB

    public init(decoding raw: UnsafeRawBufferPointer) {
        linear = Int32(bitPattern: raw.le32(0x00))
        allocationClass = raw.le16(0x04)
        avail = raw.le32(0x1C)
        bitmap = (0..<8).map { raw.le64(0x40 + $0 * 8) }
    }

    /// State of block `index` (0..<256) of this 4 MiB range.
    public func state(ofBlock index: Int) -> FreemapBlockState {
        precondition(index >= 0 && index < Self.blocksPerEntry)
        let word = bitmap[index / 32]
        let bits = UInt8(truncatingIfNeeded: word >> UInt64((index % 32) * 2)) & 0b11
        return FreemapBlockState(rawValue: bits)!
    }

    /// Counts of blocks per state.
    public var stateCounts: (free: Int, possiblyFree: Int, allocated: Int, reserved: Int) {
        var counts = (free: 0, possiblyFree: 0, allocated: 0, reserved: 0)
        for i in 0..<Self.blocksPerEntry {
            switch state(ofBlock: i) {
            case .free: counts.free += 1
            case .possiblyFree: counts.possiblyFree += 1
            case .allocated: counts.allocated += 1
            case .reserved: counts.reserved += 1
            }
        }
        return counts
    }
}

/// A FREEMAP_LEAF block: 256 bitmap entries.
public func decodeFreemapLeaf(_ bytes: [UInt8]) throws -> [BitmapData] {
    guard bytes.count >= HAMMER2.freemapBlockBytes else {
        throw FormatError.shortBuffer(structure: "freemap leaf", needed: HAMMER2.freemapBlockBytes, got: bytes.count)
    }
    return bytes.withUnsafeBytes { raw in
        (0..<BitmapData.entriesPerLeaf).map { BitmapData(decoding: raw.slice($0 * BitmapData.bytes, BitmapData.bytes)) }
    }
}
