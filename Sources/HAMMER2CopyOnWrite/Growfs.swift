// hammer2 growfs (hammer2_ioctl_growfs): takes in the space of an image or device that
// was enlarged. The volume header's sizes and free space grow; freemap segments that were
// past the old end (marked allocated, as hammer2_freemap_init marks everything past the
// end) become free; the new GiBs get their reserved 4 MiB and leaves as they are used; the
// header is written to every copy that now fits, including new 2 GiB zones. Like
// DragonFly's, it counts the whole increase as free space in the header.

import Glibc
import HAMMER2Engine
import HAMMER2Format

extension MutableFilesystem {
    /// Grows the filesystem to its device's size (rounded down to 8 MiB). Returns whether it
    /// changed and the filesystem size now.
    public func grow() throws -> (changed: Bool, size: UInt64) {
        guard !readOnly else { throw EngineError.posix(EROFS, "growfs needs a read-write filesystem") }
        return try withLock {
            guard volumes.volumes.count == 1 else {
                throw EngineError.posix(EOPNOTSUPP, "growfs of multi-volume filesystems is not supported")
            }
            let old = header.volumeSize
            let new = try volumes.refreshSize() / Formatter.align * Formatter.align
            guard new > old else { return (false, old) }
            try flushLocked()
            header.volumeSize = new
            header.totalSize = new
            // As hammer2_ioctl_growfs: allocator_size and allocator_free grow by the whole
            // increase (the reserved 4 MiB of new GiBs included, as DragonFly counts it).
            header.allocatorSize += new - old
            allocator.volumeSize = new
            allocator.freeSegments(from: old, to: new)
            allocator.freeBytes += ((new + (1 << 30) - 1) >> 30 - (old + (1 << 30) - 1) >> 30) * Formatter.reservedPerGiB
            try flushLocked(allHeaderCopies: true)
            return (true, new)
        }
    }
}

extension FreemapAllocator {
    /// Frees the segments of existing leaves in [from, to) that lay past the old end.
    mutating func freeSegments(from start: UInt64, to end: UInt64) {
        var segment = start / Self.segmentBytes
        while segment * Self.segmentBytes < end {
            let base = segment * Self.segmentBytes
            let leafIndex = base / Self.leafBytes
            if !Self.isReserved(base), base >= allocatorBegin, leaves[leafIndex] != nil {
                let entry = Int(segment % UInt64(BitmapData.entriesPerLeaf))
                let old = leaves[leafIndex]!.entries[entry]
                leaves[leafIndex]!.entries[entry] = BitmapData(avail: UInt32(Self.segmentBytes))
                freeBytes += Self.segmentBytes - UInt64(old.avail)
                leaves[leafIndex]!.dirty = true
            } else if leaves[leafIndex] == nil, !Self.isReserved(base) {
                freeBytes += Self.segmentBytes
            }
            segment += 1
        }
    }
}
