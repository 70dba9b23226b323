// A HAMMER2 filesystem opened for writing: the last flushed state on disk plus the changes
// made in memory since, which the next flush writes copy-on-write.
//
// Every operation takes one lock (`withLock`). Reads of clean file data drop it before
// touching the disk: blocks reachable from the last flush are never overwritten while the
// filesystem is open (nothing is freed except by bulkfree, which waits for such reads before it frees), and every
// block read is verified against its check code anyway.

import Glibc
import Foundation
import Synchronization
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format

public final class MutableFilesystem: @unchecked Sendable {
    public let volumes: VolumeSet
    public let reader: BlockReader
    public let readOnly: Bool
    private let lock = NSRecursiveLock()
    /// Held by a flush from its prewrite to its end, so that one flush runs at a time and
    /// writers past the dirty limit wait for it. Lock order: flushGate, then lock.
    let flushGate = NSLock()
    /// Wakes the background flusher early (a stream past a quarter of the dirty limit); coalesced.
    private let flushRequest = DispatchSemaphore(value: 0)
    private let flushRequested = Atomic<Bool>(false)
    /// Told when an operation starts (+1) and stops (-1) waiting for a flush (its own or
    /// one running): the FUSE layer then serves other requests on more threads.
    public var waitingForFlush: (@Sendable (Int32) -> Void)?
    /// The prewrite's write buffers (used under `flushGate`).
    lazy var prewriteSink = FlushSink(fs: self)
    /// Dirty file data as of the last write or flush, for writers to read without the lock.
    let dirtyEstimate = Atomic<Int>(0)
    /// The dirty blocks a flush wrote, freed once the flush lets go of the lock when
    /// `deferFreeingFlushedBlocks` (a flush's 200 MiB took 3 ms to free). Protected by `lock`.
    var flushedBlocks: [[UInt64: [UInt8]]] = []
    var deferFreeingFlushedBlocks = false
    /// Writers copying data at once: one per core. More only add runnable threads that
    /// take the processors from the thread holding the lock (a lookup preempted with it
    /// held kept every operation waiting for milliseconds while a stream wrote).
    let writerSlots = DispatchSemaphore(value: max(1, ProcessInfo.processInfo.activeProcessorCount))

    // Protected by `lock`.
    var header: VolumeHeader
    var headerSlot: Int
    var allocator: FreemapAllocator
    var superRoot: Node
    var superRootBref: Blockref
    var mounted: [String: MountedPFS] = [:]
    /// PFS roots to add to, and keys to remove from, the super-root at the next flush.
    var pendingRoots: [PendingPFSRoot] = []
    var pendingRootRemovals = Set<UInt64>()
    /// scrypt's log2(N) for keys wrapped from now on (tests lower it to save time).
    public var keyDerivationCost = KeyRecord.defaultLog2N
    /// The naming scheme of encryption roots created from now on (PFSKeys.scheme): the
    /// current one; 1 makes PFSes as versions before scheme 2 did (compatibility tests).
    public var encryptionScheme = PFSKeys.currentScheme
    /// Called after a flush made a newly signed encrypted PFS root durable (label, its
    /// metadata with the generation): mount_hammer2 keeps the host's rollback state.
    public var rootSigned: (@Sendable (String, InodeMeta) -> Void)?
    /// Dirty file data held in memory; a flush starts when it passes `dirtyLimit`.
    public var dirtyLimit = 256 << 20
    /// Called with a description when a background flush fails (the FUSE adapter logs it).
    public var flushFailureHandler: (@Sendable (String) -> Void)?
    var flushCount = 0
    /// Reads executing outside the lock against the last flushed tree; bulkfree waits for
    /// them, since the blocks they read may be about to be freed and reused.
    let readsInFlight = Atomic<Int>(0)

    // The intent log (IntentLog.swift): its place and base (under `lock`), one commit at
    // a time, what the open's replay did.
    var intentLog: IntentLogState
    let intentLogLock = NSLock()
    let intentLogStatistics = Mutex(IntentLogStatistics())
    /// fsync through the log (mount -o fsync=log, the default); false: fsync flushes.
    public var intentLogEnabled = true
    /// Where the log's problems are reported (stderr without it).
    public var intentLogLogger: (@Sendable (String) -> Void)?
    /// What opening did with a log it found: replayed it, or why not (read-only, damaged).
    public internal(set) var intentLogReplay: IntentLogReplay?
    var intentLogReplayDeferred = false

    // Reclaim (Reclaim.swift): one bulkfree pass at a time, the background reclaimer's
    // state and policy, and the condition writers waiting for space sleep on.
    let passLock = NSLock()
    let reclaimState = Mutex(ReclaimState())
    let reclaimPolicy = Mutex(ReclaimPolicy())
    let reclaimSignal = NSCondition()
    let reclaimerStarted = Atomic<Bool>(false)

    /// Opens the filesystem on `paths` (one device, or the devices of a volume set);
    /// `degraded` lets volumes of a set be missing (read-only: docs/copies.md).
    /// `copyLogger` receives repairs of bad copies and lost blocks from the first read on
    /// (the freemap is read while opening); stderr without it.
    public convenience init(paths: [String], writable: Bool, cacheBytes: Int = 64 << 20, degraded: Bool = false,
                            copyLogger: (@Sendable (String) -> Void)? = nil) throws {
        let volumes = try VolumeSet(paths: paths, writable: writable, degraded: degraded)
        if writable && !volumes.missingVolumes.isEmpty {
            throw EngineError.posix(EROFS, "volume set with missing volumes \(volumes.missingVolumes) opens read-only (-o ro,degraded)")
        }
        try self.init(volumes: volumes, readOnly: !writable, cacheBytes: cacheBytes, copyLogger: copyLogger)
    }

    public init(volumes: VolumeSet, readOnly: Bool, cacheBytes: Int = 64 << 20,
                copyLogger: (@Sendable (String) -> Void)? = nil) throws {
        self.volumes = volumes
        self.readOnly = readOnly
        self.reader = BlockReader(volumes: volumes, cacheBytes: cacheBytes)
        reader.copyEvents.setLogger(copyLogger)
        self.header = volumes.header
        self.headerSlot = volumes.volumes[0].headerIndex
        if readOnly && !volumes.missingVolumes.isEmpty {
            // Reading needs no freemap, and a degraded set may miss the volume holding a
            // leaf (and its copies, which stay in the reserved area they describe).
            self.allocator = FreemapAllocator(volumeSize: volumes.totalSize, allocatorBegin: volumes.header.allocatorBegin,
                                              freeBytes: volumes.header.allocatorFree)
        } else {
            self.allocator = try FreemapAllocator(header: volumes.header, volumeSize: volumes.totalSize, reader: reader)
        }
        allocator.volumeRanges = volumes.volumes.map { $0.logicalOffset..<($0.logicalOffset + $0.size) }
        let (bref, inode) = try reader.superRoot()
        guard inode.meta.type == .directory else {
            throw EngineError.corrupt("super-root inode is a \(inode.meta.type), not a directory")
        }
        superRootBref = bref
        superRoot = Node(inum: 0, meta: inode.meta, filename: inode.filename, content: inode.content, bref: bref, owner: nil)
        let logChunks = readOnly ? [] : IntentLogArea.chunks(volumeSize: volumes.volumes[0].size)
        intentLog = IntentLogState(base: bref.mirrorTID, chunks: logChunks, usable: !logChunks.isEmpty)
        intentLogLogger = copyLogger
        if !readOnly, let problem = Self.unsupportedForWriting(volumes.header) {
            throw EngineError.posix(EROFS, problem)
        }
        if readOnly {
            // Replayed in memory only: what fsync made durable is seen, nothing is written.
            if volumes.missingVolumes.isEmpty { try replayIntentLog(flushing: false) }
        } else if volumes.headerRollback != nil {
            // The replay's flush would overwrite the damaged header copy: it waits for the
            // consent mount_hammer2 asks for (-o rollback-ok), replayDeferredIntentLog.
            intentLog.usable = false
            intentLogReplayDeferred = true
        } else {
            try replayIntentLog()
            try prepareIntentLogArea()
        }
    }

    /// The replay an open left for later (a damaged header copy), once writing is agreed.
    public func replayDeferredIntentLog() throws {
        guard intentLogReplayDeferred else { return }
        intentLogReplayDeferred = false
        intentLog.usable = !intentLog.chunks.isEmpty
        try replayIntentLog()
        try prepareIntentLogArea()
    }

    /// The super-root itself has changes (PFSes created, deleted or snapshotted).
    var superRootChanged: Bool { superRoot.hasChanges || !pendingRoots.isEmpty || !pendingRootRemovals.isEmpty }

    /// Volumes this implementation must not write to (it would damage them).
    static func unsupportedForWriting(_ header: VolumeHeader) -> String? {
        if header.version > HAMMER2.volumeVersionCopies {
            return "volume version \(header.version) is newer than this implementation writes"
        }
        return nil
    }

    /// Runs `body` with the filesystem lock held.
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    // MARK: PFSes

    /// The PFS roots under the super-root, by label, as last flushed or changed since.
    func pfsRootBrefs() throws -> [(label: String, bref: Blockref)] {
        var result: [(String, Blockref)] = []
        try BlockTree(reader: reader).forEachLeaf(in: superRoot.flushedContent.blockset, from: 0, through: .max) { bref in
            guard bref.type == .inode else { return true }
            let inode = try reader.inode(bref)
            result.append((String(decoding: inode.filename, as: UTF8.self), bref))
            return true
        }
        return result
    }

    /// Opens the PFS labelled `label` for use (mounting it).
    public func openPFS(_ label: String) throws -> PFSHandle {
        try withLock { PFSHandle(fs: self, pfs: try mountedPFS(label)) }
    }

    /// The PFS labelled `label` in use, opened from the last flushed tree if it is not yet
    /// (with the lock held). An encrypted PFS opens only unlocked (unlockPFS).
    func mountedPFS(_ label: String) throws -> MountedPFS {
        if let pfs = mounted[label] { return pfs }
        guard let (bref, inode) = try Filesystem.findPFS(label, in: superRoot.flushedContent.blockset, reader: reader) else {
            throw EngineError.pfsNotFound(label: label, available: (try? pfsRootBrefs().map(\.label)) ?? [])
        }
        let pfs = MountedPFS(label: label, reader: reader, rootBref: bref, root: inode)
        try pfs.disk.requireKey()
        mounted[label] = pfs
        return pfs
    }

    /// A PFS's mount ended while others of the volume stay mounted: its changes are
    /// flushed and it is no longer open (so it can be deleted, or mounted again).
    public func closePFS(_ label: String) throws {
        try withLock {
            guard mounted[label] != nil else { return }
            if !readOnly { try flushLocked() }
            mounted[label] = nil
        }
    }

    /// Asks the background flusher (the daemon's flush timer) to flush now.
    func requestFlush() {
        if !flushRequested.exchange(true, ordering: .acquiringAndReleasing) { flushRequest.signal() }
    }

    /// The background flusher's wait: until `seconds` pass or a writer asks for a flush;
    /// true when a writer asked.
    @discardableResult
    public func waitForFlushRequest(seconds: Double) -> Bool {
        let asked = flushRequest.wait(timeout: .now() + seconds) == .success
        flushRequested.store(false, ordering: .releasing)
        return asked
    }

    /// Whether a PFS is open (mounted).
    public func isOpen(_ label: String) -> Bool { withLock { mounted[label] != nil } }

    // MARK: Space

    /// Bytes the next flush will need at most for what is dirty now (data uncompressed,
    /// plus metadata, each times the most copies in use), so a write that would not fit
    /// fails with ENOSPC up front.
    var pendingBytes: UInt64 {
        var bytes: UInt64 = 0
        let dataCopies = UInt64(volumeCopies), metadataCopies = UInt64(sharedMetadataCopies)
        for pfs in mounted.values {
            // Blocks are stored at most as large as they are in memory, rounded up to 1 KiB.
            bytes += (UInt64(pfs.dirtyByteCount) + UInt64(pfs.dirtyBlockCount) * 1024) * dataCopies
                + UInt64(pfs.changedNodes + 1) * 4096 * metadataCopies
        }
        return bytes + bytes / 16
    }

    /// Space new data and new inodes may not take (hammer2_vfsops.c's free_reserved: 1/20
    /// of the volume), so that a "full" volume can still flush the metadata of deletions,
    /// renames and bulkfree; at least what a flush's metadata needs.
    var reserveBytes: UInt64 { Self.reserve(volumeSize: allocator.volumeSize, metadataCopies: sharedMetadataCopies) }

    /// Changed inodes held in memory before a flush writes them (as `dirtyLimit` bounds
    /// dirty data): creating a million files must not hold a million nodes until the timer.
    /// A quarter of it asks the background flusher, so that the operation that reaches the
    /// limit rarely has to flush itself.
    public var changedNodeLimit = 8192

    /// Whether `more` bytes of new data still fit; flushes first when it is close, or when
    /// too many inodes have changes (every namespace change passes here).
    func ensureSpace(for more: UInt64) throws {
        let changed = mounted.values.reduce(0, { $0 + $1.changedNodes })
        if changed > changedNodeLimit {
            try flushLocked(midOperation: true)
        } else if changed > changedNodeLimit / 4 {
            requestFlush()
        }
        if allocator.freeBytes >= pendingBytes + more + reserveBytes { return }
        try flushLocked(midOperation: true)
        guard allocator.freeBytes >= pendingBytes + more + reserveBytes else {
            throw EngineError.posix(ENOSPC, "volume full")
        }
    }

    public struct SpaceUsage: Sendable {
        public var totalBytes: UInt64
        public var freeBytes: UInt64
        /// Inodes in the mounted PFSes as of the last flush.
        public var inodeCount: UInt64
    }

    public func spaceUsage() -> SpaceUsage {
        withLock {
            // As DragonFly's statfs: the reserve is not free space for users.
            let held = pendingBytes + reserveBytes
            let free = allocator.freeBytes > held ? allocator.freeBytes - held : 0
            let inodes = mounted.values.reduce(UInt64(0)) { $0 + $1.rootBref.statsInodeCount }
            return SpaceUsage(totalBytes: header.allocatorSize, freeBytes: free, inodeCount: inodes)
        }
    }

    /// Dirty file data in memory.
    var dirtyDataBytes: Int {
        mounted.values.reduce(0) { $0 + $1.dirtyByteCount }
    }

    /// Dirty file data and inodes held in memory (the trace's gauges, once a second).
    public var memoryGauges: (dirtyBytes: Int, inodes: Int) {
        withLock { (dirtyDataBytes, mounted.values.reduce(0) { $0 + $1.nodes.count }) }
    }

    public var hasChanges: Bool {
        withLock { superRootChanged || mounted.values.contains { $0.hasChanges } }
    }
}

/// A PFS that is in use: its root directory (which also holds the inode index) and the
/// inodes held in memory.
final class MountedPFS {
    let label: String
    let reader: BlockReader
    /// The read engine's view of the last flushed state.
    var disk: PFS
    /// An encrypted PFS's keys (the mount requires them).
    var keys: PFSKeys? { disk.keys }
    var rootBref: Blockref
    let root: Node
    var nodes: [UInt64: Node] = [:]
    /// Nodes with changes to flush, and dirty 64 KiB data blocks, kept by the nodes.
    var changedNodes = 0
    var dirtyBlockCount = 0
    var dirtyByteCount = 0
    /// Space written by prewrites that no flushed tree references yet (offset -> bytes): a
    /// bulkfree pass must keep it (Prewrite.swift).
    var prewriteSpace: [UInt64: UInt64] = [:]
    /// Dirty bytes already prewritten: the rest is what a flush would write under the lock.
    var prewrittenByteCount = 0
    /// Inodes to take out of the index at the next flush without reading them (destroy-inum).
    var destroyedInodes = Set<UInt64>()
    /// The next inode number to hand out (pmp->inode_tid).
    var nextInodeNumber: UInt64
    /// An encrypted PFS's wrapped key, written back with its root inode.
    var keyRecord: [UInt8]?
    /// Inodes changed since the last intent-log commit or flush (IntentLog.swift).
    var changedSinceCommit = Set<UInt64>()

    init(label: String, reader: BlockReader, rootBref: Blockref, root: InodeData) {
        self.label = label
        self.keyRecord = root.keyRecord
        self.reader = reader
        self.rootBref = rootBref
        self.disk = PFS(name: label, reader: reader, rootBref: rootBref, root: root)
        self.root = Node(inum: PFS.rootInodeNumber, meta: root.meta, filename: root.filename,
                         content: root.content, bref: rootBref, owner: nil)
        nextInodeNumber = max(root.meta.pfsInum + 1, HAMMER2.inodeStart)
        self.root.owner = self
        nodes[PFS.rootInodeNumber] = self.root
    }

    /// hammer2_trans_newinum; the PFS root records the next number at flush (pfs_inum).
    func allocateInodeNumber() -> UInt64 {
        let inum = nextInodeNumber
        nextInodeNumber += 1
        root.meta.pfsInum = nextInodeNumber
        root.dirty = true
        return inum
    }

    /// Drops a node whatever its state (its changes are discarded).
    func forget(_ inum: UInt64) {
        guard let node = nodes.removeValue(forKey: inum) else { return }
        node.clearDirtyBlocks()
        node.clearEntryChanges()
        node.dirty = false
    }

    /// Clean nodes kept before they are dropped: a node is 1-2 KiB, so this bounds them to a
    /// few MiB beside the block cache (which keeps their inode blocks) whatever the number
    /// of files a walk visits (docs/benchmarks.md, "Memory").
    static let cleanNodeLimit = 4096

    /// Node count past which clean nodes are dropped; raised while most nodes are changed or
    /// open, so that operations do not scan them all each time.
    private var dropThreshold = MountedPFS.cleanNodeLimit

    /// Drops clean nodes once many are held (a long listing, a tree walk or creating many
    /// files loads or makes an inode per name; flushes inside operations keep theirs).
    func dropCleanNodesIfMany() {
        guard nodes.count > dropThreshold else { return }
        dropCleanNodes()
        dropThreshold = max(Self.cleanNodeLimit, nodes.count + Self.cleanNodeLimit / 2)
    }

    /// Removes directory entry `entry` (naming `target`) from `dir`.
    func removeName(_ entry: DirectoryEntry, from dir: Node, target: Node) {
        let now = currentTimeMicroseconds()
        removeEntry(dir, entry)
        dir.meta.mtime = now
        dir.meta.ctime = now
        dir.dirty = true
        target.meta.nlinks = target.isDirectory ? 0 : max(target.meta.nlinks, 1) - 1
        target.meta.ctime = now
        target.dirty = true
        if target.meta.nlinks == 0 && target.openCount == 0 { target.clearDirtyBlocks() }
    }

    var hasChanges: Bool { changedNodes > 0 || nodes.values.contains { $0.hasChanges } }

    /// The in-memory node for `inum`, loaded from the last flushed state if needed.
    func node(_ inum: UInt64) throws -> Node {
        if let node = nodes[inum] { return node }
        if destroyedInodes.contains(inum) { throw EngineError.notFound }
        let record = try disk.record(inum, remembering: false)  // the node is the cache
        let node = Node(inum: inum, meta: record.meta, filename: record.data.filename,
                        content: record.data.content, bref: record.bref, owner: self)
        nodes[inum] = node
        return node
    }

    /// Forgets clean nodes nobody holds open, so memory does not grow with the file count.
    func dropCleanNodes() {
        for (inum, node) in nodes where inum != PFS.rootInodeNumber && !node.hasChanges && node.openCount == 0 {
            nodes.removeValue(forKey: inum)
        }
    }
}

extension MutableFilesystem {
    /// hammer2 dumpchain: the in-memory state (DragonFly dumps its chain topology to the
    /// console): the last flushed header, the freemap, and per PFS its nodes in memory —
    /// every node when `all`, else those with changes.
    public func debugDump(all: Bool) -> [String] {
        withLock {
            var lines = ["volume mirror_tid=0x\(String(header.mirrorTID, radix: 16)) header slot \(headerSlot)"
                         + " allocator_free=\(allocator.freeBytes) flushes=\(flushCount)"]
            let copies = reader.copyEvents
            lines.append("copies volume_ncopies=\(volumeCopies) bad=\(copies.badCopies) repaired=\(copies.repaired)"
                         + " not_repaired=\(copies.notRepaired) lost=\(copies.lostBlocks)")
            for label in mounted.keys.sorted() {
                let pfs = mounted[label]!
                lines.append("pfs \(label) root data_off=0x\(String(pfs.rootBref.dataOffset, radix: 16))"
                             + " nodes=\(pfs.nodes.count) changed=\(pfs.changedNodes) dirty_blocks=\(pfs.dirtyBlockCount)"
                             + " dirty_bytes=\(pfs.dirtyByteCount) next_inum=\(pfs.nextInodeNumber)")
                for inum in pfs.nodes.keys.sorted() {
                    let node = pfs.nodes[inum]!
                    guard all || node.hasChanges else { continue }
                    lines.append("  inode \(inum) \(node.type) size=\(node.meta.size) nlinks=\(node.meta.nlinks)"
                                 + " dirty=\(node.dirty) blocks=\(node.dirtyBlocks.count) entries=\(node.entryChanges.count)"
                                 + " open=\(node.openCount)"
                                 + (node.flushedBref.map { " data_off=0x\(String($0.dataOffset, radix: 16))" } ?? " new"))
                }
            }
            return lines
        }
    }
}
