// hammer2_volume_data_t: the 64 KiB volume header. Up to four copies sit at the start of
// the first four 2 GiB zones of a volume; flushes rotate through them, so the valid copy
// with the highest mirror_tid is the current state and the others are older, intact states.
//
// Three CRC32C codes protect a copy: icrc_sects[7] over bytes 0x000-0x1FB, icrc_sects[6]
// over 0x200-0x3FF (the super-root blockset), icrc_volheader over 0x0000-0xFFFB.

/// hammer2_volconf_t (128 bytes, copyinfo[] entries)
public struct VolumeConfig: Hashable, Sendable {
    public var copyid: UInt8  // 00
    public var inprog: UInt8  // 01
    public var chainTo: UInt8  // 02
    public var chainFrom: UInt8  // 03
    public var flags: UInt16  // 04
    public var error: UInt8  // 06
    public var priority: UInt8  // 07
    public var remotePFSType: UInt8  // 08
    public var pfsClusterID: HAMMER2UUID  // 20
    public var label: [UInt8]  // 30-3F
    public var path: [UInt8]  // 40-7F

    init(decoding raw: UnsafeRawBufferPointer) {
        copyid = raw.u8(0x00); inprog = raw.u8(0x01); chainTo = raw.u8(0x02); chainFrom = raw.u8(0x03)
        flags = raw.le16(0x04); error = raw.u8(0x06); priority = raw.u8(0x07); remotePFSType = raw.u8(0x08)
        pfsClusterID = raw.uuid(0x20)
        label = raw.bytes(0x30, 16)
        path = raw.bytes(0x40, 64)
    }
}

public struct VolumeHeader: Hashable, Sendable {
    public var magic: UInt64  // 0000
    public var bootBegin: UInt64  // 0008
    public var bootEnd: UInt64  // 0010
    public var auxBegin: UInt64  // 0018
    public var auxEnd: UInt64  // 0020
    public var volumeSize: UInt64  // 0028 volu_size
    public var version: UInt32  // 0030
    public var flags: UInt32  // 0034
    public var copyid: UInt8  // 0038
    public var freemapVersion: UInt8  // 0039
    public var peerType: UInt8  // 003A
    public var volumeID: UInt8  // 003B volu_id
    public var volumeCount: UInt8  // 003C nvolumes
    public var fsid: HAMMER2UUID  // 0040
    public var fstype: HAMMER2UUID  // 0050
    public var allocatorSize: UInt64  // 0060
    public var allocatorFree: UInt64  // 0068
    public var allocatorBegin: UInt64  // 0070
    public var mirrorTID: UInt64  // 0078
    public var freemapTID: UInt64  // 0090
    public var bulkfreeTID: UInt64  // 0098
    public var totalSize: UInt64  // 00C0
    public var copyExists: [UInt32]  // 00C8-00E7
    public var sectorCRCs: [UInt32]  // 01E0-01FF icrc_sects[8]
    public var superRootBlockset: [Blockref]  // 0200-03FF
    public var freemapBlockset: [Blockref]  // 0800-09FF
    public var volumeOffsets: [UInt64]  // 0E00-0FFF volu_loff[64]
    public var copyInfo: [VolumeConfig]  // 1000-8FFF copyinfo[256]
    public var volumeHeaderCRC: UInt32  // FFFC icrc_volheader

    public static let sect0CRCIndex = 7  // HAMMER2_VOL_ICRC_SECT0
    public static let sect1CRCIndex = 6  // HAMMER2_VOL_ICRC_SECT1

    /// Decodes a header without judging it; see `validate` for the checks a mount applies.
    public init(decoding raw: UnsafeRawBufferPointer) throws {
        guard raw.count >= HAMMER2.volumeHeaderBytes else {
            throw FormatError.shortBuffer(structure: "volume header", needed: HAMMER2.volumeHeaderBytes, got: raw.count)
        }
        magic = raw.le64(0x0000)
        bootBegin = raw.le64(0x0008)
        bootEnd = raw.le64(0x0010)
        auxBegin = raw.le64(0x0018)
        auxEnd = raw.le64(0x0020)
        volumeSize = raw.le64(0x0028)
        version = raw.le32(0x0030)
        flags = raw.le32(0x0034)
        copyid = raw.u8(0x0038)
        freemapVersion = raw.u8(0x0039)
        peerType = raw.u8(0x003A)
        volumeID = raw.u8(0x003B)
        volumeCount = raw.u8(0x003C)
        fsid = raw.uuid(0x0040)
        fstype = raw.uuid(0x0050)
        allocatorSize = raw.le64(0x0060)
        allocatorFree = raw.le64(0x0068)
        allocatorBegin = raw.le64(0x0070)
        mirrorTID = raw.le64(0x0078)
        freemapTID = raw.le64(0x0090)
        bulkfreeTID = raw.le64(0x0098)
        totalSize = raw.le64(0x00C0)
        copyExists = (0..<8).map { raw.le32(0x00C8 + $0 * 4) }
        sectorCRCs = (0..<8).map { raw.le32(0x01E0 + $0 * 4) }
        superRootBlockset = try decodeBlockrefs(raw.slice(0x0200, 512), count: HAMMER2.blocksetCount)
        freemapBlockset = try decodeBlockrefs(raw.slice(0x0800, 512), count: HAMMER2.blocksetCount)
        volumeOffsets = (0..<HAMMER2.maxVolumes).map { raw.le64(0x0E00 + $0 * 8) }
        copyInfo = (0..<256).map { VolumeConfig(decoding: raw.slice(0x1000 + $0 * 128, 128)) }
        volumeHeaderCRC = raw.le32(0xFFFC)
    }

    public init(decoding bytes: [UInt8]) throws {
        self = try bytes.withUnsafeBytes { try VolumeHeader(decoding: $0) }
    }

    /// Why a header copy cannot be used, in DragonFly's terms.
    public enum Problem: Error, Equatable, CustomStringConvertible, Sendable {
        case badMagic(UInt64)
        case reverseEndian
        case crcMismatch(section: String, stored: UInt32, computed: UInt32)

        public var description: String {
            switch self {
            case let .badMagic(m): return String(format: "bad magic 0x%016llx", m)
            case .reverseEndian: return "reverse-endian filesystem detected"
            case let .crcMismatch(section, stored, computed):
                return String(format: "volume header crc mismatch %@ %08x/%08x", section, stored, computed)
            }
        }
    }

    /// The checks DragonFly's hammer2_read_volume_header applies to each copy: magic, then
    /// the sector-0 CRC, the sector-1 CRC and the whole-header CRC. Returns nil when valid.
    public static func validate(_ raw: UnsafeRawBufferPointer) -> Problem? {
        guard raw.count >= HAMMER2.volumeHeaderBytes else { return .badMagic(0) }
        let magic = raw.le64(0)
        if magic == HAMMER2.volumeMagicReversed { return .reverseEndian }
        if magic != HAMMER2.volumeMagicHostOrder { return .badMagic(magic) }
        let stored0 = raw.le32(0x01E0 + sect0CRCIndex * 4)
        let computed0 = CRC32C.checksum(raw.slice(0, 512 - 4))
        if stored0 != computed0 { return .crcMismatch(section: "sect0", stored: stored0, computed: computed0) }
        let stored1 = raw.le32(0x01E0 + sect1CRCIndex * 4)
        let computed1 = CRC32C.checksum(raw.slice(512, 512))
        if stored1 != computed1 { return .crcMismatch(section: "sect1", stored: stored1, computed: computed1) }
        let storedVH = raw.le32(0xFFFC)
        let computedVH = CRC32C.checksum(raw.slice(0, HAMMER2.volumeHeaderBytes - 4))
        if storedVH != computedVH { return .crcMismatch(section: "vh", stored: storedVH, computed: computedVH) }
        return nil
    }

    /// Zone offsets (on this volume's device) of the header copies that fit in `deviceSize`.
    public static func copyOffsets(deviceSize: UInt64) -> [UInt64] {
        (0..<UInt64(HAMMER2.volumeHeaderCount)).map { $0 * HAMMER2.zoneBytes }.filter { $0 < deviceSize }
    }
}

import Foundation
