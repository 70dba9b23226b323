// Block allocation through the on-disk freemap (hammer2_freemap.c).
//
// The freemap is loaded whole (32 KiB per GiB of volume) and changed in memory; a flush
// writes the changed leaves and the nodes above them. Rules kept from DragonFly:
// - 2 bits per 16 KiB: 11 allocated, 00 free (10 staged by bulkfree). Each 4 MiB entry has a
//   class ((bref type << 8) | HAMMER2_PBUFRADIX) so data and metadata keep to separate
//   segments, `linear` for packing blocks under 16 KiB into a partly used 16 KiB block, and
//   `avail` bytes.
// - Blocks are powers of two from 1 KiB to 64 KiB, naturally aligned, so one never crosses
//   a 64 KiB buffer.
// - Freemap blocks live in the reserved 4 MiB at the start of every 1 GiB, at
//   (index * 5 + 1 + level) * 64 KiB, and every rewrite moves to the next of 8 rotation
//   indexes (hammer2_freemap_reserve): the freemap the last flushed header points to is
//   never overwritten.
// - Deleting data does not free it (DragonFly marks nothing); bulkfree finds what is
//   unreachable and clears it.
// - A leaf appears when its GiB first gets an allocation, set up as hammer2_freemap_init
//   does: the reserved area, space before allocator_beg and past the end allocated.

import Glibc
import HAMMER2Engine
import HAMMER2Format

public struct FreemapAllocator {
    static let blockBytes: UInt64 = 16_384  // HAMMER2_FREEMAP_BLOCK_SIZE
    static let segmentBytes: UInt64 = 4 << 20  // HAMMER2_SEGSIZE: one bmap entry
    static let leafBytes: UInt64 = 1 << 30  // HAMMER2_FREEMAP_LEVEL1_SIZE
    static let bufferBytes: UInt64 = 65_536  // HAMMER2_PBUFSIZE
    static let rotations: UInt64 = 8  // HAMMER2_NFREEMAPS
    static let rotationStride: UInt64 = 5  // HAMMER2_ZONE_FREEMAP_INC
    static let firstFreemapBuffer: UInt64 = 1  // HAMMER2_ZONE_FREEMAP_00
    /// Node levels above the leaves: their key radix (HAMMER2_FREEMAP_LEVEL2..5_RADIX).
    static let nodeRadixes = [38, 46, 54, 62]

    struct Leaf {
        var entries: [BitmapData]
        /// The leaf's blockref as last flushed (nil: created since).
        var bref: Blockref?
        var dirty: Bool
    }

    public internal(set) var volumeSize: UInt64
    public let allocatorBegin: UInt64
    var leaves: [UInt64: Leaf] = [:]
    /// Freemap node blockrefs as last flushed, by key | radix (their rotation index).
    var nodes: [UInt64: Blockref] = [:]
    /// Where each allocation class (and copy index, above bit 16) last succeeded, as a
    /// segment index.
    private var cursors: [UInt32: UInt64] = [:]
    /// The volumes' ranges in the logical address space (one for a single volume), so the
    /// copies of a block can go to different volumes.
    public var volumeRanges: [Range<UInt64>] = []
    /// allocator_free: bytes of 16 KiB blocks not allocated.
    public internal(set) var freeBytes: UInt64
    /// Bytes allocated since the last bulkfree began: what copy-on-write may have left
    /// behind for the next pass to free (Reclaim.swift).
    var bytesAllocatedSinceReclaim: UInt64 = 0
    /// While a bulkfree scans without the lock: the 16 KiB blocks allocated since its scan
    /// began, which it must not free (they are not in the tree it scans).
    var allocatedDuringScan: BlockBitmap?

    /// A freemap with nothing allocated yet (newfs).
    public init(volumeSize: UInt64, allocatorBegin: UInt64, freeBytes: UInt64) {
        self.volumeSize = volumeSize
        self.allocatorBegin = allocatorBegin
        self.freeBytes = freeBytes
    }

    /// Loads the freemap the volume header points to.
    public init(header: VolumeHeader, volumeSize: UInt64, reader: BlockReader) throws {
        self.init(volumeSize: volumeSize, allocatorBegin: header.allocatorBegin, freeBytes: header.allocatorFree)
        try load(header.freemapBlockset, reader: reader)
    }

    private mutating func load(_ refs: [Blockref], reader: BlockReader) throws {
        for bref in refs where bref.type != .empty {
            switch bref.type {
            case .freemapNode:
                nodes[bref.key | UInt64(bref.keybits)] = bref
                try load(reader.childBlockrefs(bref), reader: reader)
            case .freemapLeaf:
                guard bref.keybits == UInt8(HAMMER2.freemapLevel1Radix), bref.key % Self.leafBytes == 0 else {
                    throw EngineError.corrupt("freemap leaf with key range 0x\(String(bref.key, radix: 16))/\(bref.keybits)")
                }
                let entries = try decodeFreemapLeaf(reader.physical(bref))
                leaves[bref.key / Self.leafBytes] = Leaf(entries: entries, bref: bref, dirty: false)
            default:
                throw EngineError.corrupt("\(describe(bref)) in the freemap")
            }
        }
    }

    /// Whether `offset` lies in the reserved first 4 MiB of its 1 GiB.
    static func isReserved(_ offset: UInt64) -> Bool { offset % leafBytes < segmentBytes }

    /// The 256 entries of a new leaf at GiB `index` (hammer2_freemap_init).
    func newLeafEntries(_ index: UInt64) -> [BitmapData] {
        let full = BitmapData(linear: Int32(Self.segmentBytes), allocationClass: 0, avail: 0,
                              bitmap: [UInt64](repeating: .max, count: 8))
        let end = volumeSize / Self.segmentBytes * Self.segmentBytes
        return (0..<UInt64(BitmapData.entriesPerLeaf)).map { i in
            let start = index * Self.leafBytes + i * Self.segmentBytes
            if Self.isReserved(start) || start < allocatorBegin || start >= end { return full }
            return BitmapData(avail: UInt32(Self.segmentBytes))
        }
    }

    // MARK: Allocation

    /// A media offset for a new block of `bytes` (a power of two, 1 KiB...64 KiB) of `type`.
    public mutating func allocate(_ bytes: Int, type: BlockrefType) throws -> UInt64 {
        try allocate(bytes, type: type, copies: 1)[0]
    }

    /// Media offsets for `copies` copies of a new block, placed apart (docs/copies.md):
    /// copy i goes to another volume than copy 0 when there are several, else it starts
    /// its search i/copies of the way through the volume; never two in one 4 MiB segment
    /// while another segment has room.
    public mutating func allocate(_ bytes: Int, type: BlockrefType, copies: Int) throws -> [UInt64] {
        precondition(bytes >= 1024 && bytes <= 65_536 && bytes & (bytes - 1) == 0, "block size \(bytes)")
        let allocationClass = UInt16(type.rawValue) << 8 | 16
        let segments = (volumeSize + Self.segmentBytes - 1) / Self.segmentBytes
        let first = allocatorBegin / Self.segmentBytes
        guard segments > first else { throw EngineError.posix(ENOSPC, "volume has no allocatable space") }
        var offsets: [UInt64] = []
        for copy in 0..<max(1, copies) {
            let cursorKey = UInt32(allocationClass) | UInt32(copy) << 16
            var range = first..<segments
            var start = first
            if copy > 0 {
                if volumeRanges.count > 1, let home = volumeRanges.firstIndex(where: { $0.contains(offsets[0]) }) {
                    let volume = volumeRanges[(home + copy) % volumeRanges.count]
                    range = max(first, volume.lowerBound / Self.segmentBytes)..<min(segments, (volume.upperBound + Self.segmentBytes - 1) / Self.segmentBytes)
                    start = range.lowerBound
                } else {
                    start = first + UInt64(copy) * (segments - first) / UInt64(max(1, copies))
                }
            }
            if let cursor = cursors[cursorKey], range.contains(cursor) { start = cursor }
            let taken = Set(offsets.map { $0 / Self.segmentBytes })
            var found: UInt64?
            // Passes: the copy's own region keeping classes apart, then any class, then the
            // whole volume; a segment already holding a copy of this block only last.
            search: for (region, strict, apart) in [(range, true, true), (range, false, true),
                                                    (first..<segments, false, true), (first..<segments, false, false)] {
                guard !region.isEmpty else { continue }
                var segment = region.contains(start) ? start : region.lowerBound
                for _ in region {
                    if !apart || !taken.contains(segment),
                       let offset = tryAllocate(bytes, in: segment, class: allocationClass, strict: strict) {
                        cursors[cursorKey] = segment
                        found = offset
                        break search
                    }
                    segment += 1
                    if segment >= region.upperBound { segment = region.lowerBound }
                }
            }
            guard let offset = found else {
                throw EngineError.posix(ENOSPC, "no free block of \(bytes) bytes left in the freemap")
            }
            offsets.append(offset)
        }
        bytesAllocatedSinceReclaim &+= UInt64(bytes * offsets.count)
        if allocatedDuringScan != nil {
            for offset in offsets {
                // Every 16 KiB block the new block covers (a 64 KiB block spans four).
                for block in (offset / Self.blockBytes)...((offset + UInt64(bytes) - 1) / Self.blockBytes) {
                    allocatedDuringScan!.insert(block)
                }
            }
        }
        return offsets
    }

    private mutating func tryAllocate(_ bytes: Int, in segment: UInt64, class allocationClass: UInt16, strict: Bool) -> UInt64? {
        let leafIndex = segment * Self.segmentBytes / Self.leafBytes
        let entryIndex = Int(segment % UInt64(BitmapData.entriesPerLeaf))
        if leaves[leafIndex] == nil {
            // Only materialize a leaf when it could hold the block.
            let candidate = newLeafEntries(leafIndex)[entryIndex]
            guard candidate.avail >= UInt32(max(bytes, Int(Self.blockBytes))) else { return nil }
            leaves[leafIndex] = Leaf(entries: newLeafEntries(leafIndex), bref: nil, dirty: true)
        }
        var entry = leaves[leafIndex]!.entries[entryIndex]
        if entry.avail == 0 && (bytes >= Int(Self.blockBytes) || entry.linear % Int32(Self.blockBytes) == 0) { return nil }
        if entry.allocationClass != 0 && entry.allocationClass != allocationClass && strict { return nil }
        let base = segment * Self.segmentBytes
        var found: UInt64?
        let size = UInt64(bytes)
        // Small blocks first pack into the 16 KiB block `linear` is in.
        if size < Self.blockBytes, entry.linear > 0, UInt64(entry.linear) < Self.segmentBytes {
            let linear = UInt64(entry.linear)
            let aligned = (linear + size - 1) / size * size
            if linear % Self.blockBytes != 0, aligned / Self.blockBytes == linear / Self.blockBytes,
               aligned + size <= (linear / Self.blockBytes + 1) * Self.blockBytes,
               entry.state(ofBlock: Int(linear / Self.blockBytes)) == .allocated {
                found = aligned
                entry.linear = Int32(aligned + size)
            }
        }
        if found == nil {
            let run = max(1, Int(size / Self.blockBytes))
            var block = 0
            while block + run <= BitmapData.blocksPerEntry {
                if (block..<(block + run)).allSatisfy({ entry.state(ofBlock: $0) == .free }) {
                    for b in block..<(block + run) { entry.setState(.allocated, ofBlock: b) }
                    entry.avail -= UInt32(UInt64(run) * Self.blockBytes)
                    freeBytes -= min(freeBytes, UInt64(run) * Self.blockBytes)
                    let offset = UInt64(block) * Self.blockBytes
                    if size < Self.blockBytes { entry.linear = Int32(offset + size) }
                    found = offset
                    break
                }
                block += run
            }
        }
        guard let relative = found else { return nil }
        if entry.allocationClass == 0 { entry.allocationClass = allocationClass }
        leaves[leafIndex]!.entries[entryIndex] = entry
        leaves[leafIndex]!.dirty = true
        return base + relative
    }

    /// Marks a range allocated (newfs's boot and aux areas, bulkfree's rebuild).
    public mutating func markAllocated(_ offset: UInt64, bytes: UInt64) {
        var block = offset / Self.blockBytes * Self.blockBytes
        while block < offset + bytes {
            let leafIndex = block / Self.leafBytes
            if leaves[leafIndex] == nil {
                leaves[leafIndex] = Leaf(entries: newLeafEntries(leafIndex), bref: nil, dirty: true)
            }
            let entryIndex = Int((block / Self.segmentBytes) % UInt64(BitmapData.entriesPerLeaf))
            let blockIndex = Int((block % Self.segmentBytes) / Self.blockBytes)
            if leaves[leafIndex]!.entries[entryIndex].state(ofBlock: blockIndex) != .allocated {
                leaves[leafIndex]!.entries[entryIndex].setState(.allocated, ofBlock: blockIndex)
                leaves[leafIndex]!.entries[entryIndex].avail -= UInt32(Self.blockBytes)
                freeBytes -= min(freeBytes, Self.blockBytes)
                leaves[leafIndex]!.dirty = true
            }
            block += Self.blockBytes
        }
    }

    /// Whether the 16 KiB block holding `offset` is marked allocated.
    public func isAllocated(_ offset: UInt64) -> Bool {
        guard let leaf = leaves[offset / Self.leafBytes] else { return false }
        let entry = leaf.entries[Int((offset / Self.segmentBytes) % UInt64(BitmapData.entriesPerLeaf))]
        return entry.state(ofBlock: Int((offset % Self.segmentBytes) / Self.blockBytes)) == .allocated
    }

    public var hasChanges: Bool { leaves.values.contains { $0.dirty } }

    // MARK: Flush

    /// Writes every changed leaf and the nodes above it to their next rotation slot and
    /// returns the freemap blockset for the volume header. With `copies` > 1 each block
    /// also goes to copy slots in the unused part of the same reserved area (copySlotOffset).
    mutating func flush(tid: UInt64, copies: Int = 1, write: (UInt64, [UInt8], Int) throws -> Void) throws -> [Blockref] {
        let copies = min(copies, Blockref.copyCapacity(.freemap))
        /// Writes `bytes` to `offset` and its copy slots; returns each copy's data_off.
        func writeCopies(_ bytes: [UInt8], at offset: UInt64, key: UInt64, radix: Int, level: Int) throws -> [UInt64] {
            var offsets = [offset]
            for copy in 1..<max(copies, 1) {
                offsets.append(Self.copySlotOffset(key: key, radix: radix, level: level, primary: offset, copy: copy))
            }
            for (index, target) in offsets.enumerated() { try write(target, bytes, index) }
            return offsets.map { Blockref.dataOffset($0, radix: 15) }
        }
        var level: [Blockref] = []
        var changed = Set<UInt64>()  // keys of entries rewritten at this level
        for index in leaves.keys.sorted() {
            var leaf = leaves[index]!
            guard leaf.dirty || leaf.bref == nil else {
                level.append(leaf.bref!)
                continue
            }
            let bytes = encodeFreemapLeaf(leaf.entries)
            let key = index * Self.leafBytes
            let offset = Self.freemapBlockOffset(key: key, radix: HAMMER2.freemapLevel1Radix, level: 0, previous: leaf.bref)
            let placed = try writeCopies(bytes, at: offset, key: key, radix: HAMMER2.freemapLevel1Radix, level: 0)
            var bref = Blockref(type: .freemapLeaf, methods: Blockref.methods(check: .freemap, compression: .none),
                                key: key, keybits: UInt8(HAMMER2.freemapLevel1Radix), tid: tid)
            let avail = leaf.entries.reduce(UInt64(0)) { $0 + UInt64($1.avail) }
            bref.check = .freemap(crc: CRC32C.checksum(bytes), bigmask: 0xFFFF_FFFF, avail: avail)
            bref.place(placed)
            leaf.bref = bref
            leaf.dirty = false
            leaves[index] = leaf
            level.append(bref)
            changed.insert(key)
        }
        for (depth, radix) in Self.nodeRadixes.enumerated() where level.count > HAMMER2.blocksetCount {
            var next: [Blockref] = []
            var nextChanged = Set<UInt64>()
            let groups = Dictionary(grouping: level) { $0.key >> UInt64(radix) }
            for groupKey in groups.keys.sorted() {
                let children = groups[groupKey]!.sorted { $0.key < $1.key }
                let key = groupKey << UInt64(radix)
                let previous = nodes[key | UInt64(radix)]
                if let previous, !children.contains(where: { changed.contains($0.key) }) {
                    next.append(previous)
                    continue
                }
                let bytes = encodeBlockrefs(children, bytes: HAMMER2.freemapBlockBytes)
                let offset = Self.freemapBlockOffset(key: key, radix: radix, level: depth + 1, previous: previous)
                let placed = try writeCopies(bytes, at: offset, key: key, radix: radix, level: depth + 1)
                var bref = Blockref(type: .freemapNode, methods: Blockref.methods(check: .freemap, compression: .none),
                                    key: key, keybits: UInt8(radix), tid: tid)
                let avail = children.reduce(UInt64(0)) { $0 + $1.check.freemapAvail }
                bref.check = .freemap(crc: CRC32C.checksum(bytes), bigmask: 0xFFFF_FFFF, avail: avail)
                bref.place(placed)
                nodes[key | UInt64(radix)] = bref
                next.append(bref)
                nextChanged.insert(key)
            }
            level = next
            changed = nextChanged
        }
        precondition(level.count <= HAMMER2.blocksetCount, "freemap top does not fit the blockset")
        return level
    }

    /// HAMMER2_ZONE_UNUSED41: the first 64 KiB buffer of the reserved area DragonFly leaves
    /// unused; freemap copies go there in 32 KiB slots.
    static let firstCopyBuffer: UInt64 = 41

    /// Where copy `copy` (1...3) of the freemap block at level `level` goes: one of two
    /// slots chosen by the primary's rotation index, so the copy the last flushed header
    /// points to is never overwritten. Slot (copy-1)*10 + level*2 + parity, 32 KiB each,
    /// from buffer 41: at most 30 slots, ending in buffer 56 of 64.
    static func copySlotOffset(key: UInt64, radix: Int, level: Int, primary: UInt64, copy: Int) -> UInt64 {
        let buffer = (primary % segmentBytes) / bufferBytes
        let index = buffer >= firstFreemapBuffer ? (buffer - firstFreemapBuffer) / rotationStride : 0
        let base = radix >= 64 ? 0 : key & ~((UInt64(1) << UInt64(radix)) - 1)
        let slot = UInt64(copy - 1) * 10 + UInt64(level) * 2 + index % 2
        return base + firstCopyBuffer * bufferBytes + slot * UInt64(HAMMER2.freemapBlockBytes)
    }

    /// hammer2_freemap_reserve: the next rotation slot after `previous` (0 for a new block).
    static func freemapBlockOffset(key: UInt64, radix: Int, level: Int, previous: Blockref?) -> UInt64 {
        var index: UInt64 = 0
        if let previous {
            let buffer = (previous.mediaOffset % segmentBytes) / bufferBytes
            if buffer >= firstFreemapBuffer {
                index = ((buffer - firstFreemapBuffer) / rotationStride + 1) % rotations
            }
        }
        let base = radix >= 64 ? 0 : key & ~((UInt64(1) << UInt64(radix)) - 1)
        return base + (index * rotationStride + firstFreemapBuffer + UInt64(level)) * bufferBytes
    }
}
