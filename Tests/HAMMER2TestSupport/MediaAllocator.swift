// Media allocation for the image builder, and the freemap that records it.
//
// Layout rules (hammer2_disk.h, hammer2_freemap.c):
// - The first 4 MiB of every 1 GiB (H2FMZONEBASE; the header comment calls it a 2 GiB
//   zone, the code uses 1 GiB) is reserved: volume header copies at 0 of each 2 GiB, and
//   the freemap's rotating copies at 64 KiB steps. Nothing is allocated there.
// - Blocks are powers of two from 1 KiB to 64 KiB and never straddle a 64 KiB boundary
//   (hammer2_io works on 64 KiB buffers).
// - The freemap has 2 bits per 16 KiB: 11 allocated, 00 free. A leaf covers 1 GiB as
//   256 entries of 4 MiB; leaves live at fixed places in the reserved area (rotation 0:
//   HAMMER2_ZONE_FREEMAP_00 + level index, in 64 KiB units from the 1 GiB base).
//
// Allocation is linear from `allocatorBegin` in 64 KiB chunks. Blocks smaller than 64 KiB
// are packed into a partially used chunk kept per blockref type, so inodes, names and
// indirect blocks do not break up runs of file data (DragonFly separates types by 4 MiB
// segment for the same reason).

import Foundation
import HAMMER2Format

/// The image file, written with pwrite(2); never-written ranges stay holes.
final class SparseImageFile {
    let path: String
    let size: UInt64
    private let fd: Int32

    init(path: String, size: UInt64) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ImageBuildError.io("open \(path)", errno) }
        guard ftruncate(fd, off_t(size)) == 0 else {
            let e = errno
            close(fd)
            throw ImageBuildError.io("truncate \(path) to \(size) bytes", e)
        }
        self.fd = fd
        self.path = path
        self.size = size
    }

    deinit { close(fd) }

    /// Writes `bytes` at `offset`. All-zero writes are skipped: the file was just truncated,
    /// so that range already reads as zeros, and skipping keeps the image sparse.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        precondition(offset + UInt64(bytes.count) <= size, "write past the end of the image")
        if Self.isAllZero(bytes) { return }
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw ImageBuildError.io("write \(path) at \(offset + UInt64(done))", errno)
            }
            done += n
        }
    }

    private static let zeros = [UInt8](repeating: 0, count: 65_536)

    /// memcmp against a zero buffer: fast even in debug builds.
    static func isAllZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let count = min(zeros.count, bytes.count - offset)
            let equal = zeros.withUnsafeBytes { memcmp(bytes.baseAddress! + offset, $0.baseAddress!, count) == 0 }
            if !equal { return false }
            offset += count
        }
        return true
    }

    func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    func sync() throws {
        guard fsync(fd) == 0 else { throw ImageBuildError.io("fsync \(path)", errno) }
    }
}

public enum ImageBuildError: Error, CustomStringConvertible {
    case io(String, Int32)
    case imageFull(needed: Int, size: UInt64)
    case invalidSpec(String)

    public var description: String {
        switch self {
        case let .io(what, code): return "\(what): \(String(cString: strerror(code)))"
        case let .imageFull(needed, size): return "image of \(size) bytes is full (allocating \(needed) bytes)"
        case let .invalidSpec(what): return "invalid image description: \(what)"
        }
    }
}

enum MediaLayout {
    static let chunkBytes: UInt64 = 65_536  // HAMMER2_PBUFSIZE
    static let segmentBytes: UInt64 = 4 << 20  // HAMMER2_SEGSIZE, one bmap entry
    static let levelOneBytes: UInt64 = 1 << 30  // HAMMER2_FREEMAP_LEVEL1_SIZE, one leaf
    static let levelTwoRadix: UInt8 = 38  // HAMMER2_FREEMAP_LEVEL2_RADIX
    static let freemapBlockBytes: UInt64 = 16_384  // HAMMER2_FREEMAP_BLOCK_SIZE
    static let zoneFreemap00: UInt64 = 1  // HAMMER2_ZONE_FREEMAP_00
    static let volumeAlign: UInt64 = 8 << 20  // HAMMER2_VOLUME_ALIGN

    /// Whether `offset` lies in the reserved first 4 MiB of its 1 GiB.
    static func isReserved(_ offset: UInt64) -> Bool { offset % levelOneBytes < segmentBytes }

    /// log2 of a power-of-two size.
    static func radix(_ bytes: Int) -> Int {
        precondition(bytes > 0 && bytes & (bytes - 1) == 0, "\(bytes) is not a power of two")
        return bytes.trailingZeroBitCount
    }
}

/// Linear allocator over the image; records what it hands out for the freemap.
struct MediaAllocator {
    let volumeSize: UInt64
    let allocatorBegin: UInt64
    private var nextChunk: UInt64
    /// Per blockref type: the chunk being packed with small blocks and the bytes used in it.
    private var partialChunks: [UInt8: (base: UInt64, used: UInt64)] = [:]
    /// Per 4 MiB segment (index = offset / 4 MiB): its usage.
    private(set) var segments: [UInt64: SegmentUsage] = [:]
    private(set) var allocatedBytes: UInt64 = 0

    struct SegmentUsage {
        var bitmap = BitmapData()
        /// (bref type << 8) | HAMMER2_PBUFRADIX of the first allocation in the segment.
        var allocationClass: UInt16 = 0
        /// End of the highest allocation, relative to the segment (bmap linear).
        var linear: UInt64 = 0
        var allocatedBlocks = 0
    }

    init(volumeSize: UInt64, allocatorBegin: UInt64) {
        precondition(allocatorBegin % MediaLayout.chunkBytes == 0, "allocator_beg is 64 KiB aligned")
        self.volumeSize = volumeSize
        self.allocatorBegin = allocatorBegin
        self.nextChunk = allocatorBegin
    }

    /// A media offset for a block of `bytes` (a power of two, 1 KiB...64 KiB) of `type`.
    mutating func allocate(_ bytes: Int, type: BlockrefType) throws -> UInt64 {
        precondition(bytes >= 1024 && bytes <= 65_536 && bytes & (bytes - 1) == 0, "block size \(bytes)")
        let size = UInt64(bytes)
        let offset: UInt64
        if size == MediaLayout.chunkBytes {
            offset = try freshChunk(bytes)
        } else if var partial = partialChunks[type.rawValue],
                  (partial.used + size - 1) / size * size + size <= MediaLayout.chunkBytes {
            // Natural alignment inside a 64 KiB-aligned chunk: the block cannot straddle.
            let start = (partial.used + size - 1) / size * size
            offset = partial.base + start
            partial.used = start + size
            partialChunks[type.rawValue] = partial
        } else {
            let base = try freshChunk(bytes)
            partialChunks[type.rawValue] = (base, size)
            offset = base
        }
        record(offset, size, type)
        return offset
    }

    private mutating func freshChunk(_ bytes: Int) throws -> UInt64 {
        if MediaLayout.isReserved(nextChunk) {
            nextChunk = nextChunk / MediaLayout.levelOneBytes * MediaLayout.levelOneBytes + MediaLayout.segmentBytes
        }
        guard nextChunk + MediaLayout.chunkBytes <= volumeSize else {
            throw ImageBuildError.imageFull(needed: bytes, size: volumeSize)
        }
        defer { nextChunk += MediaLayout.chunkBytes }
        return nextChunk
    }

    private mutating func record(_ offset: UInt64, _ size: UInt64, _ type: BlockrefType) {
        precondition(!MediaLayout.isReserved(offset), "allocation inside a reserved area")
        allocatedBytes += size
        let segmentIndex = offset / MediaLayout.segmentBytes
        let segmentBase = segmentIndex * MediaLayout.segmentBytes
        var usage = segments[segmentIndex] ?? SegmentUsage()
        if usage.allocationClass == 0 { usage.allocationClass = UInt16(type.rawValue) << 8 | 16 }
        let first = Int((offset - segmentBase) / MediaLayout.freemapBlockBytes)
        let last = Int((offset + size - 1 - segmentBase) / MediaLayout.freemapBlockBytes)
        for block in first...last where usage.bitmap.state(ofBlock: block) != .allocated {
            usage.bitmap.setState(.allocated, ofBlock: block)
            usage.allocatedBlocks += 1
        }
        usage.linear = max(usage.linear, offset + size - segmentBase)
        segments[segmentIndex] = usage
    }

    /// 16 KiB freemap blocks marked allocated, in bytes (what allocator_free goes down by).
    var allocatedFreemapBytes: UInt64 {
        segments.values.reduce(0) { $0 + UInt64($1.allocatedBlocks) * MediaLayout.freemapBlockBytes }
    }

    /// allocator_size: the volume minus the reserved 4 MiB of every 1 GiB started and the
    /// space before allocator_beg that is not already part of a reserved area.
    var allocatorSize: UInt64 {
        let levelOnes = (volumeSize + MediaLayout.levelOneBytes - 1) / MediaLayout.levelOneBytes
        let reserved = levelOnes * MediaLayout.segmentBytes
        let beforeBegin = allocatorBegin > MediaLayout.segmentBytes ? allocatorBegin - MediaLayout.segmentBytes : 0
        return volumeSize - reserved - beforeBegin
    }
}

/// The freemap blocks for an allocator's state.
struct FreemapImage {
    /// The volume header's freemap blockset.
    var blockset: [Blockref]
    /// (media offset, block bytes) to write.
    var blocks: [(UInt64, [UInt8])]

    /// Leaves for every 1 GiB that holds allocations (DragonFly creates leaves lazily), under
    /// one level-2 FREEMAP_NODE when there are more than four.
    init(allocator: MediaAllocator, tid: UInt64) {
        let levelOnes = Set(allocator.segments.keys.map { $0 * MediaLayout.segmentBytes / MediaLayout.levelOneBytes })
        var leaves: [Blockref] = []
        var blocks: [(UInt64, [UInt8])] = []
        for levelOne in levelOnes.sorted() {
            let base = levelOne * MediaLayout.levelOneBytes
            let entries = Self.leafEntries(base: base, allocator: allocator)
            let bytes = encodeFreemapLeaf(entries)
            let offset = base + MediaLayout.zoneFreemap00 * MediaLayout.chunkBytes  // ZONEFM_LEVEL1 = 0
            var leaf = Blockref.empty
            leaf.type = .freemapLeaf
            leaf.methods = Blockref.methods(check: .freemap, compression: .none)
            leaf.key = base
            leaf.keybits = UInt8(HAMMER2.freemapLevel1Radix)
            leaf.dataOffset = Blockref.dataOffset(offset, radix: MediaLayout.radix(bytes.count))
            leaf.mirrorTID = tid
            leaf.modifyTID = tid
            let avail = entries.reduce(UInt64(0)) { $0 + UInt64($1.avail) }
            leaf.check = .freemap(crc: CRC32C.checksum(bytes), bigmask: 0xFFFF_FFFF, avail: avail)
            leaves.append(leaf)
            blocks.append((offset, bytes))
        }
        if leaves.count <= HAMMER2.blocksetCount {
            self.blockset = leaves
        } else {
            precondition(leaves.last!.key < UInt64(1) << MediaLayout.levelTwoRadix,
                         "freemaps beyond 256 GiB need more node levels")
            let bytes = encodeBlockrefs(leaves, bytes: HAMMER2.freemapBlockBytes)
            let offset = (MediaLayout.zoneFreemap00 + 1) * MediaLayout.chunkBytes  // ZONEFM_LEVEL2 = 1
            var node = Blockref.empty
            node.type = .freemapNode
            node.methods = Blockref.methods(check: .freemap, compression: .none)
            node.key = 0
            node.keybits = MediaLayout.levelTwoRadix
            node.dataOffset = Blockref.dataOffset(offset, radix: MediaLayout.radix(bytes.count))
            node.mirrorTID = tid
            node.modifyTID = tid
            let avail = leaves.reduce(UInt64(0)) { $0 + $1.check.freemapAvail }
            node.check = .freemap(crc: CRC32C.checksum(bytes), bigmask: 0xFFFF_FFFF, avail: avail)
            self.blockset = [node]
            blocks.append((offset, bytes))
        }
        self.blocks = blocks
    }

    /// The 256 bmap entries of the leaf at `base`, as hammer2_freemap_init would set up a
    /// leaf (reserved area and space past the end allocated) plus the builder's allocations.
    static func leafEntries(base: UInt64, allocator: MediaAllocator) -> [BitmapData] {
        let full = BitmapData(linear: Int32(MediaLayout.segmentBytes), allocationClass: 0, avail: 0,
                              bitmap: [UInt64](repeating: UInt64.max, count: 8))
        let end = allocator.volumeSize / MediaLayout.segmentBytes * MediaLayout.segmentBytes
        return (0..<UInt64(BitmapData.entriesPerLeaf)).map { i in
            let start = base + i * MediaLayout.segmentBytes
            if MediaLayout.isReserved(start) || start < allocator.allocatorBegin || start >= end { return full }
            guard let usage = allocator.segments[start / MediaLayout.segmentBytes] else {
                return BitmapData(avail: UInt32(MediaLayout.segmentBytes))
            }
            var entry = usage.bitmap
            entry.allocationClass = usage.allocationClass
            entry.linear = Int32(usage.linear)
            entry.avail = UInt32(MediaLayout.segmentBytes - UInt64(usage.allocatedBlocks) * MediaLayout.freemapBlockBytes)
            return entry
        }
    }
}
