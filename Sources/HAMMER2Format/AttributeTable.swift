// The extended attributes of one inode, as the data of its hidden attribute inode stores
// them (a format extension of ours, docs/format.md "Extended attributes"):
//
//   0x00  "H2XA"   magic
//   0x04  u16      version (1)
//   0x06  u16      reserved (0)
//   0x08  u32      record count
//   0x0C  u32      reserved (0)
//   0x10  records, sorted by (namespace, name), each:
//         u8 namespace, u8 name length (1-255), u32 value length (0-65,536), name, value
//
// Decoding checks everything (a damaged or hostile table is an error, never a crash).

public struct AttributeTable: Equatable, Sendable {
    /// Linux's xattr namespaces, as the record stores them.
    public enum Namespace: UInt8, CaseIterable, Sendable {
        case user = 1, trusted, security, posixACLAccess, posixACLDefault

        /// The prefix of the names Linux calls use ("user.", "system.posix_acl_access").
        public var prefix: String {
            switch self {
            case .user: return "user."
            case .trusted: return "trusted."
            case .security: return "security."
            case .posixACLAccess: return "system.posix_acl_access"
            case .posixACLDefault: return "system.posix_acl_default"
            }
        }

        /// The namespace and the rest of a full name, nil for an unknown namespace.
        public static func split(_ full: [UInt8]) -> (Namespace, [UInt8])? {
            for namespace in [Namespace.posixACLAccess, .posixACLDefault] where full == Array(namespace.prefix.utf8) {
                return (namespace, [])
            }
            for namespace in [Namespace.user, .trusted, .security] {
                let prefix = Array(namespace.prefix.utf8)
                if full.count > prefix.count && Array(full.prefix(prefix.count)) == prefix {
                    return (namespace, Array(full.dropFirst(prefix.count)))
                }
            }
            return nil
        }
    }

    public struct Key: Hashable, Comparable, Sendable {
        public var namespace: Namespace
        public var name: [UInt8]

        public init(_ namespace: Namespace, _ name: [UInt8]) {
            self.namespace = namespace
            self.name = name
        }

        public var fullName: [UInt8] { Array(namespace.prefix.utf8) + name }

        public static func < (a: Key, b: Key) -> Bool {
            a.namespace.rawValue != b.namespace.rawValue ? a.namespace.rawValue < b.namespace.rawValue
                : a.name.lexicographicallyPrecedes(b.name)
        }
    }

    /// The hidden inode holding an inode's table is numbered 2^62 | the owner's number, out
    /// of the range inode numbers are allocated from.
    public static let holderBit: UInt64 = 1 << 62

    public static func holderNumber(of owner: UInt64) -> UInt64 { holderBit | owner }

    public static func isHolderNumber(_ inum: UInt64) -> Bool { inum & holderBit != 0 }

    public static let magic: [UInt8] = Array("H2XA".utf8)
    public static let version: UInt16 = 1
    public static let headerBytes = 16
    public static let maximumNameBytes = 255
    public static let maximumValueBytes = 65_536
    /// The whole table of one inode.
    public static let maximumTableBytes = 1 << 20

    public private(set) var entries: [Key: [UInt8]] = [:]

    public init() {}

    public var isEmpty: Bool { entries.isEmpty }

    /// Bytes the encoded table takes.
    public var encodedBytes: Int {
        Self.headerBytes + entries.reduce(0) { $0 + 6 + $1.key.name.count + $1.value.count }
    }

    public subscript(key: Key) -> [UInt8]? { entries[key] }

    /// Sets or (nil) removes an attribute; the caller has checked the limits.
    public mutating func set(_ key: Key, _ value: [UInt8]?) {
        entries[key] = value
    }

    public func encoded() -> [UInt8] {
        var out = Self.magic
        out += le(UInt64(Self.version), 2) + [0, 0] + le(UInt64(entries.count), 4) + [0, 0, 0, 0]
        for key in entries.keys.sorted() {
            let value = entries[key]!
            out.append(key.namespace.rawValue)
            out.append(UInt8(key.name.count))
            out += le(UInt64(value.count), 4)
            out += key.name
            out += value
        }
        return out
    }

    private func le(_ value: UInt64, _ bytes: Int) -> [UInt8] {
        (0..<bytes).map { UInt8(truncatingIfNeeded: value >> UInt64($0 * 8)) }
    }

    public init(decoding raw: UnsafeRawBufferPointer) throws {
        let structure = "attribute table"
        guard raw.count >= Self.headerBytes else {
            throw FormatError.shortBuffer(structure: structure, needed: Self.headerBytes, got: raw.count)
        }
        guard raw.bytes(0, 4) == Self.magic else { throw FormatError.badMagic(UInt64(raw.le32(0))) }
        guard raw.le16(4) == Self.version else {
            throw FormatError.invalidField(structure: structure, field: "version", value: UInt64(raw.le16(4)))
        }
        guard raw.le16(6) == 0, raw.le32(12) == 0 else {
            throw FormatError.invalidField(structure: structure, field: "reserved", value: UInt64(raw.le16(6)) | UInt64(raw.le32(12)) << 16)
        }
        guard raw.count <= Self.maximumTableBytes else {
            throw FormatError.invalidField(structure: structure, field: "size", value: UInt64(raw.count))
        }
        let count = Int(raw.le32(8))
        var offset = Self.headerBytes
        var previous: Key?
        for index in 0..<count {
            guard offset + 6 <= raw.count else {
                throw FormatError.shortBuffer(structure: "\(structure) record \(index)", needed: offset + 6, got: raw.count)
            }
            guard let namespace = Namespace(rawValue: raw.u8(offset)) else {
                throw FormatError.invalidField(structure: structure, field: "namespace", value: UInt64(raw.u8(offset)))
            }
            let nameLength = Int(raw.u8(offset + 1)), valueLength = Int(raw.le32(offset + 2))
            let namedACL = namespace == .posixACLAccess || namespace == .posixACLDefault
            guard namedACL ? nameLength == 0 : nameLength > 0 else {
                throw FormatError.invalidField(structure: structure, field: "name length", value: UInt64(nameLength))
            }
            guard valueLength <= Self.maximumValueBytes else {
                throw FormatError.invalidField(structure: structure, field: "value length", value: UInt64(valueLength))
            }
            let end = offset + 6 + nameLength + valueLength
            guard end <= raw.count else {
                throw FormatError.shortBuffer(structure: "\(structure) record \(index)", needed: end, got: raw.count)
            }
            let key = Key(namespace, raw.bytes(offset + 6, nameLength))
            guard !key.name.contains(0) else {
                throw FormatError.invalidField(structure: structure, field: "name", value: 0)
            }
            if let previous, !(previous < key) {
                throw FormatError.invalidField(structure: structure, field: "record order", value: UInt64(index))
            }
            entries[key] = raw.bytes(offset + 6 + nameLength, valueLength)
            previous = key
            offset = end
        }
        guard offset == raw.count else {
            throw FormatError.invalidField(structure: structure, field: "trailing bytes", value: UInt64(raw.count - offset))
        }
    }
}

extension InodeMeta {
    /// The owner's pointer to its attribute inode (0: none), in bytes 0xE8-0xEF
    /// (reserved in DragonFly's format for a non-root inode). PFS roots keep their MAC there
    /// on an encrypted PFS, so a root's attribute inode is found by number alone.
    public var attributeInode: UInt64 {
        get { rootMAC0 }
        set { rootMAC0 = newValue }
    }
}
