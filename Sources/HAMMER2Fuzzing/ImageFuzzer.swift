// The image-level fuzzer: mutates a base image and mounts it in-process the way fsck and
// mount_hammer2 do (verify every tree, open every PFS, walk and read the namespace, and with
// the write flag create, rename, remove, flush and bulkfree). Nothing may trap or hang.
//
// An input is a flag byte and a list of patches. Patches land in the image's metadata (the
// volume header, inodes, indirect blocks, long dirent names, freemap blocks, compressed
// data), found by walking the base once. With the reseal flag, the check codes of every
// block on the path from a patched block to the volume header are recomputed, so the
// mutation reaches the decoders behind the checks instead of stopping at a check failure.
//
// Input: byte 0 = flags (bits 0-1 base image, bit 6 write phase, bit 7 reseal), then up to
// 32 patches of [u16 block index][u16 offset in block][u8 op<<4 | length-1][bytes], where
// op 0 overwrites with the bytes, 1 XORs them, 2 sets 0xFF, 3 sets zero (no bytes follow).

import HAMMER2CopyOnWrite
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format

/// A block of a base image that patches may hit, with where its blockref lives.
struct MappedBlock: Sendable {
    enum Parent: Sendable {
        /// The blockref is in the volume header at this byte offset.
        case header(brefOffset: Int)
        /// The blockref is inside mapped block `index` at this byte offset.
        case block(index: Int, brefOffset: Int)
    }

    var offset: UInt64
    var bytes: Int
    var parent: Parent?
    /// The blockref that points here (nil for the volume header).
    var bref: Blockref?
}

public final class ImageFuzzer: @unchecked Sendable {
    public static let maximumPatches = 32
    /// Blocks mapped per base at most, and compressed data blocks among them.
    static let mapLimit = 20_000, dataBlockLimit = 256
    /// Bytes of the volume header patches target (its sectors hold every field).
    static let headerTargetBytes = 4096
    /// Namespace walk budget per PFS: inodes visited, bytes read per file.
    static let walkInodes = 2_000, readBytes = 256 << 10

    let bases: [(image: SparseImage, blocks: [MappedBlock])]

    public init(bases: [SparseImage]) {
        precondition(!bases.isEmpty, "the image fuzzer needs at least one base image")
        self.bases = bases.map { ($0, Self.map(OverlayDevice(base: $0))) }
    }

    /// Blocks mapped in each base (for reports).
    public var mappedBlockCounts: [Int] { bases.map(\.blocks.count) }

    public func run(_ input: [UInt8]) {
        guard let flags = input.first else { return }
        let base = bases[Int(flags & 3) % bases.count]
        let device = OverlayDevice(base: base.image)
        let patched = applyPatches(Array(input.dropFirst()), blocks: base.blocks, device: device)
        if flags & 0x80 != 0 {
            for index in patched { reseal(index, blocks: base.blocks, device: device) }
        }
        Self.exercise(device, write: flags & 0x40 != 0)
    }

    // MARK: Mapping the base

    static func map(_ device: OverlayDevice) -> [MappedBlock] {
        var blocks = [MappedBlock(offset: 0, bytes: headerTargetBytes, parent: nil, bref: nil)]
        var seen = Set<UInt64>()
        var dataBlocks = 0
        guard let header = try? device.read(at: 0, count: HAMMER2.volumeHeaderBytes) else { return blocks }

        func visit(_ bref: Blockref, _ parent: MappedBlock.Parent, depth: Int) {
            guard depth < BlockTree.maximumDepth, blocks.count < mapLimit else { return }
            let bytes = bref.physicalBytes
            guard (HAMMER2.allocationMinRadix...HAMMER2.allocationMaxRadix).contains(bref.physicalRadix),
                  bref.mediaOffset + UInt64(bytes) <= device.size, !seen.contains(bref.mediaOffset) else { return }
            switch bref.type {
            case .data:
                guard bref.compression == .lz4 || bref.compression == .zlib, dataBlocks < dataBlockLimit else { return }
                dataBlocks += 1
            case .dirent:
                guard bref.direntNameLength > 64 else { return }
            case .inode, .indirect, .freemapNode, .freemapLeaf:
                break
            default:
                return
            }
            seen.insert(bref.mediaOffset)
            let index = blocks.count
            blocks.append(MappedBlock(offset: bref.mediaOffset, bytes: bytes, parent: parent, bref: bref))
            guard let data = try? device.read(at: bref.mediaOffset, count: bytes) else { return }
            var children: Range<Int>?
            switch bref.type {
            case .inode:
                if let inode = try? InodeData(decoding: data), !inode.meta.hasDirectData { children = 0x200..<0x400 }
            case .indirect, .freemapNode:
                children = 0..<(bytes / HAMMER2.blockrefBytes * HAMMER2.blockrefBytes)
            default:
                break
            }
            guard let children else { return }
            for at in stride(from: children.lowerBound, to: children.upperBound, by: HAMMER2.blockrefBytes) {
                if let child = try? Blockref(decoding: Array(data[at..<(at + HAMMER2.blockrefBytes)])) {
                    visit(child, .block(index: index, brefOffset: at), depth: depth + 1)
                }
            }
        }

        for blocksetOffset in [0x200, 0x800] {
            for i in 0..<HAMMER2.blocksetCount {
                let at = blocksetOffset + i * HAMMER2.blockrefBytes
                if let bref = try? Blockref(decoding: Array(header[at..<(at + HAMMER2.blockrefBytes)])) {
                    visit(bref, .header(brefOffset: at), depth: 0)
                }
            }
        }
        return blocks
    }

    // MARK: Mutating

    /// Applies the patches; returns the indexes of the blocks they touched.
    func applyPatches(_ input: [UInt8], blocks: [MappedBlock], device: OverlayDevice) -> [Int] {
        var touched: [Int] = []
        var at = 0, count = 0
        while at + 5 <= input.count, count < Self.maximumPatches {
            let index = Int(UInt16(input[at]) | UInt16(input[at + 1]) << 8) % blocks.count
            let block = blocks[index]
            let offset = Int(UInt16(input[at + 2]) | UInt16(input[at + 3]) << 8) % block.bytes
            let op = input[at + 4] >> 4
            let length = min(Int(input[at + 4] & 0x0F) + 1, block.bytes - offset)
            at += 5
            guard var bytes = try? device.read(at: block.offset + UInt64(offset), count: length) else { break }
            switch op % 4 {
            case 0, 1:
                for i in 0..<length where at + i < input.count {
                    bytes[i] = op % 4 == 0 ? input[at + i] : bytes[i] ^ input[at + i]
                }
                at += length
            case 2: bytes = [UInt8](repeating: 0xFF, count: length)
            default: bytes = [UInt8](repeating: 0, count: length)
            }
            try? bytes.withUnsafeBytes { try device.write($0, at: block.offset + UInt64(offset)) }
            touched.append(index)
            count += 1
        }
        return touched
    }

    /// Recomputes the check codes from block `index` up to the volume header's CRCs.
    func reseal(_ index: Int, blocks: [MappedBlock], device: OverlayDevice) {
        var current = index
        while let parent = blocks[current].parent {
            let block = blocks[current]
            let brefAt: UInt64
            switch parent {
            case let .header(brefOffset): brefAt = UInt64(brefOffset)
            case let .block(parentIndex, brefOffset): brefAt = blocks[parentIndex].offset + UInt64(brefOffset)
            }
            guard var raw = try? device.read(at: brefAt, count: HAMMER2.blockrefBytes),
                  let bref = try? Blockref(decoding: raw),
                  let data = try? device.read(at: block.offset, count: block.bytes) else { return }
            let method = bref.checkMethod
            switch method {
            case .none, .disabled:
                break
            case .freemap:
                let crc = CRC32C.checksum(data)
                for i in 0..<4 { raw[0x40 + i] = UInt8(truncatingIfNeeded: crc >> UInt32(8 * i)) }
            case .iscsi32, .xxhash64, .sha192:
                var updated = bref
                updated.check = CheckArea.computed(method, over: data)
                // Extra copies' addresses follow the check code: keep them (below, the
                // copies get the patched bytes, so the patch passes whichever is read).
                updated.place((0...bref.extraCopyCount).map { bref.copyDataOffset($0) })
                raw = updated.encoded()
            default:
                return  // a patched method code: nothing to compute
            }
            for offset in bref.copyMediaOffsets.dropFirst() {
                try? data.withUnsafeBytes { try device.write($0, at: offset) }
            }
            try? raw.withUnsafeBytes { try device.write($0, at: brefAt) }
            guard case let .block(parentIndex, _) = parent else { break }
            current = parentIndex
        }
        guard var header = try? device.read(at: 0, count: HAMMER2.volumeHeaderBytes) else { return }
        header.withUnsafeMutableBytes { VolumeHeader.storeChecksums(into: $0) }
        try? header.withUnsafeBytes { try device.write($0, at: 0) }
    }

    // MARK: Mounting

    /// What fsck and a mount do with an image, errors ignored: only traps and hangs count.
    static func exercise(_ device: OverlayDevice, write: Bool) {
        guard let volumes = try? VolumeSet(devices: [device]) else { return }
        // The generated image's encrypted PFS opens with the fuzz key file: its sealed
        // blocks, names and root MAC go through the same mutations.
        let keyring = Keyring()
        if let filesystem = try? Filesystem(volumes: volumes, cacheBytes: 1 << 20), let entries = try? filesystem.pfsEntries() {
            for entry in entries {
                if let bytes = entry.inode.keyRecord, let record = try? KeyRecord(decoding: bytes),
                   let keys = try? record.unwrap(.keyFile(fuzzKeyFile)) {
                    keyring.add(keys)
                }
            }
        }
        func share(_ reader: BlockReader) { keyring.copy(into: reader.keyring) }
        let verifier = Verifier(volumes: volumes)
        verifier.keyring = keyring
        _ = verifier.verifyTree(.topology, header: volumes.header)
        _ = verifier.verifyTree(.freemap, header: volumes.header)
        _ = verifier.verifyFreemapAgreement(header: volumes.header)
        var labels: [String] = []
        if let filesystem = try? Filesystem(volumes: volumes, cacheBytes: 4 << 20),
           let entries = try? filesystem.pfsEntries() {
            share(filesystem.reader)
            labels = entries.prefix(5).map(\.name)
            for label in labels {
                if let pfs = try? filesystem.openPFS(label) { _ = verifier.verifyNamespace(pfs) }
            }
        }
        guard let filesystem = try? MutableFilesystem(volumes: volumes, readOnly: !write, cacheBytes: 4 << 20) else { return }
        share(filesystem.reader)
        var found: [(handle: PFSHandle, entries: [(parent: UInt64, name: [UInt8], inum: UInt64, type: ObjectType)])] = []
        for label in labels {
            guard let handle = try? filesystem.openPFS(label) else { continue }
            found.append((handle, walk(handle)))
        }
        guard write, let (handle, entries) = found.first else { return }
        change(handle, entries)
        _ = try? filesystem.flush()
        _ = try? filesystem.bulkfree()
        // What the flush wrote must read back through a fresh mount.
        if let volumes = try? VolumeSet(devices: [device]),
           let again = try? MutableFilesystem(volumes: volumes, readOnly: true, cacheBytes: 4 << 20) {
            share(again.reader)
            if let handle = try? again.openPFS(handle.label) { _ = walk(handle) }
        }
    }

    /// Visits the namespace as readdir/lookup/getattr/read/readlink would, within a budget.
    static func walk(_ handle: PFSHandle) -> [(parent: UInt64, name: [UInt8], inum: UInt64, type: ObjectType)] {
        var entries: [(parent: UInt64, name: [UInt8], inum: UInt64, type: ObjectType)] = []
        var pending: [UInt64] = [PFSHandle.rootInodeNumber]
        var visited = Set<UInt64>()
        while let directory = pending.popLast(), visited.count < walkInodes {
            guard visited.insert(directory).inserted else { continue }
            _ = try? handle.attributes(directory)
            _ = try? handle.parent(of: directory)
            try? handle.readDirectory(directory, from: 0, withAttributes: true) { entry, _ in
                entries.append((directory, entry.name, entry.inum, entry.type))
                return entries.count < walkInodes
            }
        }
        for entry in entries.prefix(walkInodes) {
            _ = try? handle.lookup(entry.parent, entry.name)
            switch entry.type {
            case .directory:
                if !visited.contains(entry.inum), visited.count < walkInodes { pending.append(entry.inum) }
            case .regularFile:
                guard let status = try? handle.attributes(entry.inum) else { continue }
                guard (try? handle.open(entry.inum)) != nil else { continue }
                _ = try? handle.read(entry.inum, offset: 0, count: Int(min(status.meta.size, UInt64(readBytes))))
                if status.meta.size > 1 { _ = try? handle.read(entry.inum, offset: status.meta.size - 1, count: 4096) }
                handle.release(entry.inum)
            case .softlink:
                _ = try? handle.readLink(entry.inum)
            default:
                _ = try? handle.attributes(entry.inum)
            }
            _ = try? handle.inodeInfo(entry.inum)
        }
        // Directories found after the first pass are walked once more, still within budget.
        while let directory = pending.popLast(), visited.count < walkInodes {
            guard visited.insert(directory).inserted else { continue }
            try? handle.readDirectory(directory, from: 0, withAttributes: true) { _, _ in true }
        }
        return entries
    }

    /// The writes a mount would do: create, write, mkdir, rename, truncate, unlink.
    static func change(_ handle: PFSHandle, _ entries: [(parent: UInt64, name: [UInt8], inum: UInt64, type: ObjectType)]) {
        let root = PFSHandle.rootInodeNumber
        let caller = Caller(uid: 0, gid: 0)
        if let file = try? handle.create(in: root, name: Array("fuzz-file".utf8), type: .regularFile, mode: 0o644, caller: caller) {
            let data = (0..<(150 << 10)).map { UInt8(truncatingIfNeeded: $0 / 7) }
            _ = try? data.withUnsafeBytes { try handle.write(file.meta.inum, offset: 0, $0) }
        }
        let directory = try? handle.create(in: root, name: Array("fuzz-dir".utf8), type: .directory, mode: 0o755, caller: caller)
        if let first = entries.first, let directory {
            try? handle.rename(from: first.parent, name: first.name, to: directory.meta.inum, newName: Array("moved".utf8))
        }
        if let file = entries.dropFirst().first(where: { $0.type == .regularFile }) {
            _ = try? handle.setAttributes(file.inum, AttributeChanges(size: 1000))
            _ = try? [UInt8](repeating: 0x5A, count: 70_000).withUnsafeBytes { try handle.write(file.inum, offset: 500, $0) }
        }
        if let victim = entries.dropFirst(2).first(where: { $0.type != .directory }) {
            try? handle.unlink(in: victim.parent, name: victim.name)
        }
        if let victim = entries.dropFirst(3).first(where: { $0.type == .directory }) {
            try? handle.removeDirectory(in: victim.parent, name: victim.name)
        }
    }
}
