// hammer2_blockref_t: the 128-byte pointer that every HAMMER2 tree is built of.
//
// A blockref names a child by key range (key, keybits), says how its media bytes are
// checked and compressed (methods), where they are (data_off: offset | size radix), and
// carries per-type extras in `embed` (directory entry header or statistics) and `check`
// (the check code, an embedded file name, or freemap hints).

/// HAMMER2_BREF_TYPE_*. Unknown values are preserved so tools can report them.
public struct BlockrefType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let empty = BlockrefType(rawValue: 0)
    public static let inode = BlockrefType(rawValue: 1)
    public static let indirect = BlockrefType(rawValue: 2)
    public static let data = BlockrefType(rawValue: 3)
    public static let dirent = BlockrefType(rawValue: 4)
    public static let freemapNode = BlockrefType(rawValue: 5)
    public static let freemapLeaf = BlockrefType(rawValue: 6)
    public static let invalid = BlockrefType(rawValue: 7)
    public static let freemap = BlockrefType(rawValue: 254)  // pseudo-type
    public static let volume = BlockrefType(rawValue: 255)  // pseudo-type

    /// Names as DragonFly's hammer2_breftype_to_str prints them.
    public var description: String {
        switch self {
        case .empty: return "empty"
        case .inode: return "inode"
        case .indirect: return "indirect"
        case .data: return "data"
        case .dirent: return "dirent"
        case .freemapNode: return "freemap_node"
        case .freemapLeaf: return "freemap_leaf"
        case .invalid: return "invalid"
        case .freemap: return "freemap"
        case .volume: return "volume"
        default: return "unknown"
        }
    }
}

/// HAMMER2_CHECK_* (high nibble of `methods`).
public struct CheckMethod: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let none = CheckMethod(rawValue: 0)
    public static let disabled = CheckMethod(rawValue: 1)
    public static let iscsi32 = CheckMethod(rawValue: 2)
    public static let xxhash64 = CheckMethod(rawValue: 3)
    public static let sha192 = CheckMethod(rawValue: 4)
    public static let freemap = CheckMethod(rawValue: 5)
    /// Not DragonFly's: blocks of an encrypted PFS. The check area holds the XAES-256-GCM
    /// nonce, tag and key id (docs/encryption.md).
    public static let xaes256gcm = CheckMethod(rawValue: 6)

    public var description: String {
        switch self {
        case .none: return "none"
        case .disabled: return "disabled"
        case .iscsi32: return "crc32"
        case .xxhash64: return "xxhash64"
        case .sha192: return "sha192"
        case .xaes256gcm: return "xaes256gcm"
        case .freemap: return "freemap"
        default: return "unknown(\(rawValue))"
        }
    }
}

/// HAMMER2_COMP_* (low nibble of `methods`; in an inode's comp_algo the high nibble is the level).
public struct CompressionMethod: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let none = CompressionMethod(rawValue: 0)
    public static let autozero = CompressionMethod(rawValue: 1)
    public static let lz4 = CompressionMethod(rawValue: 2)
    public static let zlib = CompressionMethod(rawValue: 3)

    public var description: String {
        switch self {
        case .none: return "none"
        case .autozero: return "autozero"
        case .lz4: return "lz4"
        case .zlib: return "zlib"
        default: return "unknown(\(rawValue))"
        }
    }
}

/// The 64-byte check area of a blockref, kept as raw bytes in eight words.
public struct CheckArea: Hashable, Sendable {
    public var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

    public init(words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)) {
        self.words = words
    }

    public static let zero = CheckArea(words: (0, 0, 0, 0, 0, 0, 0, 0))

    /// The area as the 64 bytes it is on disk.
    public var bytes: [UInt8] { prefix(64) }

    /// The first `count` (at most 64) bytes of the area as on disk: a directory entry's
    /// inline name, copied once (a listing takes one per entry).
    public func prefix(_ count: Int) -> [UInt8] {
        let onDisk = (words.0.littleEndian, words.1.littleEndian, words.2.littleEndian, words.3.littleEndian,
                      words.4.littleEndian, words.5.littleEndian, words.6.littleEndian, words.7.littleEndian)
        return withUnsafeBytes(of: onDisk) { Array($0.prefix(count)) }
    }

    /// check.iscsi32.value
    public var iscsi32: UInt32 { UInt32(truncatingIfNeeded: words.0) }
    /// check.xxhash64.value
    public var xxhash64: UInt64 { words.0 }
    /// check.freemap.icrc32
    public var freemapCRC: UInt32 { UInt32(truncatingIfNeeded: words.0) }
    /// check.freemap.bigmask
    public var freemapBigmask: UInt32 { UInt32(truncatingIfNeeded: words.0 >> 32) }
    /// check.freemap.avail
    public var freemapAvail: UInt64 { words.1 }

    public static func == (a: CheckArea, b: CheckArea) -> Bool {
        a.words.0 == b.words.0 && a.words.1 == b.words.1 && a.words.2 == b.words.2
            && a.words.3 == b.words.3 && a.words.4 == b.words.4 && a.words.5 == b.words.5
            && a.words.6 == b.words.6 && a.words.7 == b.words.7
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0); hasher.combine(words.1); hasher.combine(words.2); hasher.combine(words.3)
        hasher.combine(words.4); hasher.combine(words.5); hasher.combine(words.6); hasher.combine(words.7)
    }
}

/// hammer2_blockref_t
public struct Blockref: Hashable, Sendable {
    public var type: BlockrefType  // 00
    public var methods: UInt8  // 01 check << 4 | compression
    public var copyid: UInt8  // 02
    public var keybits: UInt8  // 03 number of key bits masked off, 0 = leaf
    public var vradix: UInt8  // 04 virtual data/meta-data size
    public var flags: UInt8  // 05 HAMMER2_BREF_FLAG_*
    public var leafCount: UInt16  // 06-07
    public var key: UInt64  // 08
    public var mirrorTID: UInt64  // 10
    public var modifyTID: UInt64  // 18
    public var dataOffset: UInt64  // 20 low 6 bits are the physical size radix
    public var updateTID: UInt64  // 28
    public var embed0: UInt64  // 30 dirent.inum or stats.data_count
    public var embed1: UInt64  // 38 dirent namlen/type or stats.inode_count
    public var check: CheckArea  // 40-7F

    public static let flagPFSRoot: UInt8 = 0x01
    public static let flagEmergencyMIP: UInt8 = 0x04

    public static let empty = Blockref(
        type: .empty, methods: 0, copyid: 0, keybits: 0, vradix: 0, flags: 0, leafCount: 0, key: 0,
        mirrorTID: 0, modifyTID: 0, dataOffset: 0, updateTID: 0, embed0: 0, embed1: 0, check: .zero)

    public init(
        type: BlockrefType, methods: UInt8, copyid: UInt8, keybits: UInt8, vradix: UInt8, flags: UInt8,
        leafCount: UInt16, key: UInt64, mirrorTID: UInt64, modifyTID: UInt64, dataOffset: UInt64,
        updateTID: UInt64, embed0: UInt64, embed1: UInt64, check: CheckArea
    ) {
        self.type = type; self.methods = methods; self.copyid = copyid; self.keybits = keybits
        self.vradix = vradix; self.flags = flags; self.leafCount = leafCount; self.key = key
        self.mirrorTID = mirrorTID; self.modifyTID = modifyTID; self.dataOffset = dataOffset
        self.updateTID = updateTID; self.embed0 = embed0; self.embed1 = embed1; self.check = check
    }

    /// Decodes one blockref from exactly the 128 bytes at `raw[0..<128]`.
    public init(decoding raw: UnsafeRawBufferPointer) throws {
        guard raw.count >= HAMMER2.blockrefBytes else {
            throw FormatError.shortBuffer(structure: "blockref", needed: HAMMER2.blockrefBytes, got: raw.count)
        }
        type = BlockrefType(rawValue: raw.u8(0x00))
        methods = raw.u8(0x01)
        copyid = raw.u8(0x02)
        keybits = raw.u8(0x03)
        vradix = raw.u8(0x04)
        flags = raw.u8(0x05)
        leafCount = raw.le16(0x06)
        key = raw.le64(0x08)
        mirrorTID = raw.le64(0x10)
        modifyTID = raw.le64(0x18)
        dataOffset = raw.le64(0x20)
        updateTID = raw.le64(0x28)
        embed0 = raw.le64(0x30)
        embed1 = raw.le64(0x38)
        check = CheckArea(words: (
            raw.le64(0x40), raw.le64(0x48), raw.le64(0x50), raw.le64(0x58),
            raw.le64(0x60), raw.le64(0x68), raw.le64(0x70), raw.le64(0x78)))
    }

    public init(decoding bytes: [UInt8]) throws {
        self = try bytes.withUnsafeBytes { try Blockref(decoding: $0) }
    }

    /// HAMMER2_DEC_CHECK(methods)
    public var checkMethod: CheckMethod { CheckMethod(rawValue: (methods >> 4) & 0x0F) }
    /// HAMMER2_DEC_COMP(methods)
    public var compression: CompressionMethod { CompressionMethod(rawValue: methods & 0x0F) }

    /// The media offset without the size radix (data_off & HAMMER2_OFF_MASK).
    public var mediaOffset: UInt64 { dataOffset & HAMMER2.offsetMask }
    /// The physical size radix (data_off & HAMMER2_OFF_MASK_RADIX); 0 means no media block.
    public var physicalRadix: Int { Int(dataOffset & HAMMER2.offsetRadixMask) }
    /// Physical bytes of the referenced block, 0 if there is none. A damaged radix of 63
    /// saturates at Int.max rather than wrapping negative (valid radices are 10-16).
    public var physicalBytes: Int { physicalRadix == 0 ? 0 : physicalRadix >= 63 ? Int.max : 1 << physicalRadix }

    /// The last key this blockref covers (key + 2^keybits - 1), saturating at 2^64-1.
    public var keyEnd: UInt64 {
        if keybits >= 64 { return UInt64.max }
        let span = (UInt64(1) << UInt64(keybits)) - 1
        let (sum, overflow) = key.addingReportingOverflow(span)
        return overflow ? UInt64.max : sum
    }

    // MARK: Directory entry header (embed.dirent, BREF_TYPE_DIRENT)

    /// embed.dirent.inum
    public var direntInodeNumber: UInt64 { embed0 }
    /// embed.dirent.namlen
    public var direntNameLength: Int { Int(UInt16(truncatingIfNeeded: embed1)) }
    /// embed.dirent.type (HAMMER2_OBJTYPE_*)
    public var direntType: ObjectType { ObjectType(rawValue: UInt8(truncatingIfNeeded: embed1 >> 16)) }

    /// The entry's name: inside the check area up to 64 bytes, else the first `namlen` bytes
    /// of the blockref's data block (`nameBlock`, the physical block it points to).
    public func direntName(nameBlock: [UInt8]?) throws -> [UInt8] {
        let length = direntNameLength
        guard type == .dirent, length > 0, length <= HAMMER2.inodeMaxName else {
            throw FormatError.invalidField(structure: "dirent", field: "namlen", value: UInt64(length))
        }
        if length <= 64 { return check.prefix(length) }
        guard let nameBlock, nameBlock.count >= length else {
            throw FormatError.shortBuffer(structure: "dirent name block", needed: length, got: nameBlock?.count ?? 0)
        }
        return Array(nameBlock[0..<length])
    }

    // MARK: Statistics (embed.stats, BREF_TYPE_INODE and BREF_TYPE_INDIRECT)

    /// embed.stats.data_count
    public var statsDataCount: UInt64 { embed0 }
    /// embed.stats.inode_count
    public var statsInodeCount: UInt64 { embed1 }
}

/// Decodes `count` consecutive blockrefs (an indirect block, a blockset, a freemap node).
public func decodeBlockrefs(_ raw: UnsafeRawBufferPointer, count: Int) throws -> [Blockref] {
    let needed = count * HAMMER2.blockrefBytes
    guard raw.count >= needed else {
        throw FormatError.shortBuffer(structure: "blockref array", needed: needed, got: raw.count)
    }
    var refs: [Blockref] = []
    refs.reserveCapacity(count)
    for i in 0..<count {
        refs.append(try Blockref(decoding: raw.slice(i * HAMMER2.blockrefBytes, HAMMER2.blockrefBytes)))
    }
    return refs
}

/// Decodes the non-empty blockrefs among `count` consecutive ones, in array order: an
/// indirect block's 512 slots are often half empty, and a walk wants only the others, in
/// one array of the size they need.
public func decodeNonEmptyBlockrefs(_ raw: UnsafeRawBufferPointer, count: Int) throws -> [Blockref] {
    let needed = count * HAMMER2.blockrefBytes
    guard raw.count >= needed else {
        throw FormatError.shortBuffer(structure: "blockref array", needed: needed, got: raw.count)
    }
    let slots = (0..<count).lazy.map { $0 * HAMMER2.blockrefBytes }
    let used = slots.filter { raw.u8($0) != BlockrefType.empty.rawValue }.count
    var refs: [Blockref] = []
    refs.reserveCapacity(used)
    for start in slots where raw.u8(start) != BlockrefType.empty.rawValue {
        refs.append(try Blockref(decoding: raw.slice(start, HAMMER2.blockrefBytes)))
    }
    return refs
}

public func decodeBlockrefs(_ bytes: [UInt8]) throws -> [Blockref] {
    try bytes.withUnsafeBytes { try decodeBlockrefs($0, count: $0.count / HAMMER2.blockrefBytes) }
}
