// bulkfree (hammer2_bulkfree.c): the only way space comes back. Deleting or rewriting
// data never touches the freemap; bulkfree walks every PFS and snapshot from the
// super-root, and every 16 KiB block the freemap marks allocated that no blockref reaches
// is freed.
//
// The pass itself (scan without the lock, then apply) is in Reclaim.swift; this file has
// the walk over every referenced block and the freemap rebuild.

import Glibc
import HAMMER2Engine
import HAMMER2Format
import HAMMER2Trace

public struct BulkfreeResult: Sendable {
    /// Blockrefs visited and distinct bytes they reference.
    public var blockrefsScanned = 0
    public var referencedBytes: UInt64 = 0
    /// Bytes returned to the freemap.
    public var freedBytes: UInt64 = 0
    /// 16 KiB blocks in use that the freemap had marked free (repaired to allocated).
    public var repairedBlocks = 0

    public init(blockrefsScanned: Int = 0, referencedBytes: UInt64 = 0, freedBytes: UInt64 = 0, repairedBlocks: Int = 0) {
        self.blockrefsScanned = blockrefsScanned
        self.referencedBytes = referencedBytes
        self.freedBytes = freedBytes
        self.repairedBlocks = repairedBlocks
    }
}

extension MutableFilesystem {
    /// Visits every copy of every block the last flushed state references, and the blocks
    /// of open files already unlinked (out of the index, still read): `visit(bref, media
    /// offset, bytes)`; shared subtrees (snapshots) once. The caller holds the lock. A
    /// blockref that cannot be a block throws: with a damaged tree nothing can know what is
    /// in use, and bulkfree or key erasure acting on a guess would destroy data. Returns the
    /// number of blockrefs walked.
    @discardableResult
    func forEachReferencedBlock(progress: ((Int) -> Void)? = nil,
                                _ visit: (Blockref, UInt64, UInt64) throws -> Void) throws -> Int {
        try Self.forEachReferencedBlock(in: referencedRoots(), reader: reader, volumeEnd: volumes.totalSize,
                                        progress: progress, visit)
    }

    /// The trees the last flushed state consists of: the super-root's blockset, and the
    /// blocksets of unlinked files still open. Taken under the lock; the trees themselves
    /// never change (copy-on-write), so they can be walked without it.
    func referencedRoots() -> [[Blockref]] {
        var roots = [header.superRootBlockset]
        for pfs in mounted.values {
            for node in pfs.nodes.values where node.meta.nlinks == 0 && node.openCount > 0 {
                roots.append(node.flushedContent.blockset)
            }
        }
        return roots
    }

    @discardableResult
    static func forEachReferencedBlock(in roots: [[Blockref]], reader: BlockReader, volumeEnd: UInt64,
                                       progress: ((Int) -> Void)? = nil,
                                       _ visit: (Blockref, UInt64, UInt64) throws -> Void) throws -> Int {
        var visitedNodes = Set<UInt64>()
        var scanned = 0
        func walk(_ refs: [Blockref]) throws {
            for bref in refs where bref.type != .empty {
                scanned += 1
                if scanned % 65_536 == 0 { progress?(scanned) }
                let bytes = UInt64(try reader.checkedPhysicalSize(bref))
                if bytes > 0 {
                    for offset in bref.copyMediaOffsets {
                        guard offset + bytes <= volumeEnd, (offset & 0xFFFF) + bytes <= 0x10000 else {
                            throw EngineError.corrupt("\(describe(bref)) has a copy at 0x\(String(offset, radix: 16)) that cannot be a block")
                        }
                        try visit(bref, offset, bytes)
                    }
                }
                switch bref.type {
                case .inode:
                    guard visitedNodes.insert(bref.dataOffset).inserted else { continue }
                    // Encrypted inodes keep their blockset readable: no key is needed here.
                    if let children = try reader.blocksetForWalk(bref) { try walk(children) }
                case .indirect:
                    guard visitedNodes.insert(bref.dataOffset).inserted else { continue }
                    try walk(reader.childBlockrefs(bref))
                default:
                    break
                }
            }
        }
        for root in roots { try walk(root) }
        progress?(scanned)
        return scanned
    }
}

extension FreemapAllocator {
    /// Sets every 16 KiB block at or above allocator_beg to allocated if `referenced`
    /// holds it and free otherwise (the reserved areas and space past the end stay
    /// allocated). Returns how many referenced blocks were marked free before.
    mutating func rebuild(referenced: BlockBitmap, linearEnds: [UInt64: UInt64]) -> Int {
        var repaired = 0
        let entriesPerLeaf = UInt64(BitmapData.entriesPerLeaf)
        for leafIndex in leaves.keys.sorted() {
            var leaf = leaves[leafIndex]!
            let pristine = newLeafEntries(leafIndex)
            for entryIndex in 0..<BitmapData.entriesPerLeaf {
                let segment = leafIndex * entriesPerLeaf + UInt64(entryIndex)
                guard pristine[entryIndex].avail > 0 else { continue }  // reserved or outside
                var entry = leaf.entries[entryIndex]
                let old = entry
                var used = 0
                var highest = -1
                for block in 0..<BitmapData.blocksPerEntry {
                    let number = segment * UInt64(BitmapData.blocksPerEntry) + UInt64(block)
                    if referenced.contains(number) {  // out of its range (growfs since): kept
                        if entry.state(ofBlock: block) == .free { repaired += 1 }
                        entry.setState(.allocated, ofBlock: block)
                        used += 1
                        highest = block
                    } else {
                        entry.setState(.free, ofBlock: block)
                    }
                }
                entry.avail = UInt32(Self.segmentBytes - UInt64(used) * Self.blockBytes)
                // Saturating: a damaged leaf's old avail may exceed what the header counted free.
                let change = Int64(entry.avail) - Int64(old.avail)
                freeBytes = change >= 0 ? freeBytes &+ UInt64(change) : freeBytes - min(freeBytes, UInt64(-change))
                if used == 0 {
                    entry.allocationClass = 0
                    entry.linear = 0
                } else {
                    // Past the last block in use, or inside it after its last small block.
                    let end = UInt64(highest + 1) * Self.blockBytes
                    if let small = linearEnds[segment], small > end - Self.blockBytes, small < end {
                        entry.linear = Int32(small)
                    } else {
                        entry.linear = Int32(end)
                    }
                }
                if entry != old {
                    leaf.entries[entryIndex] = entry
                    leaf.dirty = true
                }
            }
            leaves[leafIndex] = leaf
        }
        return repaired
    }
}
