// Space per PFS and per volume (hammer2 pfs-list -v, info -v, -j): what each PFS
// references and holds alone, its data's logical and stored bytes (the compression ratio,
// as zfs's compressratio), what snapshots alone hold, and the volume's free space less
// the reserve.

import HAMMER2Engine
import HAMMER2Format

/// What one PFS (or snapshot) references, in 16 KiB freemap blocks as bulkfree counts them,
/// and what its files' data takes.
public struct PFSSpace: Sendable {
    public var label: String
    public var isSnapshot: Bool
    /// Bytes its tree references (shared blocks counted in full).
    public var referencedBytes: UInt64
    /// Bytes no other PFS references: what deleting it would free.
    public var exclusiveBytes: UInt64
    /// Logical size of its files' data blocks (holes and zero blocks take none).
    public var logicalDataBytes: UInt64 = 0
    /// What those blocks take on the media, one copy of each (compressed).
    public var physicalDataBytes: UInt64 = 0
    /// The same with every copy.
    public var storedDataBytes: UInt64 = 0

    /// Logical over physical data bytes, as zfs's compressratio (1 without data).
    public var compressRatio: Double {
        physicalDataBytes == 0 ? 1 : Double(logicalDataBytes) / Double(physicalDataBytes)
    }
}

/// A volume's space as `statfs` and the PFSes see it.
public struct VolumeSpace: Sendable {
    public var totalBytes: UInt64
    /// Free for new data: the freemap's free space less the reserve (as df says).
    public var freeBytes: UInt64
    /// Kept for deletions and flushes (1/20 of the volume, DragonFly's free_reserved).
    public var reserveBytes: UInt64
    /// What deleting every snapshot would free.
    public var heldBySnapshots: UInt64
    public var pfses: [PFSSpace]
}

extension MutableFilesystem {
    /// The reserve of a volume of `volumeSize` bytes whose metadata has `metadataCopies`
    /// copies: a flush of deletions must find room on a full volume.
    static func reserve(volumeSize: UInt64, metadataCopies: Int) -> UInt64 {
        max(UInt64(metadataCopies) * (2 << 20), volumeSize / 20)
    }
}

extension Filesystem {
    /// The space each PFS references and holds alone, its data's logical and stored bytes,
    /// and what snapshots hold that no other PFS (snapshot or not) references
    /// (`heldBySnapshots`: what deleting every snapshot would free). One walk per PFS, one
    /// bit per 16 KiB block each.
    public func volumeSpace() throws -> VolumeSpace {
        let blocks = (volumes.totalSize + FreemapAllocator.blockBytes - 1) / FreemapAllocator.blockBytes
        let begin = volumes.header.allocatorBegin
        var maps: [(entry: PFSEntry, map: BlockBitmap, space: PFSSpace)] = []
        for entry in try pfsEntries() {
            var map = BlockBitmap(blocks: blocks)
            var space = PFSSpace(label: entry.name, isSnapshot: entry.inode.meta.pfsSubtype == PFSSubtype.snapshot,
                                 referencedBytes: 0, exclusiveBytes: 0)
            // The walk visits an inode, then its blocks: the file size of the data blocks
            // visited (nil for an inode sealed without its key).
            var fileSize: UInt64?
            try MutableFilesystem.forEachReferencedBlock(in: [[entry.bref]], reader: reader, volumeEnd: volumes.totalSize) { bref, offset, size in
                let firstCopy = offset == bref.copyMediaOffsets.first
                if bref.type == .inode && firstCopy {
                    fileSize = try? reader.inode(bref).meta.size
                } else if bref.type == .data {
                    space.storedDataBytes += size
                    if firstCopy {
                        space.physicalDataBytes += size
                        // The block's logical size, or the file's bytes in it (its last).
                        let block = UInt64(1) << min(bref.keybits, 63)
                        space.logicalDataBytes += fileSize.map { min(block, $0 > bref.key ? $0 - bref.key : 0) } ?? block
                    }
                }
                guard offset >= begin else { return }
                for block in (offset / FreemapAllocator.blockBytes)...((offset + size - 1) / FreemapAllocator.blockBytes) where map.insert(block) {
                    space.referencedBytes += FreemapAllocator.blockBytes
                }
            }
            maps.append((entry, map, space))
        }
        // How many PFSes reference each block, and whether any non-snapshot does.
        var counts: [UInt64: UInt8] = [:]
        var live = BlockBitmap(blocks: blocks)
        for (_, map, space) in maps {
            map.forEach { block in counts[block, default: 0] = counts[block, default: 0] &+ 1 }
            if !space.isSnapshot { live.formUnion(map) }
        }
        var pfses: [PFSSpace] = []
        var held = BlockBitmap(blocks: blocks)
        var heldBytes: UInt64 = 0
        for (_, map, space) in maps {
            var space = space
            map.forEach { block in
                if counts[block] == 1 { space.exclusiveBytes += FreemapAllocator.blockBytes }
                if space.isSnapshot && !live.contains(block) && held.insert(block) { heldBytes += FreemapAllocator.blockBytes }
            }
            pfses.append(space)
        }
        let header = volumes.header
        let copies = MutableFilesystem.metadataCopies(UInt8(clamping: max(1, Int(superRoot.meta.ncopies))))
        let reserve = MutableFilesystem.reserve(volumeSize: volumes.totalSize, metadataCopies: copies)
        return VolumeSpace(totalBytes: header.allocatorSize,
                           freeBytes: header.allocatorFree > reserve ? header.allocatorFree - reserve : 0,
                           reserveBytes: reserve, heldBySnapshots: heldBytes, pfses: pfses)
    }
}
