// Copy-on-write edits of a block tree (hammer2_chain_create/_delete/_create_indirect and
// hammer2_chain_indirect_maintenance, done functionally at flush time).
//
// A tree is the blockset of an inode (or of the volume header) over INDIRECT blocks. An edit
// removes leaves in key ranges and puts new leaves. Every indirect block on the path of a
// change is rewritten to a new place (its old copy stays intact for the last flushed
// state), unchanged subtrees are kept by reference. The rules follow DragonFly:
// - A node that overflows (4 entries in a blockset, 512 in a 64 KiB indirect block) pushes
//   entries down into new INDIRECT blocks whose key range is the smallest aligned power of
//   two holding them, never spanning bit 63 (the inode index and the directory entries of a
//   PFS root stay apart).
// - An indirect block left empty is deleted; one that shrank so its children fit in the
//   parent's free slots is collapsed into the parent.
// - Indirect blocks take the owner's check method with no compression, and carry their
//   subtree's statistics (embed.stats, leaf_count).

import Foundation
import Glibc
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format

/// Where new metadata blocks go: allocates space for `bytes` and writes them.
public protocol BlockSink: AnyObject {
    /// Writes a new block `copies` times and returns each copy's data_off (media offset |
    /// size radix), first copy first (Blockref.place records them).
    func writeNewBlock(_ bytes: [UInt8], type: BlockrefType, copies: Int) throws -> [UInt64]
}

/// One edit of a tree: leaves to remove (every leaf whose key range meets one of the
/// ranges) and leaves to put (each also replaces whatever leaf its range covered).
public struct TreeEdit {
    public var removals: [ClosedRange<UInt64>] = []
    public var puts: [Blockref] = []

    public init() {}

    public var isEmpty: Bool { removals.isEmpty && puts.isEmpty }
}

/// Key ranges to remove, queried per child: narrow ranges (single blocks, entries) by
/// binary search, the few wide ones (truncations) by a scan, so a flush of a large file
/// does not compare every child with every range.
struct Removals {
    static let narrowWidth: UInt64 = 1 << 20
    private var narrow: [ClosedRange<UInt64>] = []  // sorted by lower bound
    private var wide: [ClosedRange<UInt64>] = []

    init(_ ranges: [ClosedRange<UInt64>]) {
        for range in ranges {
            if range.upperBound - range.lowerBound < Self.narrowWidth { narrow.append(range) } else { wide.append(range) }
        }
        narrow.sort { $0.lowerBound < $1.lowerBound }
    }

    var isEmpty: Bool { narrow.isEmpty && wide.isEmpty }

    func overlapping(_ range: ClosedRange<UInt64>) -> [ClosedRange<UInt64>] {
        var result = wide.filter { $0.overlaps(range) }
        var i = firstNarrow(near: range)
        while i < narrow.count && narrow[i].lowerBound <= range.upperBound {
            if narrow[i].overlaps(range) { result.append(narrow[i]) }
            i += 1
        }
        return result
    }

    /// Whether any range meets `range` (asked for every leaf of an edited node: no array).
    func overlaps(_ range: ClosedRange<UInt64>) -> Bool {
        if wide.contains(where: { $0.overlaps(range) }) { return true }
        var i = firstNarrow(near: range)
        while i < narrow.count && narrow[i].lowerBound <= range.upperBound {
            if narrow[i].overlaps(range) { return true }
            i += 1
        }
        return false
    }

    /// The first narrow range that may meet `range`: one meeting it starts at most
    /// narrowWidth before it.
    private func firstNarrow(near range: ClosedRange<UInt64>) -> Int {
        let from = range.lowerBound >= Self.narrowWidth ? range.lowerBound - Self.narrowWidth : 0
        var low = 0, high = narrow.count
        while low < high {
            let mid = (low + high) / 2
            if narrow[mid].lowerBound >= from { high = mid } else { low = mid + 1 }
        }
        return low
    }
}

struct TreeEditor {
    let reader: BlockReader
    let sink: any BlockSink
    let tid: UInt64
    /// The methods of the blockref that owns the tree; indirect blocks take its check method.
    let ownerMethods: UInt8
    /// An encrypted PFS's keys: indirect blocks are then authenticated (CHECK_XAES).
    var keys: PFSKeys? = nil
    /// Copies of each indirect block written (docs/copies.md).
    var copies = 1

    /// HAMMER2_IND_COUNT_MAX: entries of a 64 KiB indirect block.
    static let indirectCapacity = IndirectPartition.capacity
    /// HAMMER2_IND_BYTES_MIN: the smallest indirect block written.
    static let indirectBytesMinimum = 4096

    /// Applies `edit` to a tree whose top is `blockset` (at most 4 entries) and returns the
    /// new top, empty slots removed.
    func apply(_ edit: TreeEdit, to blockset: [Blockref]) throws -> [Blockref] {
        guard !edit.isEmpty else { return blockset.filter { $0.type != .empty } }
        let puts = edit.puts.sorted { $0.key < $1.key }
        let removals = (edit.removals + puts.map { $0.key...$0.keyEnd }).sorted { $0.lowerBound < $1.lowerBound }
        return try editNode(blockset.filter { $0.type != .empty }, removals: Removals(removals), puts: puts[...],
                            capacity: HAMMER2.blocksetCount)
    }

    private func editNode(_ children: [Blockref], removals: Removals,
                          puts: ArraySlice<Blockref>, capacity: Int) throws -> [Blockref] {
        var result: [Blockref] = []
        // Rewritten indirect children, written only once it is known they are not collapsed
        // (a block written by this flush is not on the media yet, so it cannot be read back).
        var rewritten: [(key: UInt64, keybits: Int, children: [Blockref], shrank: Bool)] = []
        var consumedPuts = IndexSet()
        // Indirect children kept as they are: a new leaf must not fall inside one.
        var keptIndirect: [ClosedRange<UInt64>] = []
        result.reserveCapacity(children.count + puts.count)
        for child in children.sorted(by: { $0.key < $1.key }) {
            let range = child.key...child.keyEnd
            if child.type == .indirect {
                let childRemovals = removals.overlapping(range)
                let childPuts = Self.indices(of: puts, in: range)
                if childRemovals.isEmpty && childPuts.isEmpty {
                    result.append(child)
                    keptIndirect.append(range)
                    continue
                }
                consumedPuts.insert(integersIn: childPuts)
                let grandchildren = try reader.orderedChildBlockrefs(child)
                let edited = try editNode(grandchildren, removals: Removals(childRemovals),
                                          puts: puts[childPuts], capacity: Self.indirectCapacity)
                if edited.isEmpty { continue }  // an empty indirect block is deleted
                rewritten.append((child.key, Int(child.keybits), edited, edited.count < grandchildren.count))
            } else if !removals.overlaps(range) {
                result.append(child)
            }
        }
        for index in puts.indices where !consumedPuts.contains(index) {
            let put = puts[index]
            if let covering = keptIndirect.first(where: { $0.overlaps(put.key...put.keyEnd) }) {
                throw EngineError.corrupt("new \(describe(put)) overlaps the indirect block at 0x\(String(covering.lowerBound, radix: 16))-0x\(String(covering.upperBound, radix: 16)) without fitting inside it")
            }
            result.append(put)
        }
        // hammer2_chain_indirect_maintenance: an indirect block that shrank is dissolved
        // into this node when its children fit in the free slots.
        for entry in rewritten.sorted(by: { $0.children.count < $1.children.count }) {
            let slotsUsed = result.count + rewritten.count - 1
            if entry.shrank, slotsUsed + entry.children.count <= capacity {
                result += entry.children
                rewritten.removeAll { $0.key == entry.key && $0.keybits == entry.keybits }
            }
        }
        for entry in rewritten {
            result.append(try indirect(key: entry.key, keybits: entry.keybits, children: entry.children))
        }
        result.sort { $0.key < $1.key }
        return try fit(result, capacity: capacity)
    }

    /// The positions of `puts` (sorted by key) whose keys lie in `range`.
    static func indices(of puts: ArraySlice<Blockref>, in range: ClosedRange<UInt64>) -> Range<Int> {
        func firstIndex(where isAfter: (UInt64) -> Bool) -> Int {
            var low = puts.startIndex, high = puts.endIndex
            while low < high {
                let mid = (low + high) / 2
                if isAfter(puts[mid].key) { high = mid } else { low = mid + 1 }
            }
            return low
        }
        let start = firstIndex { $0 >= range.lowerBound }
        let end = firstIndex { $0 > range.upperBound }
        return start..<max(start, end)
    }

    /// Pushes entries down into new indirect blocks until at most `capacity` remain.
    private func fit(_ entries: [Blockref], capacity: Int) throws -> [Blockref] {
        var level = entries
        while level.count > capacity {
            var next: [Blockref] = []
            for group in IndirectPartition.partition(level) {
                if group.count == 1 {
                    next.append(group.first!)
                } else {
                    let first = group.first!.key
                    let last = group.last!.keyEnd
                    let keybits = 64 - (first ^ last).leadingZeroBitCount
                    let key = keybits >= 64 ? 0 : first & ~((UInt64(1) << UInt64(keybits)) - 1)
                    next.append(try indirect(key: key, keybits: keybits, children: Array(group)))
                }
            }
            if next.count >= level.count {
                // Every group was a single entry: merge the whole level under one block.
                let first = level.first!.key
                let keybits = 64 - (first ^ level.last!.keyEnd).leadingZeroBitCount
                guard keybits <= 63 else { throw EngineError.corrupt("cannot fit \(level.count) entries spanning bit 63") }
                next = [try indirect(key: first & ~((UInt64(1) << UInt64(keybits)) - 1), keybits: keybits, children: level)]
            }
            level = next
        }
        return level
    }

    /// Writes an INDIRECT block holding `children` (nested further if they exceed 512).
    private func indirect(key: UInt64, keybits: Int, children: [Blockref]) throws -> Blockref {
        let placed = try fit(children, capacity: Self.indirectCapacity)
        let check = CheckMethod(rawValue: ownerMethods >> 4) == .none ? CheckMethod.xxhash64 : CheckMethod(rawValue: ownerMethods >> 4)
        var bytes = Self.indirectBytesMinimum
        while bytes < placed.count * HAMMER2.blockrefBytes { bytes *= 2 }
        let block = encodeBlockrefs(placed, bytes: bytes)
        var bref = Blockref(type: .indirect, methods: Blockref.methods(check: check, compression: .none),
                            key: key, keybits: UInt8(keybits), tid: tid)
        if let keys {
            bref.methods = Blockref.methods(check: .xaes256gcm, compression: .none)
            bref.check = keys.sealIndirect(block, type: .indirect, key: key, keybits: UInt8(keybits))
        } else {
            bref.setCheck(over: block)
        }
        bref.place(try sink.writeNewBlock(block, type: .indirect, copies: min(copies, Blockref.copyCapacity(bref.checkMethod))))
        reader.cacheWritten(bref, plaintext: block)
        SubtreeStatistics(children: placed).apply(to: &bref)
        return bref
    }
}

/// How a sorted level of blockrefs is grouped under indirect blocks: the largest aligned
/// key ranges holding at most 512 entries (a 64 KiB indirect block), never across bit 63,
/// so the inode index and directory entries of a PFS root stay apart.
public enum IndirectPartition {
    /// HAMMER2_IND_COUNT_MAX
    public static let capacity = 512

    /// Splits a sorted level into the largest aligned key ranges holding at most 512
    /// entries, never across bit 63.
    public static func partition(_ level: [Blockref]) -> [ArraySlice<Blockref>] {
        let split = level.firstIndex { $0.key & HAMMER2.dirhashVisible != 0 } ?? level.count
        var groups: [ArraySlice<Blockref>] = []
        for half in [level[..<split], level[split...]] where !half.isEmpty {
            partition(half, sharedAbove: 63, into: &groups)
        }
        return groups
    }

    private static func partition(_ entries: ArraySlice<Blockref>, sharedAbove bit: Int,
                                  into groups: inout [ArraySlice<Blockref>]) {
        if entries.count <= capacity || bit == 0 {
            groups.append(entries)
            return
        }
        let mask = UInt64(1) << UInt64(bit - 1)
        let split = entries.firstIndex { $0.key & mask != 0 } ?? entries.endIndex
        for half in [entries[..<split], entries[split...]] where !half.isEmpty {
            partition(half, sharedAbove: bit - 1, into: &groups)
        }
    }
}
