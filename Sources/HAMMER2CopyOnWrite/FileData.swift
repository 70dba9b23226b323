// File data in memory: 64 KiB logical blocks (hammer2_calc_logical: always 64 KiB) changed
// since the last flush, over the blocks the last flush left on disk. A truncation marks the
// on-disk data past the new end dead until the flush removes it.

import Glibc
import HAMMER2Engine
import HAMMER2Format

let logicalBlockBytes = UInt64(HAMMER2.physicalBufferSize)

/// What a read needs, gathered under the lock and executed without it.
struct ReadPlan {
    enum Piece {
        case bytes(ArraySlice<UInt8>)  // of a dirty block (copy-on-write keeps it as it was)
        case disk(offset: UInt64, count: Int)
        case zeros(Int)
    }

    var pieces: [Piece] = []
    var inode: InodeData

    /// The bytes the plan covers, into `output` (as large as the request); returns how many.
    func execute(pfs: MountedPFS, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        var at = 0
        for piece in pieces {
            switch piece {
            case let .bytes(bytes):
                let count = min(bytes.count, output.count - at)
                bytes.withUnsafeBytes { (output.baseAddress! + at).copyMemory(from: $0.baseAddress!, byteCount: count) }
                at += count
            case let .zeros(count):
                let count = min(count, output.count - at)
                UnsafeMutableRawBufferPointer(rebasing: output[at..<(at + count)]).initializeMemory(as: UInt8.self, repeating: 0)
                at += count
            case let .disk(offset, count):
                let count = min(count, output.count - at)
                let target = UnsafeMutableRawBufferPointer(rebasing: output[at..<(at + count)])
                let got = try pfs.disk.read(inode, offset: offset, into: target)
                if got < count { UnsafeMutableRawBufferPointer(rebasing: target[got...]).initializeMemory(as: UInt8.self, repeating: 0) }
                at += count
            }
        }
        return at
    }

    func execute(pfs: MountedPFS) throws -> [UInt8] {
        let total = pieces.reduce(0) { total, piece in
            switch piece {
            case let .bytes(bytes): return total + bytes.count
            case let .zeros(count), let .disk(_, count): return total + count
            }
        }
        return try [UInt8](unsafeUninitializedCapacity: total) { buffer, initialized in
            initialized = try execute(pfs: pfs, into: UnsafeMutableRawBufferPointer(buffer))
        }
    }
}

extension MountedPFS {
    func readPlan(_ node: Node, offset: UInt64, count: Int) throws -> ReadPlan {
        guard !node.isDirectory else { throw EngineError.isDirectory }
        var plan = ReadPlan(inode: node.flushedInode)
        let size = node.meta.size
        guard offset < size, count > 0 else { return plan }
        let end = offset + min(UInt64(count), size - offset)
        let diskEnd = min(node.flushedSize, node.diskLimit)
        var position = offset
        while position < end {
            let index = position / logicalBlockBytes
            let blockStart = index * logicalBlockBytes
            let blockEnd = min(blockStart + logicalBlockBytes, end)
            if let block = node.dirtyBlocks[index] {
                let low = min(Int(position - blockStart), block.count), high = min(Int(blockEnd - blockStart), block.count)
                plan.pieces.append(.bytes(block[low..<high]))
                if Int(blockEnd - position) > high - low { plan.pieces.append(.zeros(Int(blockEnd - position) - (high - low))) }
                position = blockEnd
                continue
            }
            // A run of clean blocks: one disk read, then zeros past what the disk holds.
            var runEnd = blockEnd
            while runEnd < end, node.dirtyBlocks[runEnd / logicalBlockBytes] == nil {
                runEnd = min(runEnd + logicalBlockBytes, end)
            }
            let diskPart = position < diskEnd ? min(runEnd, diskEnd) : position
            if diskPart > position { plan.pieces.append(.disk(offset: position, count: Int(diskPart - position))) }
            if runEnd > diskPart { plan.pieces.append(.zeros(Int(runEnd - diskPart))) }
            position = runEnd
        }
        return plan
    }

    /// The current content of logical block `index`, up to 64 KiB; past its end the
    /// block reads as zeros.
    func loadBlock(_ node: Node, _ index: UInt64) throws -> [UInt8] {
        if let block = node.dirtyBlocks[index] { return block }
        let start = index * logicalBlockBytes
        let diskEnd = min(node.flushedSize, node.diskLimit)
        guard start < diskEnd else { return [] }
        let count = Int(min(logicalBlockBytes, diskEnd - start))
        guard var block = try disk.cachedBlock(node.flushedInode, at: start) else {
            return try disk.read(node.flushedInode, offset: start, count: count)
        }
        if block.count > count {
            block.removeSubrange(count...)
        } else if block.count < count {
            block += [UInt8](repeating: 0, count: count - block.count)
        }
        // Read, changed and flushed: the flush caches it again (partial writes come back).
        node.readModifiedBlocks.insert(index)
        return block
    }

    /// The whole logical blocks a write covers, copied out of the request. A writer makes
    /// them before it takes the filesystem lock, so that the lock is held for bookkeeping
    /// only: a 1 MiB write's copy would otherwise keep every other operation waiting.
    struct WholeBlocks {
        var first: UInt64 = 0
        var blocks: [[UInt8]] = []

        init() {}

        init(at offset: UInt64, _ bytes: UnsafeRawBufferPointer) {
            let end = offset + UInt64(bytes.count)
            first = (offset + logicalBlockBytes - 1) / logicalBlockBytes
            var index = first
            while (index + 1) * logicalBlockBytes <= end {
                let source = Int(index * logicalBlockBytes - offset)
                blocks.append(Array(UnsafeRawBufferPointer(rebasing: bytes[source..<(source + Int(logicalBlockBytes))])))
                index += 1
            }
        }

        func block(_ index: UInt64) -> [UInt8]? {
            index >= first && index - first < UInt64(blocks.count) ? blocks[Int(index - first)] : nil
        }
    }

    func writeData(_ node: Node, at offset: UInt64, _ bytes: UnsafeRawBufferPointer,
                   prepared: WholeBlocks = WholeBlocks()) throws {
        var position = offset
        var source = 0
        let end = offset + UInt64(bytes.count)
        while position < end {
            let index = position / logicalBlockBytes
            let blockStart = index * logicalBlockBytes
            let blockEnd = min(blockStart + logicalBlockBytes, end)
            let count = Int(blockEnd - position)
            if position == blockStart && count == Int(logicalBlockBytes) {
                // A whole block: taken from the request as it is, nothing read or zeroed.
                node.setDirtyBlock(index, prepared.block(index)
                                   ?? Array(UnsafeRawBufferPointer(rebasing: bytes[source..<(source + count)])), logged: false)
                source += count
                position = blockEnd
                continue
            }
            let needed = Int(blockEnd - blockStart)
            let piece = UnsafeRawBufferPointer(rebasing: bytes[source..<(source + count)])
            if !node.changeDirtyBlock(index, at: Int(position - blockStart), to: piece, extendingTo: needed) {
                var block = try loadBlock(node, index)
                if block.count < needed { block += [UInt8](repeating: 0, count: needed - block.count) }
                block.withUnsafeMutableBytes { dst in
                    (dst.baseAddress! + Int(position - blockStart)).copyMemory(from: piece.baseAddress!, byteCount: count)
                }
                node.setDirtyBlock(index, block, logged: false)
            }
            source += count
            position = blockEnd
        }
        node.noteChanged(offset..<end)
        if end > node.meta.size { node.meta.size = end }
        node.dirty = true
    }

    /// hammer2_truncate_file / hammer2_extend_file.
    func truncate(_ node: Node, to size: UInt64) throws {
        if size < node.meta.size {
            if size % logicalBlockBytes != 0 {
                // The block holding the new end keeps its head; its tail reads as zeros.
                let index = size / logicalBlockBytes
                node.setDirtyBlock(index, Array(try loadBlock(node, index).prefix(Int(size % logicalBlockBytes))), logged: false)
            }
            let firstDead = (size + logicalBlockBytes - 1) / logicalBlockBytes
            node.removeDirtyBlocks(from: firstDead)
            node.diskLimit = min(node.diskLimit, size)
            node.loggedLowestSize = min(node.loggedLowestSize ?? .max, size)
        }
        node.meta.size = size
        node.dirty = true
    }
}
