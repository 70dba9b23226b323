// hammer2_inode_data_t: a 1 KiB inode block. The first 256 bytes are hammer2_inode_meta_t,
// then a 256-byte filename (for recovery; the directory entry is authoritative), then 512
// bytes holding either embedded data (op_flags DIRECTDATA) or a blockset of four blockrefs.

/// HAMMER2_OBJTYPE_*
public struct ObjectType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let unknown = ObjectType(rawValue: 0)
    public static let directory = ObjectType(rawValue: 1)
    public static let regularFile = ObjectType(rawValue: 2)
    public static let fifo = ObjectType(rawValue: 4)
    public static let characterDevice = ObjectType(rawValue: 5)
    public static let blockDevice = ObjectType(rawValue: 6)
    public static let softlink = ObjectType(rawValue: 7)
    public static let socket = ObjectType(rawValue: 9)
    public static let whiteout = ObjectType(rawValue: 10)

    public var description: String {
        switch self {
        case .unknown: return "unknown"
        case .directory: return "dir"
        case .regularFile: return "file"
        case .fifo: return "fifo"
        case .characterDevice: return "cdev"
        case .blockDevice: return "bdev"
        case .softlink: return "softlink"
        case .socket: return "socket"
        case .whiteout: return "whiteout"
        default: return "type(\(rawValue))"
        }
    }
}

/// HAMMER2_PFSTYPE_* (low nibble of pfs_type; the high nibble is a transition in progress).
public struct PFSType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let none = PFSType(rawValue: 0x00)
    public static let cache = PFSType(rawValue: 0x01)
    public static let slave = PFSType(rawValue: 0x03)
    public static let softSlave = PFSType(rawValue: 0x04)
    public static let softMaster = PFSType(rawValue: 0x05)
    public static let master = PFSType(rawValue: 0x06)
    public static let superRoot = PFSType(rawValue: 0x08)
    public static let dummy = PFSType(rawValue: 0x09)

    /// As DragonFly's hammer2_pfstype_to_str.
    public var description: String {
        switch PFSType(rawValue: rawValue & 0x0F) {
        case .none: return "NONE"
        case .cache: return "CACHE"
        case .slave: return "SLAVE"
        case .softSlave: return "SOFT_SLAVE"
        case .softMaster: return "SOFT_MASTER"
        case .master: return "MASTER"
        case .superRoot: return "SUPROOT"
        case .dummy: return "DUMMY"
        default: return "ILLEGAL"
        }
    }
}

/// HAMMER2_PFSSUBTYPE_*
public enum PFSSubtype {
    public static let none: UInt8 = 0
    public static let snapshot: UInt8 = 1
    public static let autosnap: UInt8 = 2

    public static func name(_ raw: UInt8) -> String {
        switch raw {
        case none: return "NONE"
        case snapshot: return "SNAPSHOT"
        case autosnap: return "AUTOSNAP"
        default: return "ILLEGAL"
        }
    }
}

/// hammer2_inode_meta_t (bytes 0x000-0x0FF of an inode)
public struct InodeMeta: Hashable, Sendable {
    public var version: UInt16  // 0000
    public var pfsSubtype: UInt8  // 0003
    public var uflags: UInt32  // 0004 chflags
    public var rmajor: UInt32  // 0008
    public var rminor: UInt32  // 000C
    public var ctime: UInt64  // 0010 microseconds since the epoch
    public var mtime: UInt64  // 0018
    public var atime: UInt64  // 0020
    public var btime: UInt64  // 0028
    public var uid: HAMMER2UUID  // 0030
    public var gid: HAMMER2UUID  // 0040
    public var type: ObjectType  // 0050
    public var opFlags: UInt8  // 0051 HAMMER2_OPFLAG_*
    public var capFlags: UInt16  // 0052
    public var mode: UInt32  // 0054
    public var inum: UInt64  // 0058
    public var size: UInt64  // 0060
    public var nlinks: UInt64  // 0068
    public var iparent: UInt64  // 0070
    public var nameKey: UInt64  // 0078
    public var nameLength: UInt16  // 0080
    public var ncopies: UInt8  // 0082
    public var compAlgo: UInt8  // 0083 level << 4 | algorithm
    public var checkAlgo: UInt8  // 0085
    public var pfsNMasters: UInt8  // 0086
    public var pfsType: PFSType  // 0087
    public var pfsInum: UInt64  // 0088 inode number allocator (PFS root)
    public var pfsClusterID: HAMMER2UUID  // 0090 pfs_clid
    public var pfsFilesystemID: HAMMER2UUID  // 00A0 pfs_fsid
    public var dataQuota: UInt64  // 00B0
    public var inodeQuota: UInt64  // 00C0
    public var pfsLastSnapshotTID: UInt64  // 00D0
    public var decryptCheck: UInt64  // 00E0
    /// reservedE0[0..1] (00E8-00F7): on an encrypted PFS root, the MAC of the root inode.
    public var rootMAC0: UInt64 = 0  // 00E8
    public var rootMAC1: UInt64 = 0  // 00F0
    /// reservedE0[2] (00F8): on an encrypted PFS root, the transaction that signed it,
    /// covered by the MAC: a counter the image's holder cannot raise, so a root older than
    /// one seen before is told (docs/encryption.md, "Rollback").
    public var rootGeneration: UInt64 = 0  // 00F8

    public static let opFlagDirectData: UInt8 = 0x01
    public static let opFlagPFSRoot: UInt8 = 0x02
    public static let opFlagCopyIDs: UInt8 = 0x04
    /// Not DragonFly's: an encrypted PFS root whose MAC is location-free (sealing version
    /// 2, docs/encryption.md); under the MAC itself, so it cannot be flipped unnoticed.
    public static let opFlagLocationFreeRoot: UInt8 = 0x80

    public init(decoding raw: UnsafeRawBufferPointer) throws {
        guard raw.count >= 256 else { throw FormatError.shortBuffer(structure: "inode meta", needed: 256, got: raw.count) }
        version = raw.le16(0x00)
        pfsSubtype = raw.u8(0x03)
        uflags = raw.le32(0x04)
        rmajor = raw.le32(0x08)
        rminor = raw.le32(0x0C)
        ctime = raw.le64(0x10)
        mtime = raw.le64(0x18)
        atime = raw.le64(0x20)
        btime = raw.le64(0x28)
        uid = raw.uuid(0x30)
        gid = raw.uuid(0x40)
        type = ObjectType(rawValue: raw.u8(0x50))
        opFlags = raw.u8(0x51)
        capFlags = raw.le16(0x52)
        mode = raw.le32(0x54)
        inum = raw.le64(0x58)
        size = raw.le64(0x60)
        nlinks = raw.le64(0x68)
        iparent = raw.le64(0x70)
        nameKey = raw.le64(0x78)
        nameLength = raw.le16(0x80)
        ncopies = raw.u8(0x82)
        compAlgo = raw.u8(0x83)
        checkAlgo = raw.u8(0x85)
        pfsNMasters = raw.u8(0x86)
        pfsType = PFSType(rawValue: raw.u8(0x87))
        pfsInum = raw.le64(0x88)
        pfsClusterID = raw.uuid(0x90)
        pfsFilesystemID = raw.uuid(0xA0)
        dataQuota = raw.le64(0xB0)
        inodeQuota = raw.le64(0xC0)
        pfsLastSnapshotTID = raw.le64(0xD0)
        decryptCheck = raw.le64(0xE0)
        rootMAC0 = raw.le64(0xE8)
        rootMAC1 = raw.le64(0xF0)
        rootGeneration = raw.le64(0xF8)
    }

    public var hasDirectData: Bool { opFlags & Self.opFlagDirectData != 0 }
    public var isPFSRoot: Bool { opFlags & Self.opFlagPFSRoot != 0 }
    /// HAMMER2_DEC_ALGO(comp_algo)
    public var compressionAlgorithm: CompressionMethod { CompressionMethod(rawValue: compAlgo & 0x0F) }
    /// HAMMER2_DEC_LEVEL(comp_algo)
    public var compressionLevel: Int { Int((compAlgo >> 4) & 0x0F) }
    public var checkAlgorithm: CheckMethod { CheckMethod(rawValue: checkAlgo & 0x0F) }
}

/// What lives in bytes 0x200-0x3FF of an inode.
public enum InodeContent: Hashable, Sendable {
    case embedded([UInt8])  // HAMMER2_OPFLAG_DIRECTDATA: up to 512 bytes of data
    case blockset([Blockref])  // four blockrefs
}

/// hammer2_inode_data_t
public struct InodeData: Hashable, Sendable {
    public var meta: InodeMeta
    /// filename[0..<name_len] (bytes 0x100-0x1FF)
    public var filename: [UInt8]
    public var content: InodeContent
    /// An encrypted PFS root's wrapped key (0x180-0x1FF, after a label of at most 127
    /// bytes), present when decrypt_check carries the "H2EN" mark; nil otherwise.
    public var keyRecord: [UInt8]?

    /// decrypt_check's high half on an encrypted PFS root ("H2EN").
    public static let encryptedRootMark: UInt64 = 0x4832_454E
    public static let keyRecordOffset = 0x180, keyRecordBytes = 128

    public init(decoding raw: UnsafeRawBufferPointer) throws {
        guard raw.count >= HAMMER2.inodeBytes else {
            throw FormatError.shortBuffer(structure: "inode", needed: HAMMER2.inodeBytes, got: raw.count)
        }
        meta = try InodeMeta(decoding: raw.slice(0, 256))
        let nameLength = Int(meta.nameLength)
        guard nameLength <= HAMMER2.inodeMaxName else {
            throw FormatError.invalidField(structure: "inode", field: "name_len", value: UInt64(nameLength))
        }
        filename = raw.bytes(0x100, nameLength)
        if meta.decryptCheck >> 32 == Self.encryptedRootMark, nameLength < Self.keyRecordOffset - 0x100 {
            keyRecord = raw.bytes(Self.keyRecordOffset, Self.keyRecordBytes)
        }
        if meta.hasDirectData {
            content = .embedded(raw.bytes(0x200, HAMMER2.embeddedBytes))
        } else {
            content = .blockset(try decodeBlockrefs(raw.slice(0x200, HAMMER2.embeddedBytes), count: HAMMER2.blocksetCount))
        }
    }

    public init(decoding bytes: [UInt8]) throws {
        self = try bytes.withUnsafeBytes { try InodeData(decoding: $0) }
    }

    public var blockset: [Blockref] {
        if case let .blockset(refs) = content { return refs }
        return []
    }
}
