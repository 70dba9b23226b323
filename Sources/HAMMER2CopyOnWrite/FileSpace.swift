// fallocate(2) and lseek(2)'s SEEK_DATA / SEEK_HOLE over HAMMER2 files, whose data is a
// sparse tree of 64 KiB logical blocks: a block with no blockref is a hole. DragonFly has
// neither call; these follow Linux's copy-on-write filesystems (docs/format.md, "Holes and
// preallocation").

import Glibc
import HAMMER2Engine
import HAMMER2Format

extension PFSHandle {
    // fallocate(2) modes (linux/falloc.h).
    public static let fallocateKeepSize: Int32 = 0x01
    public static let fallocatePunchHole: Int32 = 0x02
    public static let fallocateZeroRange: Int32 = 0x10

    /// fallocate(2). PUNCH_HOLE (with KEEP_SIZE) and ZERO_RANGE make the range read as
    /// zeros and free its whole blocks (snapshots keep theirs); the edges of the range are
    /// rewritten with zeros. Mode 0 and KEEP_SIZE check that the volume has the space now
    /// and, for mode 0, extend the file; they reserve nothing: on copy-on-write every later
    /// write allocates anew, so a preallocation cannot promise it (ZFS behaves the same).
    /// COLLAPSE_RANGE, INSERT_RANGE and UNSHARE_RANGE are EOPNOTSUPP, as on ZFS.
    public func allocate(_ inum: UInt64, mode: Int32, offset: UInt64, length: UInt64) throws -> NodeStatus {
        try writable()
        let known = Self.fallocateKeepSize | Self.fallocatePunchHole | Self.fallocateZeroRange
        guard mode & ~known == 0 else { throw EngineError.posix(EOPNOTSUPP, "fallocate mode 0x\(String(mode, radix: 16))") }
        let punch = mode & Self.fallocatePunchHole != 0, zero = mode & Self.fallocateZeroRange != 0
        guard !(punch && zero) else { throw EngineError.posix(EOPNOTSUPP, "fallocate: PUNCH_HOLE with ZERO_RANGE") }
        guard !punch || mode & Self.fallocateKeepSize != 0 else {
            throw EngineError.posix(EOPNOTSUPP, "fallocate: PUNCH_HOLE needs KEEP_SIZE")
        }
        guard length > 0 else { throw EngineError.invalidArgument("fallocate of 0 bytes") }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= UInt64(Int64.max) else { throw EngineError.posix(EFBIG, "file too large") }
        return try lockedWaitingForSpace {
            let node = try pfs.node(inum)
            guard !node.isDirectory else { throw EngineError.isDirectory }
            guard node.type == .regularFile else { throw EngineError.posix(ENODEV, "fallocate of a non-file") }
            let keepSize = mode & Self.fallocateKeepSize != 0
            if punch || zero {
                try fs.ensureSpace(for: 2 * logicalBlockBytes)  // at most the two edge blocks are rewritten
                try pfs.zeroRange(node, from: offset, to: min(end, node.meta.size))
                if zero && !keepSize && end > node.meta.size { try pfs.truncate(node, to: end) }
            } else {
                // What is not yet held by the file must fit now; nothing is set aside.
                let held = try pfs.dataBytes(node, from: offset, to: min(end, node.meta.size))
                try fs.ensureSpace(for: length - min(length, held))
                if !keepSize && end > node.meta.size { try pfs.truncate(node, to: end) }
            }
            if punch || zero || node.meta.size == end {
                node.meta.mtime = currentTimeMicroseconds()
                node.meta.ctime = node.meta.mtime
            }
            node.dirty = true
            return status(node)
        }
    }

    /// lseek(2) SEEK_DATA (`data`) or SEEK_HOLE from `offset`: the start of the next data
    /// or hole at 64 KiB block granularity (a block's unwritten tail is data, as ext4 and
    /// btrfs report it). Past the end of the file, or no data after `offset`, is ENXIO;
    /// the end of the file is the final hole.
    public func seek(_ inum: UInt64, from offset: UInt64, data: Bool) throws -> UInt64 {
        try locked {
            let node = try pfs.node(inum)
            guard !node.isDirectory else { throw EngineError.isDirectory }
            let size = node.meta.size
            guard offset < size else { throw EngineError.posix(ENXIO, "seek past the end of the file") }
            let found = data ? try pfs.nextData(node, from: offset) : try pfs.nextHole(node, from: offset)
            guard let found, found < size else {
                if data { throw EngineError.posix(ENXIO, "no data after offset \(offset)") }
                return size
            }
            return max(found, offset)
        }
    }

    /// Open handles that may write (the kernel may hold dirty pages of the file only while
    /// one is open: the last close writes them back).
    public func openForWriting(_ inum: UInt64, _ delta: Int) {
        locked {
            guard let node = pfs.nodes[inum] else { return }
            node.writerCount = max(0, node.writerCount + delta)
        }
    }

    public func hasWriters(_ inum: UInt64) -> Bool {
        locked { (pfs.nodes[inum]?.writerCount ?? 0) > 0 }
    }
}

extension MountedPFS {
    /// Where the flushed tree still holds data for this node: the tree's blockset, cut at
    /// the last flushed size and any truncation since.
    private func diskEnd(_ node: Node) -> UInt64 { min(node.flushedSize, node.diskLimit) }

    /// Visits, in order, the indices of blocks the flushed tree holds from block `first`
    /// on (an embedded file's data is block 0); `visit` returns false to stop.
    private func forEachDiskBlock(_ node: Node, from first: UInt64, _ visit: (UInt64) throws -> Bool) throws {
        let end = diskEnd(node)
        guard first * logicalBlockBytes < end else { return }
        switch node.flushedContent {
        case .embedded:
            _ = try visit(0)
        case let .blockset(refs):
            var last = UInt64.max
            try BlockTree(reader: disk.reader).forEachLeaf(in: refs, from: first * logicalBlockBytes, through: end - 1) { bref in
                let index = bref.key / logicalBlockBytes
                guard index != last, index >= first else { return true }
                last = index
                return try visit(index)
            }
        }
    }

    /// A dirty block holds data unless it was punched (an empty block: a hole to be).
    private func dirtyState(_ node: Node, _ index: UInt64) -> Bool? {
        node.dirtyBlocks[index].map { !$0.isEmpty }
    }

    func nextData(_ node: Node, from offset: UInt64) throws -> UInt64? {
        let first = offset / logicalBlockBytes
        var best = node.dirtyBlocks.lazy.filter { $0.key >= first && !$0.value.isEmpty }.map(\.key).min()
        try forEachDiskBlock(node, from: first) { index in
            if let candidate = best, index >= candidate { return false }
            if dirtyState(node, index) == false { return true }  // punched since the flush
            best = index
            return false
        }
        return best.map { $0 * logicalBlockBytes }
    }

    func nextHole(_ node: Node, from offset: UInt64) throws -> UInt64? {
        var index = offset / logicalBlockBytes
        var found: UInt64?
        try forEachDiskBlock(node, from: index) { diskIndex in
            // Blocks before the next on-disk one are holes unless written since the flush.
            while index < diskIndex {
                if dirtyState(node, index) != true { found = index; return false }
                index += 1
            }
            if dirtyState(node, index) == false { found = index; return false }
            index += 1
            return true
        }
        if found == nil {
            while dirtyState(node, index) == true { index += 1 }
            found = index
        }
        return found.map { $0 * logicalBlockBytes }
    }

    /// Bytes of [start, end) that blocks holding data cover (for a preallocation's check).
    func dataBytes(_ node: Node, from start: UInt64, to end: UInt64) throws -> UInt64 {
        guard start < end else { return 0 }
        var held: UInt64 = 0
        var position = start
        while position < end, let data = try nextData(node, from: position), data < end {
            let hole = try nextHole(node, from: max(data, position)) ?? end
            held += min(hole, end) - max(data, position)
            position = hole
        }
        return held
    }

    /// Makes [start, end) read as zeros: whole blocks holding data become punched (holes
    /// at the next flush), the partial blocks at the edges are rewritten with zeros.
    func zeroRange(_ node: Node, from start: UInt64, to end: UInt64) throws {
        guard start < end else { return }
        var whole: [UInt64] = []
        var position = start
        while position < end, let data = try nextData(node, from: position), data < end {
            let index = data / logicalBlockBytes
            let blockStart = index * logicalBlockBytes, blockEnd = blockStart + logicalBlockBytes
            if start <= blockStart && blockEnd <= end {
                whole.append(index)
            } else {
                var block = try loadBlock(node, index)
                let low = Int(max(start, blockStart) - blockStart), high = min(Int(min(end, blockEnd) - blockStart), block.count)
                if low < high {
                    block.withUnsafeMutableBytes { $0[low..<high].initializeMemory(as: UInt8.self, repeating: 0) }
                    node.setDirtyBlock(index, block)
                }
            }
            position = blockEnd
        }
        for index in whole { node.setDirtyBlock(index, []) }
        node.dirty = true
    }
}
