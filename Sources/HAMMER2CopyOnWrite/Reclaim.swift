// bulkfree as a pass that runs beside the mount (issue 20), and the reclaimer that starts
// passes by itself when copy-on-write has left enough behind.
//
// A pass: (1) with the lock, flush and note the trees of the last flushed state, and start
// recording the blocks allocated from then on; (2) without the lock, walk those trees and
// mark every 16 KiB block they reference in a bitmap (one bit per block: 8 MiB for 1 TiB)
// — they cannot change, since nothing is overwritten and only a pass frees, one at a time;
// (3) with the lock again, once no read is in flight, rebuild the freemap: a block stays
// allocated if the scan found it or it was allocated since (1), every other block is freed,
// and the new header goes to every header copy (no older copy may point at freed space).
// Anything in use at (3) was either in the flushed state of (1) or allocated after it, so
// nothing in use is freed. DragonFly reaches the same end with two passes (11 -> 10 -> 00)
// because it cannot tell what was allocated during its scan; recording it lets one pass
// free directly, and the freemap it writes is the one DragonFly's would converge to.

import Foundation
import Glibc
import HAMMER2Engine
import HAMMER2Format
import HAMMER2Trace
import Synchronization

/// One bit per 16 KiB block of the volume.
struct BlockBitmap: Sendable {
    private var words: [UInt64]
    let blocks: UInt64

    init(blocks: UInt64) {
        self.blocks = blocks
        words = [UInt64](repeating: 0, count: Int((blocks + 63) / 64))
    }

    /// Marks `block`; returns whether it was not marked before. Blocks past the end are
    /// ignored (and read as marked).
    @discardableResult
    mutating func insert(_ block: UInt64) -> Bool {
        guard block < blocks else { return false }
        let (word, bit) = (Int(block / 64), block % 64)
        let old = words[word]
        words[word] = old | (1 << bit)
        return old & (1 << bit) == 0
    }

    func contains(_ block: UInt64) -> Bool {
        guard block < blocks else { return true }
        return words[Int(block / 64)] & (1 << (block % 64)) != 0
    }

    mutating func formUnion(_ other: BlockBitmap) {
        for i in 0..<min(words.count, other.words.count) { words[i] |= other.words[i] }
    }

    /// The marked blocks, in order.
    func forEach(_ body: (UInt64) -> Void) {
        for (i, word) in words.enumerated() where word != 0 {
            var rest = word
            while rest != 0 {
                body(UInt64(i) * 64 + UInt64(rest.trailingZeroBitCount))
                rest &= rest - 1
            }
        }
    }
}

extension MutableFilesystem {
    /// Runs one bulkfree pass (waiting for one already running to end first); `progress`
    /// is told the blockrefs scanned so far now and then. The mount keeps serving while
    /// the pass scans.
    public func bulkfree(progress: ((Int) -> Void)? = nil) throws -> BulkfreeResult {
        try bulkfree(automatic: false, progress: progress)
    }

    func bulkfree(automatic: Bool, progress: ((Int) -> Void)? = nil) throws -> BulkfreeResult {
        guard !readOnly else { throw EngineError.posix(EROFS, "bulkfree needs a read-write filesystem") }
        passLock.lock()
        defer { passLock.unlock() }
        let started = Trace.now
        Trace.record(.bulkfreeStart, volumes.totalSize, automatic ? 1 : 0)
        do {
            let result = try runPass(progress: progress)
            Trace.record(.bulkfreeEnd, result.freedBytes, UInt64(result.blockrefsScanned), Trace.now &- started)
            Trace.withSession { $0.reclaimed(bytes: result.freedBytes, automatic: automatic) }
            reclaimState.withLock { state in
                state.passes += 1
                state.liveBytes = result.referencedBytes
            }
            return result
        } catch {
            Trace.record(.bulkfreeEnd, 0, 0, Trace.now &- started, UInt64((error as? EngineError)?.errno ?? EIO))
            throw error
        }
    }

    private func runPass(progress: ((Int) -> Void)?) throws -> BulkfreeResult {
        // (1) The trees to scan, and from now on a record of new allocations.
        // Its flush is an ordinary one: the dirty data is written first without the lock
        // (Prewrite.swift), so that operations do not wait while a stream's data is written.
        let (roots, blocks, begin) = try flushGate.withLock {
            try prewriteAndFlushLocked { () -> ([[Blockref]], UInt64, UInt64) in
                // A full volume may not take its dirty data; unflushed data owns no blocks.
                do { try flushLocked() } catch let error as EngineError where error.errno == ENOSPC {}
                let blocks = (volumes.totalSize + FreemapAllocator.blockBytes - 1) / FreemapAllocator.blockBytes
                allocator.allocatedDuringScan = BlockBitmap(blocks: blocks)
                allocator.bytesAllocatedSinceReclaim = 0
                return (referencedRoots(), blocks, header.allocatorBegin)
            }
        }
        var abandoned = true
        defer {
            if abandoned { withLock { allocator.allocatedDuringScan = nil } }
        }
        // (2) The scan, without the lock.
        var result = BulkfreeResult()
        var referenced = BlockBitmap(blocks: blocks)
        var linearEnds: [UInt64: UInt64] = [:]  // segment -> end of its highest sub-16 KiB block
        result.blockrefsScanned = try Self.forEachReferencedBlock(in: roots, reader: reader, volumeEnd: volumes.totalSize, progress: { scanned in
            progress?(scanned)
            Trace.record(.bulkfreeProgress, UInt64(scanned), result.referencedBytes)
        }) { _, offset, bytes in
            guard offset >= begin else { return }
            var block = offset / FreemapAllocator.blockBytes
            let last = (offset + bytes - 1) / FreemapAllocator.blockBytes
            while block <= last {
                if referenced.insert(block) { result.referencedBytes += FreemapAllocator.blockBytes }
                block += 1
            }
            if bytes < FreemapAllocator.blockBytes {
                let segment = offset / FreemapAllocator.segmentBytes
                linearEnds[segment] = max(linearEnds[segment] ?? 0, offset + bytes - segment * FreemapAllocator.segmentBytes)
            }
        }
        progress?(result.blockrefsScanned)
        // (3) Apply: what the scan found plus what was allocated since stays.
        try withLock {
            // Reads started before the lock was taken may still use blocks about to be freed.
            while readsInFlight.load(ordering: .relaxed) > 0 { usleep(1000) }
            if let allocated = allocator.allocatedDuringScan {
                referenced.formUnion(allocated)
                // Small blocks (inodes, names) allocated during the scan may sit after the
                // last small block the scan saw in the same 16 KiB block: in their segments
                // `linear` goes past the whole block, or the next allocation would reuse them.
                allocated.forEach { linearEnds.removeValue(forKey: $0 * FreemapAllocator.blockBytes / FreemapAllocator.segmentBytes) }
            }
            // Space prewritten for the next flush (Prewrite.swift) is referenced by no tree yet.
            for pfs in mounted.values {
                for (offset, bytes) in pfs.prewriteSpace where offset >= begin {
                    var block = offset / FreemapAllocator.blockBytes
                    while block <= (offset + bytes - 1) / FreemapAllocator.blockBytes {
                        if referenced.insert(block) { result.referencedBytes += FreemapAllocator.blockBytes }
                        linearEnds.removeValue(forKey: block * FreemapAllocator.blockBytes / FreemapAllocator.segmentBytes)
                        block += 1
                    }
                }
            }
            allocator.allocatedDuringScan = nil
            abandoned = false
            let saved = allocator
            let before = allocator.freeBytes
            result.repairedBlocks = allocator.rebuild(referenced: referenced, linearEnds: linearEnds)
            result.freedBytes = allocator.freeBytes > before ? allocator.freeBytes - before : 0
            reader.cache.removeAll()  // freed offsets will hold new blocks
            do {
                try commitFreemapLocked(allHeaderCopies: true)
            } catch {
                allocator = saved  // nothing freed: the old freemap is still the one on disk
                throw error
            }
            // Counted with the lock, as the space is freed: a writer that found the volume
            // full before this point sees it when it asks (waitForReclaim(since:)).
            let freed = result.freedBytes
            reclaimState.withLock { $0.freedBytes &+= freed }
        }
        return result
    }
}

// MARK: The reclaimer

/// When the reclaimer starts a pass by itself, and how long a writer waits for one.
public struct ReclaimPolicy: Sendable {
    /// A pass starts once copy-on-write has allocated at least this fraction of the volume
    /// since the last pass began (what it may have left behind; less is not worth a
    /// scan), and either free space is under `freeFraction` of the volume or the
    /// allocations reached `liveFraction` of what the last pass found in use: so used
    /// space stays under about (1 + liveFraction) times the live data.
    public var garbageFraction = 0.05
    public var freeFraction = 0.25
    public var liveFraction = 0.5
    /// A writer that meets a full volume while a pass may free space waits this long.
    public var writerWaitSeconds = 60.0

    public init() {}
}

/// What the reclaimer did (hammer2 stat, the trace).
struct ReclaimState: Sendable {
    var passes = 0
    var freedBytes: UInt64 = 0
    /// Bytes the last pass found referenced (before the first: what was allocated at mount).
    var liveBytes: UInt64 = 0
    /// A pass is wanted (the policy said so, or a writer is waiting).
    var requested = false
    var running = false
    /// Completed passes, for writers waiting for the next one.
    var generation = 0
    var stopping = false
}

extension MutableFilesystem {
    /// Starts the background reclaimer of a read-write mount: it checks the policy after
    /// every flush and when a writer finds the volume full, and runs passes on its own
    /// thread.
    public func startReclaimer(_ policy: ReclaimPolicy = ReclaimPolicy()) {
        guard !readOnly else { return }
        reclaimPolicy.withLock { $0 = policy }
        let allocated = withLock { allocator.volumeSize - min(allocator.volumeSize, allocator.freeBytes) }
        reclaimState.withLock { $0.liveBytes = allocated }
        let thread = Thread { [self] in
            while true {
                reclaimSignal.lock()
                while !reclaimState.withLock({ $0.requested || $0.stopping }) { reclaimSignal.wait() }
                reclaimSignal.unlock()
                if reclaimState.withLock({ $0.stopping }) { return }
                reclaimState.withLock { $0.requested = false; $0.running = true }
                do {
                    _ = try bulkfree(automatic: true)
                } catch {
                    flushFailureHandler?("automatic bulkfree failed: \(error)")
                }
                reclaimSignal.lock()
                reclaimState.withLock { $0.running = false; $0.generation += 1 }
                reclaimSignal.broadcast()
                reclaimSignal.unlock()
            }
        }
        thread.name = "hammer2 reclaim"
        thread.start()
        reclaimerStarted.store(true, ordering: .relaxed)
    }

    /// Ends the reclaimer after the pass it may be running (unmount).
    public func stopReclaimer() {
        reclaimSignal.lock()
        reclaimState.withLock { $0.stopping = true }
        reclaimSignal.broadcast()
        reclaimSignal.unlock()
        passLock.lock()  // a pass in flight ends first
        passLock.unlock()
    }

    /// Whether copy-on-write left enough behind that a pass is worth it now (called with
    /// the lock held, after a flush).
    func reclaimIfWorthIt() {
        guard reclaimerStarted.load(ordering: .relaxed) else { return }
        // Not from a pass's own flush (a manual bulkfree would queue a second pass behind
        // itself): the pass in progress is about to free what there is.
        guard passLock.try() else { return }
        passLock.unlock()
        let policy = reclaimPolicy.withLock { $0 }
        let size = Double(allocator.volumeSize), garbage = Double(allocator.bytesAllocatedSinceReclaim)
        let live = Double(reclaimState.withLock { $0.liveBytes })
        guard garbage >= size * policy.garbageFraction,
              Double(allocator.freeBytes) < size * policy.freeFraction || garbage >= live * policy.liveFraction else { return }
        requestReclaim()
    }

    private func requestReclaim() {
        reclaimSignal.lock()
        reclaimState.withLock { if !$0.running { $0.requested = true } }
        reclaimSignal.broadcast()
        reclaimSignal.unlock()
    }

    /// Bytes freed by passes so far, for `waitForReclaim(since:)`.
    var reclaimedBytesMark: UInt64 { reclaimState.withLock { $0.freedBytes } }

    /// A writer found the volume full (ENOSPC from ensureSpace) after reading
    /// `reclaimedBytesMark` as `mark`: returns the bytes passes freed since then, so the
    /// writer can try again — at once when a pass freed space meanwhile (another writer's:
    /// it may have finished between the failure and this call); otherwise, if a pass could
    /// free space — copy-on-write has allocated since the last one began, or one is
    /// running — starts one and waits for it (called without the lock). nil when no pass
    /// can help or the wait timed out.
    func waitForReclaim(since mark: UInt64) -> UInt64? {
        guard reclaimerStarted.load(ordering: .relaxed) else { return nil }
        // In this order: a pass that has not freed yet when `worthIt` is read is running
        // (allocatedDuringScan is set, with the lock, until it frees, with the lock).
        let worthIt = withLock { allocator.bytesAllocatedSinceReclaim > 0 || allocator.allocatedDuringScan != nil }
        let freedSince = reclaimedBytesMark &- mark
        if freedSince > 0 { return freedSince }
        guard worthIt else { return nil }
        let wait = reclaimPolicy.withLock { $0.writerWaitSeconds }
        reclaimSignal.lock()
        defer { reclaimSignal.unlock() }
        // The pass running now, or the next one: what it frees may be enough (the writer
        // then retries, and waits again while passes still find something).
        let start = reclaimState.withLock { state -> Int in
            if !state.running { state.requested = true }
            return state.generation
        }
        reclaimSignal.broadcast()
        Trace.withSession { $0.waitedForSpace() }
        let deadline = Date().addingTimeInterval(wait)
        while reclaimState.withLock({ $0.generation <= start && !$0.stopping }) {
            if !reclaimSignal.wait(until: deadline) { return nil }
        }
        return reclaimState.withLock { $0.stopping ? nil : $0.freedBytes &- mark }
    }

    /// A flush (the periodic one, the last one at unmount) that, when the volume is full,
    /// runs a bulkfree pass and tries once more: copy-on-write garbage must not cost the
    /// data waiting in memory.
    public func flushReclaimingIfFull() throws {
        do {
            try flush()
        } catch let error as EngineError where error.errno == ENOSPC && !readOnly {
            _ = try bulkfree(automatic: true)
            try flush()
        }
    }

    /// Passes run, bytes they freed (hammer2 stat).
    public var reclaimStatistics: (passes: Int, freedBytes: UInt64, running: Bool) {
        reclaimState.withLock { ($0.passes, $0.freedBytes, $0.running) }
    }
}
