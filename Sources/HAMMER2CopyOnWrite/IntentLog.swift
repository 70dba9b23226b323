// fsync through an intent log (docs/format.md, "Intent log"; issue 23): a commit of the
// state changed since the previous one, appended to the reserved segments' unused buffers
// with one write and one device flush, instead of a copy-on-write flush to the volume root.
// The next flush writes the tree as always and retires the log; opening the volume
// read-write replays what a crash left in it.
//
// Lock order: intentLogLock (one commit at a time, held across its write), then lock.

import Glibc
import Foundation
import HAMMER2Engine
import HAMMER2Format
import HAMMER2Trace

/// Where the next commit goes and what the log holds (protected by the filesystem lock).
struct IntentLogState {
    /// The super-root blockref's mirror_tid the commits apply over (the last flush).
    var base: UInt64
    let chunks: [UInt64]
    var chunk = 0
    var offsetInChunk: UInt64 = 0
    var sequence: UInt64 = 0
    /// False until a flush gives the log a base after something went wrong (a failed
    /// commit write, a log that could not be replayed): fsync then flushes.
    var usable: Bool

    mutating func restart(base: UInt64) {
        self.base = base
        chunk = 0
        offsetInChunk = 0
        sequence = 0
        usable = !chunks.isEmpty
    }
}

/// What a read-write open did with the log it found.
public struct IntentLogReplay: Sendable {
    public var commits: Int
    public var inodes: Int
    public var bytes: Int
    /// Why the commits were not applied (the volume then opened at its last flush).
    public var problem: String?
}

/// Counters for hammer2 stat and the benchmarks.
public struct IntentLogStatistics: Sendable {
    public var commits = 0
    public var bytesWritten = 0
    /// fsyncs the log could not take (they flushed).
    public var fallbacks = 0
}

extension MutableFilesystem {
    /// fsync and fsyncdir: every change made so far becomes durable, through the intent log
    /// when it can take them, else by a flush.
    public func synchronize() throws {
        if try commitToIntentLog() { return }
        try flushReclaimingIfFull()
    }

    /// True when every change is durable (in a commit, or nothing changed since the last
    /// one); false when a flush must do it.
    func commitToIntentLog() throws -> Bool {
        guard !readOnly, intentLogEnabled else { return false }
        intentLogLock.lock()
        defer { intentLogLock.unlock() }
        enum Plan { case nothing, refuse, write(UInt64, [UInt8], inodes: Int, sequence: UInt64) }
        let started = Trace.now
        let plan: Plan = try withLock {
            guard intentLog.usable else { return .refuse }
            guard let commit = try changesSinceCommit() else { return .refuse }
            if commit.pfses.isEmpty { return .nothing }
            let payloadBytes = commit.encodedBytes
            let needed = align(UInt64(IntentLogHeader.bytes + payloadBytes))
            guard needed <= IntentLogArea.chunkBytes else { return .refuse }
            if intentLog.offsetInChunk + needed > IntentLogArea.chunkBytes {
                intentLog.chunk += 1
                intentLog.offsetInChunk = 0
            }
            guard intentLog.chunk < intentLog.chunks.count else { return .refuse }
            // The payload is encoded behind room for the header, then the header written in.
            var bytes = [UInt8](repeating: 0, count: IntentLogHeader.bytes)
            bytes.reserveCapacity(Int(needed))
            commit.encode(appendingTo: &bytes)
            precondition(bytes.count == IntentLogHeader.bytes + payloadBytes, "intent log payload size accounting")
            let hash = bytes.withUnsafeBytes { CheckCode.xxhash64(UnsafeRawBufferPointer(rebasing: $0[IntentLogHeader.bytes...]), seed: 0) }
            let header = IntentLogHeader(base: intentLog.base, sequence: intentLog.sequence, payloadBytes: UInt64(payloadBytes),
                                         fsid: header.fsid, payloadHash: hash)
            bytes.withUnsafeMutableBytes { header.encode(into: $0) }
            bytes += repeatElement(0, count: Int(needed) - bytes.count)
            let offset = intentLog.chunks[intentLog.chunk] + intentLog.offsetInChunk
            intentLog.offsetInChunk += needed
            intentLog.sequence += 1
            // Taken: the nodes start over (a failed write below makes the log unusable, and
            // the flush that follows writes everything).
            forgetLoggedChanges()
            return .write(offset, bytes, inodes: commit.pfses.reduce(0) { $0 + $1.inodes.count }, sequence: header.sequence)
        }
        switch plan {
        case .nothing: return true
        case .refuse:
            intentLogStatistics.withLock { $0.fallbacks += 1 }
            return false
        case let .write(offset, bytes, inodes, sequence):
            let device = volumes.volumes[0].device
            do {
                try bytes.withUnsafeBytes { try device.writeDurably($0, at: offset) }
            } catch {
                withLock { intentLog.usable = false }
                intentLogStatistics.withLock { $0.fallbacks += 1 }
                reportIntentLogProblem("intent log write at offset \(offset) failed (\(error)); flushing instead")
                return false
            }
            intentLogStatistics.withLock {
                $0.commits += 1
                $0.bytesWritten += bytes.count
            }
            Trace.record(.logCommit, UInt64(inodes), UInt64(bytes.count), offset, Trace.now &- started, sequence)
            return true
        }
    }

    /// Writes zeros over the log's chunks when the log holds nothing to keep (after the
    /// open's replay): an image file made sparse has holes there, and a commit that makes
    /// the host filesystem allocate blocks waits for its journal (0.3-0.8 ms instead of
    /// 0.06 ms, measured on ext4). Also clears what older bases left.
    func prepareIntentLogArea() throws {
        guard !readOnly, intentLog.usable, intentLog.sequence == 0, intentLog.offsetInChunk == 0 else { return }
        let device = volumes.volumes[0].device
        let zeros = [UInt8](repeating: 0, count: Int(IntentLogArea.chunkBytes))
        for chunk in intentLog.chunks { try zeros.withUnsafeBytes { try device.write($0, at: chunk) } }
        try device.synchronize()
    }

    private func align(_ bytes: UInt64) -> UInt64 {
        (bytes + IntentLogArea.alignment - 1) / IntentLogArea.alignment * IntentLogArea.alignment
    }

    /// The state changed since the last commit, as a commit; nil when the log cannot take
    /// it (PFSes created, deleted or snapshotted, an inode destroyed, an encrypted PFS with
    /// changes, more data than a chunk holds).
    private func changesSinceCommit() throws -> IntentLogCommit? {
        guard !superRootChanged else { return nil }
        var pfses: [IntentLogCommit.PFSChanges] = []
        var dataBytes: UInt64 = 0
        for label in mounted.keys.sorted() {
            let pfs = mounted[label]!
            guard !pfs.changedSinceCommit.isEmpty else { continue }
            guard pfs.keys == nil, pfs.destroyedInodes.isEmpty else { return nil }
            var inodes: [IntentLogCommit.Inode] = []
            for inum in pfs.changedSinceCommit.sorted() {
                guard let node = pfs.nodes[inum] else { continue }
                guard !node.loggedOverflow else { return nil }
                var ranges: [IntentLogCommit.DataRange] = []
                for range in node.loggedRanges where range.lowerBound < node.meta.size {
                    let end = min(range.upperBound, node.meta.size)
                    dataBytes += end - range.lowerBound
                    guard dataBytes <= IntentLogArea.chunkBytes else { return nil }
                    // Pieces of at most a block, so that zeros (punched holes) cost nothing.
                    var position = range.lowerBound
                    while position < end {
                        let pieceEnd = min(end, (position / logicalBlockBytes + 1) * logicalBlockBytes)
                        let count = Int(pieceEnd - position)
                        let bytes = try pfs.readPlan(node, offset: position, count: count).execute(pfs: pfs)
                        guard bytes.count == count else {
                            throw EngineError.corrupt("inode \(inum): read \(bytes.count) of \(count) bytes at \(position) for the intent log")
                        }
                        ranges.append(.init(offset: position, length: UInt32(count), bytes: isZero(bytes) ? nil : bytes))
                        position = pieceEnd
                    }
                }
                let changes = node.loggedEntryKeys.sorted().map { key in
                    IntentLogCommit.EntryChange(key: key, entry: (node.entryChanges[key] ?? nil).map { ($0.inum, $0.type, $0.name) })
                }
                inodes.append(.init(inum: inum, isNew: node.flushedBref == nil, meta: node.meta, filename: node.filename,
                                    diskLimit: node.diskLimit, lowestSize: node.loggedLowestSize ?? .max,
                                    entryChanges: changes, ranges: ranges))
            }
            if !inodes.isEmpty {
                pfses.append(.init(label: Array(label.utf8), nextInodeNumber: pfs.nextInodeNumber, inodes: inodes))
            }
        }
        return IntentLogCommit(pfses: pfses)
    }

    private func isZero(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            var index = 0
            while index + 8 <= raw.count {
                if raw.loadUnaligned(fromByteOffset: index, as: UInt64.self) != 0 { return false }
                index += 8
            }
            while index < raw.count {
                if raw[index] != 0 { return false }
                index += 1
            }
            return true
        }
    }

    /// After a flush made its header durable: the log starts over on the new tree, and
    /// what nodes noted for it is written.
    func restartIntentLog() {
        intentLog.restart(base: superRootBref.mirrorTID)
        forgetLoggedChanges()
    }

    /// Every node's notes for the log start over (they are in a commit, or a flush wrote them).
    private func forgetLoggedChanges() {
        for pfs in mounted.values {
            for inum in pfs.changedSinceCommit { pfs.nodes[inum]?.resetLogged() }
            pfs.changedSinceCommit = []
        }
    }

    func reportIntentLogProblem(_ message: String) {
        if let logger = intentLogLogger { logger(message) } else { FileHandle.standardError.write(Data(("hammer2: " + message + "\n").utf8)) }
    }

    public var intentLogCounters: IntentLogStatistics { intentLogStatistics.withLock { $0 } }
}

// MARK: Reading and replay

/// The commits a volume's log holds over its current tree, in order.
public struct IntentLogContents: Sendable {
    public var commits: [(header: IntentLogHeader, commit: IntentLogCommit)] = []
    /// A commit whose checksums hold but whose records do not decode: the log was edited
    /// or written by something else; it is not applied.
    public var problem: String?
    public var bytes = 0

    /// Reads the log of `volumes` (its first volume's reserved segments).
    public static func read(_ volumes: VolumeSet) -> IntentLogContents {
        var contents = IntentLogContents()
        let header = volumes.header
        guard let superRoot = header.superRootBlockset.first else { return contents }
        let device = volumes.volumes[0].device
        let chunks = IntentLogArea.chunks(volumeSize: volumes.volumes[0].size)
        var chunk = 0
        var offset: UInt64 = 0
        var sequence: UInt64 = 0
        var first = [UInt8](repeating: 0, count: Int(IntentLogArea.alignment))
        while chunk < chunks.count {
            let valid: IntentLogHeader? = first.withUnsafeMutableBytes { buffer in
                guard (try? device.read(into: buffer, at: chunks[chunk] + offset)) != nil else { return nil }
                guard let found = IntentLogHeader(decoding: UnsafeRawBufferPointer(buffer)), found.base == superRoot.mirrorTID,
                      found.sequence == sequence, found.fsid == header.fsid,
                      found.payloadBytes <= IntentLogArea.chunkBytes - offset - UInt64(IntentLogHeader.bytes) else { return nil }
                return found
            }
            guard let found = valid else {
                // The writer starts the next chunk when a commit does not fit the rest.
                if offset == 0 { break }
                chunk += 1
                offset = 0
                continue
            }
            var payload = [UInt8](repeating: 0, count: Int(found.payloadBytes))
            guard (try? payload.withUnsafeMutableBytes({ try device.read(into: $0, at: chunks[chunk] + offset + UInt64(IntentLogHeader.bytes)) })) != nil,
                  payload.withUnsafeBytes({ CheckCode.xxhash64($0, seed: 0) }) == found.payloadHash else { break }  // torn: the end
            do {
                let commit = try payload.withUnsafeBytes { try IntentLogCommit(decoding: $0) }
                contents.commits.append((found, commit))
                contents.bytes += IntentLogHeader.bytes + payload.count
            } catch {
                contents.problem = "commit \(sequence) at offset \(chunks[chunk] + offset): \(error)"
                break
            }
            sequence += 1
            offset += (UInt64(IntentLogHeader.bytes) + found.payloadBytes + IntentLogArea.alignment - 1)
                / IntentLogArea.alignment * IntentLogArea.alignment
            if offset >= IntentLogArea.chunkBytes {
                chunk += 1
                offset = 0
            }
        }
        return contents
    }
}

extension MutableFilesystem {
    /// Opening: applies the commits the log holds over the current tree, then flushes (the
    /// log is then stale); a read-only open (`flushing` false) keeps them in memory. A log
    /// whose records do not apply is reported and left alone: the volume opens at its last
    /// flush. I/O errors and a full volume fail the open, so that the commits stay for a
    /// later try.
    func replayIntentLog(flushing: Bool = true) throws {
        let contents = IntentLogContents.read(volumes)
        guard !contents.commits.isEmpty || contents.problem != nil else { return }
        var replay = IntentLogReplay(commits: contents.commits.count, inodes: 0, bytes: contents.bytes, problem: contents.problem)
        if contents.problem != nil {
            intentLog.usable = false
            intentLogReplay = replay
            reportIntentLogProblem("intent log not replayed: \(contents.problem!); the volume opens at its last flush")
            return
        }
        var opened: [String] = []
        do {
            try withLock {
                for (_, commit) in contents.commits {
                    replay.inodes += try apply(commit, opened: &opened)
                }
            }
        } catch {
            withLock { for label in opened { mounted[label] = nil } }
            replay.problem = "\(error)"
            intentLog.usable = false
            intentLogReplay = replay
            reportIntentLogProblem("intent log not replayed: \(error); the volume opens at its last flush")
            return
        }
        guard flushing else {
            replay.problem = nil
            intentLogReplay = replay
            return
        }
        do {
            try withLock {
                try flushLocked()
                for label in opened { mounted[label] = nil }
            }
        } catch {
            withLock { for label in opened { mounted[label] = nil } }
            throw EngineError.posix((error as? EngineError)?.errno ?? EIO,
                                    "the intent log's \(contents.commits.count) commits could not be flushed (\(error)); they stay in the log for the next read-write open")
        }
        intentLogReplay = replay
    }

    /// Applies one commit to the in-memory state; returns the inodes it touched.
    private func apply(_ commit: IntentLogCommit, opened: inout [String]) throws -> Int {
        var touched = 0
        for changes in commit.pfses {
            let label = String(decoding: changes.label, as: UTF8.self)
            if mounted[label] == nil { opened.append(label) }
            let pfs = try mountedPFS(label)  // a PFS that is gone: pfsNotFound, the log not applied
            guard pfs.keys == nil && Keyring.keyID(ofRoot: pfs.disk.root.meta) == nil else {
                throw EngineError.corrupt("the log names PFS \"\(label)\", which is encrypted (never logged)")
            }
            pfs.nextInodeNumber = max(pfs.nextInodeNumber, changes.nextInodeNumber)
            for record in changes.inodes {
                try applyInodeRecord(record, to: pfs)
                touched += 1
            }
        }
        return touched
    }

    /// Applies one inode record (of a commit, or of a received stream) to `pfs`: creates
    /// the inode when new, truncates, writes the ranges, takes the metadata (through
    /// `adjust` first) and the entry changes.
    func applyInodeRecord(_ record: IntentLogCommit.Inode, to pfs: MountedPFS,
                          adjust: (inout InodeMeta, _ current: InodeMeta?) -> Void = { _, _ in }) throws {
        guard record.meta.inum == record.inum || record.inum == PFS.rootInodeNumber else {
            throw EngineError.corrupt("record for inode \(record.inum) holds inode \(record.meta.inum)")
        }
        let node: Node
        if let existing = pfs.nodes[record.inum] {
            node = existing
        } else if record.isNew {
            let direct = record.meta.type == .regularFile || record.meta.type == .softlink
            node = Node(inum: record.inum, meta: record.meta, filename: record.filename,
                        content: direct ? .embedded([UInt8](repeating: 0, count: HAMMER2.embeddedBytes)) : .blockset([]),
                        bref: nil, owner: pfs)
            pfs.nodes[record.inum] = node
        } else {
            node = try pfs.node(record.inum)
        }
        if record.lowestSize != .max && node.type == .regularFile {
            try pfs.truncate(node, to: record.lowestSize)
        }
        node.diskLimit = min(node.diskLimit, record.diskLimit)
        for range in record.ranges {
            guard !node.isDirectory else { throw EngineError.corrupt("data for directory \(record.inum)") }
            if let bytes = range.bytes {
                try bytes.withUnsafeBytes { try pfs.writeData(node, at: range.offset, $0) }
            } else {
                try pfs.zeroRange(node, from: range.offset, to: range.offset + UInt64(range.length))
            }
        }
        var meta = record.meta
        adjust(&meta, node.meta)
        node.meta = meta
        if record.inum != PFS.rootInodeNumber { node.filename = record.filename }
        for change in record.entryChanges {
            guard node.isDirectory else { throw EngineError.corrupt("entries for non-directory \(record.inum)") }
            try Self.checkEntryName(change)
            node.setEntryChange(change.key, change.entry.map { DirectoryEntry(name: $0.name, inum: $0.inum, type: $0.type, key: change.key) })
        }
        node.dirty = true
    }

    private static func checkEntryName(_ change: IntentLogCommit.EntryChange) throws {
        guard let entry = change.entry else { return }
        guard entry.name.count <= 255, !entry.name.contains(0), !entry.name.contains(UInt8(ascii: "/")) else {
            throw EngineError.corrupt("log holds a bad directory entry name")
        }
    }
}
