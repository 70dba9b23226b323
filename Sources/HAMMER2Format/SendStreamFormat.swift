// The send stream's framing (docs/send-receive.md, "Stream format, version 1"): records of
// a 32-byte header and a payload, the payload's XXH64 chained from record to record so that
// a dropped, repeated or reordered record fails like a changed byte. Decoded with bounds
// checks: a stream comes from anywhere.

public enum SendStreamRecordType: UInt16, Sendable {
    case begin = 1
    case inodes = 2
    case end = 3
    case blocks = 4
    /// A raw stream (an encrypted snapshot, sealed blocks as stored): its begin record (the
    /// same payload as `begin`), blocks of the tree, then the PFS root.
    case rawBegin = 5
    case rawBlocks = 6
    case rawRoot = 7
}

public struct SendStreamRecordHeader: Equatable, Sendable {
    public static let magic: UInt32 = 0x5253_3248  // "H2SR"
    public static let version: UInt16 = 1
    public static let bytes = 32
    /// The largest payload a receiver accepts.
    public static let maximumPayload = 16 << 20

    public var type: SendStreamRecordType  // 0x04
    public var sequence: UInt64  // 0x08
    public var payloadBytes: UInt32  // 0x10
    public var payloadHash: UInt64  // 0x18: XXH64 of the payload, seeded with the previous record's

    public init(type: SendStreamRecordType, sequence: UInt64, payloadBytes: UInt32, payloadHash: UInt64) {
        self.type = type
        self.sequence = sequence
        self.payloadBytes = payloadBytes
        self.payloadHash = payloadHash
    }

    public func encoded() -> [UInt8] {
        var raw = [UInt8](repeating: 0, count: Self.bytes)
        raw.withUnsafeMutableBytes { raw in
            raw.putLE32(Self.magic, at: 0x00)
            raw.putLE16(type.rawValue, at: 0x04)
            raw.putLE16(Self.version, at: 0x06)
            raw.putLE64(sequence, at: 0x08)
            raw.putLE32(payloadBytes, at: 0x10)
            raw.putLE32(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<0x14])), at: 0x14)
            raw.putLE64(payloadHash, at: 0x18)
        }
        return raw
    }

    /// Throws unless `raw` is a header whose magic, version, type, CRC and size hold.
    public init(decoding raw: UnsafeRawBufferPointer) throws {
        guard raw.count >= Self.bytes else {
            throw FormatError.shortBuffer(structure: "send stream record header", needed: Self.bytes, got: raw.count)
        }
        guard raw.le32(0x00) == Self.magic else {
            throw FormatError.invalidField(structure: "send stream record header", field: "magic", value: UInt64(raw.le32(0x00)))
        }
        guard raw.le16(0x06) == Self.version else {
            throw FormatError.invalidField(structure: "send stream record header", field: "version (this receiver reads 1)",
                                           value: UInt64(raw.le16(0x06)))
        }
        guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<0x14])) == raw.le32(0x14) else {
            throw FormatError.invalidField(structure: "send stream record header", field: "CRC", value: UInt64(raw.le32(0x14)))
        }
        guard let type = SendStreamRecordType(rawValue: raw.le16(0x04)) else {
            throw FormatError.invalidField(structure: "send stream record header", field: "type", value: UInt64(raw.le16(0x04)))
        }
        guard raw.le32(0x10) <= Self.maximumPayload else {
            throw FormatError.invalidField(structure: "send stream record header", field: "payload bytes", value: UInt64(raw.le32(0x10)))
        }
        self.type = type
        sequence = raw.le64(0x08)
        payloadBytes = raw.le32(0x10)
        payloadHash = raw.le64(0x18)
    }

    /// The chained hash of `payload` after a record whose hash was `previous`.
    public static func hash(_ payload: [UInt8], after previous: UInt64) -> UInt64 {
        payload.withUnsafeBytes { CheckCode.xxhash64($0, seed: previous) }
    }
}

/// The first record: which snapshot the stream holds, and over which base.
public struct SendStreamBegin: Equatable, Sendable {
    public var snapshotFilesystemID: HAMMER2UUID  // 0x00
    public var snapshotClusterID: HAMMER2UUID  // 0x10
    /// Zero for a full stream.
    public var baseFilesystemID: HAMMER2UUID  // 0x20
    /// The snapshot's inode number counter (pfs_inum).
    public var nextInodeNumber: UInt64  // 0x30
    /// A resumed stream: the record it goes on with (0: not resumed), and the chained hash
    /// of the record before it, as the interrupted receive checked it.
    public var resumeSequence: UInt64  // 0x38
    public var resumeHash: UInt64  // 0x40
    public var label: [UInt8]  // 0x48: length (2), then the bytes
    /// After the label, optional: the whole stream's size as the sender estimated it
    /// (hammer2 send -n), for the receiving side's progress and ETA.
    public var expectedBytes: UInt64?

    public init(snapshotFilesystemID: HAMMER2UUID, snapshotClusterID: HAMMER2UUID, baseFilesystemID: HAMMER2UUID,
                nextInodeNumber: UInt64, resumeSequence: UInt64 = 0, resumeHash: UInt64 = 0, label: [UInt8],
                expectedBytes: UInt64? = nil) {
        self.expectedBytes = expectedBytes
        self.snapshotFilesystemID = snapshotFilesystemID
        self.snapshotClusterID = snapshotClusterID
        self.baseFilesystemID = baseFilesystemID
        self.nextInodeNumber = nextInodeNumber
        self.resumeSequence = resumeSequence
        self.resumeHash = resumeHash
        self.label = label
    }

    public var isIncremental: Bool { baseFilesystemID != .zero }

    public func encoded() -> [UInt8] {
        var out = snapshotFilesystemID.bytes + snapshotClusterID.bytes + baseFilesystemID.bytes
        for value in [nextInodeNumber, resumeSequence, resumeHash] { withUnsafeBytes(of: value.littleEndian) { out += $0 } }
        withUnsafeBytes(of: UInt16(label.count).littleEndian) { out += $0 }
        out += label
        if let expectedBytes { withUnsafeBytes(of: expectedBytes.littleEndian) { out += $0 } }
        return out
    }

    public init(decoding raw: UnsafeRawBufferPointer) throws {
        guard raw.count >= 0x4A else { throw FormatError.shortBuffer(structure: "send stream begin", needed: 0x4A, got: raw.count) }
        let length = Int(raw.le16(0x48))
        guard length >= 1, length <= HAMMER2.inodeMaxName, raw.count == 0x4A + length || raw.count == 0x4A + length + 8 else {
            throw FormatError.invalidField(structure: "send stream begin", field: "label length", value: UInt64(length))
        }
        snapshotFilesystemID = raw.uuid(0x00)
        snapshotClusterID = raw.uuid(0x10)
        baseFilesystemID = raw.uuid(0x20)
        nextInodeNumber = raw.le64(0x30)
        resumeSequence = raw.le64(0x38)
        resumeHash = raw.le64(0x40)
        label = raw.bytes(0x4A, length)
        expectedBytes = raw.count == 0x4A + length + 8 ? raw.le64(0x4A + length) : nil
    }
}

/// What an interrupted receive prints and `hammer2 send -t` takes: the snapshot, its base,
/// and where the receive stopped ("1-SNAPSHOT-BASE-SEQUENCE-HASH", hexadecimal).
public struct SendResumeToken: Equatable, Sendable {
    public var snapshotFilesystemID: HAMMER2UUID
    public var baseFilesystemID: HAMMER2UUID
    public var sequence: UInt64
    public var hash: UInt64

    public init(snapshotFilesystemID: HAMMER2UUID, baseFilesystemID: HAMMER2UUID, sequence: UInt64, hash: UInt64) {
        self.snapshotFilesystemID = snapshotFilesystemID
        self.baseFilesystemID = baseFilesystemID
        self.sequence = sequence
        self.hash = hash
    }

    public var text: String {
        func hex(_ bytes: [UInt8]) -> String { bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined() }
        func hex64(_ value: UInt64) -> String { hex(withUnsafeBytes(of: value.bigEndian) { Array($0) }) }
        return "1-\(hex(snapshotFilesystemID.bytes))-\(hex(baseFilesystemID.bytes))-\(hex64(sequence))-\(hex64(hash))"
    }

    public init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 5, parts[0] == "1", parts[1].count == 32, parts[2].count == 32, parts[3].count == 16, parts[4].count == 16 else { return nil }
        func bytes(_ hex: String) -> [UInt8]? {
            var out: [UInt8] = []
            var index = hex.startIndex
            while index < hex.endIndex {
                let next = hex.index(index, offsetBy: 2)
                guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
                out.append(byte)
                index = next
            }
            return out
        }
        guard let snapshot = bytes(parts[1]), let base = bytes(parts[2]),
              let sequence = UInt64(parts[3], radix: 16), let hash = UInt64(parts[4], radix: 16), sequence >= 1 else { return nil }
        self.init(snapshotFilesystemID: HAMMER2UUID(bytes: snapshot), baseFilesystemID: HAMMER2UUID(bytes: base),
                  sequence: sequence, hash: hash)
    }
}

/// The last record: what the receiver must have seen.
public struct SendStreamEnd: Equatable, Sendable {
    /// Inodes and blocks records.
    public var inodeRecords: UInt64
    /// Bytes of data carried: logical bytes of ranges plus stored bytes of blocks.
    public var dataBytes: UInt64

    public init(inodeRecords: UInt64, dataBytes: UInt64) {
        self.inodeRecords = inodeRecords
        self.dataBytes = dataBytes
    }

    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        withUnsafeBytes(of: inodeRecords.littleEndian) { out += $0 }
        withUnsafeBytes(of: dataBytes.littleEndian) { out += $0 }
        return out
    }

    public init(decoding raw: UnsafeRawBufferPointer) throws {
        guard raw.count == 16 else { throw FormatError.invalidField(structure: "send stream end", field: "length", value: UInt64(raw.count)) }
        inodeRecords = raw.le64(0)
        dataBytes = raw.le64(8)
    }
}

/// Data blocks as stored (compressed as they are on the sender's media), of inodes an
/// earlier inodes record named.
public struct SendStreamBlocks: Equatable, Sendable {
    public struct Block: Equatable, Sendable {
        public var inum: UInt64
        /// File offset, a multiple of 64 KiB.
        public var offset: UInt64
        /// The blockref's methods byte (compression, check).
        public var methods: UInt8
        public var stored: [UInt8]

        public init(inum: UInt64, offset: UInt64, methods: UInt8, stored: [UInt8]) {
            self.inum = inum
            self.offset = offset
            self.methods = methods
            self.stored = stored
        }
    }

    public var blocks: [Block]

    public init(blocks: [Block]) { self.blocks = blocks }

    public var storedBytes: Int { blocks.reduce(0) { $0 + $1.stored.count } }

    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(4 + blocks.count * 21 + storedBytes)
        func put<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { out += $0 } }
        put(UInt32(blocks.count))
        for block in blocks {
            put(block.inum); put(block.offset); out.append(block.methods); put(UInt32(block.stored.count))
            out += block.stored
        }
        return out
    }

    public init(decoding raw: UnsafeRawBufferPointer) throws {
        func invalid(_ field: String, _ value: UInt64) -> FormatError {
            .invalidField(structure: "send stream blocks", field: field, value: value)
        }
        guard raw.count >= 4 else { throw FormatError.shortBuffer(structure: "send stream blocks", needed: 4, got: raw.count) }
        let count = Int(raw.le32(0))
        guard count <= raw.count / 21 else { throw invalid("count", UInt64(count)) }
        var position = 4
        var blocks: [Block] = []
        blocks.reserveCapacity(count)
        for _ in 0..<count {
            guard raw.count - position >= 21 else { throw FormatError.shortBuffer(structure: "send stream blocks", needed: position + 21, got: raw.count) }
            let inum = raw.le64(position), offset = raw.le64(position + 8), methods = raw.u8(position + 16)
            let length = Int(raw.le32(position + 17))
            position += 21
            guard offset % 65_536 == 0, offset <= UInt64(Int64.max) - 65_536 else { throw invalid("offset", offset) }
            // As on media: a power of two from 1 KiB to 64 KiB, compressed with none, LZ4 or
            // zlib, checked with none to sha192 (a receiver writes the bytes as they come).
            guard length >= 1024, length <= 65_536, length & (length - 1) == 0, raw.count - position >= length else {
                throw invalid("stored length", UInt64(length))
            }
            guard [0, 2, 3].contains(methods & 0x0F), methods >> 4 <= 4 else { throw invalid("methods", UInt64(methods)) }
            blocks.append(Block(inum: inum, offset: offset, methods: methods, stored: raw.bytes(position, length)))
            position += length
        }
        guard position == raw.count else { throw invalid("trailing bytes", UInt64(raw.count - position)) }
        self.blocks = blocks
    }
}

/// Blocks of a raw stream: the snapshot's tree as stored (sealed), children before their
/// parents, each with its location-free blockref and the tree it belongs to (0 for the
/// PFS root's tree, else the inode number whose blockset leads to it) so that the receiver
/// can find children the stream leaves out in its copy of the base.
public struct SendStreamRawBlocks: Equatable, Sendable {
    public struct Block: Equatable, Sendable {
        public var tree: UInt64
        public var bref: Blockref
        public var stored: [UInt8]

        public init(tree: UInt64, bref: Blockref, stored: [UInt8]) {
            self.tree = tree
            self.bref = bref
            self.stored = stored
        }
    }

    public var blocks: [Block]

    public init(blocks: [Block]) { self.blocks = blocks }

    public var storedBytes: Int { blocks.reduce(0) { $0 + $1.stored.count } }

    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(4 + blocks.count * (8 + HAMMER2.blockrefBytes) + storedBytes)
        withUnsafeBytes(of: UInt32(blocks.count).littleEndian) { out += $0 }
        for block in blocks {
            withUnsafeBytes(of: block.tree.littleEndian) { out += $0 }
            out += block.bref.encoded()
            out += block.stored
        }
        return out
    }

    public init(decoding raw: UnsafeRawBufferPointer) throws {
        func invalid(_ field: String, _ value: UInt64) -> FormatError {
            .invalidField(structure: "send stream raw blocks", field: field, value: value)
        }
        let entry = 8 + HAMMER2.blockrefBytes
        guard raw.count >= 4 else { throw FormatError.shortBuffer(structure: "send stream raw blocks", needed: 4, got: raw.count) }
        let count = Int(raw.le32(0))
        guard count <= raw.count / entry else { throw invalid("count", UInt64(count)) }
        var position = 4
        var blocks: [Block] = []
        blocks.reserveCapacity(count)
        for _ in 0..<count {
            guard raw.count - position >= entry else {
                throw FormatError.shortBuffer(structure: "send stream raw blocks", needed: position + entry, got: raw.count)
            }
            let tree = raw.le64(position)
            let bref = try Blockref(decoding: raw.slice(position + 8, HAMMER2.blockrefBytes))
            position += entry
            // What a sealed tree holds, in location-free form; sizes as on media.
            guard [.inode, .indirect, .data, .dirent].contains(bref.type) else { throw invalid("blockref type", UInt64(bref.type.rawValue)) }
            guard bref.checkMethod == .xaes256gcm else { throw invalid("check method (sealed blocks only)", UInt64(bref.methods >> 4)) }
            guard bref == bref.locationFree else { throw invalid("location (a raw block travels without one)", bref.dataOffset) }
            let radix = bref.physicalRadix
            guard (HAMMER2.allocationMinRadix...HAMMER2.allocationMaxRadix).contains(radix) else { throw invalid("size radix", UInt64(radix)) }
            guard bref.type != .inode || radix == 10 else { throw invalid("inode size radix", UInt64(radix)) }
            guard bref.copyCount <= Blockref.copyCapacity(.xaes256gcm) else { throw invalid("copies", UInt64(bref.copyid)) }
            let length = 1 << radix
            guard raw.count - position >= length else { throw invalid("stored length", UInt64(length)) }
            blocks.append(Block(tree: tree, bref: bref, stored: raw.bytes(position, length)))
            position += length
        }
        guard position == raw.count else { throw invalid("trailing bytes", UInt64(raw.count - position)) }
        self.blocks = blocks
    }
}
