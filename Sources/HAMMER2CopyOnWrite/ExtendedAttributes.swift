// Extended attributes (issue 21; docs/format.md, "Extended attributes"): each inode that
// has any owns a hidden attribute inode, number 2^62 | its own, whose data is the
// AttributeTable; the owner's inode bytes 0xE8 (reservedE0[0]) name it. The attribute
// inode is an ordinary node of the PFS: flushed, compressed, check-coded, copied, sealed
// and snapshotted like a file, and removed with its owner.

import Glibc
import HAMMER2Engine
import HAMMER2Format

extension MountedPFS {
    static func attributeInodeNumber(of owner: UInt64) -> UInt64 { AttributeTable.holderNumber(of: owner) }

    /// The node holding `owner`'s attributes, nil when it has none.
    func attributeHolder(of owner: Node) throws -> Node? {
        let isRoot = owner.inum == PFS.rootInodeNumber
        guard isRoot || owner.meta.attributeInode != 0 else { return nil }
        let inum = Self.attributeInodeNumber(of: owner.inum)
        do {
            let holder = try node(inum)
            return holder.meta.nlinks > 0 ? holder : nil
        } catch EngineError.notFound {
            return nil  // the root has none, or an unlinked owner's went with it
        }
    }

    func attributeTable(of owner: Node) throws -> AttributeTable {
        guard let holder = try attributeHolder(of: owner) else { return AttributeTable() }
        let bytes = try readPlan(holder, offset: 0, count: Int(holder.meta.size)).execute(pfs: self)
        do {
            return try bytes.withUnsafeBytes { try AttributeTable(decoding: $0) }
        } catch let error as FormatError {
            throw EngineError.corrupt("attributes of inode \(owner.inum) (inode \(holder.inum)): \(error)")
        }
    }

    /// Stores `table` as `owner`'s attributes: its attribute inode is made on first use
    /// and removed (at the next flush) when the table becomes empty.
    func storeAttributeTable(_ table: AttributeTable, of owner: Node) throws {
        let inum = Self.attributeInodeNumber(of: owner.inum)
        if table.isEmpty {
            if let holder = try attributeHolder(of: owner) {
                holder.meta.nlinks = 0
                holder.clearDirtyBlocks()
                holder.dirty = true
            }
            if owner.inum != PFS.rootInodeNumber { owner.meta.attributeInode = 0 }
            owner.dirty = true
            return
        }
        let holder: Node
        if let existing = try attributeHolder(of: owner) {
            holder = existing
        } else if let stale = nodes[inum] {
            // Removed earlier in this flush interval and wanted again: bring it back.
            holder = stale
            holder.meta.nlinks = 1
        } else {
            var meta = InodeMeta.fresh(type: .regularFile, inum: inum, mode: 0, uid: 0, gid: 0, now: currentTimeMicroseconds())
            meta.opFlags = InodeMeta.opFlagDirectData
            meta.iparent = owner.inum
            meta.compAlgo = owner.meta.compAlgo
            meta.checkAlgo = owner.meta.checkAlgo
            meta.ncopies = owner.meta.ncopies
            meta.nameKey = inum
            let filename = inodeIndexName(inum)
            meta.nameLength = UInt16(filename.count)
            holder = Node(inum: inum, meta: meta, filename: filename,
                          content: .embedded([UInt8](repeating: 0, count: HAMMER2.embeddedBytes)), bref: nil, owner: self)
            nodes[inum] = holder
        }
        let bytes = table.encoded()
        try truncate(holder, to: 0)
        try bytes.withUnsafeBytes { try writeData(holder, at: 0, $0) }
        holder.meta.mtime = currentTimeMicroseconds()
        holder.dirty = true
        if owner.inum != PFS.rootInodeNumber { owner.meta.attributeInode = inum }
        owner.dirty = true
    }
}

extension MountedPFS {
    private static let capabilityKey = AttributeTable.Key(.security, Array("capability".utf8))
    private static let accessACLKey = AttributeTable.Key(.posixACLAccess, [])
    private static let defaultACLKey = AttributeTable.Key(.posixACLDefault, [])

    /// Clears setuid (and setgid if asked) and removes security.capability, as the kernel's
    /// file_remove_privs and chown do. True when something changed.
    func killPrivileges(_ node: Node, setgid: Bool) throws -> Bool {
        var changed = false
        let bits = UInt32(S_ISUID) | (setgid ? UInt32(S_ISGID) : 0)
        if node.meta.mode & bits != 0 {
            node.meta.mode &= ~bits
            changed = true
        }
        if try attributeHolder(of: node) != nil {
            var table = try attributeTable(of: node)
            if table[Self.capabilityKey] != nil {
                table.set(Self.capabilityKey, nil)
                try storeAttributeTable(table, of: node)
                changed = true
            }
        }
        if changed {
            node.meta.ctime = currentTimeMicroseconds()
            node.dirty = true
        }
        return changed
    }

    /// chmod of a node with an access ACL: its owner, mask (or group) and other entries
    /// follow the new mode (posix_acl_chmod).
    func applyModeToAccessACL(_ node: Node) throws {
        guard try attributeHolder(of: node) != nil else { return }
        var table = try attributeTable(of: node)
        guard let raw = table[Self.accessACLKey], var acl = try? PosixACL(decoding: raw) else { return }
        acl.applyMode(node.meta.mode)
        table.set(Self.accessACLKey, acl.encoded())
        try storeAttributeTable(table, of: node)
    }

    /// A new node in `dir`: with a default ACL there, the node's access ACL (and a
    /// directory's default ACL) come from it and the umask does not apply
    /// (posix_acl_create); without one, the umask does. Symlinks take neither.
    func applyCreationACL(from dir: Node, to node: Node, umask: UInt32?) throws {
        guard node.type != .softlink else { return }
        if try attributeHolder(of: dir) != nil,
           let raw = try attributeTable(of: dir)[Self.defaultACLKey], var acl = try? PosixACL(decoding: raw) {
            var mode = node.meta.mode
            acl.restrictForCreation(mode: &mode)
            node.meta.mode = mode
            var table = AttributeTable()
            if !acl.isMinimal { table.set(Self.accessACLKey, acl.encoded()) }
            if node.isDirectory { table.set(Self.defaultACLKey, raw) }
            if !table.isEmpty { try storeAttributeTable(table, of: node) }
        } else if let umask {
            node.meta.mode &= ~(umask & 0o777)
        }
    }
}

extension PFSHandle {
    // setxattr(2) flags.
    public static let attributeCreate: Int32 = 1  // XATTR_CREATE
    public static let attributeReplace: Int32 = 2  // XATTR_REPLACE

    private static func attributeKey(_ name: [UInt8]) throws -> AttributeTable.Key {
        guard !name.isEmpty, name.count <= AttributeTable.maximumNameBytes + 24 else {
            throw EngineError.posix(ERANGE, "attribute name of \(name.count) bytes")
        }
        guard let (namespace, rest) = AttributeTable.Namespace.split(name) else {
            throw EngineError.posix(EOPNOTSUPP, "attribute namespace not supported")
        }
        guard rest.count <= AttributeTable.maximumNameBytes, !rest.contains(0) else {
            throw EngineError.posix(ERANGE, "attribute name of \(name.count) bytes")
        }
        return AttributeTable.Key(namespace, rest)
    }

    /// getxattr(2): the value, or ENODATA.
    public func attribute(_ inum: UInt64, name: [UInt8]) throws -> [UInt8] {
        let key = try Self.attributeKey(name)
        return try locked {
            guard let value = try pfs.attributeTable(of: try pfs.node(inum))[key] else {
                throw EngineError.posix(ENODATA, "no such attribute")
            }
            return value
        }
    }

    /// listxattr(2): the full names, in the table's order.
    public func attributeNames(_ inum: UInt64) throws -> [[UInt8]] {
        try locked {
            try pfs.attributeTable(of: try pfs.node(inum)).entries.keys.sorted().map(\.fullName)
        }
    }

    /// setxattr(2) with XATTR_CREATE (EEXIST when set) or XATTR_REPLACE (ENODATA when
    /// not); E2BIG for a value over 64 KiB, ENOSPC when the inode's table would pass 1 MiB.
    public func setAttribute(_ inum: UInt64, name: [UInt8], value: [UInt8], flags: Int32 = 0) throws {
        try writable()
        let key = try Self.attributeKey(name)
        guard value.count <= AttributeTable.maximumValueBytes else {
            throw EngineError.posix(E2BIG, "attribute value of \(value.count) bytes")
        }
        guard flags & ~(Self.attributeCreate | Self.attributeReplace) == 0 else {
            throw EngineError.invalidArgument("setxattr flags 0x\(String(flags, radix: 16))")
        }
        try lockedWaitingForSpace {
            let owner = try pfs.node(inum)
            var table = try pfs.attributeTable(of: owner)
            let exists = table[key] != nil
            if flags & Self.attributeCreate != 0 && exists { throw EngineError.posix(EEXIST, "attribute exists") }
            if flags & Self.attributeReplace != 0 && !exists { throw EngineError.posix(ENODATA, "no such attribute") }
            switch key.namespace {
            case .posixACLAccess:
                // The mode shows the ACL's owner, group-class and other entries; an ACL
                // the mode says all of is not stored (as ext4 does).
                let acl = try Self.decodeACL(value)
                owner.meta.mode = owner.meta.mode & ~0o777 | acl.modePermissions
                table.set(key, acl.isMinimal ? nil : value)
            case .posixACLDefault:
                guard owner.isDirectory else { throw EngineError.posix(EACCES, "a default ACL on a non-directory") }
                _ = try Self.decodeACL(value)
                table.set(key, value)
            default:
                table.set(key, value)
            }
            guard table.encodedBytes <= AttributeTable.maximumTableBytes else {
                throw EngineError.posix(ENOSPC, "the attributes of inode \(inum) would pass 1 MiB")
            }
            try fs.ensureSpace(for: UInt64(table.encodedBytes) + UInt64(HAMMER2.inodeBytes))
            try pfs.storeAttributeTable(table, of: owner)
            owner.meta.ctime = currentTimeMicroseconds()
        }
    }

    private static func decodeACL(_ value: [UInt8]) throws -> PosixACL {
        do {
            return try PosixACL(decoding: value)
        } catch {
            throw EngineError.invalidArgument("\(error)")
        }
    }

    /// What a write, truncate or open(O_TRUNC) by a caller without CAP_FSETID takes from a
    /// regular file (FUSE_HANDLE_KILLPRIV_V2): setuid, setgid when group-executable (else it
    /// marks mandatory locking), and its file capabilities. True when something went.
    public func killPrivileges(_ inum: UInt64) throws -> Bool {
        guard !isReadOnly else { return false }
        return try locked {
            let node = try pfs.node(inum)
            guard node.type == .regularFile else { return false }
            return try pfs.killPrivileges(node, setgid: node.meta.mode & UInt32(S_IXGRP) != 0)
        }
    }

    /// removexattr(2): ENODATA when not set.
    public func removeAttribute(_ inum: UInt64, name: [UInt8]) throws {
        try writable()
        let key = try Self.attributeKey(name)
        try locked {
            let owner = try pfs.node(inum)
            var table = try pfs.attributeTable(of: owner)
            guard table[key] != nil else { throw EngineError.posix(ENODATA, "no such attribute") }
            table.set(key, nil)
            try pfs.storeAttributeTable(table, of: owner)
            owner.meta.ctime = currentTimeMicroseconds()
        }
    }
}
