// hammer2 send: a snapshot as a stream of inode records (docs/send-receive.md), the whole
// snapshot or what changed since an older one. Changes are found by comparing the two
// trees' blockrefs: an unchanged subtree is the same blockref in both (copy-on-write shares
// it), so the walk descends only where they differ.

import HAMMER2Engine
import HAMMER2Format

public struct SendSummary: Sendable {
    public var records = 0
    public var inodes = 0
    public var dataBytes: UInt64 = 0
    /// Bytes of the stream (with `estimate`: what it would be, data not read).
    public var streamBytes: UInt64 = 0
}

public enum SendStream {
    /// Payload bytes after which the sender starts a new inodes record.
    static let recordTarget = 1 << 20

    /// Writes the stream of `snapshot` (over `base` when given: an older snapshot of the
    /// same PFS on the same volume) through `emit`.
    /// With `estimate`, nothing is emitted and no data block is read: the summary tells
    /// how large the stream would be (hammer2 send -n; a terminal's progress uses it).
    /// With `resume` (a receive's token), the stream goes on where that receive stopped:
    /// the same stream (its order is fixed), the records before the token's not sent and
    /// their blocks not read.
    /// `expectedBytes` (an estimate's streamBytes) goes into the begin record for the
    /// receiving side's ETA.
    public static func send(from filesystem: Filesystem, snapshot: String, base: String?, estimate: Bool = false,
                            resume: SendResumeToken? = nil, expectedBytes: UInt64? = nil,
                            emit: @escaping ([UInt8]) throws -> Void) throws -> SendSummary {
        let entries = try filesystem.pfsEntries()
        func entry(_ label: String) throws -> PFSEntry {
            guard let found = entries.first(where: { $0.name == label }) else {
                throw EngineError.pfsNotFound(label: label, available: entries.map(\.name))
            }
            return found
        }
        let target = try entry(snapshot)
        let older = try base.map(entry)
        if let older, older.inode.meta.pfsFilesystemID == target.inode.meta.pfsFilesystemID {
            throw EngineError.invalidArgument("the base and the snapshot are the same PFS")
        }
        if let resume {
            guard resume.snapshotFilesystemID == target.inode.meta.pfsFilesystemID,
                  resume.baseFilesystemID == (older?.inode.meta.pfsFilesystemID ?? .zero) else {
                throw EngineError.invalidArgument("the resume token is for another snapshot or base")
            }
        }
        // An encrypted snapshot travels raw: sealed as stored, no key needed on either side.
        if Keyring.keyID(ofRoot: target.inode.meta) != nil || older.map({ Keyring.keyID(ofRoot: $0.inode.meta) != nil }) == true {
            return try RawSender.send(from: filesystem, target: target, base: older, estimate: estimate, resume: resume,
                                      expectedBytes: expectedBytes, emit: emit)
        }
        let pfs = try filesystem.openPFS(snapshot)
        let basePFS = try base.map { try filesystem.openPFS($0) }
        var writer = RecordWriter(emit: estimate ? { _ in } : emit, resume: resume)
        try writer.write(.begin, beginRecord(target, base: older, resume: resume, expectedBytes: expectedBytes))
        var builder = Builder(pfs: pfs, base: basePFS, writer: writer, estimate: estimate)
        // The PFS root holds the root directory's entries (keys with bit 63) and the index
        // of every other inode.
        let (changed, removed) = try TreeDiff(reader: filesystem.reader).leaves(pfs.root.blockset, basePFS?.root.blockset ?? [])
        let isEntry = { (bref: Blockref) in bref.key & (UInt64(1) << 63) != 0 }
        try builder.add(inum: PFS.rootInodeNumber, inode: pfs.root, base: basePFS?.root,
                        entryChanges: try builder.entryChanges(changed.filter(isEntry), removed.filter(isEntry), directory: PFS.rootInodeNumber))
        let changedInodes = changed.filter { !isEntry($0) && $0.type == .inode }
        let changedKeys = Set(changedInodes.map(\.key))
        // The base's version of each changed inode, by inode number (one lookup each).
        let previous = Dictionary(removed.filter { !isEntry($0) && $0.type == .inode }.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        for bref in changedInodes {
            let inode = try filesystem.reader.inode(bref)
            let before = try previous[bref.key].map { try filesystem.reader.inode($0) }
            try builder.add(inum: bref.key, inode: inode, base: before, entryChanges: nil)
        }
        for bref in removed where !isEntry(bref) && bref.type == .inode && !changedKeys.contains(bref.key) {
            var gone = try filesystem.reader.inode(bref)
            gone.meta.nlinks = 0
            try builder.add(inum: bref.key, inode: gone, base: nil, entryChanges: [], isNew: false)
        }
        try builder.finish()
        var summary = builder.summary
        summary.streamBytes = builder.writer.bytes + builder.skippedBytes
        return summary
    }

    /// The begin record's payload (either kind of stream).
    static func beginRecord(_ target: PFSEntry, base: PFSEntry?, resume: SendResumeToken?, expectedBytes: UInt64?) -> [UInt8] {
        SendStreamBegin(
            snapshotFilesystemID: target.inode.meta.pfsFilesystemID, snapshotClusterID: target.inode.meta.pfsClusterID,
            baseFilesystemID: base?.inode.meta.pfsFilesystemID ?? .zero,
            nextInodeNumber: max(target.inode.meta.pfsInum + 1, HAMMER2.inodeStart),
            resumeSequence: resume?.sequence ?? 0, resumeHash: resume?.hash ?? 0, label: Array(target.name.utf8),
            expectedBytes: expectedBytes).encoded()
    }

    /// Cuts inode records into payloads and frames them.
    struct RecordWriter {
        let emit: ([UInt8]) throws -> Void
        let resume: SendResumeToken?
        var sequence: UInt64 = 0
        var previousHash: UInt64 = 0
        var bytes: UInt64 = 0

        /// The next record is one a resumed stream leaves out (the receiver has it).
        var skipping: Bool { resume.map { sequence > 0 && sequence < $0.sequence } ?? false }

        mutating func write(_ type: SendStreamRecordType, _ payload: [UInt8]) throws {
            if skipping {
                sequence += 1
                return
            }
            // Resumed: after the begin record, the chain goes on from the token's hash.
            if let resume, sequence == resume.sequence { previousHash = resume.hash }
            bytes += UInt64(SendStreamRecordHeader.bytes + payload.count)
            let hash = SendStreamRecordHeader.hash(payload, after: previousHash)
            try emit(SendStreamRecordHeader(type: type, sequence: sequence, payloadBytes: UInt32(payload.count), payloadHash: hash).encoded())
            try emit(payload)
            sequence += 1
            previousHash = hash
        }
    }

    /// Builds inode records and writes them in payloads of about `recordTarget` bytes.
    struct Builder {
        let pfs: PFS
        let base: PFS?
        var writer: RecordWriter
        var pending: [IntentLogCommit.Inode] = []
        var pendingBytes = 0
        /// Stored blocks of inodes already in a written record, waiting for a blocks record;
        /// read only when that record is sent.
        var pendingBlocks: [(block: SendStreamBlocks.Block, bref: Blockref)] = []
        var pendingBlockBytes = 0
        var summary = SendSummary()
        /// An estimate: data blocks are not read; `skippedBytes` counts what they would add.
        let estimate: Bool
        var skippedBytes: UInt64 = 0

        init(pfs: PFS, base: PFS?, writer: RecordWriter, estimate: Bool) {
            self.pfs = pfs
            self.base = base
            self.writer = writer
            self.estimate = estimate
        }

        /// The record(s) of one inode: large files are cut into several, the first with
        /// the truncation, every one with the metadata.
        mutating func add(inum: UInt64, inode: InodeData, base before: InodeData?, entryChanges: [IntentLogCommit.EntryChange]?,
                          isNew: Bool? = nil) throws {
            var entries = entryChanges ?? []
            var ranges: [IntentLogCommit.DataRange] = []
            var blocks: [(SendStreamBlocks.Block, Blockref)] = []
            var lowestSize = UInt64.max
            let meta = inode.meta
            if meta.nlinks > 0 {
                if meta.type == .directory && entryChanges == nil {
                    let (changed, removed) = try TreeDiff(reader: pfs.reader).leaves(
                        meta.hasDirectData ? [] : inode.blockset, before.map { $0.meta.hasDirectData ? [] : $0.blockset } ?? [])
                    entries = try self.entryChanges(changed, removed, directory: inum)
                } else if meta.type == .regularFile || meta.type == .softlink {
                    if let before, before.meta.size > meta.size { lowestSize = meta.size }
                    let skipped: UInt64
                    (ranges, blocks, skipped) = try dataRanges(inum: inum, inode, before)
                    skippedBytes += skipped
                }
            }
            var record = IntentLogCommit.Inode(inum: inum, isNew: isNew ?? (before == nil), meta: meta, filename: inode.filename,
                                               diskLimit: .max, lowestSize: lowestSize, entryChanges: entries, ranges: [])
            summary.inodes += 1
            // Ranges go in pieces of about recordTarget; the first piece carries the rest.
            var index = 0
            repeat {
                var bytes = 0
                var piece: [IntentLogCommit.DataRange] = []
                while index < ranges.count && (piece.isEmpty || bytes + Int(ranges[index].length) <= SendStream.recordTarget) {
                    bytes += ranges[index].bytes?.count ?? 0
                    summary.dataBytes += UInt64(ranges[index].bytes?.count ?? 0)
                    piece.append(ranges[index])
                    index += 1
                }
                record.ranges = piece
                try append(record)
                record.isNew = false
                record.lowestSize = .max
                record.entryChanges = []
            } while index < ranges.count
            // Its stored blocks follow the record that makes the inode.
            for (block, bref) in blocks {
                let bytes = try pfs.reader.checkedPhysicalSize(bref)
                summary.dataBytes += UInt64(bytes)
                pendingBlocks.append((block, bref))
                pendingBlockBytes += bytes
                if pendingBlockBytes >= SendStream.recordTarget { try flushPending() }
            }
        }

        mutating func append(_ record: IntentLogCommit.Inode) throws {
            pending.append(record)
            pendingBytes += 256 + record.ranges.reduce(0) { $0 + ($1.bytes?.count ?? 0) } + record.entryChanges.count * 32
            if pendingBytes >= SendStream.recordTarget { try flushPending() }
        }

        mutating func flushPending() throws {
            if !pending.isEmpty {
                let commit = IntentLogCommit(pfses: [.init(label: Array(".".utf8), nextInodeNumber: 0, inodes: pending)])
                try writer.write(.inodes, commit.encoded())
                summary.records += 1
                pending = []
                pendingBytes = 0
            }
            if !pendingBlocks.isEmpty {
                // Read now, unless the record is not sent (an estimate, or before a resume point).
                let read = !estimate && !writer.skipping
                if !read { skippedBytes += UInt64(pendingBlockBytes) }
                let blocks = try pendingBlocks.map { block, bref in
                    var block = block
                    if read { block.stored = try pfs.reader.physical(bref) }
                    return block
                }
                try writer.write(.blocks, SendStreamBlocks(blocks: blocks).encoded())
                summary.records += 1
                pendingBlocks = []
                pendingBlockBytes = 0
            }
        }

        mutating func finish() throws {
            try flushPending()
            try writer.write(.end, SendStreamEnd(inodeRecords: UInt64(summary.records), dataBytes: summary.dataBytes).encoded())
        }

        /// Entries added or changed (by key) and removed, from a directory's changed leaves.
        func entryChanges(_ changed: [Blockref], _ removed: [Blockref], directory: UInt64) throws -> [IntentLogCommit.EntryChange] {
            var result: [IntentLogCommit.EntryChange] = []
            var keys = Set<UInt64>()
            for bref in changed {
                guard let entry = try pfs.entry(for: bref, directory: directory) else { continue }
                keys.insert(bref.key)
                result.append(.init(key: bref.key, entry: (entry.inum, entry.type, entry.name)))
            }
            for bref in removed where !keys.contains(bref.key) {
                result.append(.init(key: bref.key, entry: nil))
            }
            return result.sorted { $0.key < $1.key }
        }

        /// The file's data that differs from `before`: its changed blocks as stored (or as
        /// logical bytes when they are not plain compressed blocks), blocks only `before`
        /// had as holes.
        func dataRanges(inum: UInt64, _ inode: InodeData, _ before: InodeData?) throws
            -> ([IntentLogCommit.DataRange], [(SendStreamBlocks.Block, Blockref)], skipped: UInt64) {
            var blocks: [(SendStreamBlocks.Block, Blockref)] = []
            let size = inode.meta.size
            var ranges: [IntentLogCommit.DataRange] = []
            var skipped: UInt64 = 0
            func piece(_ offset: UInt64, _ end: UInt64, read: Bool) throws {
                guard offset < end else { return }
                if read && estimate { skipped += end - offset }
                let bytes = read && !estimate ? try pfs.read(inode, offset: offset, count: Int(end - offset)) : nil
                let hole = bytes.map { $0.allSatisfy { $0 == 0 } } ?? true
                ranges.append(.init(offset: offset, length: UInt32(end - offset), bytes: hole ? nil : bytes))
            }
            let embeddedBefore = before.map { $0.meta.hasDirectData } ?? false
            if inode.meta.hasDirectData {
                // Kept inside the inode: read even for an estimate (it is in the inode already).
                let bytes = try pfs.read(inode, offset: 0, count: Int(size))
                if size > 0 { ranges.append(.init(offset: 0, length: UInt32(size), bytes: bytes.allSatisfy { $0 == 0 } ? nil : bytes)) }
                return (ranges, [], 0)
            }
            // Embedded data before, blocks now: what the blocks do not cover reads as zeros.
            if embeddedBefore, let before { try piece(0, min(size, before.meta.size, UInt64(HAMMER2.embeddedBytes)), read: false) }
            let (changed, removed) = try TreeDiff(reader: pfs.reader).leaves(inode.blockset, embeddedBefore ? [] : before?.blockset ?? [])
            var changedKeys = Set<UInt64>()
            for bref in changed where bref.type == .data || bref.type == .empty {
                changedKeys.insert(bref.key)
                let end = min(bref.key &+ (UInt64(1) << min(bref.keybits, 63)), size)
                guard bref.key < end else { continue }
                // A whole 64 KiB block of media, compressed or not: as stored.
                if bref.type == .data, bref.keybits == UInt8(HAMMER2.allocationMaxRadix), bref.key % logicalBlockBytes == 0,
                   [.none, .lz4, .zlib].contains(bref.compression), bref.dataOffset != 0,
                   try pfs.reader.checkedPhysicalSize(bref) > 0 {
                    blocks.append((.init(inum: inum, offset: bref.key, methods: bref.methods, stored: []), bref))
                    continue
                }
                try piece(bref.key, end, read: true)
            }
            for bref in removed where bref.type == .data && !changedKeys.contains(bref.key) {
                try piece(bref.key, min(bref.key &+ (UInt64(1) << min(bref.keybits, 63)), size), read: false)
            }
            return (ranges.sorted { $0.offset < $1.offset }, blocks, skipped)
        }
    }
}

/// The leaves of one tree that another lacks, and the other way round, comparing blockrefs:
/// a subtree present in both (the same blockref) is not entered.
struct TreeDiff {
    let reader: BlockReader

    func leaves(_ new: [Blockref], _ old: [Blockref]) throws -> (changed: [Blockref], removed: [Blockref]) {
        var changed: [Blockref] = [], removed: [Blockref] = []
        try compare(new.filter { $0.type != .empty }, old.filter { $0.type != .empty }, depth: 0, &changed, &removed)
        return (changed.sorted { $0.key < $1.key }, removed.sorted { $0.key < $1.key })
    }

    private func compare(_ new: [Blockref], _ old: [Blockref], depth: Int, _ changed: inout [Blockref], _ removed: inout [Blockref]) throws {
        guard depth <= BlockTree.maximumDepth else { throw EngineError.corrupt("block tree deeper than \(BlockTree.maximumDepth) levels (loop?)") }
        let oldSet = Set(old), newSet = Set(new)
        let newOnly = new.filter { !oldSet.contains($0) }
        let oldOnly = old.filter { !newSet.contains($0) }
        guard !newOnly.isEmpty || !oldOnly.isEmpty else { return }
        // Indirect blocks on either side are opened one level, and the comparison goes on
        // with their children among the other leaves: what is shared deeper still matches.
        if newOnly.contains(where: { $0.type == .indirect }) || oldOnly.contains(where: { $0.type == .indirect }) {
            func open(_ refs: [Blockref]) throws -> [Blockref] {
                try refs.flatMap { $0.type == .indirect ? try reader.childBlockrefs($0).filter { $0.type != .empty } : [$0] }
            }
            try compare(try open(newOnly), try open(oldOnly), depth: depth + 1, &changed, &removed)
            return
        }
        changed += newOnly
        removed += oldOnly
    }
}
