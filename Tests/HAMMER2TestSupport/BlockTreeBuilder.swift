// Builds HAMMER2 block trees: the blockrefs under an inode's four-entry blockset, with
// INDIRECT blocks when more than four children are needed.
//
// Indirect blocks are formed radix-style, bottom-up, so the lowest level is as full as
// possible (dense file data fills 512-entry blocks, like a B-tree built from sorted keys):
// - Each pass partitions the current level into the largest aligned key ranges holding at
//   most 512 entries (splitting a range in halves until it fits), never across bit 63 so
//   the inode index and directory entries of a PFS root stay apart.
// - A range with two or more entries becomes one INDIRECT block whose key/keybits is the
//   smallest aligned power-of-two range containing its children. That range lies inside
//   the partition range, so siblings never overlap.
// - Passes repeat until at most four entries remain for the blockset. Each pass merges at
//   least two entries, so this terminates.
// Children are stored sorted by key with empty slots at the end, as hammer2_base_insert
// keeps them.

import HAMMER2CopyOnWrite
import HAMMER2Format

struct BlockTreeBuilder {
    /// Entries of a 64 KiB indirect block (HAMMER2_IND_COUNT_MAX).
    static let indirectCapacity = 512
    /// HAMMER2_IND_BYTES_MIN / _MAX
    static let indirectBytesMinimum = 4096
    static let indirectBytesMaximum = 65_536

    /// The methods of the blockref that owns the tree (the inode's). Indirect blocks take its
    /// check method with compression none (hammer2_chain_create_indirect); directory
    /// entries placed in an indirect block inherit the indirect block's methods.
    let parentMethods: UInt8
    let tid: UInt64
    /// Allocates and writes one block, returning its media offset.
    let writeBlock: ([UInt8], BlockrefType) throws -> UInt64

    /// The at most four blockrefs for the blockset, given every leaf of the tree.
    func build(leaves: [Blockref]) throws -> [Blockref] {
        var level = leaves.sorted { $0.key < $1.key }
        for i in 1..<max(level.count, 1) where level[i - 1].keyEnd >= level[i].key {
            preconditionFailure("overlapping leaves at key 0x\(String(level[i].key, radix: 16))")
        }
        while level.count > HAMMER2.blocksetCount {
            var next: [Blockref] = []
            for group in IndirectPartition.partition(level) {
                next.append(group.count == 1 ? group.first! : try indirect(Array(group)))
            }
            precondition(next.count < level.count, "an indirect pass must merge entries")
            level = next
        }
        return level
    }

    /// Writes an INDIRECT block holding `children` and returns its blockref.
    private func indirect(_ children: [Blockref]) throws -> Blockref {
        precondition(children.count >= 2 && children.count <= Self.indirectCapacity)
        let first = children.first!.key
        let last = children.last!.keyEnd
        let keybits = 64 - (first ^ last).leadingZeroBitCount
        precondition(keybits <= 63, "an indirect block cannot span bit 63")
        var placed = children
        let methods = Blockref.methods(check: CheckMethod(rawValue: parentMethods >> 4), compression: .none)
        precondition(methods >> 4 != CheckMethod.none.rawValue,
                     "tree owners are never CHECK_NONE (hammer2_chain_create promotes non-data blockrefs)")
        for i in placed.indices where placed[i].type == .dirent { placed[i].methods = methods }
        var bytes = Self.indirectBytesMinimum
        while bytes < placed.count * HAMMER2.blockrefBytes { bytes *= 2 }
        precondition(bytes <= Self.indirectBytesMaximum)
        let block = encodeBlockrefs(placed, bytes: bytes)

        var bref = Blockref.empty
        bref.type = .indirect
        bref.methods = methods
        bref.key = first & ~((UInt64(1) << UInt64(keybits)) - 1)
        bref.keybits = UInt8(keybits)
        bref.mirrorTID = tid
        bref.modifyTID = tid
        bref.dataOffset = Blockref.dataOffset(try writeBlock(block, .indirect), radix: MediaLayout.radix(bytes))
        bref.setCheck(over: block)
        SubtreeStatistics(children: placed).apply(to: &bref)
        return bref
    }
}
