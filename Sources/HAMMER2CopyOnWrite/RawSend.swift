// hammer2 send of an encrypted snapshot: a raw stream (docs/send-receive.md, "Raw
// streams"). The snapshot's tree travels as stored, sealed, children before parents, so
// neither side needs the key: the receiver writes each block where it likes and puts its
// location into the parent before writing the parent, which works because sealing
// version 2 authenticates blockrefs without their locations (LocationFree.swift).
// Incremental: a block the base holds too (found the way the receiver will find it in its
// copy of the base, RawTree.find) is left out.

import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format

enum RawSender {
    static func send(from filesystem: Filesystem, target: PFSEntry, base: PFSEntry?, estimate: Bool,
                     resume: SendResumeToken?, expectedBytes: UInt64?, emit: @escaping ([UInt8]) throws -> Void) throws -> SendSummary {
        let label = target.name
        guard let record = target.inode.keyRecord.flatMap({ try? KeyRecord(decoding: $0) }) else {
            throw EngineError.invalidArgument("PFS \(label) is not encrypted but its base is: the two do not belong together")
        }
        guard target.inode.meta.pfsSubtype == PFSSubtype.snapshot, PFSKeys.isLocationFree(target.inode) else {
            throw EngineError.invalidArgument(
                "PFS \(label) cannot be sent raw: it is not a snapshot signed for it (sealing version 2); "
                + "make a snapshot of it with this version (after hammer2 reencrypt on its origin, "
                + "if that was written by an older one)")
        }
        if let base {
            guard let baseRecord = base.inode.keyRecord.flatMap({ try? KeyRecord(decoding: $0) }), baseRecord.domain == record.domain else {
                throw EngineError.invalidArgument("the base \(base.name) is not a snapshot of the same encrypted PFS")
            }
            guard PFSKeys.isLocationFree(base.inode) else {
                throw EngineError.invalidArgument("the base \(base.name) was not signed for raw streams (sent raw before, it would be)")
            }
        }
        let reader = filesystem.reader
        var writer = SendStream.RecordWriter(emit: estimate ? { _ in } : emit, resume: resume)
        try writer.write(.rawBegin, SendStream.beginRecord(target, base: base, resume: resume, expectedBytes: expectedBytes))
        var walker = Walker(reader: reader, baseRoot: base?.inode.blockset, writer: writer, estimate: estimate)
        try walker.children(target.inode.blockset, tree: 0, base: base?.inode.blockset)
        try walker.flushPending()
        let root = try reader.rawPhysical(target.bref)
        try walker.writer.write(.rawRoot, root)
        walker.summary.records += 1
        try walker.writer.write(.end, SendStreamEnd(inodeRecords: UInt64(walker.summary.records),
                                                    dataBytes: walker.summary.dataBytes).encoded())
        var summary = walker.summary
        summary.streamBytes = walker.writer.bytes + walker.skippedBytes
        return summary
    }

    struct Walker {
        let reader: BlockReader
        let baseRoot: [Blockref]?
        var writer: SendStream.RecordWriter
        let estimate: Bool
        var summary = SendSummary()
        var skippedBytes: UInt64 = 0
        /// Blocks waiting for the next record; data blocks are read when it is written.
        var pending: [(tree: UInt64, bref: Blockref, stored: [UInt8]?)] = []
        var pendingBytes = 0

        /// Every child with a media block that the base lacks, its subtree first.
        mutating func children(_ refs: [Blockref], tree: UInt64, base: [Blockref]?, depth: Int = 0) throws {
            guard depth <= BlockTree.maximumDepth * 2 else { throw EngineError.corrupt("block tree deeper than \(BlockTree.maximumDepth) levels (loop?)") }
            for child in refs where child.type != .empty && child.physicalRadix != 0 {
                if let base, try RawTree.find(child, in: base, reader: reader) != nil { continue }
                try block(child, tree: tree, base: base, depth: depth)
            }
        }

        mutating func block(_ bref: Blockref, tree: UInt64, base: [Blockref]?, depth: Int) throws {
            guard bref.checkMethod == .xaes256gcm else {
                throw EngineError.corrupt("a block of an encrypted PFS is not sealed: \(describe(bref))")
            }
            let sealed = SealedCheck(bref.check)
            var stored: [UInt8]?
            switch bref.type {
            case .indirect:
                guard sealed.flags & SealedCheck.flagLocationFree != 0 else { throw Self.olderSealing(bref) }
                let bytes = try reader.rawPhysical(bref)
                try children(try decodeBlockrefs(bytes), tree: tree, base: base, depth: depth + 1)
                stored = bytes
            case .inode:
                let bytes = try reader.rawPhysical(bref)
                if let blockset = clearBlockset(ofSealedInode: bytes, bref: bref) {
                    guard sealed.flags & SealedCheck.flagLocationFree != 0 else { throw Self.olderSealing(bref) }
                    let before = try baseRoot.flatMap { try RawTree.inodeBlockset(bref.key, in: $0, reader: reader) }
                    try children(try decodeBlockrefs(blockset), tree: bref.key, base: before, depth: depth + 1)
                }
                stored = bytes
                summary.inodes += 1
            case .data, .dirent:
                stored = nil  // read with its record
            default:
                throw EngineError.corrupt("unexpected \(bref.type) in a PFS tree: \(describe(bref))")
            }
            let bytes = try reader.checkedPhysicalSize(bref)
            summary.dataBytes += UInt64(bytes)
            pending.append((tree, bref, stored))
            pendingBytes += bytes
            if pendingBytes >= SendStream.recordTarget { try flushPending() }
        }

        mutating func flushPending() throws {
            guard !pending.isEmpty else { return }
            let read = !estimate && !writer.skipping
            var blocks: [SendStreamRawBlocks.Block] = []
            blocks.reserveCapacity(pending.count)
            var payloadBytes = 4
            for (tree, bref, stored) in pending {
                payloadBytes += 8 + HAMMER2.blockrefBytes + bref.physicalBytes
                guard read else { continue }
                blocks.append(.init(tree: tree, bref: bref.locationFree, stored: try stored ?? reader.rawPhysical(bref)))
            }
            // Estimated or before a resume point: not sent, only counted (its size is known).
            if !read { skippedBytes += UInt64(payloadBytes) }
            try writer.write(.rawBlocks, read ? SendStreamRawBlocks(blocks: blocks).encoded() : [])
            summary.records += 1
            pending = []
            pendingBytes = 0
        }

        static func olderSealing(_ bref: Blockref) -> EngineError {
            .invalidArgument("\(describe(bref)) was sealed before version 2 (its blockrefs are bound to their "
                             + "locations): run hammer2 reencrypt on the PFS, then snapshot it again")
        }
    }
}

/// Finding a block of a raw-received tree in the base: by its location-free blockref,
/// descending only into indirect blocks whose key range holds it (the same search on the
/// sending and the receiving side, so they agree on what the base has).
enum RawTree {
    static func find(_ target: Blockref, in refs: [Blockref], reader: BlockReader, depth: Int = 0) throws -> Blockref? {
        guard depth <= BlockTree.maximumDepth * 2 else { throw EngineError.corrupt("block tree deeper than \(BlockTree.maximumDepth) levels (loop?)") }
        // The nonce (check words 0-2, random per sealing, never a location) rules out all but
        // the one candidate cheaply; the location-free comparison then decides.
        let wanted = target.locationFree, nonce = target.check.words
        if let found = refs.first(where: {
            $0.type != .empty && $0.check.words.0 == nonce.0 && $0.check.words.1 == nonce.1 && $0.check.words.2 == nonce.2
                && $0.locationFree == wanted
        }) { return found }
        for ref in refs where ref.type == .indirect && covers(ref, target.key, target.keybits) {
            return try find(target, in: try reader.childBlockrefs(ref), reader: reader, depth: depth + 1)
        }
        return nil
    }

    /// The blockset of inode `inum` of the tree under `root` (nil: not there, or its data
    /// is embedded).
    static func inodeBlockset(_ inum: UInt64, in root: [Blockref], reader: BlockReader, depth: Int = 0) throws -> [Blockref]? {
        guard depth <= BlockTree.maximumDepth * 2 else { throw EngineError.corrupt("block tree deeper than \(BlockTree.maximumDepth) levels (loop?)") }
        if let inode = root.first(where: { $0.type == .inode && $0.key == inum }) {
            return try clearBlockset(ofSealedInode: reader.rawPhysical(inode), bref: inode).map { try decodeBlockrefs($0) }
        }
        for ref in root where ref.type == .indirect && covers(ref, inum, 0) {
            return try inodeBlockset(inum, in: try reader.childBlockrefs(ref), reader: reader, depth: depth + 1)
        }
        return nil
    }

    /// `parent`'s key range holds [key, key + 2^keybits).
    static func covers(_ parent: Blockref, _ key: UInt64, _ keybits: UInt8) -> Bool {
        guard parent.keybits < 64 else { return true }
        let mask = (UInt64(1) << parent.keybits) &- 1
        guard key & ~mask == parent.key & ~mask else { return false }
        return keybits <= parent.keybits
    }
}
