// Creating, deleting and snapshotting PFSes under the super-root (hammer2_ioctl.c:
// hammer2_ioctl_pfs_create/_delete/_snapshot, hammer2_inode_create_pfs).
//
// A PFS root is an inode (inum 1) in the super-root's tree, keyed like a directory entry by
// the hash of its label. A snapshot is a new PFS root whose blockset is the source's
// flushed blockset: the two trees share every block until either side changes one, which
// then goes to a new place (copy-on-write) — so a snapshot is instant and costs one inode.
// New roots are written by the next flush, which pfs-create and snapshot run at once.

import Glibc
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format
import HAMMER2Trace

/// A PFS root waiting for the next flush.
struct PendingPFSRoot {
    var inode: InodeData
    var key: UInt64
    /// Written as it is: an encrypted root signed by its sender (a raw receive), whose
    /// key this process does not have.
    var presigned = false
}

extension MutableFilesystem {
    /// The labels of every PFS, as last flushed.
    public func pfsLabels() throws -> [String] {
        try withLock { try pfsRootBrefs().map(\.label) }
    }

    /// hammer2_inode_create_pfs's inode: a directory numbered 1 under the super-root,
    /// methods inherited from the super-root, key = the first free key from the label's hash.
    func newPFSRoot(label: String, now: UInt64) throws -> (InodeData, UInt64) {
        let name = Array(label.utf8)
        guard !name.isEmpty, name.count < HAMMER2.inodeMaxName, !name.contains(0), !name.contains(UInt8(ascii: "/")) else {
            throw EngineError.invalidArgument("bad PFS label \"\(label)\"")
        }
        if try Filesystem.findPFS(label, in: superRoot.flushedContent.blockset, reader: reader) != nil
            || pendingRoots.contains(where: { $0.inode.filename == name }) {
            throw EngineError.posix(EEXIST, "PFS \"\(label)\" already exists")
        }
        let hash = DirectoryHash.key(for: name)
        var used = Set(pendingRoots.map(\.key))
        try BlockTree(reader: reader).forEachLeaf(in: superRoot.flushedContent.blockset, from: hash,
                                                  through: hash | HAMMER2.dirhashLowMask) { bref in
            used.insert(bref.key)
            return true
        }
        used.subtract(pendingRootRemovals)
        var key = hash
        var foundGap = false
        for existing in used.sorted() where existing >= hash {
            if existing != key { foundGap = true; break }
            key += 1
        }
        if !foundGap { key += 1 }  // hammer2_xop_scanlhc's quirk, as for directory entries
        guard (key ^ hash) & ~HAMMER2.dirhashLowMask == 0 else {
            throw EngineError.posix(ENOSPC, "no free key for PFS \"\(label)\"")
        }
        let meta = InodeMeta(version: 1, ctime: now, mtime: now, type: .directory, opFlags: InodeMeta.opFlagPFSRoot,
                             mode: 0o755, inum: 1, nlinks: 1, iparent: 1, nameKey: key, nameLength: UInt16(name.count),
                             compAlgo: superRoot.meta.compAlgo, checkAlgo: superRoot.meta.checkAlgo)
        return (InodeData(meta: meta, filename: name, content: .blockset([])), key)
    }

    /// hammer2 pfs-create: a new, empty PFS (LZ4 and xxhash64 for its files; autozero for
    /// a PFS named "boot", as DragonFly does).
    public func createPFS(label: String, type: PFSType = .master, subtype: UInt8 = PFSSubtype.none,
                          clusterID: HAMMER2UUID? = nil, encryption: KeySource? = nil, copies: Int = 1) throws {
        guard !readOnly else { throw EngineError.posix(EROFS, "filesystem is read-only") }
        let copyLimit = Blockref.copyCapacity(encryption != nil ? .xaes256gcm : .sha192)
        guard (1...copyLimit).contains(copies) else {
            throw EngineError.invalidArgument("copies must be 1 to \(copyLimit)" + (encryption != nil ? " for an encrypted PFS" : ""))
        }
        if encryption != nil, label.utf8.count >= 128 {
            throw EngineError.invalidArgument("labels of encrypted PFSes are at most 127 bytes")
        }
        try withLock {
            var (inode, key) = try newPFSRoot(label: label, now: currentTimeMicroseconds())
            if let encryption {
                try seal(&inode, source: encryption)
                markEncrypted()
            }
            inode.meta.pfsType = type
            inode.meta.pfsSubtype = subtype
            inode.meta.pfsClusterID = clusterID ?? randomUUID()
            inode.meta.pfsFilesystemID = randomUUID()
            inode.meta.compAlgo = InodeMeta.compAlgo(label.lowercased() == "boot" ? .autozero : .lz4)
            inode.meta.checkAlgo = CheckMethod.xxhash64.rawValue
            inode.meta.ncopies = copies > 1 ? UInt8(copies) : 0
            raiseVolumeCopies(to: copies)
            pendingRoots.append(PendingPFSRoot(inode: inode, key: key))
            try flushLocked(allHeaderCopies: encryption != nil)
        }
    }

    /// newfs_hammer2 -c: `copies` copies of PFS `label`'s data (set on its root, inherited
    /// by what is created in it); its root and the super-root are rewritten with copies.
    public func setDefaultCopies(_ label: String, _ copies: Int) throws {
        let pfs = try openPFS(label)
        try pfs.setCopies(PFSHandle.rootInodeNumber, copies)
        try flush()
    }

    /// A volume with encrypted PFSes carries version 4, which DragonFly refuses to mount;
    /// the next flush writes it to every header copy.
    func markEncrypted() {
        header.version = max(header.version, HAMMER2.volumeVersionEncryption)
    }

    /// Makes `inode` (a new, empty PFS root) the root of an encrypted PFS: a new master key
    /// wrapped by `source`, unlocked in this process.
    private func seal(_ inode: inout InodeData, source: KeySource) throws {
        let (record, keys) = try KeyRecord.create(source: source, log2N: keyDerivationCost, scheme: encryptionScheme)
        inode.meta.decryptCheck = KeyRecord.decryptCheckMagic | UInt64(keys.keyID)
        inode.keyRecord = record.encoded()
        reader.keyring.add(keys)
    }

    /// Turns the empty PFS `label` (just made by newfs) into an encrypted one.
    public func encryptEmptyPFS(_ label: String, source: KeySource) throws {
        guard !readOnly else { throw EngineError.posix(EROFS, "filesystem is read-only") }
        guard label.utf8.count < 128 else { throw EngineError.invalidArgument("labels of encrypted PFSes are at most 127 bytes") }
        try withLock {
            let (bref, root, record) = try keyRecord(of: label)
            guard record == nil else { throw EngineError.posix(EEXIST, "PFS \(label) is already encrypted") }
            guard root.blockset.allSatisfy({ $0.type == .empty }), mounted[label] == nil else {
                throw EngineError.posix(ENOTEMPTY, "PFS \(label) is not empty; create an encrypted PFS with pfs-create -e")
            }
            var sealed = root
            try seal(&sealed, source: source)
            pendingRoots.removeAll { $0.key == bref.key }
            pendingRoots.append(PendingPFSRoot(inode: sealed, key: bref.key))
            markEncrypted()
            try flushLocked(allHeaderCopies: true)
        }
    }

    /// The key record of PFS `label`'s root, nil when the PFS is in clear.
    func keyRecord(of label: String) throws -> (bref: Blockref, root: InodeData, record: KeyRecord?) {
        if let pending = pendingRoots.first(where: { $0.inode.filename == Array(label.utf8) }) {
            return (Blockref(type: .inode, methods: 0, key: pending.key, tid: 0), pending.inode,
                    try pending.inode.keyRecord.map { try KeyRecord(decoding: $0) })
        }
        guard let (bref, root) = try Filesystem.findPFS(label, in: superRoot.flushedContent.blockset, reader: reader) else {
            throw EngineError.pfsNotFound(label: label, available: (try? pfsRootBrefs().map(\.label)) ?? [])
        }
        let record = try mounted[label]?.keyRecord ?? root.keyRecord
        do {
            return (bref, root, try record.map { try KeyRecord(decoding: $0) })
        } catch let error as KeyError {
            throw EngineError.corrupt("PFS \(label): \(error)")
        }
    }

    /// Unwraps PFS `label`'s key with `source` and keeps it for this process (mount).
    /// Wrong keys fail here, before anything of the PFS is read or written.
    public func unlockPFS(_ label: String, source: KeySource) throws {
        try withLock {
            guard let record = try keyRecord(of: label).record else {
                throw EngineError.invalidArgument("PFS \(label) is not encrypted")
            }
            reader.keyring.add(try Self.unwrap(record, source, label: label))
            // A rekeyed PFS: its older keys, for what was written before (authentic root first).
            if mounted[label] == nil, let (bref, root) = try Filesystem.findPFS(label, in: superRoot.flushedContent.blockset, reader: reader) {
                let disk = PFS(name: label, reader: reader, rootBref: bref, root: root)
                try disk.requireKey()
                try reader.keyring.addHistory(of: disk)
            }
        }
    }

    /// `record`'s key unwrapped by `source`; a wrong key is EACCES (traced by key id), a
    /// key of the wrong kind or a damaged record EINVAL.
    static func unwrap(_ record: KeyRecord, _ source: KeySource, label: String) throws -> PFSKeys {
        do { return try record.unwrap(source) } catch let error as KeyError {
            Trace.record(.keyRejected, UInt64(record.keyID))
            throw EngineError.posix(error == .wrongKey ? EACCES : EINVAL, "PFS \(label): \(error)")
        }
    }

    /// The encryption facts of PFS `label` (key-status), nil when it is in clear.
    public func encryptionStatus(_ label: String) throws -> KeyRecord? {
        try withLock { try keyRecord(of: label).record }
    }

    /// hammer2 key-change: wraps the same master key by `new` in PFS `label`'s root and in
    /// every other root that wraps the same key (its snapshots, or its origin), so the old
    /// passphrase opens none of them; then zeroes the old wrapping's stale copies
    /// (KeyErasure). Returns what the erasure did. Nothing else is rewritten: blocks stay
    /// under the same key (docs/encryption.md, "Changing keys").
    @discardableResult
    public func changeKey(_ label: String, old: KeySource, new: KeySource,
                          progress: ((UInt64, UInt64) -> Void)? = nil) throws -> KeyErasureResult {
        guard !readOnly else { throw EngineError.posix(EROFS, "filesystem is read-only") }
        let domain: [UInt8] = try withLock {
            let (_, _, current) = try keyRecord(of: label)
            guard let current else { throw EngineError.invalidArgument("PFS \(label) is not encrypted") }
            let keys = try Self.unwrap(current, old, label: label)
            // Every root wrapping this key. A root that was altered must not be re-signed
            // into looking authentic: check each as a mount would (a pending root, not yet
            // flushed, is unsigned and ours).
            var holders: [(label: String, bref: Blockref, root: InodeData)] = []
            for (other, _) in try pfsRootBrefs() {
                let (bref, root, record) = try keyRecord(of: other)
                guard record?.keyID == current.keyID else { continue }
                let pending = pendingRoots.contains { $0.key == bref.key }
                if mounted[other] == nil && !pending && !keys.rootIsAuthentic(root) {
                    Trace.record(.keyRejected, UInt64(current.keyID))
                    throw EngineError.authenticationFailed(bref: bref, reason: "the root inode of encrypted PFS \(other) does not match its MAC; the key is not changed")
                }
                holders.append((other, bref, root))
            }
            let record = try KeyRecord.wrap(keys, source: new, log2N: keyDerivationCost).encoded()
            reader.keyring.add(keys)  // the rewritten roots are signed with them
            Trace.record(.keyChanged, UInt64(keys.keyID))
            for holder in holders {
                if let pfs = mounted[holder.label] {
                    pfs.keyRecord = record
                    pfs.root.dirty = true
                } else {
                    var updated = holder.root
                    updated.keyRecord = record
                    pendingRoots.removeAll { $0.key == holder.bref.key }
                    pendingRoots.append(PendingPFSRoot(inode: updated, key: holder.bref.key))
                }
            }
            try flushLocked(allHeaderCopies: true)
            return keys.domain
        }
        return try eraseStaleKeyRecords(domain: domain, after: "the key of PFS \(label) was changed", progress: progress)
    }

    /// hammer2 pfs-delete: removes a PFS that is not in use. Its blocks come back with the
    /// next bulkfree (snapshots may still share them). When it was the last PFS of its
    /// encryption root, its key records are erased (returned: what the erasure did).
    @discardableResult
    public func deletePFS(label: String, progress: ((UInt64, UInt64) -> Void)? = nil) throws -> KeyErasureResult? {
        guard !readOnly else { throw EngineError.posix(EROFS, "filesystem is read-only") }
        var deletedDomain: [UInt8]?
        var erasure: KeyErasureResult?
        try withLock {
            if mounted[label] != nil { throw EngineError.posix(EBUSY, "PFS \"\(label)\" is mounted") }
            guard let (bref, deletedRoot) = try Filesystem.findPFS(label, in: superRoot.flushedContent.blockset, reader: reader) else {
                throw EngineError.pfsNotFound(label: label, available: (try? pfsRootBrefs().map(\.label)) ?? [])
            }
            deletedDomain = deletedRoot.keyRecord.flatMap { try? KeyRecord(decoding: $0) }?.domain
            pendingRootRemovals.insert(bref.key)
            // The last encrypted PFS gone: DragonFly may have the volume back (version 2,
            // its default; a version-1 volume that held encrypted PFSes comes back as 2).
            var encryptedLeft = pendingRoots.contains { Keyring.keyID(ofRoot: $0.inode.meta) != nil }
            var lowered = false
            if header.version == HAMMER2.volumeVersionEncryption && !encryptedLeft {
                try BlockTree(reader: reader).forEachLeaf(in: superRoot.flushedContent.blockset, from: 0, through: .max) { root in
                    guard root.type == .inode, root.key != bref.key else { return true }
                    if Keyring.keyID(ofRoot: try reader.inode(root).meta) != nil { encryptedLeft = true }
                    return !encryptedLeft
                }
                if !encryptedLeft {
                    header.version = HAMMER2.volumeVersionMultiVolumes
                    lowered = true
                }
            }
            try flushLocked(allHeaderCopies: lowered || deletedDomain != nil)
            if let domain = deletedDomain, try liveKeyDomains().contains(domain) { deletedDomain = nil }
        }
        // The last PFS of an encryption root gone: its key records (this root's and the stale
        // copies of earlier ones) are zeroed, so the passphrase opens nothing it left behind.
        if let deletedDomain {
            erasure = try eraseStaleKeyRecords(domain: deletedDomain, after: "PFS \(label) was deleted", progress: progress)
        }
        return erasure
    }

    /// hammer2 snapshot: flushes, then creates PFS `label` sharing `source`'s tree. The
    /// snapshot is a MASTER PFS of subtype SNAPSHOT with new cluster and filesystem ids
    /// (or `ids`: a received snapshot keeps its sender's).
    public func snapshot(of source: String, label: String,
                         ids: (filesystem: HAMMER2UUID, cluster: HAMMER2UUID)? = nil) throws {
        guard !readOnly else { throw EngineError.posix(EROFS, "filesystem is read-only") }
        try withLock {
            try flushLocked()
            let tid = header.mirrorTID + 1
            let blockset: [Blockref]
            var nextInum: UInt64
            var encryption: (check: UInt64, record: [UInt8]?) = (0, nil)
            if let pfs = mounted[source] {
                blockset = pfs.root.flushedContent.blockset
                nextInum = pfs.nextInodeNumber
                encryption = (pfs.root.meta.decryptCheck, pfs.keyRecord)
                pfs.root.meta.pfsLastSnapshotTID = tid  // the origin records its last snapshot
                pfs.root.dirty = true
            } else {
                guard let (_, root) = try Filesystem.findPFS(source, in: superRoot.flushedContent.blockset, reader: reader) else {
                    throw EngineError.pfsNotFound(label: source, available: (try? pfsRootBrefs().map(\.label)) ?? [])
                }
                blockset = root.blockset
                nextInum = max(root.meta.pfsInum + 1, HAMMER2.inodeStart)
                encryption = (root.meta.decryptCheck, root.keyRecord)
            }
            // A snapshot of an encrypted PFS shares its blocks, so it shares its keys too; its
            // root is signed with them, so they must be loaded.
            if encryption.record != nil {
                guard label.utf8.count < 128 else { throw EngineError.invalidArgument("labels of encrypted PFSes are at most 127 bytes") }
                let keyID = UInt32(truncatingIfNeeded: encryption.check)
                guard reader.keyring.keys(for: keyID) != nil else {
                    throw EngineError.locked(keyID: keyID, what: "PFS \(source) (snapshot it through its mount)")
                }
            }
            var (inode, key) = try newPFSRoot(label: label, now: currentTimeMicroseconds())
            nextInum = max(nextInum, HAMMER2.inodeStart)
            inode.meta.pfsInum = nextInum
            inode.meta.pfsType = .master
            inode.meta.pfsSubtype = PFSSubtype.snapshot
            inode.meta.pfsLastSnapshotTID = tid
            inode.meta.pfsFilesystemID = ids?.filesystem ?? randomUUID()
            inode.meta.pfsClusterID = ids?.cluster ?? randomUUID()
            inode.meta.decryptCheck = encryption.check
            inode.keyRecord = encryption.record
            inode.content = .blockset(blockset)
            pendingRoots.append(PendingPFSRoot(inode: inode, key: key))
            try flushLocked()
        }
    }

    /// The default snapshot label, as hammer2(8): the PFS label and the local time.
    public static func defaultSnapshotLabel(for label: String, at time: time_t = time(nil)) -> String {
        var t = time
        var parts = tm()
        localtime_r(&t, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(label).\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday)).\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))"
    }
}

func randomUUID() -> HAMMER2UUID {
    var bytes = (0..<16).map { _ in UInt8.random(in: 0...255) }
    bytes[7] = bytes[7] & 0x0F | 0x40  // version 4 (time_hi_and_version, little-endian)
    bytes[8] = bytes[8] & 0x3F | 0x80  // RFC 4122 variant
    return HAMMER2UUID(bytes: bytes)
}
