// File data as DragonFly's write path (hammer2_strategy.c: hammer2_write_file_core,
// hammer2_compress_and_write, hammer2_zero_check_and_write) lays it out:
// - 64 KiB logical blocks keyed by file offset (keybits 16); the last block's physical
//   size is the smallest power of two >= 1 KiB that holds the tail (hammer2_calc_physical),
//   and the bytes past EOF in it are zeros.
// - comp none: every block is written, zeros included.
// - autozero, lz4, zlib: an all-zero block is a hole (no blockref) unless the check
//   method is none; then it is written like any other block.
// - lz4/zlib: a block is kept compressed only if the compressor fits it in half the
//   physical size; it is then stored in the smallest power of two >= 1 KiB holding it,
//   zero padded, with the compression in `methods`. Otherwise it is stored raw, comp 0.
//   (DragonFly also stops trying to compress after repeated failures, a heuristic this
//   writer skips: it always tries, which gives the same layout for uniform files.)
// - The check code covers the physical (compressed, padded) bytes.

import HAMMER2Codecs
import HAMMER2Format

struct DataBlockWriter {
    static let logicalBlockBytes = 65_536

    let compression: BlockCompression
    let check: CheckMethod
    let tid: UInt64

    /// hammer2_calc_physical: physical bytes of the block at `offset` of a file of `size`.
    static func physicalBytes(fileSize size: UInt64, blockOffset offset: UInt64) -> Int {
        let remaining = size - offset
        if remaining >= UInt64(logicalBlockBytes) { return logicalBlockBytes }
        var bytes = 1024
        while UInt64(bytes) < remaining { bytes *= 2 }
        return bytes
    }

    /// Writes every block of `content` and returns the DATA blockrefs (holes omitted).
    func write(_ content: FileContent, allocate: (Int) throws -> UInt64,
               store: (UnsafeRawBufferPointer, UInt64) throws -> Void) throws -> [Blockref] {
        let size = content.size
        var refs: [Blockref] = []
        var block = [UInt8](repeating: 0, count: Self.logicalBlockBytes)
        var offset: UInt64 = 0
        while offset < size {
            let physical = Self.physicalBytes(fileSize: size, blockOffset: offset)
            let valid = Int(min(UInt64(physical), size - offset))
            try block.withUnsafeMutableBytes { raw in
                raw.mutableSliceFromStart(physical).initializeMemory(as: UInt8.self, repeating: 0)
                content.fill(offset, UnsafeMutableRawBufferPointer(rebasing: raw[0..<valid]))
                let logical = UnsafeRawBufferPointer(rebasing: raw[0..<physical])
                if let bref = try writeBlock(logical, at: offset, allocate: allocate, store: store) {
                    refs.append(bref)
                }
            }
            offset += UInt64(Self.logicalBlockBytes)
        }
        return refs
    }

    private func writeBlock(_ logical: UnsafeRawBufferPointer, at offset: UInt64, allocate: (Int) throws -> UInt64,
                            store: (UnsafeRawBufferPointer, UInt64) throws -> Void) throws -> Blockref? {
        if compression != .none && check != .none && Self.isAllZero(logical) { return nil }
        var compressed: [UInt8]?
        switch compression {
        case .lz4: compressed = Compressor.lz4(logical)
        case let .zlib(level): compressed = Compressor.zlib(logical, level: level)
        case .none, .autozero: compressed = nil
        }
        var bref = Blockref.empty
        bref.type = .data
        bref.key = offset
        bref.keybits = 16
        bref.mirrorTID = tid
        bref.modifyTID = tid
        if var stored = compressed {
            var bytes = 1024
            while bytes < stored.count { bytes *= 2 }
            stored += [UInt8](repeating: 0, count: bytes - stored.count)
            bref.methods = Blockref.methods(check: check, compression: compression.method)
            bref.dataOffset = Blockref.dataOffset(try allocate(bytes), radix: MediaLayout.radix(bytes))
            try stored.withUnsafeBytes { raw in
                bref.setCheck(over: raw)
                try store(raw, bref.mediaOffset)
            }
        } else {
            bref.methods = Blockref.methods(check: check, compression: .none)
            bref.dataOffset = Blockref.dataOffset(try allocate(logical.count), radix: MediaLayout.radix(logical.count))
            bref.setCheck(over: logical)
            try store(logical, bref.mediaOffset)
        }
        return bref
    }

    /// test_block_zeros
    static func isAllZero(_ bytes: UnsafeRawBufferPointer) -> Bool { SparseImageFile.isAllZero(bytes) }
}

extension UnsafeMutableRawBufferPointer {
    func mutableSliceFromStart(_ count: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: self[0..<count])
    }
}
