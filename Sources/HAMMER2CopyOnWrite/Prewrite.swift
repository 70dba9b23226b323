// Writing dirty file data before the flush, without the filesystem lock (issue 22): the
// front end keeps serving while the back end compresses, checks, seals and writes the
// data a flush is about to need, as DragonFly's frontend/backend split lets writes run on
// while the flush's strategy I/O happens. Four steps:
//
//   1. with the lock: copy the maps of dirty blocks of regular files (not the blocks);
//      without it, pick those not yet prewritten;
//   2. without it: encode them (compression with the file's heuristic, check code,
//      sealing) on every core;
//   3. with the lock: allocate their space (recorded as in flight, so a bulkfree pass
//      keeps it);
//   4. without it: write them; then, with the lock, hand each block whose content has not
//      changed meanwhile to its node, where the flush takes its blockref instead of
//      encoding and writing the block again.
//
// Then a barrier makes the data durable, still without the lock, so that the flush's own
// barrier under the lock waits for its metadata only. Nothing on the media refers to
// prewritten space until a flush writes a tree that does, and that flush's header comes
// after these writes and a barrier: a crash leaves the last flushed state.
// Space of a block changed again before the flush is never referenced: bulkfree reclaims
// it, as any space copy-on-write leaves behind.

import Dispatch
import Foundation
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format
import HAMMER2Trace

/// A dirty block already on the media (step 4 done).
struct PrewrittenBlock {
    /// The dirty block it encodes (the same storage while the block is unchanged).
    let source: [UInt8]
    /// Its physical size when encoded (it depends on the file's size for the last block).
    let physical: Int
    /// Placed, methods and check code set; the flush sets its transaction ids.
    let bref: Blockref
    /// Its space (each copy), as recorded in the PFS's `prewriteSpace`.
    let space: [(offset: UInt64, bytes: UInt64)]
}

extension MountedPFS {
    /// The block's space is no longer in flight: referenced by a flushed tree, or garbage.
    func forgetPrewrite(_ block: PrewrittenBlock) {
        for piece in block.space { prewriteSpace.removeValue(forKey: piece.offset) }
        prewrittenByteCount -= block.source.count
    }

    /// Dirty file data a flush would still have to encode and write itself.
    var unprewrittenByteCount: Int { dirtyByteCount - prewrittenByteCount }
}

extension MutableFilesystem {
    /// A file with dirty data not yet prewritten, as step (1) found it.
    private struct DirtyFile {
        let pfs: MountedPFS
        let node: Node
        let size: UInt64
        let compAlgo: UInt8
        let check: CheckMethod
        let copies: Int
        let keys: PFSKeys?
        let blocks: [UInt64: [UInt8]]
        let prewritten: [UInt64: PrewrittenBlock]
        let hints: [UInt64: EncodingHint]
        /// The file's compression heuristic (hammer2's comp_heuristic): an incompressible
        /// stream is tried only every 8th block, from one prewrite to the next.
        let heuristic: Int
    }

    /// Called with the lock held.
    private func dirtyFiles() -> [DirtyFile] {
        var files: [DirtyFile] = []
        for pfs in mounted.values where pfs.unprewrittenByteCount > 0 {
            for node in pfs.nodes.values where node.type == .regularFile && node.meta.nlinks > 0
                && node.dirtyBlocks.count > node.prewritten.count {
                // Files that may stay embedded in their inode are the flush's business.
                if node.meta.size <= UInt64(HAMMER2.embeddedBytes) { continue }
                let check = pfs.keys != nil ? CheckMethod.xaes256gcm : node.meta.checkAlgorithm
                files.append(DirtyFile(pfs: pfs, node: node, size: node.meta.size, compAlgo: node.meta.compAlgo, check: check,
                                       copies: min(max(1, Int(node.meta.ncopies)), Blockref.copyCapacity(check)),
                                       keys: pfs.keys, blocks: node.dirtyBlocks, prewritten: node.prewritten, hints: node.encodingHints,
                                       heuristic: node.compressionHeuristic))
            }
        }
        return files
    }

    /// The blocks of `files` to prewrite, in file offset order, up to `limit` bytes.
    private static func prewriteJobs(from files: [DirtyFile], limit: Int) -> [PrewriteJob] {
        var jobs: [PrewriteJob] = []
        var picked = 0
        for file in files {
            for index in file.blocks.keys.sorted() where file.prewritten[index] == nil && index * logicalBlockBytes < file.size {
                let block = file.blocks[index]!
                if block.isEmpty { continue }
                let physical = DataBlockEncoding.physicalBytes(fileSize: file.size, blockOffset: index * logicalBlockBytes)
                jobs.append(PrewriteJob(pfs: file.pfs, node: file.node, index: index, source: block, physical: physical,
                                        compAlgo: file.compAlgo, check: file.check, copies: file.copies, keys: file.keys,
                                        heuristic: file.heuristic, hint: file.hints[index]?.matching(block)))
                picked += block.count
                if picked >= limit { return jobs }
            }
        }
        return jobs
    }

    private struct PrewriteJob {
        let pfs: MountedPFS
        let node: Node
        let index: UInt64
        let source: [UInt8]
        let physical: Int
        let compAlgo: UInt8
        let check: CheckMethod
        let copies: Int
        /// Read with the lock: a flush's commit replaces the PFS's state.
        let keys: PFSKeys?
        /// The file's compression heuristic when picked.
        let heuristic: Int
        /// The block's stored form when it arrived encoded.
        let hint: EncodingHint?
    }

    /// Encodes and writes the dirty data of regular files (steps 1-4 above). At most
    /// `limit` bytes of dirty data are taken in one call. Errors are thrown after what was
    /// allocated is given up; the flush then writes the blocks itself.
    @discardableResult
    func prewriteDirtyData(limit: Int = .max) throws -> Int {
        guard !readOnly else { return 0 }
        let started = Trace.now
        var locked: UInt64 = 0
        func timedLock<T>(_ body: () throws -> T) rethrows -> T {
            try withLock {
                let at = Trace.now
                defer { locked &+= Trace.now &- at }
                return try body()
            }
        }
        // (1) Pick: with the lock, the files with dirty data and their maps of blocks
        // (copies of the maps, no blocks copied); without it, the blocks to prewrite. Step
        // (3) checks again, with the lock, that each block is still the one picked. The
        // copies end with the call: a map still shared when a writer or the handover (4)
        // changes it would be copied whole.
        let jobs = Self.prewriteJobs(from: timedLock { dirtyFiles() }, limit: limit)
        guard !jobs.isEmpty else { return 0 }
        let sink = prewriteSink  // kept from one prewrite to the next: fresh buffers cost page faults
        var written = 0, writtenBytes = 0
        var heuristics: [ObjectIdentifier: Int] = [:]
        // (2)-(4) a batch at a time (at most 64 blocks, 4 MiB: one large file's blocks, or
        // many small files together), so that the encoded bytes in memory stay bounded, each
        // lock is held briefly, and small files cost one lock round and one write per batch
        // rather than per file (a tar extraction makes thousands).
        var start = 0
        while start < jobs.count {
            let end = min(jobs.count, start + Self.flushBatchBlocks)
            let batch = Array(jobs[start..<end])
            start = end
            // The batch's files: runs of consecutive blocks of one node (the jobs come file
            // by file), each encoded in order with its file's heuristic.
            var runBounds: [Range<Int>] = []
            var runStart = 0
            while runStart < batch.count {
                var runEnd = runStart + 1
                while runEnd < batch.count && batch[runEnd].node === batch[runStart].node { runEnd += 1 }
                runBounds.append(runStart..<runEnd)
                runStart = runEnd
            }
            let runs = runBounds
            // (2) Encode, without the lock, on every core: the blocks' bytes as written and
            // their blockrefs, check codes set (not yet placed). Files run in parallel; one
            // file's blocks also do inside encodeAll.
            let runInputs = runs.map { run in
                (logical: batch[run].map { Self.logical($0.source, $0.physical)[...] }, hints: batch[run].map(\.hint),
                 compAlgo: batch[run.lowerBound].compAlgo, check: batch[run.lowerBound].check,
                 heuristic: heuristics[ObjectIdentifier(batch[run.lowerBound].node)] ?? batch[run.lowerBound].heuristic)
            }
            let storedRuns = ConcurrentResults<(stored: [DataBlockEncoding.Stored], heuristic: Int)>(count: runs.count)
            DispatchQueue.concurrentPerform(iterations: runs.count) { r in
                let input = runInputs[r]
                var heuristic = input.heuristic
                let stored = DataBlockEncoding.encodeAll(input.logical, hints: input.hints, compAlgo: input.compAlgo,
                                                         check: input.check, heuristic: &heuristic)
                storedRuns[r] = (stored, heuristic)
            }
            var storedBlocks: [DataBlockEncoding.Stored] = []
            storedBlocks.reserveCapacity(batch.count)
            for (r, run) in runs.enumerated() {
                let result = storedRuns[r]!
                storedBlocks += result.stored
                heuristics[ObjectIdentifier(batch[run.lowerBound].node)] = result.heuristic
            }
            let stored = storedBlocks
            let sealing = batch.map { (offset: $0.index * logicalBlockBytes, keys: $0.keys, check: $0.check) }
            let encoded = ConcurrentResults<(bytes: [UInt8], bref: Blockref)>(count: batch.count)
            DispatchQueue.concurrentPerform(iterations: batch.count) { i in
                guard let (bytes, methods) = stored[i] else { return }  // all zeros: the flush makes it a hole
                let (offset, keys, check) = sealing[i]
                var bref = Blockref(type: .data, methods: methods, key: offset, keybits: UInt8(HAMMER2.allocationMaxRadix), tid: 0)
                if let keys {
                    let (sealed, area) = keys.sealData(bytes, type: .data, compression: CompressionMethod(rawValue: methods & 0x0F),
                                                       key: offset, keybits: UInt8(HAMMER2.allocationMaxRadix))
                    bref.check = area
                    encoded[i] = (sealed, bref)
                } else {
                    if check != .none { bref.setCheck(over: bytes) }
                    encoded[i] = (bytes, bref)
                }
            }
            // (3) Allocate, with the lock; blocks changed meanwhile are skipped. Space for new
            // data is what ensureSpace promised the writes: a full volume leaves the rest to
            // the flush, which can reclaim first.
            var placed: [(job: PrewriteJob, bytes: [UInt8], bref: Blockref, space: [(offset: UInt64, bytes: UInt64)])] = []
            var full = false
            try timedLock {
                for (i, job) in batch.enumerated() {
                    guard let (bytes, template) = encoded[i], job.node.dirtyBlocks[job.index] == job.source else { continue }
                    guard allocator.freeBytes >= UInt64(bytes.count * job.copies) + reserveBytes else {
                        full = true
                        return
                    }
                    let offsets = try allocator.allocate(bytes.count, type: .data, copies: job.copies)
                    var bref = template
                    bref.place(offsets.map { Blockref.dataOffset($0, radix: bytes.count.trailingZeroBitCount) })
                    let space = offsets.map { (offset: $0, bytes: UInt64(bytes.count)) }
                    for piece in space { job.pfs.prewriteSpace[piece.offset] = piece.bytes }
                    placed.append((job, bytes, bref, space))
                }
            }
            // (4) Write, without the lock, then hand over what is still current.
            do {
                // In media order: blocks of different sizes are placed apart (small ones fill
                // partly used 64 KiB buffers), so in batch order neighbours would not merge.
                let pieces = placed.indices.flatMap { i in placed[i].space.indices.map { (item: i, copy: $0, offset: placed[i].space[$0].offset) } }
                for piece in pieces.sorted(by: { ($0.copy, $0.offset) < ($1.copy, $1.offset) }) {
                    try sink.write(placed[piece.item].bytes, at: piece.offset, run: piece.copy)
                }
                try sink.drain()
            } catch {
                sink.discard()
                withLock { for item in placed { for piece in item.space { item.job.pfs.prewriteSpace.removeValue(forKey: piece.offset) } } }
                throw error
            }
            timedLock {
                for run in runs {
                    let node = batch[run.lowerBound].node
                    node.compressionHeuristic = heuristics[ObjectIdentifier(node)]!
                }
                for item in placed {
                    let node = item.job.node
                    if node.dirtyBlocks[item.job.index] == item.job.source && node.prewritten[item.job.index] == nil {
                        node.prewritten[item.job.index] = PrewrittenBlock(source: item.job.source, physical: item.job.physical,
                                                                          bref: item.bref, space: item.space)
                        item.job.pfs.prewrittenByteCount += item.job.source.count
                    } else {
                        for piece in item.space { item.job.pfs.prewriteSpace.removeValue(forKey: piece.offset) }
                    }
                }
            }
            written += placed.count
            writtenBytes += placed.reduce(0) { $0 + $1.bytes.count }
            if full { break }
        }
        Trace.record(.prewrite, UInt64(written), UInt64(writtenBytes), locked, Trace.now &- started)
        return jobs.reduce(0) { $0 + $1.source.count }
    }

    /// Prewrites until what is left for the flush to write under the lock is small: data
    /// keeps arriving while a prewrite runs (a few rounds at most).
    /// The prewritten data is then made durable, still without the lock: the flush's
    /// barrier under the lock has only its metadata left to wait for.
    private func prewriteBeforeFlush() {
        var prewritten = 0
        do {
            for _ in 0..<8 {
                let bytes = try prewriteDirtyData()
                prewritten += bytes
                if bytes <= 4 << 20 { break }
            }
            if prewritten > 0 { try volumes.synchronize() }
        } catch {
            Trace.record(.prewrite, 0, 0)  // the flush writes the blocks (and waits for them) itself
        }
    }

    /// A flush with its data written first (flushGate held): prewrite, then flush under
    /// the lock — unless writers refilled the dirty data while the prewrite ran (those
    /// waiting for this flush's gate, say), which the flush would then write holding the
    /// lock: prewrite again first, a few rounds at most. `body` runs with the lock held
    /// before the flush (the bulkfree pass notes its trees there).
    func prewriteAndFlushLocked<T>(_ body: () throws -> T) throws -> T {
        var round = 0
        while true {
            prewriteBeforeFlush()
            round += 1
            var flushed: [[UInt64: [UInt8]]] = []
            defer { flushed = [] }  // freed here, without the lock
            let result = try withLock { () -> T? in
                let left = mounted.values.reduce(0) { $0 + $1.unprewrittenByteCount }
                if round < 4 && left > Self.lockedFlushDataBytes { return nil }
                deferFreeingFlushedBlocks = true
                defer {
                    deferFreeingFlushedBlocks = false
                    swap(&flushed, &flushedBlocks)
                }
                return try body()
            }
            if let result { return result }
        }
    }

    /// Dirty data a flush writes under the lock rather than prewriting it once more.
    static let lockedFlushDataBytes = 8 << 20
}
