// The intent log's on-disk form (docs/format.md, "Intent log"): commits of in-memory state
// appended by fsync to unused buffers of the reserved segments, replayed after a crash.
// Everything is little-endian and decoded with bounds checks: the log is read from a
// medium anyone may have edited.

/// Where the log lives: buffers 56-63 (512 KiB) of the reserved 4 MiB at the start of each
/// of the first volume's first sixteen GiB, when that segment lies whole inside the volume.
public enum IntentLogArea {
    public static let firstBuffer: UInt64 = 56
    public static let chunkBytes: UInt64 = 8 * 65_536
    public static let maxChunks = 16
    static let segmentStride: UInt64 = 1 << 30
    static let segmentBytes: UInt64 = 4 << 20
    /// Commits start on these boundaries.
    public static let alignment: UInt64 = 4096

    /// The chunks' device offsets on a first volume of `volumeSize` bytes.
    public static func chunks(volumeSize: UInt64) -> [UInt64] {
        (0..<UInt64(maxChunks)).compactMap { index in
            let segment = index * segmentStride
            return segment + segmentBytes <= volumeSize ? segment + firstBuffer * 65_536 : nil
        }
    }
}

/// One commit's 64-byte header.
public struct IntentLogHeader: Equatable, Sendable {
    public static let magic: UInt64 = 0x474F_4C54_4E49_3248  // "H2INTLOG"
    public static let version: UInt32 = 1
    public static let bytes = 64

    public var base: UInt64  // 0x10: the header mirror_tid it applies over
    public var sequence: UInt64  // 0x18
    public var payloadBytes: UInt64  // 0x20
    public var fsid: HAMMER2UUID  // 0x28
    public var payloadHash: UInt64  // 0x38: XXH64, seed 0

    public init(base: UInt64, sequence: UInt64, payloadBytes: UInt64, fsid: HAMMER2UUID, payloadHash: UInt64) {
        self.base = base
        self.sequence = sequence
        self.payloadBytes = payloadBytes
        self.fsid = fsid
        self.payloadHash = payloadHash
    }

    public func encode(into raw: UnsafeMutableRawBufferPointer) {
        precondition(raw.count >= Self.bytes)
        raw.zero(0, Self.bytes)
        raw.putLE64(Self.magic, at: 0x00)
        raw.putLE32(Self.version, at: 0x08)
        raw.putLE64(base, at: 0x10)
        raw.putLE64(sequence, at: 0x18)
        raw.putLE64(payloadBytes, at: 0x20)
        fsid.encode(into: raw, at: 0x28)
        raw.putLE64(payloadHash, at: 0x38)
        raw.putLE32(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<Self.bytes])), at: 0x0C)
    }

    /// Nil unless `raw` starts with a header whose magic, version and CRC hold.
    public init?(decoding raw: UnsafeRawBufferPointer) {
        guard raw.count >= Self.bytes, raw.le64(0x00) == Self.magic, raw.le32(0x08) == Self.version else { return nil }
        var copy = [UInt8](UnsafeRawBufferPointer(rebasing: raw[0..<Self.bytes]))
        copy.withUnsafeMutableBytes { $0.putLE32(0, at: 0x0C) }
        guard CRC32C.checksum(copy) == raw.le32(0x0C) else { return nil }
        base = raw.le64(0x10)
        sequence = raw.le64(0x18)
        payloadBytes = raw.le64(0x20)
        fsid = raw.uuid(0x28)
        payloadHash = raw.le64(0x38)
    }
}

/// A commit's payload: the changed state of every PFS with changes.
public struct IntentLogCommit: Equatable, Sendable {
    public struct EntryChange: Equatable, Sendable {
        public var key: UInt64
        /// nil: the entry with this key is removed.
        public var entry: (inum: UInt64, type: ObjectType, name: [UInt8])?

        public init(key: UInt64, entry: (inum: UInt64, type: ObjectType, name: [UInt8])?) {
            self.key = key
            self.entry = entry
        }

        public static func == (a: EntryChange, b: EntryChange) -> Bool {
            a.key == b.key && a.entry?.inum == b.entry?.inum && a.entry?.type == b.entry?.type && a.entry?.name == b.entry?.name
        }
    }

    public struct DataRange: Equatable, Sendable {
        public var offset: UInt64
        public var length: UInt32
        /// nil: the range reads as zeros.
        public var bytes: [UInt8]?

        public init(offset: UInt64, length: UInt32, bytes: [UInt8]?) {
            self.offset = offset
            self.length = length
            self.bytes = bytes
        }
    }

    public struct Inode: Equatable, Sendable {
        public var inum: UInt64
        /// Not in the last flushed tree: replay makes it.
        public var isNew: Bool
        public var meta: InodeMeta
        public var filename: [UInt8]
        /// On-disk data at or past this offset is dead (UInt64.max: none).
        public var diskLimit: UInt64
        /// The lowest size since the previous commit (UInt64.max: not truncated).
        public var lowestSize: UInt64
        public var entryChanges: [EntryChange]
        public var ranges: [DataRange]

        public init(inum: UInt64, isNew: Bool, meta: InodeMeta, filename: [UInt8], diskLimit: UInt64, lowestSize: UInt64,
                    entryChanges: [EntryChange], ranges: [DataRange]) {
            self.inum = inum
            self.isNew = isNew
            self.meta = meta
            self.filename = filename
            self.diskLimit = diskLimit
            self.lowestSize = lowestSize
            self.entryChanges = entryChanges
            self.ranges = ranges
        }
    }

    public struct PFSChanges: Equatable, Sendable {
        public var label: [UInt8]
        public var nextInodeNumber: UInt64
        public var inodes: [Inode]

        public init(label: [UInt8], nextInodeNumber: UInt64, inodes: [Inode]) {
            self.label = label
            self.nextInodeNumber = nextInodeNumber
            self.inodes = inodes
        }
    }

    public var pfses: [PFSChanges]

    public init(pfses: [PFSChanges]) { self.pfses = pfses }

    static let kindPFS: UInt8 = 1
    static let kindInode: UInt8 = 2
    /// Longest label and name the records hold (HAMMER2_INODE_MAXNAME is 255).
    static let maxName = 1024

    /// Payload bytes `encoded()` produces (for placing a commit before building it).
    public var encodedBytes: Int {
        pfses.reduce(0) { total, pfs in
            total + 1 + 2 + pfs.label.count + 8 + pfs.inodes.reduce(0) { sum, inode in
                sum + 1 + 8 + 1 + 256 + 2 + inode.filename.count + 8 + 8 + 4
                    + inode.entryChanges.reduce(0) { $0 + 8 + 1 + ($1.entry.map { 8 + 1 + 2 + $0.name.count } ?? 0) }
                    + 4 + inode.ranges.reduce(0) { $0 + 8 + 4 + 1 + ($1.bytes?.count ?? 0) }
            }
        }
    }

    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(encodedBytes)
        encode(appendingTo: &out)
        return out
    }

    /// Appends the payload to `out` (a commit is built behind its header, without a copy).
    public func encode(appendingTo out: inout [UInt8]) {
        func put<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { out += $0 } }
        for pfs in pfses {
            out.append(Self.kindPFS)
            put(UInt16(pfs.label.count)); out += pfs.label
            put(pfs.nextInodeNumber)
            for inode in pfs.inodes {
                out.append(Self.kindInode)
                put(inode.inum)
                out.append(inode.isNew ? 1 : 0)
                out += inode.meta.encoded()
                put(UInt16(inode.filename.count)); out += inode.filename
                put(inode.diskLimit)
                put(inode.lowestSize)
                put(UInt32(inode.entryChanges.count))
                for change in inode.entryChanges {
                    put(change.key)
                    if let entry = change.entry {
                        out.append(1)
                        put(entry.inum); out.append(entry.type.rawValue)
                        put(UInt16(entry.name.count)); out += entry.name
                    } else {
                        out.append(0)
                    }
                }
                put(UInt32(inode.ranges.count))
                for range in inode.ranges {
                    put(range.offset); put(range.length)
                    if let bytes = range.bytes {
                        out.append(0); out += bytes
                    } else {
                        out.append(1)
                    }
                }
            }
        }
    }

    /// Decodes a payload; anything malformed (short, unknown kind, lengths past the end,
    /// an inode record before any PFS) throws.
    public init(decoding raw: UnsafeRawBufferPointer) throws {
        var cursor = Cursor(raw: raw)
        var pfses: [PFSChanges] = []
        while !cursor.atEnd {
            let kind = try cursor.u8()
            switch kind {
            case Self.kindPFS:
                let label = try cursor.bytes(Int(try cursor.le16()))
                guard !label.isEmpty, label.count <= Self.maxName else { throw cursor.invalid("label length", UInt64(label.count)) }
                pfses.append(PFSChanges(label: label, nextInodeNumber: try cursor.le64(), inodes: []))
            case Self.kindInode:
                guard !pfses.isEmpty else { throw cursor.invalid("record before its PFS", UInt64(kind)) }
                let inum = try cursor.le64()
                let flags = try cursor.u8()
                guard flags <= 1 else { throw cursor.invalid("inode flags", UInt64(flags)) }
                let meta = try cursor.view(256) { try InodeMeta(decoding: $0) }
                let filename = try cursor.bytes(Int(try cursor.le16()))
                let diskLimit = try cursor.le64()
                let lowestSize = try cursor.le64()
                var changes: [EntryChange] = []
                for _ in 0..<(try cursor.count(minimumBytes: 9)) {
                    let key = try cursor.le64()
                    switch try cursor.u8() {
                    case 0: changes.append(EntryChange(key: key, entry: nil))
                    case 1:
                        let target = try cursor.le64()
                        let type = ObjectType(rawValue: try cursor.u8())
                        let name = try cursor.bytes(Int(try cursor.le16()))
                        guard !name.isEmpty, name.count <= Self.maxName else { throw cursor.invalid("name length", UInt64(name.count)) }
                        changes.append(EntryChange(key: key, entry: (target, type, name)))
                    case let other: throw cursor.invalid("entry flag", UInt64(other))
                    }
                }
                var ranges: [DataRange] = []
                for _ in 0..<(try cursor.count(minimumBytes: 13)) {
                    let offset = try cursor.le64()
                    let length = try cursor.le32()
                    let (end, overflow) = offset.addingReportingOverflow(UInt64(length))
                    guard !overflow, end <= UInt64(Int64.max) else { throw cursor.invalid("range end", offset) }
                    switch try cursor.u8() {
                    case 0: ranges.append(DataRange(offset: offset, length: length, bytes: try cursor.bytes(Int(length))))
                    case 1: ranges.append(DataRange(offset: offset, length: length, bytes: nil))
                    case let other: throw cursor.invalid("range flag", UInt64(other))
                    }
                }
                pfses[pfses.count - 1].inodes.append(Inode(inum: inum, isNew: flags & 1 != 0, meta: meta, filename: filename,
                                                          diskLimit: diskLimit, lowestSize: lowestSize,
                                                          entryChanges: changes, ranges: ranges))
            default:
                throw cursor.invalid("record kind", UInt64(kind))
            }
        }
        self.pfses = pfses
    }

    /// Sequential reads with a bounds check each.
    struct Cursor {
        let raw: UnsafeRawBufferPointer
        var position = 0

        var atEnd: Bool { position >= raw.count }

        func invalid(_ field: String, _ value: UInt64) -> FormatError {
            .invalidField(structure: "intent log commit (at byte \(position))", field: field, value: value)
        }

        mutating func need(_ count: Int) throws {
            guard count >= 0, raw.count - position >= count else {
                throw FormatError.shortBuffer(structure: "intent log commit", needed: position + count, got: raw.count)
            }
        }

        mutating func u8() throws -> UInt8 { try need(1); defer { position += 1 }; return raw.u8(position) }
        mutating func le16() throws -> UInt16 { try need(2); defer { position += 2 }; return raw.le16(position) }
        mutating func le32() throws -> UInt32 { try need(4); defer { position += 4 }; return raw.le32(position) }
        mutating func le64() throws -> UInt64 { try need(8); defer { position += 8 }; return raw.le64(position) }

        mutating func bytes(_ count: Int) throws -> [UInt8] {
            try need(count)
            defer { position += count }
            return raw.bytes(position, count)
        }

        mutating func view<T>(_ count: Int, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
            try need(count)
            defer { position += count }
            return try body(raw.slice(position, count))
        }

        /// A record count, refused when the bytes left cannot hold that many records.
        mutating func count(minimumBytes: Int) throws -> Int {
            let count = Int(try le32())
            guard count <= (raw.count - position) / minimumBytes else { throw invalid("record count", UInt64(count)) }
            return count
        }
    }
}
