// Redundant copies of a block (docs/copies.md): ditto blocks recorded in the blockref.
//
// `data_off` (0x20) stays the first copy, which is all DragonFly's code reads. The other
// copies' data_off values (same size radix) follow the check code in the 64-byte check
// area (0x40-0x7F), 8 bytes each, and `copyid` (0x02) holds how many there are. DragonFly
// writes copyid 0 (HAMMER2_COPYID_NONE) or 255 (HAMMER2_COPYID_LOCAL, on PFS roots and the
// super-root): both mean one copy. Every copy holds the same bytes, so the one check code
// verifies any of them.

extension HAMMER2 {
    /// Not DragonFly's: a volume holding blocks with extra copies. DragonFly's bulkfree
    /// would free the extra copies (it knows one data_off per blockref); it refuses
    /// versions above 3. Also used when the volume has encrypted PFSes too.
    public static let volumeVersionCopies: UInt32 = 5
    /// The most copies a block can have (data copies + 1 for metadata stays within it).
    public static let maximumCopies = 4
}

extension Blockref {
    /// Where the extra copies' data_off values start in the check area: after the check
    /// code, 8-byte aligned. Nil for methods whose layout this code does not know.
    public static func extraCopiesStart(_ method: CheckMethod) -> Int? {
        switch method {
        case .none, .disabled: return 0
        case .iscsi32, .xxhash64: return 8  // crc32 (4 bytes) / xxhash64 (8)
        case .freemap: return 16  // icrc32, bigmask, avail
        case .sha192: return 24
        case .xaes256gcm: return 48  // nonce 24, tag 16, key id 4, flags 1 (BlockSealing)
        default: return nil
        }
    }

    /// How many copies a block checked with `method` can have.
    public static func copyCapacity(_ method: CheckMethod) -> Int {
        guard let start = extraCopiesStart(method) else { return 1 }
        return min(HAMMER2.maximumCopies, 1 + (64 - start) / 8)
    }

    /// Extra copies recorded in this blockref (copyid 1...6; DragonFly's 0 and 255 are none).
    public var extraCopyCount: Int {
        guard physicalRadix != 0, copyid >= 1, copyid < 0xFF else { return 0 }
        return min(Int(copyid), Self.copyCapacity(checkMethod) - 1)
    }

    /// Copies of the block: 1 + extra (0 when there is no media block).
    public var copyCount: Int { physicalRadix == 0 ? 0 : 1 + extraCopyCount }

    /// data_off of copy `index` (0 is `dataOffset`).
    public func copyDataOffset(_ index: Int) -> UInt64 {
        if index == 0 { return dataOffset }
        precondition(index <= extraCopyCount, "copy \(index) of \(copyCount)")
        let start = Self.extraCopiesStart(checkMethod)!
        return check.word((start / 8) + index - 1)
    }

    /// Media offsets of every copy, first copy first.
    public var copyMediaOffsets: [UInt64] {
        (0..<max(copyCount, 1)).map { copyDataOffset($0) & HAMMER2.offsetMask }
    }

    /// Records the block's locations: `offsets[0]` in data_off, the others after the check
    /// code (set the check area first). One offset leaves copyid as it is.
    public mutating func place(_ offsets: [UInt64]) {
        precondition(!offsets.isEmpty && offsets.count <= Self.copyCapacity(checkMethod), "\(offsets.count) copies")
        dataOffset = offsets[0]
        guard offsets.count > 1 else { return }
        let start = Self.extraCopiesStart(checkMethod)!
        for (i, offset) in offsets.dropFirst().enumerated() { check.setWord((start / 8) + i, offset) }
        copyid = UInt8(offsets.count - 1)
    }
}

extension CheckArea {
    /// Word `index` (bytes 8*index ..< 8*index+8, little-endian).
    public func word(_ index: Int) -> UInt64 {
        switch index {
        case 0: return words.0
        case 1: return words.1
        case 2: return words.2
        case 3: return words.3
        case 4: return words.4
        case 5: return words.5
        case 6: return words.6
        default: return words.7
        }
    }

    public mutating func setWord(_ index: Int, _ value: UInt64) {
        switch index {
        case 0: words.0 = value
        case 1: words.1 = value
        case 2: words.2 = value
        case 3: words.3 = value
        case 4: words.4 = value
        case 5: words.5 = value
        case 6: words.6 = value
        default: words.7 = value
        }
    }
}
