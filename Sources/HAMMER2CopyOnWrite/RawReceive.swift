// hammer2 receive of a raw stream (an encrypted snapshot; RawSend.swift): no key needed.
// Each block is written as it came, wherever the allocator puts it; a parent's children
// are located before it is written (received earlier in the stream, children come first,
// or found in the base by RawTree.find). The sender's root, signed location-free, becomes
// PFS LABEL only when the stream arrived whole.
//
// Interrupted: the blocks written so far hang off a hidden PFS ".receive.SNAPSHOT-BASE" in
// clear, under indirect blocks of our own (key 0, 64 key bits, xxhash64), so bulkfree keeps
// them and a resumed stream knows them again; its root holds the checkpoint as for other
// receives (ReceiveCheckpoint).

import Foundation
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format

extension MutableFilesystem {
    /// The blocks received and not yet in a parent, by location-free blockref.
    struct RawPending {
        var located: [Blockref: Blockref] = [:]
        var baseRoot: [Blockref]?
        /// The base's blockset of the last inode asked for (a file's blocks come together).
        var cachedInode: (inum: UInt64, blockset: [Blockref]?)?
        /// The most copies a received block has (the volume's version follows).
        var copies = 1
    }

    static var rawPendingLimit: Int {
        ProcessInfo.processInfo.environment["HAMMER2_RAW_RECEIVE_PENDING_LIMIT"].flatMap { Int($0) } ?? 1 << 20
    }

    func receiveRaw(_ stream: inout StreamReader, begin: SendStreamBegin, label: String, replace: Bool,
                    baseLabel: String?, hidden: String, existing: [String]) throws -> ReceiveSummary {
        guard label.utf8.count < 128 else { throw EngineError.invalidArgument("labels of encrypted PFSes are at most 127 bytes") }
        var summary = ReceiveSummary(label: label, incremental: begin.isIncremental)
        var pending = RawPending()
        if let baseLabel {
            pending.baseRoot = try withLock {
                try Filesystem.findPFS(baseLabel, in: superRoot.flushedContent.blockset, reader: reader)?.1.blockset
            }
        }
        if begin.resumeSequence > 0 {
            let kept = try withLock { try Filesystem.findPFS(hidden, in: superRoot.flushedContent.blockset, reader: reader)?.1 }
            let checkpoint = try ReceiveCheckpoint.resuming(begin, kept: kept?.meta)
            (stream.sequence, stream.previousHash) = (checkpoint.sequence, checkpoint.hash)
            summary.dataBytes = checkpoint.dataBytes
            for bref in try rawKeptBlocks(kept?.blockset ?? []) { pending.located[bref.locationFree] = bref }
        } else if existing.contains(hidden) {
            _ = try deletePFS(label: hidden)
        }
        let sink = FlushSink(fs: self)
        var records: UInt64 = begin.resumeSequence > 0 ? begin.resumeSequence - 1 : 0
        let checkpointBytes = UInt64(ProcessInfo.processInfo.environment["HAMMER2_RECEIVE_CHECKPOINT_BYTES"].flatMap { Int($0) } ?? 256 << 20)
        var checkpointedAt = summary.dataBytes
        var root: InodeData?
        // Where the last record applied whole ends: what a checkpoint records.
        var applied = (sequence: stream.sequence, hash: stream.previousHash)
        do {
            while true {
                let (header, payload) = try stream.next()
                switch header.type {
                case .rawBlocks:
                    let carried = try payload.withUnsafeBytes { try SendStreamRawBlocks(decoding: $0) }
                    // A record is applied whole or not at all (what a checkpoint names).
                    var next = pending
                    try withLock {
                        for block in carried.blocks { try writeRawBlock(block, pending: &next, sink: sink) }
                        try sink.drain()
                    }
                    pending = next
                    summary.dataBytes += UInt64(carried.storedBytes)
                    summary.inodes += carried.blocks.filter { $0.bref.type == .inode }.count
                    records += 1
                    applied = (stream.sequence, stream.previousHash)
                    if summary.dataBytes - checkpointedAt >= checkpointBytes {
                        try rawCheckpoint(hidden, pending: pending, sink: sink,
                                          ReceiveCheckpoint(sequence: applied.sequence, hash: applied.hash, dataBytes: summary.dataBytes))
                        checkpointedAt = summary.dataBytes
                    }
                case .rawRoot:
                    guard root == nil else { throw ReceiveError.stream("a second root record (record \(header.sequence))") }
                    root = try withLock { try placeRawRoot(payload, begin: begin, pending: &pending) }
                    records += 1
                case .end:
                    let end = try payload.withUnsafeBytes { try SendStreamEnd(decoding: $0) }
                    guard end.inodeRecords == records else {
                        throw ReceiveError.stream("the end record counts \(end.inodeRecords) records, \(records) arrived")
                    }
                    guard end.dataBytes == summary.dataBytes else {
                        throw ReceiveError.stream("the end record counts \(end.dataBytes) data bytes, \(summary.dataBytes) arrived")
                    }
                    guard try stream.atEnd() else { throw ReceiveError.stream("bytes after the end record") }
                    guard let root else { throw ReceiveError.stream("it ends without the PFS root") }
                    try installRawRoot(root, label: label, replace: replace, hidden: hidden, copies: pending.copies)
                    return summary
                default:
                    throw ReceiveError.stream("a \(header.type) record in a raw stream (record \(header.sequence))")
                }
            }
        } catch {
            sink.discard()
            var broken = true
            if let refusal = error as? ReceiveError, case .mismatch = refusal { broken = false }
            if broken && root == nil && (applied.sequence > 1 || begin.resumeSequence > 0) {
                let point = ReceiveCheckpoint(sequence: applied.sequence, hash: applied.hash, dataBytes: summary.dataBytes)
                if (try? rawCheckpoint(hidden, pending: pending, sink: sink, point)) != nil {
                    throw ReceiveError.interrupted("\(error)", token: SendResumeToken(
                        snapshotFilesystemID: begin.snapshotFilesystemID, baseFilesystemID: begin.baseFilesystemID,
                        sequence: point.sequence, hash: point.hash))
                }
            }
            if (try? pfsLabels().contains(hidden)) == true { _ = try? deletePFS(label: hidden) }
            throw error
        }
    }

    /// Writes one received block: its children located first (indirect blocks, an inode's
    /// blockset), then the bytes, one per copy its blockref records. The lock is held.
    private func writeRawBlock(_ block: SendStreamRawBlocks.Block, pending: inout RawPending, sink: FlushSink) throws {
        guard block.stored.count == block.bref.physicalBytes else {
            throw ReceiveError.stream("a block of \(block.stored.count) bytes under a blockref of \(block.bref.physicalBytes)")
        }
        guard pending.located[block.bref] == nil else { throw ReceiveError.stream("a block arrives twice (\(describe(block.bref)))") }
        // Children come right before their parents, so few blocks wait at any time (a few
        // thousand: siblings along one path); a stream whose blocks never find a parent
        // would otherwise grow this table as long as it runs.
        guard pending.located.count < Self.rawPendingLimit else {
            throw ReceiveError.stream("more than \(Self.rawPendingLimit) blocks wait for a parent (not a tree in post-order)")
        }
        var bytes = block.stored
        switch block.bref.type {
        case .indirect:
            guard bytes.count % HAMMER2.blockrefBytes == 0 else { throw ReceiveError.stream("an indirect block of \(bytes.count) bytes") }
            let children = try decodeBlockrefs(bytes).map { try locate($0, tree: block.tree, pending: &pending) }
            bytes = encodeBlockrefs(children, bytes: bytes.count)
        case .inode:
            if let blockset = clearBlockset(ofSealedInode: bytes, bref: block.bref) {
                let children = try decodeBlockrefs(blockset).map { try locate($0, tree: block.bref.key, pending: &pending) }
                bytes.replaceSubrange(0x200..<0x400, with: encodeBlockrefs(children, bytes: HAMMER2.embeddedBytes))
            }
        default:
            break
        }
        var located = block.bref
        let tid = header.mirrorTID + 1
        (located.mirrorTID, located.modifyTID) = (tid, tid)
        located.place(try sink.writeNewBlock(bytes, type: block.bref.type, copies: block.bref.copyCount))
        pending.located[block.bref] = located
        pending.copies = max(pending.copies, block.bref.copyCount)
    }

    /// `child` (a blockref in a received parent) placed where the receiver has its block.
    private func locate(_ child: Blockref, tree: UInt64, pending: inout RawPending) throws -> Blockref {
        guard child.type != .empty, child.physicalRadix != 0 else { return child }  // no media block (an inline name)
        if let located = pending.located.removeValue(forKey: child.locationFree) { return child.placed(like: located) }
        let base: [Blockref]?
        if tree == 0 {
            base = pending.baseRoot
        } else if let cached = pending.cachedInode, cached.inum == tree {
            base = cached.blockset
        } else {
            base = try pending.baseRoot.flatMap { try RawTree.inodeBlockset(tree, in: $0, reader: reader) }
            pending.cachedInode = (tree, base)
        }
        guard let base, let found = try RawTree.find(child, in: base, reader: reader) else {
            throw ReceiveError.mismatch("the stream refers to a block that neither came before nor is in the base (\(describe(child.locationFree)))")
        }
        return child.placed(like: found)
    }

    /// The sender's root with its blockset placed; every block received must be in it.
    private func placeRawRoot(_ payload: [UInt8], begin: SendStreamBegin, pending: inout RawPending) throws -> InodeData {
        guard payload.count == HAMMER2.inodeBytes else { throw ReceiveError.stream("a root record of \(payload.count) bytes") }
        var root = try payload.withUnsafeBytes { try InodeData(decoding: $0) }
        guard root.meta.isPFSRoot, Keyring.keyID(ofRoot: root.meta) != nil, root.keyRecord != nil, PFSKeys.isLocationFree(root),
              !root.meta.hasDirectData else {
            throw ReceiveError.stream("the root record is not the root of an encrypted snapshot signed for raw streams")
        }
        guard root.meta.pfsFilesystemID == begin.snapshotFilesystemID else {
            throw ReceiveError.stream("the root record is of another PFS than the begin record names")
        }
        root.content = .blockset(try root.blockset.map { try locate($0, tree: 0, pending: &pending) })
        guard pending.located.isEmpty else {
            throw ReceiveError.stream("\(pending.located.count) block(s) of the stream are in no parent")
        }
        return root
    }

    /// The received root becomes PFS `label` (replacing one with -F); the hidden PFS of an
    /// earlier interruption goes.
    private func installRawRoot(_ received: InodeData, label: String, replace: Bool, hidden: String, copies: Int) throws {
        if try pfsLabels().contains(label) {
            guard replace else { throw ReceiveError.mismatch("PFS \(label) exists (-F replaces it)") }
            guard withLock({ mounted[label] == nil }) else { throw ReceiveError.mismatch("PFS \(label) is open; unmount it to replace it") }
            _ = try deletePFS(label: label)
        }
        try withLock {
            var (inode, key) = try newPFSRoot(label: label, now: currentTimeMicroseconds())
            var root = received
            root.filename = inode.filename
            root.meta.nameKey = inode.meta.nameKey
            root.meta.nameLength = inode.meta.nameLength
            inode = root
            markEncrypted()
            raiseVolumeCopies(to: copies)
            pendingRoots.append(PendingPFSRoot(inode: inode, key: key, presigned: true))
            try flushLocked(allHeaderCopies: true)
        }
        if try pfsLabels().contains(hidden) { _ = try deletePFS(label: hidden) }
    }

    /// Keeps what arrived: the hidden PFS's root points at every block not yet in a parent
    /// (through indirect blocks of our own), with where the stream got to.
    private func rawCheckpoint(_ hidden: String, pending: RawPending, sink: FlushSink, _ point: ReceiveCheckpoint) throws {
        try withLock {
            let tid = header.mirrorTID + 1
            var level = pending.located.values.sorted { $0.key < $1.key }
            let perBlock = HAMMER2.physicalBufferSize / HAMMER2.blockrefBytes
            while level.count > HAMMER2.blocksetCount {
                var next: [Blockref] = []
                for start in stride(from: 0, to: level.count, by: perBlock) {
                    let children = Array(level[start..<min(start + perBlock, level.count)])
                    let bytes = encodeBlockrefs(children, bytes: HAMMER2.physicalBufferSize)
                    var bref = Blockref(type: .indirect, methods: Blockref.methods(check: .xxhash64, compression: .none),
                                        key: 0, keybits: 64, tid: tid)
                    bref.setCheck(over: bytes)
                    bref.place(try sink.writeNewBlock(bytes, type: .indirect, copies: 1))
                    next.append(bref)
                }
                level = next
            }
            try sink.drain()
            let existing = try Filesystem.findPFS(hidden, in: superRoot.flushedContent.blockset, reader: reader)
            var root: InodeData
            let key: UInt64
            if let (bref, kept) = existing {
                (root, key) = (kept, bref.key)
            } else {
                (root, key) = try newPFSRoot(label: hidden, now: currentTimeMicroseconds())
                root.meta.pfsType = .master
                root.meta.pfsFilesystemID = randomUUID()
                root.meta.checkAlgo = CheckMethod.xxhash64.rawValue
            }
            point.store(in: &root.meta)
            root.content = .blockset(level)
            // Sealed blocks (maybe with copies) on the volume: the version says so now.
            markEncrypted()
            raiseVolumeCopies(to: pending.copies)
            pendingRoots.removeAll { $0.key == key }
            pendingRoots.append(PendingPFSRoot(inode: root, key: key))
            try flushLocked()
        }
    }

    /// The blocks an interrupted raw receive kept (rawCheckpoint's tree, read back).
    private func rawKeptBlocks(_ refs: [Blockref], depth: Int = 0) throws -> [Blockref] {
        guard depth <= 8 else { throw EngineError.corrupt("the kept tree of an interrupted receive is too deep") }
        var found: [Blockref] = []
        for ref in refs where ref.type != .empty {
            if ref.type == .indirect && ref.checkMethod != .xaes256gcm {
                found += try rawKeptBlocks(try reader.childBlockrefs(ref), depth: depth + 1)
            } else {
                found.append(ref)
            }
        }
        return found
    }
}
