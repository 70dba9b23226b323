// A POSIX ACL in the form Linux passes through system.posix_acl_access and
// system.posix_acl_default (include/uapi/linux/posix_acl_xattr.h), which is also how the
// attribute table stores it: little-endian
//   0x00 u32 version (2)
//   then per entry 8 bytes: u16 tag, u16 perm (rwx = 4|2|1), u32 id (uid/gid, or ~0)
// The mode arithmetic is the kernel's (fs/posix_acl.c): the ACL's owner, group-class and
// other entries and the mode's permission bits are two views of the same thing.

public struct PosixACL: Equatable, Sendable {
    public enum Tag: UInt16, Sendable {
        case userObject = 0x01, user = 0x02, groupObject = 0x04, group = 0x08, mask = 0x10, other = 0x20
    }

    public struct Entry: Equatable, Sendable {
        public var tag: Tag
        public var permissions: UInt16
        public var id: UInt32

        public init(_ tag: Tag, _ permissions: UInt16, id: UInt32 = UInt32.max) {
            self.tag = tag
            self.permissions = permissions
            self.id = id
        }
    }

    public static let version: UInt32 = 2
    public var entries: [Entry]

    public init(entries: [Entry]) { self.entries = entries }

    /// The three-entry ACL equivalent to `mode`.
    public init(mode: UInt32) {
        entries = [Entry(.userObject, UInt16((mode >> 6) & 7)), Entry(.groupObject, UInt16((mode >> 3) & 7)),
                   Entry(.other, UInt16(mode & 7))]
    }

    /// Decodes and validates as posix_acl_valid does: one owner, group and other entry, a
    /// mask when there are named entries, entries sorted by tag then id without duplicates.
    public init(decoding bytes: [UInt8]) throws {
        guard bytes.count >= 4, (bytes.count - 4) % 8 == 0, bytes.count > 4 else {
            throw FormatError.invalidField(structure: "POSIX ACL", field: "size", value: UInt64(bytes.count))
        }
        func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> UInt32 { UInt32(u16(at)) | UInt32(u16(at + 2)) << 16 }
        guard u32(0) == Self.version else { throw FormatError.invalidField(structure: "POSIX ACL", field: "version", value: UInt64(u32(0))) }
        var entries: [Entry] = []
        for at in stride(from: 4, to: bytes.count, by: 8) {
            guard let tag = Tag(rawValue: u16(at)) else { throw FormatError.invalidField(structure: "POSIX ACL", field: "tag", value: UInt64(u16(at))) }
            let permissions = u16(at + 2)
            guard permissions & ~7 == 0 else { throw FormatError.invalidField(structure: "POSIX ACL", field: "permissions", value: UInt64(permissions)) }
            let named = tag == .user || tag == .group
            entries.append(Entry(tag, permissions, id: named ? u32(at + 4) : UInt32.max))
        }
        var previous: (UInt16, UInt32)?
        for entry in entries {
            let key = (entry.tag.rawValue, entry.id)
            if let previous, !(previous.0 < key.0 || previous.0 == key.0 && previous.1 < key.1) {
                throw FormatError.invalidField(structure: "POSIX ACL", field: "entry order", value: UInt64(entry.tag.rawValue))
            }
            previous = key
        }
        func count(_ tag: Tag) -> Int { entries.filter { $0.tag == tag }.count }
        guard count(.userObject) == 1, count(.groupObject) == 1, count(.other) == 1, count(.mask) <= 1 else {
            throw FormatError.invalidField(structure: "POSIX ACL", field: "owner/group/other entries", value: UInt64(entries.count))
        }
        if count(.user) + count(.group) > 0 && count(.mask) == 0 {
            throw FormatError.invalidField(structure: "POSIX ACL", field: "mask entry", value: 0)
        }
        self.entries = entries
    }

    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4 + 8 * entries.count)
        func put16(_ value: UInt16) { bytes += [UInt8(value & 0xFF), UInt8(value >> 8)] }
        func put32(_ value: UInt32) { put16(UInt16(value & 0xFFFF)); put16(UInt16(value >> 16)) }
        put32(Self.version)
        for entry in entries {
            put16(entry.tag.rawValue)
            put16(entry.permissions)
            put32(entry.tag == .user || entry.tag == .group ? entry.id : UInt32.max)
        }
        return bytes
    }

    /// Only the owner, group and other entries: the mode says it all (posix_acl_equiv_mode).
    public var isMinimal: Bool { entries.allSatisfy { $0.tag == .userObject || $0.tag == .groupObject || $0.tag == .other } }

    private func index(_ tag: Tag) -> Int? { entries.firstIndex { $0.tag == tag } }

    /// The group-class entry the mode's group bits show: the mask when there is one.
    private var groupClassIndex: Int? { index(.mask) ?? index(.groupObject) }

    /// The permission bits (0o777) this ACL gives the mode.
    public var modePermissions: UInt32 {
        var mode: UInt32 = 0
        if let i = index(.userObject) { mode |= UInt32(entries[i].permissions) << 6 }
        if let i = groupClassIndex { mode |= UInt32(entries[i].permissions) << 3 }
        if let i = index(.other) { mode |= UInt32(entries[i].permissions) }
        return mode
    }

    /// chmod: the owner, group-class (mask) and other entries take the mode's bits
    /// (posix_acl_chmod); named entries keep theirs, limited by the new mask.
    public mutating func applyMode(_ mode: UInt32) {
        if let i = index(.userObject) { entries[i].permissions = UInt16((mode >> 6) & 7) }
        if let i = groupClassIndex { entries[i].permissions = UInt16((mode >> 3) & 7) }
        if let i = index(.other) { entries[i].permissions = UInt16(mode & 7) }
    }

    /// A new node's access ACL from its parent's default ACL and the mode it was created
    /// with (posix_acl_create_masq): each class gets the intersection, and `mode` the
    /// result. The umask does not apply when a default ACL exists.
    public mutating func restrictForCreation(mode: inout UInt32) {
        if let i = index(.userObject) {
            entries[i].permissions &= UInt16((mode >> 6) & 7)
            mode = mode & ~0o700 | UInt32(entries[i].permissions) << 6
        }
        if let i = groupClassIndex {
            entries[i].permissions &= UInt16((mode >> 3) & 7)
            mode = mode & ~0o070 | UInt32(entries[i].permissions) << 3
        }
        if let i = index(.other) {
            entries[i].permissions &= UInt16(mode & 7)
            mode = mode & ~0o007 | UInt32(entries[i].permissions)
        }
    }
}
