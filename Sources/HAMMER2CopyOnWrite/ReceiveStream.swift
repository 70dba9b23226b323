// hammer2 receive: a send stream becomes a snapshot of this volume (docs/send-receive.md,
// "Receiving"). Everything lands in a hidden PFS first; only a stream read whole and
// intact becomes the snapshot LABEL, so a truncated, damaged or mismatched stream leaves
// the volume as it was.

import Foundation
import HAMMER2Codecs
import HAMMER2Engine
import HAMMER2Format
import Synchronization

public struct ReceiveSummary: Sendable {
    public var label = ""
    public var incremental = false
    public var inodes = 0
    public var dataBytes: UInt64 = 0
}

public enum ReceiveError: Error, CustomStringConvertible, Sendable {
    case stream(String)
    case mismatch(String)
    /// Stopped after records were applied: they are kept (hidden) for `send -t token`.
    case interrupted(String, token: SendResumeToken)

    public var description: String {
        switch self {
        case let .stream(what): return "bad stream: \(what)"
        case let .mismatch(what): return what
        case let .interrupted(what, token):
            return "\(what); what arrived is kept: resume with hammer2 send -t \(token.text) (-A drops it)"
        }
    }
}

/// Where an interrupted receive stopped, kept in its hidden PFS's root in fields the
/// finished snapshot does not take (its root is made anew): pfs_clid holds the next
/// record's sequence number and the chained hash before it, pfs_lsnap_tid the data bytes.
struct ReceiveCheckpoint: Equatable {
    var sequence: UInt64
    var hash: UInt64
    var dataBytes: UInt64

    init(sequence: UInt64, hash: UInt64, dataBytes: UInt64) {
        (self.sequence, self.hash, self.dataBytes) = (sequence, hash, dataBytes)
    }

    init(_ meta: InodeMeta) {
        let bytes = meta.pfsClusterID.bytes
        func le64(_ at: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) } }
        (sequence, hash, dataBytes) = (le64(0), le64(8), meta.pfsLastSnapshotTID)
    }

    /// The checkpoint a resumed stream (`begin`) goes on from: that of the receive kept
    /// in the hidden PFS whose root is `kept`; refused when there is none or it stopped
    /// elsewhere.
    static func resuming(_ begin: SendStreamBegin, kept: InodeMeta?) throws -> ReceiveCheckpoint {
        guard let kept else {
            throw ReceiveError.mismatch("the stream resumes a receive this volume does not have (hammer2 receive -T lists them)")
        }
        let checkpoint = ReceiveCheckpoint(kept)
        guard checkpoint.sequence == begin.resumeSequence, checkpoint.hash == begin.resumeHash else {
            throw ReceiveError.mismatch("the stream resumes at record \(begin.resumeSequence); the receive kept here stopped at record \(checkpoint.sequence)")
        }
        return checkpoint
    }

    func store(in meta: inout InodeMeta) {
        var bytes: [UInt8] = []
        for value in [sequence, hash] { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        meta.pfsClusterID = HAMMER2UUID(bytes: bytes)
        meta.pfsLastSnapshotTID = dataBytes
    }
}

extension MutableFilesystem {
    /// Reads a stream through `read` (up to the count asked; fewer only at its end) and
    /// makes it snapshot `label`. With `replace`, an existing PFS `label` (not mounted) is
    /// replaced once the new one is complete; without, it is an error. `compression`
    /// (comp_algo, as setcomp takes it): every received inode gets it, and blocks stored
    /// otherwise are compressed anew instead of kept as they came.
    public func receive(label: String, replace: Bool = false, compression: UInt8? = nil,
                        read: @escaping (Int) throws -> [UInt8]) throws -> ReceiveSummary {
        guard !readOnly else { throw EngineError.posix(EROFS, "receive needs a read-write filesystem") }
        var stream = StreamReader(read: read)
        let (beginHeader, beginPayload) = try stream.next()
        guard beginHeader.type == .begin || beginHeader.type == .rawBegin else {
            throw ReceiveError.stream("it does not start with a begin record")
        }
        let begin = try beginPayload.withUnsafeBytes { try SendStreamBegin(decoding: $0) }
        let entries = try withLock { try pfsRootBrefs().map { (label: $0.label, meta: try reader.inode($0.bref).meta) } }
        if let existing = entries.first(where: { $0.meta.pfsFilesystemID == begin.snapshotFilesystemID }) {
            throw ReceiveError.mismatch("this snapshot is already here, as PFS \(existing.label)")
        }
        if entries.contains(where: { $0.label == label }) && !replace {
            throw ReceiveError.mismatch("PFS \(label) exists (-F replaces it)")
        }
        var baseLabel: String?
        if begin.isIncremental {
            guard let base = entries.first(where: { $0.meta.pfsFilesystemID == begin.baseFilesystemID }) else {
                throw ReceiveError.mismatch("the stream is incremental over snapshot \(begin.baseFilesystemID), which this volume does not have")
            }
            baseLabel = base.label
        }
        // The hidden PFS: an empty one, or a snapshot of the base; one left by an earlier
        // receive of the same snapshot goes first, unless this stream resumes it.
        let hidden = Self.hiddenReceiveLabel(begin.snapshotFilesystemID, base: begin.baseFilesystemID)
        if beginHeader.type == .rawBegin {
            guard compression == nil else {
                throw ReceiveError.mismatch("the stream is raw (an encrypted snapshot): its blocks keep the sender's compression, which a receiver without the key cannot change")
            }
            return try receiveRaw(&stream, begin: begin, label: label, replace: replace, baseLabel: baseLabel, hidden: hidden,
                                  existing: entries.map(\.label))
        }
        var summary = ReceiveSummary(label: label, incremental: begin.isIncremental)
        if begin.resumeSequence > 0 {
            let checkpoint = try ReceiveCheckpoint.resuming(begin, kept: entries.first(where: { $0.label == hidden })?.meta)
            (stream.sequence, stream.previousHash) = (checkpoint.sequence, checkpoint.hash)
            summary.dataBytes = checkpoint.dataBytes
        } else {
            if entries.contains(where: { $0.label == hidden }) { _ = try deletePFS(label: hidden) }
            if let baseLabel {
                try snapshot(of: baseLabel, label: hidden, ids: (randomUUID(), .zero))
            } else {
                try createPFS(label: hidden, clusterID: .zero, copies: withLock { volumeCopies })  // the volume's copies setting
            }
        }
        var replacedGone = false
        do {
            try applyStream(&stream, begin: begin, into: hidden, compression: compression, summary: &summary)
            if entries.contains(where: { $0.label == label }) {
                guard withLock({ mounted[label] == nil }) else { throw ReceiveError.mismatch("PFS \(label) is open; unmount it to replace it") }
                _ = try deletePFS(label: label)
                replacedGone = true
            }
            try snapshot(of: hidden, label: label, ids: (begin.snapshotFilesystemID, begin.snapshotClusterID))
            try closePFS(hidden)
            _ = try deletePFS(label: hidden)
        } catch where replacedGone {
            // The old LABEL is gone and the new one could not be made: the hidden PFS holds
            // the whole stream, the only copy now; it stays.
            try? closePFS(hidden)
            throw ReceiveError.mismatch("the stream arrived whole, but \(label) could not be made after the old one was "
                                        + "deleted (\(error)); what arrived stays in PFS \(hidden)")
        } catch {
            // Records applied before the stream broke are kept, with where it broke, for a
            // resumed stream; otherwise the hidden PFS goes.
            var broken = true  // a stream that broke, not one that does not belong here
            if let refusal = error as? ReceiveError, case .mismatch = refusal { broken = false }
            if broken && (stream.sequence > 1 || begin.resumeSequence > 0), withLock({ mounted[hidden] != nil }) {
                let checkpoint = ReceiveCheckpoint(sequence: stream.sequence, hash: stream.previousHash, dataBytes: summary.dataBytes)
                var kept = true
                do {
                    try withLock {
                        let root = try mountedPFS(hidden).root
                        checkpoint.store(in: &root.meta)
                        root.dirty = true
                    }
                    try closePFS(hidden)  // flushes: what arrived and where it stopped
                } catch {
                    kept = false
                }
                if kept {
                    throw ReceiveError.interrupted("\(error)", token: SendResumeToken(
                        snapshotFilesystemID: begin.snapshotFilesystemID, baseFilesystemID: begin.baseFilesystemID,
                        sequence: checkpoint.sequence, hash: checkpoint.hash))
                }
            }
            try? closePFS(hidden)  // nothing when not open
            _ = try? deletePFS(label: hidden)
            throw error
        }
        return summary
    }

    /// ".receive.SNAPSHOT-BASE" (filesystem ids in hexadecimal; BASE zeros for a full stream).
    static func hiddenReceiveLabel(_ snapshot: HAMMER2UUID, base: HAMMER2UUID) -> String {
        func hex(_ id: HAMMER2UUID) -> String { id.bytes.map { String($0 >> 4, radix: 16) + String($0 & 15, radix: 16) }.joined() }
        return ".receive." + hex(snapshot) + "-" + hex(base)
    }

    /// The receives kept after an interruption: their hidden PFS and resume token
    /// (hammer2 receive -T); `abandon` deletes them (receive -A).
    public func interruptedReceives(abandon: Bool = false) throws -> [(label: String, token: SendResumeToken?)] {
        let kept = try withLock {
            try pfsRootBrefs().filter { $0.label.hasPrefix(".receive.") }.map { (label: $0.label, meta: try reader.inode($0.bref).meta) }
        }
        var result: [(String, SendResumeToken?)] = []
        for (label, meta) in kept {
            let checkpoint = ReceiveCheckpoint(meta)
            let ids = label.dropFirst(".receive.".count)
            let token = checkpoint.sequence > 0
                ? SendResumeToken("1-\(ids)-" + String(format: "%016llx-%016llx", checkpoint.sequence, checkpoint.hash)) : nil
            if abandon { _ = try deletePFS(label: label) }
            result.append((label, token))
        }
        return result
    }

    private func applyStream(_ stream: inout StreamReader, begin: SendStreamBegin, into hidden: String, compression: UInt8?,
                             summary: inout ReceiveSummary) throws {
        let pfs = try withLock { try mountedPFS(hidden) }
        let copies = pfs.root.meta.ncopies
        // Records before a resumed stream's first were applied by the interrupted receive.
        var records: UInt64 = begin.resumeSequence > 0 ? begin.resumeSequence - 1 : 0
        var receivedInodes = Set<UInt64>()
        // Every so often the hidden PFS is flushed with where the stream got to, so that a
        // receive killed outright can be resumed from there (receive -T shows the token).
        let checkpointBytes = UInt64(ProcessInfo.processInfo.environment["HAMMER2_RECEIVE_CHECKPOINT_BYTES"].flatMap { Int($0) } ?? 256 << 20)
        var checkpointedAt = summary.dataBytes
        func checkpoint() throws {
            guard summary.dataBytes - checkpointedAt >= checkpointBytes else { return }
            let point = ReceiveCheckpoint(sequence: stream.sequence, hash: stream.previousHash, dataBytes: summary.dataBytes)
            withLock {
                point.store(in: &pfs.root.meta)
                pfs.root.dirty = true
            }
            try flush()
            checkpointedAt = summary.dataBytes
        }
        /// After each inodes or blocks record. The received data waits in memory like
        /// written data: the flusher takes it from a quarter of the limit; at the limit the
        /// reader waits for a flush.
        func applied() throws {
            let dirty = withLock { dirtyDataBytes }
            if dirty > dirtyLimit { try flushForDirtyLimit() } else if dirty > dirtyLimit / 4 { requestFlush() }
            records += 1
            try checkpoint()
        }
        // A flusher beside the reader, as a mount has: received data is encoded and
        // written while the next records arrive; the reader waits only past the limit.
        let done = Atomic<Bool>(false)
        let flusher = Thread { [self] in
            while !done.load(ordering: .acquiring) {
                if waitForFlushRequest(seconds: 0.5) && !done.load(ordering: .acquiring) { try? flush() }
            }
        }
        flusher.start()
        defer {
            done.store(true, ordering: .releasing)
            requestFlush()
        }
        while true {
            let (header, payload) = try stream.next()
            switch header.type {
            case .begin, .rawBegin:
                throw ReceiveError.stream("a second begin record (record \(header.sequence))")
            case .rawBlocks, .rawRoot:
                throw ReceiveError.stream("a raw record in a stream that did not begin raw (record \(header.sequence))")
            case .inodes:
                let commit = try payload.withUnsafeBytes { try IntentLogCommit(decoding: $0) }
                guard commit.pfses.count == 1 else { throw ReceiveError.stream("record \(header.sequence) holds \(commit.pfses.count) PFS sections") }
                try withLock {
                    pfs.nextInodeNumber = max(pfs.nextInodeNumber, begin.nextInodeNumber)
                    for record in commit.pfses[0].inodes {
                        // Applied again after a resume: an inode already removed stays so.
                        if record.meta.nlinks == 0 && !record.isNew && (try? pfs.node(record.inum)) == nil { continue }
                        try applyInodeRecord(record, to: pfs) { meta, current in
                            // The receiving PFS keeps its identity and its copies setting.
                            if record.inum == PFS.rootInodeNumber, let current {
                                let posix = meta
                                meta = current
                                (meta.mode, meta.uid, meta.gid, meta.uflags) = (posix.mode, posix.uid, posix.gid, posix.uflags)
                                (meta.ctime, meta.mtime, meta.atime, meta.btime) = (posix.ctime, posix.mtime, posix.atime, posix.btime)
                                meta.attributeInode = posix.attributeInode
                            } else {
                                meta.ncopies = copies
                            }
                            if let compression { meta.compAlgo = compression }
                        }
                        if receivedInodes.insert(record.inum).inserted { summary.inodes += 1 }
                        summary.dataBytes += record.ranges.reduce(0) { $0 + UInt64($1.bytes?.count ?? 0) }
                    }
                }
                try applied()
            case .blocks:
                let carried = try payload.withUnsafeBytes { try SendStreamBlocks(decoding: $0) }
                try withLock {
                    for block in carried.blocks {
                        let node = try pfs.node(block.inum)
                        guard node.type == .regularFile || node.type == .softlink, node.meta.nlinks > 0 else {
                            throw ReceiveError.stream("record \(header.sequence) holds data for inode \(block.inum), not a file")
                        }
                        let logical: [UInt8]
                        do {
                            logical = try block.stored.withUnsafeBytes { raw -> [UInt8] in
                                switch CompressionMethod(rawValue: block.methods & 0x0F) {
                                case .none: return Array(raw)
                                case .lz4: return try Decompressor.lz4(raw)
                                case .zlib: return try Decompressor.zlib(raw)
                                default: throw ReceiveError.stream("block of inode \(block.inum) with compression method \(block.methods & 0x0F)")
                                }
                            }
                        } catch let error as DecompressionError {
                            throw ReceiveError.stream("block at \(block.offset) of inode \(block.inum) does not decompress: \(error)")
                        }
                        guard logical.count <= HAMMER2.physicalBufferSize else {
                            throw ReceiveError.stream("block at \(block.offset) of inode \(block.inum) decompresses to \(logical.count) bytes")
                        }
                        // Stored again as it came: the flush takes the stored bytes (same
                        // methods) instead of compressing the block anew, unless the
                        // receiver asked for another compression.
                        let index = block.offset / logicalBlockBytes
                        node.setDirtyBlock(index, logical)
                        if compression == nil || CompressionMethod(rawValue: block.methods & 0x0F) == node.meta.compressionAlgorithm {
                            node.encodingHints[index] = EncodingHint(source: logical, stored: block.stored, methods: block.methods)
                        }
                        node.dirty = true
                        summary.dataBytes += UInt64(block.stored.count)
                    }
                }
                try applied()
            case .end:
                let end = try payload.withUnsafeBytes { try SendStreamEnd(decoding: $0) }
                guard end.inodeRecords == records else {
                    throw ReceiveError.stream("the end record counts \(end.inodeRecords) inode records, \(records) arrived")
                }
                guard end.dataBytes == summary.dataBytes else {
                    throw ReceiveError.stream("the end record counts \(end.dataBytes) data bytes, \(summary.dataBytes) arrived")
                }
                guard try stream.atEnd() else { throw ReceiveError.stream("bytes after the end record") }
                try flush()
                return
            }
        }
    }

    /// Reads framed records, checking each header, the sequence and the chained hash.
    struct StreamReader {
        let read: (Int) throws -> [UInt8]
        var sequence: UInt64 = 0
        var previousHash: UInt64 = 0

        mutating func exactly(_ count: Int, _ what: String) throws -> [UInt8] {
            var bytes: [UInt8] = []
            while bytes.count < count {
                let more = try read(count - bytes.count)
                if more.isEmpty { throw ReceiveError.stream("it ends inside \(what) (truncated)") }
                bytes += more
            }
            return bytes
        }

        mutating func next() throws -> (SendStreamRecordHeader, [UInt8]) {
            let raw = try exactly(SendStreamRecordHeader.bytes, "record \(sequence)'s header")
            let header: SendStreamRecordHeader
            do {
                header = try raw.withUnsafeBytes { try SendStreamRecordHeader(decoding: $0) }
            } catch {
                throw ReceiveError.stream("record \(sequence): \(error)")
            }
            guard header.sequence == sequence else {
                throw ReceiveError.stream("record \(sequence) is numbered \(header.sequence) (a record is missing or repeated)")
            }
            let payload = try exactly(Int(header.payloadBytes), "record \(sequence)")
            let hash = SendStreamRecordHeader.hash(payload, after: previousHash)
            guard hash == header.payloadHash else {
                throw ReceiveError.stream("record \(sequence) fails its checksum (damaged, or records out of order)")
            }
            sequence += 1
            previousHash = hash
            return (header, payload)
        }

        mutating func atEnd() throws -> Bool { try read(1).isEmpty }
    }
}
