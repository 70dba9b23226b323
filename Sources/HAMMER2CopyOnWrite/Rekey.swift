// hammer2 rekey and reencrypt (issue 18, item 2; docs/encryption.md, "Changing keys").
//
// key-change only wraps the same master key anew: whoever had the old passphrase and a copy
// of the image from before still has the key of everything. rekey makes a new master key
// (a new generation of the same encryption root: same domain, another key id) for every
// write from then on; the older key goes into the PFS's key history (inode 2, sealed under
// the new key), so blocks written before stay readable. reencrypt then rewrites what is
// still under older keys: every inode, every file block whose key id is older, every
// directory entry (moved to the new key's hash); it runs in steps, each ended by a flush
// that also saves its cursor in the history, so it goes on where it stopped after an
// unmount or a crash. When it reaches the end the history is emptied: the older keys are
// retired, held nowhere on the PFS's live tree (snapshots made before keep theirs).

import Glibc
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format
import HAMMER2Trace

public struct RekeyResult: Sendable, Equatable {
    public var oldKeyID: UInt32
    public var newKeyID: UInt32
    public var erasure: KeyErasureResult
}

public struct ReencryptionProgress: Sendable, Equatable {
    /// Inodes rewritten, file bytes rewritten and directory entries moved in this run.
    public var inodes = 0
    public var bytes: UInt64 = 0
    public var entries = 0
    /// The next inode to visit (0: the run reached the end).
    public var cursor: UInt64 = 0
    /// Older keys still needed by the PFS's live tree (0 once finished).
    public var olderKeys = 0
    public var finished = false

    public init() {}
}

extension MutableFilesystem {
    /// hammer2 rekey: a new master key for PFS `label` (wrapped by `source`, which must
    /// unwrap the current one), the current key into the key history. The PFS must not be
    /// in use. The old wrapping's stale copies are erased (KeyErasure).
    public func rekeyPFS(_ label: String, source: KeySource, progress: ((UInt64, UInt64) -> Void)? = nil) throws -> RekeyResult {
        guard !readOnly else { throw EngineError.posix(EROFS, "filesystem is read-only") }
        let (current, history) = try withLock { () throws -> (PFSKeys, KeyHistory) in
            if mounted[label] != nil { throw EngineError.posix(EBUSY, "PFS \(label) is in use; rekey it unmounted") }
            let (bref, root, record) = try keyRecord(of: label)
            guard let record else { throw EngineError.invalidArgument("PFS \(label) is not encrypted") }
            let keys = try Self.unwrap(record, source, label: label)
            reader.keyring.add(keys)
            let disk = PFS(name: label, reader: reader, rootBref: bref, root: root)
            try disk.requireKey()  // an altered root is not re-signed
            try reader.keyring.addHistory(of: disk)
            return (keys, try disk.keyHistory() ?? KeyHistory())
        }
        guard history.entries.count < KeyHistory.maximumEntries else {
            throw EngineError.posix(ENOSPC, "PFS \(label) has \(history.entries.count) older keys; run hammer2 reencrypt first")
        }
        let next = current.nextGeneration()
        let record = try KeyRecord.wrap(next, source: source, log2N: keyDerivationCost).encoded()  // scrypt: outside the lock
        reader.keyring.add(next)
        let handle = try openPFS(label)
        try withLock {
            var updated = history
            updated.entries.append(KeyHistory.Entry(keyID: current.keyID, retiredAt: header.mirrorTID + 1, master: current.masterKey))
            updated.cursorInode = 0
            updated.cursorOffset = 0
            try handle.pfs.switchKey(to: next, record: record, history: updated)
            try flushLocked(allHeaderCopies: true)
            Trace.record(.keyChanged, UInt64(next.keyID))
        }
        let erasure = try eraseStaleKeyRecords(domain: current.domain, after: "PFS \(label) was rekeyed", progress: progress)
        return RekeyResult(oldKeyID: current.keyID, newKeyID: next.keyID, erasure: erasure)
    }

    /// hammer2 reencrypt: rewrites what PFS `label` (unlocked; mounted here or not) still
    /// holds under older keys, in steps of about `stepBytes` (file data; an inode counts 16
    /// KiB, a directory entry 1 KiB, as their flush costs more than their bytes), each flushed;
    /// stops after `maxSteps` (to be resumed) or at the end, where the older keys retire.
    public func reencrypt(_ label: String, stepBytes: UInt64 = 16 << 20, maxSteps: Int = .max,
                          progress: ((ReencryptionProgress) -> Void)? = nil) throws -> ReencryptionProgress {
        guard !readOnly else { throw EngineError.posix(EROFS, "filesystem is read-only") }
        let handle = try openPFS(label)
        guard handle.isEncrypted else { throw EngineError.invalidArgument("PFS \(label) is not encrypted") }
        var total = ReencryptionProgress()
        for _ in 0..<maxSteps {
            let done = try withLock { try handle.pfs.reencryptStep(budget: stepBytes, progress: &total) }
            try flush()
            progress?(total)
            if done { break }
            // The lock is not fair: taken again at once, it would starve every request
            // waiting for it for the whole run. A pause lets them in between steps.
            usleep(2_000)
        }
        return total
    }

    /// The key ids of PFS `label`'s older keys (its key history) and the re-encryption
    /// cursor (0: none in progress); the PFS's key must be unlocked.
    public func keyGenerations(_ label: String) throws -> (current: UInt32, older: [UInt32], cursor: UInt64) {
        try withLock {
            let (bref, root, record) = try keyRecord(of: label)
            guard let record else { throw EngineError.invalidArgument("PFS \(label) is not encrypted") }
            let disk = mounted[label]?.disk ?? PFS(name: label, reader: reader, rootBref: bref, root: root)
            try disk.requireKey()
            let history = try disk.keyHistory() ?? KeyHistory()
            return (record.keyID, history.entries.map(\.keyID), history.cursorInode)
        }
    }
}

extension MountedPFS {
    /// What an inode and a directory entry count against a re-encryption step's budget:
    /// measured so that a step's flush, which holds the filesystem lock, stays short while
    /// a mount serves (docs/benchmarks.md, "Re-encryption under load").
    static let inodeWeight: UInt64 = 16 << 10, entryWeight: UInt64 = 1 << 10

    /// Makes `keys` the key of every write from now on (rekey): the root names it and
    /// carries its wrapping; the history holds the older ones. The caller flushes.
    func switchKey(to keys: PFSKeys, record: [UInt8], history: KeyHistory) throws {
        keyRecord = record
        root.meta.decryptCheck = KeyRecord.decryptCheckMagic | UInt64(keys.keyID)
        root.dirty = true
        var flushed = disk.root
        flushed.meta.decryptCheck = root.meta.decryptCheck
        disk = PFS(name: label, reader: reader, rootBref: rootBref, root: flushed)  // disk.keys: the new key
        try writeKeyHistory(history)
    }

    func keyHistoryNode() throws -> Node? {
        do { return try node(KeyHistory.inodeNumber) } catch EngineError.notFound { return nil }
    }

    func readKeyHistory() throws -> KeyHistory? {
        guard let node = try keyHistoryNode() else { return nil }
        let bytes = try readPlan(node, offset: 0, count: Int(node.meta.size)).execute(pfs: self)
        return try KeyHistory(decoding: bytes)
    }

    /// Writes the history into inode 2, made on first use: a file in no directory, sealed
    /// like every inode of the PFS.
    func writeKeyHistory(_ history: KeyHistory) throws {
        let node: Node
        if let existing = try keyHistoryNode() {
            node = existing
        } else {
            var meta = InodeMeta.fresh(type: .regularFile, inum: KeyHistory.inodeNumber, mode: 0o400, uid: 0, gid: 0,
                                       now: currentTimeMicroseconds())
            meta.opFlags = InodeMeta.opFlagDirectData
            meta.iparent = PFS.rootInodeNumber
            meta.compAlgo = InodeMeta.compAlgo(.none)
            meta.checkAlgo = root.meta.checkAlgo
            meta.nameKey = KeyHistory.inodeNumber
            let filename = inodeIndexName(KeyHistory.inodeNumber)
            meta.nameLength = UInt16(filename.count)
            node = Node(inum: KeyHistory.inodeNumber, meta: meta, filename: filename,
                        content: .embedded([UInt8](repeating: 0, count: HAMMER2.embeddedBytes)), bref: nil, owner: self)
            nodes[KeyHistory.inodeNumber] = node
        }
        let bytes = history.encoded()
        try truncate(node, to: 0)
        try bytes.withUnsafeBytes { try writeData(node, at: 0, $0) }
        node.meta.mtime = currentTimeMicroseconds()
        node.dirty = true
    }

    /// One step of reencrypt, the filesystem lock held: from the history's cursor, every
    /// inode is marked for rewriting, a directory's entries are all moved to the current
    /// key, a file's blocks under an older key id are rewritten, until `budget` bytes of
    /// file data were taken; the cursor goes back into the history (saved by the flush
    /// that follows). True when the end was reached: the history is then emptied.
    /// Without older keys, the step brings what was sealed before version 2 (its blockrefs
    /// bound to their locations, so it cannot be sent raw) up to date, with the cursor in
    /// `progress` only (a run stopped early starts again, passing what is done quickly).
    func reencryptStep(budget: UInt64, progress: inout ReencryptionProgress) throws -> Bool {
        guard let keys else { throw EngineError.invalidArgument("PFS \(label) is not unlocked") }
        var history = try readKeyHistory() ?? KeyHistory()
        let sealingOnly = history.entries.isEmpty
        let start = sealingOnly ? progress.cursor : history.cursorInode
        var inum: UInt64? = start == 0 ? PFS.rootInodeNumber : start
        var offset = sealingOnly ? 0 : history.cursorOffset
        var spent: UInt64 = 0
        if sealingOnly, start == 0, let node = try keyHistoryNode(), Self.sealedBeforeVersion2(node.flushedBref) {
            try writeKeyHistory(history)
        }
        while let current = inum, spent < budget {
            // A damaged inode stops the run (its blocks would stay under a key about to
            // retire); one deleted since the cursor was saved is skipped.
            var found: Node?
            if current != KeyHistory.inodeNumber {
                do { found = try node(current) } catch EngineError.notFound { found = nil }
            }
            if let node = found {
                var touched = false
                if node.isDirectory {
                    if !sealingOnly || (node.flushedBref != nil && Self.hasOlderIndirect(node.flushedContent, reader: reader)) {
                        // Every entry anew: its hash and sealed name under the current key.
                        var entries: [DirectoryEntry] = []
                        try listEntries(node, from: 0) { entries.append($0); return true }
                        for entry in entries {
                            removeEntry(node, entry)
                            try addEntry(node, name: entry.name, inum: entry.inum, type: entry.type)
                        }
                        progress.entries += entries.count
                        spent += UInt64(entries.count) * Self.entryWeight
                        touched = true
                    }
                } else if node.flushedBref != nil, case .blockset = node.flushedContent {
                    var resumeAt: UInt64?
                    let limit = min(node.flushedSize, node.diskLimit, node.meta.size)
                    if !sealingOnly {
                        try disk.tree.forEachLeaf(in: node.flushedContent.blockset, from: offset, through: .max) { bref in
                            guard bref.type == .data, bref.key < limit else { return true }
                            let index = bref.key / logicalBlockBytes
                            guard node.dirtyBlocks[index] == nil, SealedCheck(bref.check).keyID != keys.keyID else { return true }
                            if spent >= budget {
                                resumeAt = bref.key
                                return false
                            }
                            let block = try loadBlock(node, index)
                            node.setDirtyBlock(index, block)
                            spent += UInt64(block.count)
                            progress.bytes += UInt64(block.count)
                            return true
                        }
                    }
                    if let resumeAt {  // the budget ran out inside this file
                        node.dirty = true
                        history.cursorInode = current
                        history.cursorOffset = resumeAt
                        try writeKeyHistory(history)
                        progress.cursor = current
                        progress.olderKeys = history.entries.count
                        return false
                    }
                    let rewritten = try rewriteUnderOlderIndirects(node, node.flushedContent.blockset, limit: limit)
                    spent += rewritten
                    progress.bytes += rewritten
                    touched = touched || rewritten > 0
                }
                if !sealingOnly || Self.sealedBeforeVersion2(node.flushedBref) || touched {
                    node.dirty = true
                    progress.inodes += 1
                    spent += Self.inodeWeight
                }
            }
            offset = 0
            inum = try nextIndexedInode(after: current)
        }
        if let next = inum {
            progress.cursor = next
            if sealingOnly { return false }
            history.cursorInode = next
            history.cursorOffset = 0
            progress.olderKeys = history.entries.count
            try writeKeyHistory(history)
            return false
        }
        progress.cursor = 0
        progress.olderKeys = 0
        progress.finished = true
        if sealingOnly { return true }
        // Everything is under the current key: the older keys retire.
        history = KeyHistory()
        try writeKeyHistory(history)
        return true
    }

    /// A sealed inode or indirect block written before sealing version 2.
    static func sealedBeforeVersion2(_ bref: Blockref?) -> Bool {
        guard let bref, bref.checkMethod == .xaes256gcm, bref.type == .inode || bref.type == .indirect else { return false }
        return SealedCheck(bref.check).flags & SealedCheck.flagLocationFree == 0
    }

    /// Some indirect block of the tree under `content` was sealed before version 2.
    static func hasOlderIndirect(_ content: InodeContent, reader: BlockReader) -> Bool {
        guard case let .blockset(refs) = content else { return false }
        func walk(_ refs: [Blockref], _ depth: Int) -> Bool {
            guard depth <= BlockTree.maximumDepth else { return false }
            for ref in refs where ref.type == .indirect {
                if sealedBeforeVersion2(ref) { return true }
                if let children = try? reader.childBlockrefs(ref), walk(children, depth + 1) { return true }
            }
            return false
        }
        return walk(refs, 0)
    }

    /// Rewrites one data block under each indirect block sealed before version 2 (the
    /// flush rewrites the path above a rewritten block, and seals it anew); returns the
    /// bytes rewritten.
    func rewriteUnderOlderIndirects(_ node: Node, _ refs: [Blockref], limit: UInt64, depth: Int = 0) throws -> UInt64 {
        guard depth <= BlockTree.maximumDepth else { throw EngineError.corrupt("block tree deeper than \(BlockTree.maximumDepth) levels (loop?)") }
        var bytes: UInt64 = 0
        for ref in refs where ref.type == .indirect {
            let below = try rewriteUnderOlderIndirects(node, try reader.childBlockrefs(ref), limit: limit, depth: depth + 1)
            bytes += below
            guard Self.sealedBeforeVersion2(ref) else { continue }
            var covered = below > 0
            try disk.tree.forEachLeaf(in: [ref], from: 0, through: .max) { leaf in
                guard !covered, leaf.type == .data, leaf.key < limit else { return !covered }
                let index = leaf.key / logicalBlockBytes
                if node.dirtyBlocks[index] == nil {
                    let block = try loadBlock(node, index)
                    node.setDirtyBlock(index, block)
                    bytes += UInt64(block.count)
                }
                covered = true
                return false
            }
        }
        return bytes
    }

    /// The first inode number above `inum` in the last flushed inode index.
    func nextIndexedInode(after inum: UInt64) throws -> UInt64? {
        var next: UInt64?
        try disk.tree.forEachLeaf(in: disk.root.blockset, from: inum + 1, through: HAMMER2.dirhashVisible - 1) { bref in
            guard bref.type == .inode else { return true }
            next = bref.key
            return false
        }
        return next
    }
}
