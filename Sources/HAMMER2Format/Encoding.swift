// Encoders for the on-disk structures: the exact inverses of the decoders in this module.
//
// Every field is written by explicit byte offset (as given in hammer2_disk.h) in
// little-endian order; bytes the decoders skip (reserved and unused fields) are written
// as zeros. Encoders write into a caller's buffer so an indirect block or a 64 KiB volume
// header can be assembled in place; the `encoded()` forms return a fresh array.
//
// Invariant: decode(encode(x)) == x for every value whose arrays have their on-disk
// lengths (4 blockrefs in a blockset, 512 bytes of embedded data, ...). Encoders trap on
// values that cannot be represented (a programming error), they never truncate silently.

// MARK: Little-endian stores

extension UnsafeMutableRawBufferPointer {
    @inlinable func putU8(_ value: UInt8, at offset: Int) {
        precondition(offset >= 0 && offset < count, "u8 store past end of buffer")
        storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
    }

    @inlinable func putLE16(_ value: UInt16, at offset: Int) {
        precondition(offset >= 0 && offset + 2 <= count, "le16 store past end of buffer")
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inlinable func putLE32(_ value: UInt32, at offset: Int) {
        precondition(offset >= 0 && offset + 4 <= count, "le32 store past end of buffer")
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self)
    }

    @inlinable func putLE64(_ value: UInt64, at offset: Int) {
        precondition(offset >= 0 && offset + 8 <= count, "le64 store past end of buffer")
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self)
    }

    /// Copies `bytes` to `offset`; at most `limit` bytes may be written there.
    @inlinable func putBytes(_ bytes: [UInt8], at offset: Int, limit: Int) {
        precondition(bytes.count <= limit, "\(bytes.count) bytes do not fit a \(limit)-byte field")
        precondition(offset >= 0 && offset + bytes.count <= count, "byte store past end of buffer")
        bytes.withUnsafeBytes { src in
            if src.count > 0 { (baseAddress! + offset).copyMemory(from: src.baseAddress!, byteCount: src.count) }
        }
    }

    /// Zeroes `length` bytes from `offset`.
    @inlinable func zero(_ offset: Int, _ length: Int) {
        precondition(offset >= 0 && length >= 0 && offset + length <= count, "zeroing past end of buffer")
        if length > 0 { (baseAddress! + offset).initializeMemory(as: UInt8.self, repeating: 0, count: length) }
    }

    /// A view of `length` bytes starting at `offset` (no copy).
    @inlinable func mutableSlice(_ offset: Int, _ length: Int) -> UnsafeMutableRawBufferPointer {
        precondition(offset >= 0 && length >= 0 && offset + length <= count, "slice past end of buffer")
        return UnsafeMutableRawBufferPointer(rebasing: self[offset..<(offset + length)])
    }
}

/// Runs `body` over a zeroed buffer of `count` bytes and returns the bytes.
@inlinable func encodeIntoNewArray(count: Int, _ body: (UnsafeMutableRawBufferPointer) -> Void) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    bytes.withUnsafeMutableBytes { body($0) }
    return bytes
}

// MARK: Blockrefs

extension CheckArea {
    /// The area holding `bytes` (at most 64) followed by zeros: a directory entry's name, a
    /// sha192 digest.
    public init(bytes: [UInt8]) {
        precondition(bytes.count <= 64, "a check area holds 64 bytes, not \(bytes.count)")
        let padded = bytes + [UInt8](repeating: 0, count: 64 - bytes.count)
        let raw = padded.withUnsafeBytes { raw in (0..<8).map { raw.le64($0 * 8) } }
        self.init(words: (raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7]))
    }

    /// check.freemap: icrc32 (0x00), bigmask (0x04), avail (0x08).
    public static func freemap(crc: UInt32, bigmask: UInt32, avail: UInt64) -> CheckArea {
        CheckArea(words: (UInt64(crc) | UInt64(bigmask) << 32, avail, 0, 0, 0, 0, 0, 0))
    }

    /// The check area a blockref using `method` carries for a block whose physical bytes are
    /// `data` (hammer2_chain_setcheck). CHECK_NONE and CHECK_DISABLED store nothing; for
    /// CHECK_FREEMAP only icrc32 is set, the caller adds bigmask and avail.
    public static func computed(_ method: CheckMethod, over data: UnsafeRawBufferPointer) -> CheckArea {
        switch method {
        case .none, .disabled:
            return .zero
        case .iscsi32, .freemap:
            return CheckArea(words: (UInt64(CRC32C.checksum(data)), 0, 0, 0, 0, 0, 0, 0))
        case .xxhash64:
            return CheckArea(words: (CheckCode.xxhash64(data), 0, 0, 0, 0, 0, 0, 0))
        case .sha192:
            return CheckArea(bytes: CheckCode.sha192(data))
        default:
            preconditionFailure("no check code is defined for method \(method.rawValue)")
        }
    }

    public static func computed(_ method: CheckMethod, over bytes: [UInt8]) -> CheckArea {
        bytes.withUnsafeBytes { computed(method, over: $0) }
    }
}

extension Blockref {
    /// A blockref a flush creates: its type, methods and key range, stamped with the flush's
    /// transaction id as both mirror_tid and modify_tid.
    public init(type: BlockrefType, methods: UInt8, key: UInt64, keybits: UInt8 = 0, tid: UInt64) {
        self = .empty
        self.type = type
        self.methods = methods
        self.key = key
        self.keybits = keybits
        self.mirrorTID = tid
        self.modifyTID = tid
    }

    /// HAMMER2_ENC_CHECK(check) | HAMMER2_ENC_COMP(compression)
    public static func methods(check: CheckMethod, compression: CompressionMethod) -> UInt8 {
        precondition(check.rawValue < 16 && compression.rawValue < 16, "method codes are 4 bits")
        return check.rawValue << 4 | compression.rawValue
    }

    /// data_off for a block of 2^radix bytes at `offset` (offset | radix).
    public static func dataOffset(_ offset: UInt64, radix: Int) -> UInt64 {
        precondition(offset & HAMMER2.offsetRadixMask == 0, "media offsets are 64-byte aligned")
        precondition(radix == 0 || (HAMMER2.allocationMinRadix...HAMMER2.allocationMaxRadix).contains(radix),
                     "size radix \(radix) out of range")
        return offset | UInt64(radix)
    }

    /// embed.dirent: inum (0x30), namlen (0x38), type (0x3A).
    public static func direntEmbed(inum: UInt64, nameLength: Int, type: ObjectType) -> (UInt64, UInt64) {
        precondition(nameLength > 0 && nameLength <= HAMMER2.inodeMaxName, "directory entry name length \(nameLength)")
        return (inum, UInt64(nameLength) | UInt64(type.rawValue) << 16)
    }

    /// Writes the 128 bytes of this blockref to `raw[0..<128]`.
    public func encode(into raw: UnsafeMutableRawBufferPointer) {
        precondition(raw.count >= HAMMER2.blockrefBytes, "a blockref needs 128 bytes")
        raw.putU8(type.rawValue, at: 0x00)
        raw.putU8(methods, at: 0x01)
        raw.putU8(copyid, at: 0x02)
        raw.putU8(keybits, at: 0x03)
        raw.putU8(vradix, at: 0x04)
        raw.putU8(flags, at: 0x05)
        raw.putLE16(leafCount, at: 0x06)
        raw.putLE64(key, at: 0x08)
        raw.putLE64(mirrorTID, at: 0x10)
        raw.putLE64(modifyTID, at: 0x18)
        raw.putLE64(dataOffset, at: 0x20)
        raw.putLE64(updateTID, at: 0x28)
        raw.putLE64(embed0, at: 0x30)
        raw.putLE64(embed1, at: 0x38)
        let words = check.words
        for (i, word) in [words.0, words.1, words.2, words.3, words.4, words.5, words.6, words.7].enumerated() {
            raw.putLE64(word, at: 0x40 + i * 8)
        }
    }

    public func encoded() -> [UInt8] {
        encodeIntoNewArray(count: HAMMER2.blockrefBytes) { encode(into: $0) }
    }

    /// Sets the check area for a block whose physical bytes are `data`, using this
    /// blockref's check method.
    public mutating func setCheck(over data: UnsafeRawBufferPointer) {
        check = CheckArea.computed(checkMethod, over: data)
    }

    public mutating func setCheck(over bytes: [UInt8]) {
        bytes.withUnsafeBytes { setCheck(over: $0) }
    }
}

/// Encodes `refs` as consecutive blockrefs into `raw`; slots beyond `refs.count` are zeroed
/// (BREF_TYPE_EMPTY), so `raw.count / 128` is the array's capacity.
public func encodeBlockrefs(_ refs: [Blockref], into raw: UnsafeMutableRawBufferPointer) {
    let capacity = raw.count / HAMMER2.blockrefBytes
    precondition(refs.count <= capacity, "\(refs.count) blockrefs do not fit \(capacity) slots")
    raw.zero(0, raw.count)
    for (i, bref) in refs.enumerated() {
        bref.encode(into: raw.mutableSlice(i * HAMMER2.blockrefBytes, HAMMER2.blockrefBytes))
    }
}

/// An indirect block, freemap node or blockset of `bytes` bytes holding `refs`.
public func encodeBlockrefs(_ refs: [Blockref], bytes: Int) -> [UInt8] {
    encodeIntoNewArray(count: bytes) { encodeBlockrefs(refs, into: $0) }
}

// MARK: UUIDs

extension HAMMER2UUID {
    /// Parses the text form ("5cbb9ad1-862d-11dc-a94d-01301bb8a9f5") into DragonFly's struct
    /// uuid layout: time_low, time_mid and time_hi_and_version little-endian, then bytes.
    public init?(string: String) {
        let groups = string.split(separator: "-", omittingEmptySubsequences: false)
        guard groups.count == 5, groups.map(\.count) == [8, 4, 4, 4, 12] else { return nil }
        guard let timeLow = UInt32(groups[0], radix: 16), let timeMid = UInt16(groups[1], radix: 16),
              let timeHi = UInt16(groups[2], radix: 16), let clock = UInt16(groups[3], radix: 16),
              let node = UInt64(groups[4], radix: 16) else { return nil }
        var bytes: [UInt8] = []
        for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: timeLow >> UInt32(shift))) }
        bytes += [UInt8(truncatingIfNeeded: timeMid), UInt8(truncatingIfNeeded: timeMid >> 8)]
        bytes += [UInt8(truncatingIfNeeded: timeHi), UInt8(truncatingIfNeeded: timeHi >> 8)]
        bytes += [UInt8(truncatingIfNeeded: clock >> 8), UInt8(truncatingIfNeeded: clock)]
        for shift in stride(from: 40, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: node >> UInt64(shift))) }
        self.init(bytes: bytes)
    }

    /// HAMMER2_UUID_STRING: the fstype of every HAMMER2 volume.
    public static let hammer2FilesystemType = HAMMER2UUID(string: HAMMER2.fstypeUUIDString)!

    /// A "degenerate" uid/gid UUID carrying a unix id (hammer2_guid_to_uuid): all zeros except
    /// the little-endian id in bytes 12..15.
    public static func unixID(_ id: UInt32) -> HAMMER2UUID {
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<4 { bytes[12 + i] = UInt8(truncatingIfNeeded: id >> UInt32(i * 8)) }
        return HAMMER2UUID(bytes: bytes)
    }

    func encode(into raw: UnsafeMutableRawBufferPointer, at offset: Int) {
        raw.putBytes(bytes, at: offset, limit: 16)
    }
}

// MARK: Inodes

extension InodeMeta {
    /// Bytes 0x000-0x0FF of an inode (hammer2_inode_meta_t). Unused and reserved fields are
    /// written as zeros.
    public func encode(into raw: UnsafeMutableRawBufferPointer) {
        precondition(raw.count >= 256, "inode meta needs 256 bytes")
        raw.zero(0, 256)
        raw.putLE16(version, at: 0x00)
        raw.putU8(pfsSubtype, at: 0x03)
        raw.putLE32(uflags, at: 0x04)
        raw.putLE32(rmajor, at: 0x08)
        raw.putLE32(rminor, at: 0x0C)
        raw.putLE64(ctime, at: 0x10)
        raw.putLE64(mtime, at: 0x18)
        raw.putLE64(atime, at: 0x20)
        raw.putLE64(btime, at: 0x28)
        uid.encode(into: raw, at: 0x30)
        gid.encode(into: raw, at: 0x40)
        raw.putU8(type.rawValue, at: 0x50)
        raw.putU8(opFlags, at: 0x51)
        raw.putLE16(capFlags, at: 0x52)
        raw.putLE32(mode, at: 0x54)
        raw.putLE64(inum, at: 0x58)
        raw.putLE64(size, at: 0x60)
        raw.putLE64(nlinks, at: 0x68)
        raw.putLE64(iparent, at: 0x70)
        raw.putLE64(nameKey, at: 0x78)
        raw.putLE16(nameLength, at: 0x80)
        raw.putU8(ncopies, at: 0x82)
        raw.putU8(compAlgo, at: 0x83)
        raw.putU8(checkAlgo, at: 0x85)
        raw.putU8(pfsNMasters, at: 0x86)
        raw.putU8(pfsType.rawValue, at: 0x87)
        raw.putLE64(pfsInum, at: 0x88)
        pfsClusterID.encode(into: raw, at: 0x90)
        pfsFilesystemID.encode(into: raw, at: 0xA0)
        raw.putLE64(dataQuota, at: 0xB0)
        raw.putLE64(inodeQuota, at: 0xC0)
        raw.putLE64(pfsLastSnapshotTID, at: 0xD0)
        raw.putLE64(decryptCheck, at: 0xE0)
        raw.putLE64(rootMAC0, at: 0xE8)
        raw.putLE64(rootMAC1, at: 0xF0)
        raw.putLE64(rootGeneration, at: 0xF8)
    }

    public func encoded() -> [UInt8] { encodeIntoNewArray(count: 256) { encode(into: $0) } }

    /// HAMMER2_ENC_LEVEL(level) | HAMMER2_ENC_ALGO(algorithm), as stored in comp_algo.
    public static func compAlgo(_ algorithm: CompressionMethod, level: Int = 0) -> UInt8 {
        precondition(level >= 0 && level < 16 && algorithm.rawValue < 16, "comp_algo fields are 4 bits")
        return UInt8(level) << 4 | algorithm.rawValue
    }
}

extension InodeData {
    /// The full 1 KiB inode: meta, filename (0x100, name_len bytes, zero padded), then the
    /// embedded data (zero padded to 512 bytes) or the four-blockref blockset.
    public func encode(into raw: UnsafeMutableRawBufferPointer) {
        precondition(raw.count >= HAMMER2.inodeBytes, "an inode needs 1024 bytes")
        meta.encode(into: raw.mutableSlice(0, 256))
        raw.zero(0x100, HAMMER2.inodeBytes - 0x100)
        raw.putBytes(filename, at: 0x100, limit: HAMMER2.inodeMaxName)
        if let keyRecord {
            precondition(filename.count < InodeData.keyRecordOffset - 0x100 && keyRecord.count == InodeData.keyRecordBytes,
                         "an encrypted PFS root has a label under 128 bytes and a 128-byte key record")
            raw.putBytes(keyRecord, at: InodeData.keyRecordOffset, limit: InodeData.keyRecordBytes)
        }
        switch content {
        case let .embedded(bytes):
            precondition(meta.hasDirectData, "embedded data needs OPFLAG_DIRECTDATA")
            raw.putBytes(bytes, at: 0x200, limit: HAMMER2.embeddedBytes)
        case let .blockset(refs):
            precondition(!meta.hasDirectData, "a blockset cannot carry OPFLAG_DIRECTDATA")
            precondition(refs.count <= HAMMER2.blocksetCount, "a blockset holds 4 blockrefs")
            encodeBlockrefs(refs, into: raw.mutableSlice(0x200, HAMMER2.embeddedBytes))
        }
    }

    public func encoded() -> [UInt8] { encodeIntoNewArray(count: HAMMER2.inodeBytes) { encode(into: $0) } }
}

// MARK: Volume header

extension VolumeConfig {
    /// One hammer2_volconf_t (128 bytes).
    public func encode(into raw: UnsafeMutableRawBufferPointer) {
        precondition(raw.count >= 128, "a volconf needs 128 bytes")
        raw.zero(0, 128)
        raw.putU8(copyid, at: 0x00)
        raw.putU8(inprog, at: 0x01)
        raw.putU8(chainTo, at: 0x02)
        raw.putU8(chainFrom, at: 0x03)
        raw.putLE16(flags, at: 0x04)
        raw.putU8(error, at: 0x06)
        raw.putU8(priority, at: 0x07)
        raw.putU8(remotePFSType, at: 0x08)
        pfsClusterID.encode(into: raw, at: 0x20)
        raw.putBytes(label, at: 0x30, limit: 16)
        raw.putBytes(path, at: 0x40, limit: 64)
    }
}

extension VolumeHeader {
    /// The three CRCs over an encoded header: icrc_sects[7] over 0x000-0x1FB, icrc_sects[6]
    /// over 0x200-0x3FF, icrc_volheader over 0x0000-0xFFFB. The sector-1 CRC lives in sector
    /// 0, so it must be stored before the sector-0 CRC is computed, and both before the
    /// whole-header CRC.
    public static func storeChecksums(into raw: UnsafeMutableRawBufferPointer) {
        precondition(raw.count >= HAMMER2.volumeHeaderBytes, "a volume header needs 65536 bytes")
        let sect1 = CRC32C.checksum(UnsafeRawBufferPointer(raw.mutableSlice(512, 512)))
        raw.putLE32(sect1, at: 0x01E0 + sect1CRCIndex * 4)
        let sect0 = CRC32C.checksum(UnsafeRawBufferPointer(raw.mutableSlice(0, 512 - 4)))
        raw.putLE32(sect0, at: 0x01E0 + sect0CRCIndex * 4)
        let whole = CRC32C.checksum(UnsafeRawBufferPointer(raw.mutableSlice(0, HAMMER2.volumeHeaderBytes - 4)))
        raw.putLE32(whole, at: 0xFFFC)
    }

    /// Writes the 64 KiB header. With `updatingChecksums` (the default) the three CRCs are
    /// computed from the encoded bytes; otherwise the stored `sectorCRCs` and
    /// `volumeHeaderCRC` are written as they are (the exact inverse of decoding).
    public func encode(into raw: UnsafeMutableRawBufferPointer, updatingChecksums: Bool = true) {
        precondition(raw.count >= HAMMER2.volumeHeaderBytes, "a volume header needs 65536 bytes")
        precondition(copyExists.count == 8 && sectorCRCs.count == 8, "copyexists and icrc_sects have 8 entries")
        precondition(superRootBlockset.count <= HAMMER2.blocksetCount && freemapBlockset.count <= HAMMER2.blocksetCount,
                     "a blockset holds 4 blockrefs")
        precondition(volumeOffsets.count == HAMMER2.maxVolumes, "volu_loff has 64 entries")
        precondition(copyInfo.count <= 256, "copyinfo has 256 entries")
        raw.zero(0, HAMMER2.volumeHeaderBytes)
        raw.putLE64(magic, at: 0x0000)
        raw.putLE64(bootBegin, at: 0x0008)
        raw.putLE64(bootEnd, at: 0x0010)
        raw.putLE64(auxBegin, at: 0x0018)
        raw.putLE64(auxEnd, at: 0x0020)
        raw.putLE64(volumeSize, at: 0x0028)
        raw.putLE32(version, at: 0x0030)
        raw.putLE32(flags, at: 0x0034)
        raw.putU8(copyid, at: 0x0038)
        raw.putU8(freemapVersion, at: 0x0039)
        raw.putU8(peerType, at: 0x003A)
        raw.putU8(volumeID, at: 0x003B)
        raw.putU8(volumeCount, at: 0x003C)
        fsid.encode(into: raw, at: 0x0040)
        fstype.encode(into: raw, at: 0x0050)
        raw.putLE64(allocatorSize, at: 0x0060)
        raw.putLE64(allocatorFree, at: 0x0068)
        raw.putLE64(allocatorBegin, at: 0x0070)
        raw.putLE64(mirrorTID, at: 0x0078)
        raw.putLE64(freemapTID, at: 0x0090)
        raw.putLE64(bulkfreeTID, at: 0x0098)
        raw.putLE64(totalSize, at: 0x00C0)
        for (i, word) in copyExists.enumerated() { raw.putLE32(word, at: 0x00C8 + i * 4) }
        for (i, crc) in sectorCRCs.enumerated() { raw.putLE32(crc, at: 0x01E0 + i * 4) }
        encodeBlockrefs(superRootBlockset, into: raw.mutableSlice(0x0200, HAMMER2.embeddedBytes))
        encodeBlockrefs(freemapBlockset, into: raw.mutableSlice(0x0800, HAMMER2.embeddedBytes))
        for (i, offset) in volumeOffsets.enumerated() { raw.putLE64(offset, at: 0x0E00 + i * 8) }
        for (i, config) in copyInfo.enumerated() { config.encode(into: raw.mutableSlice(0x1000 + i * 128, 128)) }
        raw.putLE32(volumeHeaderCRC, at: 0xFFFC)
        if updatingChecksums { Self.storeChecksums(into: raw) }
    }

    public func encoded(updatingChecksums: Bool = true) -> [UInt8] {
        encodeIntoNewArray(count: HAMMER2.volumeHeaderBytes) { encode(into: $0, updatingChecksums: updatingChecksums) }
    }
}

// MARK: Freemap

extension BitmapData {
    /// One hammer2_bmap_data_t (128 bytes).
    public func encode(into raw: UnsafeMutableRawBufferPointer) {
        precondition(raw.count >= Self.bytes, "a bmap entry needs 128 bytes")
        precondition(bitmap.count == 8, "bitmapq has 8 words")
        raw.zero(0, Self.bytes)
        raw.putLE32(UInt32(bitPattern: linear), at: 0x00)
        raw.putLE16(allocationClass, at: 0x04)
        raw.putLE32(avail, at: 0x1C)
        for (i, word) in bitmap.enumerated() { raw.putLE64(word, at: 0x40 + i * 8) }
    }

    /// Sets the 2-bit state of 16 KiB block `index` (0..<256) of this 4 MiB range.
    public mutating func setState(_ state: FreemapBlockState, ofBlock index: Int) {
        precondition(index >= 0 && index < Self.blocksPerEntry)
        let shift = UInt64((index % 32) * 2)
        bitmap[index / 32] = bitmap[index / 32] & ~(0b11 << shift) | UInt64(state.rawValue) << shift
    }
}

/// A FREEMAP_LEAF block (32 KiB) from its 256 bitmap entries.
public func encodeFreemapLeaf(_ entries: [BitmapData]) -> [UInt8] {
    precondition(entries.count == BitmapData.entriesPerLeaf, "a freemap leaf has 256 entries")
    return encodeIntoNewArray(count: HAMMER2.freemapBlockBytes) { raw in
        for (i, entry) in entries.enumerated() {
            entry.encode(into: raw.mutableSlice(i * BitmapData.bytes, BitmapData.bytes))
        }
    }
}
