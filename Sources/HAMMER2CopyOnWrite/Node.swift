// An inode in memory: its last flushed form plus the changes made since (the role of
// DragonFly's hammer2_inode_t and its modified chains). Nodes are only touched with the
// filesystem lock held.

import Glibc
import HAMMER2Engine
import HAMMER2Format

final class Node {
    let inum: UInt64
    var meta: InodeMeta
    var filename: [UInt8]

    // What the last flush left on disk.
    /// The inode's blockref in its parent tree; nil until the inode is first flushed.
    var flushedBref: Blockref?
    /// The embedded data or blockset the on-disk inode holds.
    var flushedContent: InodeContent { didSet { diskNames.forget() } }
    /// Directories: names recently looked up in the on-disk tree and what they found
    /// there, valid until that tree changes (a directory's flush keeps what stays true).
    var diskNames = DiskNameCache()
    /// The file size the on-disk tree was written for.
    var flushedSize: UInt64

    // Changes since the last flush. The PFS keeps counts of changed nodes and dirty blocks
    // (for space checks on every write without visiting every node), so the collections
    // change only through the methods below.
    /// The PFS whose counters this node feeds (nil for the super-root).
    weak var owner: MountedPFS?
    /// The inode itself must be rewritten (metadata, content or both changed).
    var dirty = false {
        didSet {
            if dirty != oldValue { owner?.changedNodes += dirty ? 1 : -1 }
            if dirty { owner?.changedSinceCommit.insert(inum) }
        }
    }
    /// File data: 64 KiB logical blocks by index, whole (zero-filled past what was written).
    private(set) var dirtyBlocks: [UInt64: [UInt8]] = [:]
    /// Dirty blocks already encoded and written to new space outside the lock, waiting for
    /// the flush to reference them (Prewrite.swift); dropped when the block changes again.
    var prewritten: [UInt64: PrewrittenBlock] = [:]
    /// Dirty blocks that arrived encoded (a received stream's stored blocks): the flush and
    /// the prewrite store these bytes instead of encoding the block again, while the dirty
    /// block is still the one they encode (the same array).
    var encodingHints: [UInt64: EncodingHint] = [:]
    /// Dirty blocks that were read from the media to be changed in part: the flush puts
    /// their new content into the block cache, for the next partial write to find.
    var readModifiedBlocks = Set<UInt64>()
    /// On-disk data at or past this offset is dead (a truncation since the last flush).
    var diskLimit: UInt64 = .max
    /// Directories: entries added (an entry) or removed (nil) since the last flush, by key.
    private(set) var entryChanges: [UInt64: DirectoryEntry?] = [:]
    /// Names of the entries added, and the changed keys per hash bucket (key >> 15: the
    /// keys a name can take share them), so lookups do not scan every change.
    private(set) var addedNames: [[UInt8]: UInt64] = [:]
    private(set) var changedKeysByBucket: [UInt64: Set<UInt64>] = [:]
    /// Blocks written since compression last paid off (hammer2's comp_heuristic).
    var compressionHeuristic = 0

    /// Open file handles and kernel references (FUSE lookups); the node stays in memory
    /// while either is non-zero or it is dirty.
    var openCount = 0
    /// Of those, handles open for writing (FileSpace: SEEK_DATA must see the kernel's
    /// dirty pages, which exist only while one is open).
    var writerCount = 0
    /// An O_TMPFILE file not yet given a name: it may be linked although nlinks is 0.
    var linkable = false
    var lookupCount: UInt64 = 0

    init(inum: UInt64, meta: InodeMeta, filename: [UInt8], content: InodeContent, bref: Blockref?, owner: MountedPFS?) {
        self.owner = owner
        self.inum = inum
        self.meta = meta
        self.filename = filename
        self.flushedBref = bref
        self.flushedContent = content
        self.flushedSize = bref == nil ? 0 : meta.size
    }

    var type: ObjectType { meta.type }
    var isDirectory: Bool { meta.type == .directory }

    /// The on-disk inode as the read engine expects it, limited to the data still alive.
    var flushedInode: InodeData {
        var m = meta
        m.size = min(flushedSize, diskLimit)
        return InodeData(meta: m, filename: filename, content: flushedContent)
    }

    /// Whether the next flush has work here. The data of an unlinked file is never written:
    /// it lives in memory until the last close.
    /// Stores the content of logical block `index`. A block may be shorter than 64 KiB:
    /// past its end it reads as zeros (a small file costs its size, not 64 KiB).
    /// `logged`: the intent log takes the whole block as changed; writeData and truncate
    /// pass false and note the bytes they change themselves.
    func setDirtyBlock(_ index: UInt64, _ block: [UInt8], logged: Bool = true) {
        precondition(block.count <= HAMMER2.physicalBufferSize)
        if logged { noteChanged(index * logicalBlockBytes..<(index + 1) * logicalBlockBytes) }
        if let stale = prewritten.removeValue(forKey: index) { owner?.forgetPrewrite(stale) }
        let old = dirtyBlocks.updateValue(block, forKey: index)
        encodingHints.removeValue(forKey: index)
        if old == nil { owner?.dirtyBlockCount += 1 }
        let delta = block.count - (old?.count ?? 0)
        dirtyBytes += delta
        owner?.dirtyByteCount += delta
    }

    /// Writes `bytes` into dirty block `index` at `offset` where it lies, extended with
    /// zeros to at least `count` bytes: no copy of the 64 KiB block per 4 KiB write unless
    /// a prewrite still holds it. False when the block is not dirty.
    func changeDirtyBlock(_ index: UInt64, at offset: Int, to bytes: UnsafeRawBufferPointer, extendingTo count: Int) -> Bool {
        guard let position = dirtyBlocks.index(forKey: index) else { return false }
        owner?.changedSinceCommit.insert(inum)
        precondition(count <= HAMMER2.physicalBufferSize && offset + bytes.count <= count)
        if let stale = prewritten.removeValue(forKey: index) { owner?.forgetPrewrite(stale) }
        let old = dirtyBlocks.values[position].count
        if old < count { dirtyBlocks.values[position] += repeatElement(0, count: count - old) }
        dirtyBlocks.values[position].withUnsafeMutableBytes { block in
            (block.baseAddress! + offset).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        }
        let delta = max(0, count - old)
        dirtyBytes += delta
        owner?.dirtyByteCount += delta
        return true
    }

    func removeDirtyBlocks(from first: UInt64) {
        for index in prewritten.keys where index >= first { owner?.forgetPrewrite(prewritten.removeValue(forKey: index)!) }
        for index in encodingHints.keys where index >= first { encodingHints.removeValue(forKey: index) }
        for index in dirtyBlocks.keys where index >= first {
            let old = dirtyBlocks.removeValue(forKey: index)!
            owner?.dirtyBlockCount -= 1
            dirtyBytes -= old.count
            owner?.dirtyByteCount -= old.count
        }
    }

    /// Returns the blocks it dropped, for a flush to free after it lets go of the lock.
    @discardableResult
    func clearDirtyBlocks() -> [UInt64: [UInt8]] {
        for stale in prewritten.values { owner?.forgetPrewrite(stale) }
        prewritten = [:]
        encodingHints = [:]
        owner?.dirtyBlockCount -= dirtyBlocks.count
        owner?.dirtyByteCount -= dirtyBytes
        dirtyBytes = 0
        readModifiedBlocks = []
        defer { dirtyBlocks = [:] }
        return dirtyBlocks
    }

    /// Records entry `key` as added (`entry`) or removed (nil).
    func setEntryChange(_ key: UInt64, _ entry: DirectoryEntry?) {
        owner?.changedSinceCommit.insert(inum)
        loggedEntryKeys.insert(key)
        if let old = entryChanges[key] ?? nil { addedNames.removeValue(forKey: old.name) }
        entryChanges.updateValue(entry, forKey: key)
        if let entry { addedNames[entry.name] = key }
        changedKeysByBucket[key >> 15, default: []].insert(key)
    }

    func clearEntryChanges() {
        entryChanges = [:]
        addedNames = [:]
        changedKeysByBucket = [:]
    }

    var hasChanges: Bool { dirty || (meta.nlinks > 0 && !dirtyBlocks.isEmpty) || !entryChanges.isEmpty }

    /// Bytes held by dirty data blocks.
    private(set) var dirtyBytes = 0

    // The intent log (IntentLog.swift): what changed since the last commit, reset by a
    // commit that takes the node and by every flush.
    /// File byte ranges changed, sorted and disjoint.
    private(set) var loggedRanges: [Range<UInt64>] = []
    /// The lowest size a truncation left, when one did.
    var loggedLowestSize: UInt64?
    /// Directory entry keys changed (a commit holds only these: creating files one fsync at
    /// a time must not log the directory's every change since the flush each time).
    private(set) var loggedEntryKeys = Set<UInt64>()

    /// Past this many disjoint ranges (random writes all over a file) the node is more than
    /// a commit holds anyway: its ranges are no longer kept, and the next fsync flushes.
    static let loggedRangeLimit = 256
    /// The changes overflowed `loggedRangeLimit`.
    private(set) var loggedOverflow = false

    /// Notes file bytes `range` as changed for the next commit.
    func noteChanged(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        owner?.changedSinceCommit.insert(inum)
        guard !loggedOverflow else { return }
        // Writes mostly extend the last range or add one past it.
        if let last = loggedRanges.last, last.lowerBound <= range.lowerBound {
            if last.upperBound >= range.lowerBound {
                loggedRanges[loggedRanges.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
                return
            }
        } else if loggedRanges.isEmpty {
            loggedRanges.append(range)
            return
        }
        // The first range ending at or past the new one's start, then every range it touches.
        var low = 0, high = loggedRanges.count
        while low < high {
            let middle = (low + high) / 2
            if loggedRanges[middle].upperBound < range.lowerBound { low = middle + 1 } else { high = middle }
        }
        var end = low
        var merged = range
        while end < loggedRanges.count, loggedRanges[end].lowerBound <= merged.upperBound {
            merged = min(merged.lowerBound, loggedRanges[end].lowerBound)..<max(merged.upperBound, loggedRanges[end].upperBound)
            end += 1
        }
        loggedRanges.replaceSubrange(low..<end, with: [merged])
        if loggedRanges.count > Self.loggedRangeLimit {
            loggedOverflow = true
            loggedRanges = []
        }
    }

    func resetLogged() {
        loggedRanges = []
        loggedLowestSize = nil
        loggedEntryKeys = []
        loggedOverflow = false
    }
}

extension InodeMeta {
    /// A new inode's metadata with everything else zero.
    static func fresh(type: ObjectType, inum: UInt64, mode: UInt32, uid: UInt32, gid: UInt32, now: UInt64) -> InodeMeta {
        InodeMeta(version: 1, ctime: now, mtime: now, atime: now, btime: now, uid: .unixID(uid), gid: .unixID(gid),
                  type: type, mode: mode & 0o7777, inum: inum, nlinks: 1)
    }
}

/// Microseconds since the epoch, as HAMMER2 stores times.
public func currentTimeMicroseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec / 1000)
}

extension InodeContent {
    /// The blockset of a tree-holding inode; none for embedded data.
    var blockset: [Blockref] {
        if case let .blockset(refs) = self { return refs }
        return []
    }
}

/// Results of name lookups in a directory's on-disk tree (an entry, or nil for a name not
/// there), so that the LOOKUP the kernel sends before a rename, link, unlink or create and
/// the operation itself walk the tree once. Two generations bound it: the names of the
/// last 8,192 to 16,384 lookups stay.
struct DiskNameCache {
    private static let generation = 8_192
    private var young: [[UInt8]: DirectoryEntry?] = [:]
    private var old: [[UInt8]: DirectoryEntry?] = [:]
    /// Keys taken on disk in recently walked hash buckets (by the bucket's first key).
    private var buckets: [UInt64: [UInt64]] = [:]

    func bucket(_ hash: UInt64) -> [UInt64]? { buckets[hash] }

    mutating func rememberBucket(_ hash: UInt64, _ keys: [UInt64]) {
        if buckets.count >= Self.generation { buckets = [:] }
        buckets[hash] = keys
    }

    /// `.some(entry or nil)` when `name` was looked up since the tree last changed.
    mutating func lookup(_ name: [UInt8]) -> DirectoryEntry?? {
        if let hit = young[name] { return .some(hit) }
        guard let hit = old[name] else { return nil }
        remember(name, hit)
        return .some(hit)
    }

    mutating func remember(_ name: [UInt8], _ entry: DirectoryEntry?) {
        young[name] = .some(entry)
        if young.count >= Self.generation {
            old = young
            young = [:]
        }
    }

    /// What stays true once the entry changes at `changedKeys` (names `addedNames` among
    /// them) are in the on-disk tree: every other name found, or not found, as before.
    func keeping(changedKeys: Set<UInt64>, addedNames: Dictionary<[UInt8], UInt64>.Keys) -> DiskNameCache {
        var kept = self
        kept.buckets = [:]  // kept only from a lookup to the change that follows it
        if changedKeys.isEmpty || young.count + old.count == 0 { return kept }
        if changedKeys.count > young.count + old.count { return DiskNameCache() }  // cheaper to look up again
        func stays(_ name: [UInt8], _ entry: DirectoryEntry?) -> Bool { entry.map { !changedKeys.contains($0.key) } ?? true }
        kept.young = young.filter { stays($0.key, $0.value) }
        kept.old = old.filter { stays($0.key, $0.value) }
        for name in addedNames {
            kept.young[name] = nil
            kept.old[name] = nil
        }
        return kept
    }

    mutating func forget() {
        if !young.isEmpty || !old.isEmpty || !buckets.isEmpty {
            young = [:]
            old = [:]
            buckets = [:]
        }
    }
}
