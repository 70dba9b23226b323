// Key-range traversal of HAMMER2 block trees (the read side of hammer2_chain_lookup).
//
// An inode's blockset, an indirect block, or a freemap node is an array of blockrefs, each
// covering keys [key, key + 2^keybits). INDIRECT (and FREEMAP_NODE) blockrefs point to
// further arrays; everything else is a leaf. Depth is bounded so a corrupt image whose
// blocks point at each other cannot recurse forever.

import HAMMER2Format

public struct BlockTree: Sendable {
    /// Deeper than any tree HAMMER2 builds: 64 key bits, at least 2 bits per level.
    public static let maximumDepth = 40

    public let reader: BlockReader

    public init(reader: BlockReader) { self.reader = reader }

    /// Sibling indirect blocks a walk asks the device for ahead of itself.
    static let prefetchDistance = 16

    /// Visits, in key order, every leaf blockref whose key range overlaps [first, last].
    /// `visit` returns false to stop; the function then returns false too.
    @discardableResult
    public func forEachLeaf(
        in refs: [Blockref], from first: UInt64, through last: UInt64,
        _ visit: (Blockref) throws -> Bool
    ) throws -> Bool {
        // The top-level array (an inode's blockset) is small and checked here; arrays inside
        // indirect blocks come ordered and checked from the reader's cache.
        let ordered = try Self.orderedChildren(refs, parentRange: 0...UInt64.max, insideIndirect: false)
        return try walkOrdered(ordered, first, last, depth: 0, visit)
    }

    private func walkOrdered(
        _ ordered: [Blockref], _ first: UInt64, _ last: UInt64, depth: Int, _ visit: (Blockref) throws -> Bool
    ) throws -> Bool {
        guard depth <= Self.maximumDepth else {
            throw EngineError.corrupt("block tree deeper than \(Self.maximumDepth) levels (loop?)")
        }
        // Siblings are disjoint and sorted: skip to the first that can overlap [first, last].
        var low = 0, high = ordered.count
        while low < high {
            let mid = (low + high) / 2
            if ordered[mid].keyEnd < first { low = mid + 1 } else { high = mid }
        }
        var prefetched = low
        var index = low
        while index < ordered.count {
            let bref = ordered[index]
            if bref.key > last { break }
            if bref.type == .indirect || bref.type == .freemapNode {
                // A walk across several indirect blocks: have the next ones read meanwhile.
                if index >= prefetched, index + 1 < ordered.count, ordered[index + 1].key <= last {
                    prefetched = min(ordered.count, index + Self.prefetchDistance)
                    reader.prefetch(ordered[(index + 1)..<prefetched])
                }
                let children = try reader.orderedChildBlockrefs(bref)
                if try !walkOrdered(children, first, last, depth: depth + 1, visit) { return false }
            } else if try !visit(bref) {
                return false
            }
            index += 1
        }
        return true
    }

    /// The non-empty blockrefs of an array in key order, after checking the invariants that
    /// keep any traversal bounded by the size of the tree: every child lies inside its
    /// parent's range, siblings do not overlap, and a child of an indirect block covers less
    /// than its parent. Without them a damaged or hostile image whose blocks point at each
    /// other could make a lookup visit an exponential number of paths.
    public static func orderedChildren(_ refs: [Blockref], parentRange: ClosedRange<UInt64>, insideIndirect: Bool) throws -> [Blockref] {
        // An inode's blockset is usually full and in order already: then no copy is made.
        let inOrder = refs.indices.allSatisfy { i in refs[i].type != .empty && (i == 0 || refs[i - 1].key < refs[i].key) }
        var sorted = refs
        if !inOrder {
            if sorted.contains(where: { $0.type == .empty }) { sorted.removeAll { $0.type == .empty } }
            sorted.sort { $0.key < $1.key }
        }
        var previous: Blockref?
        for bref in sorted {
            guard parentRange.contains(bref.key), parentRange.contains(bref.keyEnd) else {
                throw EngineError.corrupt("\(describe(bref)) lies outside its parent's key range")
            }
            if insideIndirect && bref.key == parentRange.lowerBound && bref.keyEnd == parentRange.upperBound
                && (bref.type == .indirect || bref.type == .freemapNode) {
                throw EngineError.corrupt("\(describe(bref)) covers its whole parent's key range")
            }
            if let previous, bref.key <= previous.keyEnd {
                throw EngineError.corrupt("\(describe(bref)) overlaps its sibling \(describe(previous))")
            }
            previous = bref
        }
        return sorted
    }

    /// The leaves with exactly the keys `keys` (sorted ascending) and `type`, found level by
    /// level: the indirect blocks each level needs are asked of the device together before
    /// any is read, so that looking up hundreds of scattered keys in a cold tree (the
    /// inodes of a READDIRPLUS reply) overlaps its reads.
    public func findAll(in refs: [Blockref], keys: [UInt64], type: BlockrefType) throws -> [UInt64: Blockref] {
        var found: [UInt64: Blockref] = [:]
        guard !keys.isEmpty else { return found }
        var level = [(children: try Self.orderedChildren(refs, parentRange: 0...UInt64.max, insideIndirect: false), keys: keys[...])]
        for _ in 0...Self.maximumDepth {
            var descend: [(bref: Blockref, keys: ArraySlice<UInt64>)] = []
            for (children, keys) in level {
                children.withUnsafeBufferPointer { children in
                    // Siblings are disjoint and sorted: start at the first that can hold the
                    // lowest key, and stop with the keys (a few keys among an indirect
                    // block's 512 children look at a few of them, not all).
                    var next = keys.startIndex
                    var index = Self.firstChild(in: children, endingAtOrAfter: keys[next])
                    while index < children.count && next < keys.endIndex {
                        let bref = children[index]
                        index += 1
                        while next < keys.endIndex && keys[next] < bref.key { next += 1 }
                        var end = next
                        while end < keys.endIndex && keys[end] <= bref.keyEnd { end += 1 }
                        guard end > next else { continue }
                        if bref.type == .indirect || bref.type == .freemapNode {
                            descend.append((bref, keys[next..<end]))
                        } else if bref.type == type, end - next == 1, keys[next] == bref.key {
                            found[bref.key] = bref
                        }
                        next = end
                        if next < keys.endIndex, index < children.count, children[index].keyEnd < keys[next] {
                            index = Self.firstChild(in: children, endingAtOrAfter: keys[next], from: index)
                        }
                    }
                }
            }
            guard !descend.isEmpty else { return found }
            reader.prefetch(descend.map(\.bref)[...])
            level = try descend.map { (try reader.orderedChildBlockrefs($0.bref), $0.keys) }
        }
        throw EngineError.corrupt("block tree deeper than \(Self.maximumDepth) levels (loop?)")
    }

    /// The index of the first of `ordered` (sorted, disjoint) whose range ends at or after
    /// `key`, searching from `start`; `ordered.count` when none does.
    static func firstChild(in ordered: UnsafeBufferPointer<Blockref>, endingAtOrAfter key: UInt64, from start: Int = 0) -> Int {
        var low = start, high = ordered.count
        while low < high {
            let mid = (low + high) / 2
            if ordered[mid].keyEnd < key { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// The leaf with exactly `key` and `type`, if any.
    public func find(in refs: [Blockref], key: UInt64, type: BlockrefType) throws -> Blockref? {
        var found: Blockref?
        try forEachLeaf(in: refs, from: key, through: key) { bref in
            if bref.key == key && bref.type == type { found = bref; return false }
            return true
        }
        return found
    }
}
