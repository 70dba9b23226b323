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

    /// Visits, in key order, every leaf blockref whose key range overlaps [first, last].
    /// `visit` returns false to stop; the function then returns false too.
    @discardableResult
    public func forEachLeaf(
        in refs: [Blockref], from first: UInt64, through last: UInt64,
        _ visit: (Blockref) throws -> Bool
    ) throws -> Bool {
        try walk(refs, first, last, parentRange: 0...UInt64.max, depth: 0, visit)
    }

    private func walk(
        _ refs: [Blockref], _ first: UInt64, _ last: UInt64, parentRange: ClosedRange<UInt64>, depth: Int,
        _ visit: (Blockref) throws -> Bool
    ) throws -> Bool {
        guard depth <= Self.maximumDepth else {
            throw EngineError.corrupt("block tree deeper than \(Self.maximumDepth) levels (loop?)")
        }
        let overlapping = refs.filter { $0.type != .empty && $0.keyEnd >= first && $0.key <= last }
            .sorted { $0.key < $1.key }
        for bref in overlapping {
            guard parentRange.contains(bref.key), parentRange.contains(bref.keyEnd) else {
                throw EngineError.corrupt("\(describe(bref)) lies outside its parent's key range")
            }
            if bref.type == .indirect || bref.type == .freemapNode {
                let children = try reader.childBlockrefs(bref)
                if try !walk(children, first, last, parentRange: bref.key...bref.keyEnd, depth: depth + 1, visit) {
                    return false
                }
            } else if try !visit(bref) {
                return false
            }
        }
        return true
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
