// How one logical data block is stored (hammer2_write_file_core and
// hammer2_compress_and_write), and the sink that allocates and writes new blocks.

import Dispatch
import Glibc
import HAMMER2Codecs
import HAMMER2Engine
import HAMMER2Format
import HAMMER2Trace

enum DataBlockEncoding {
    /// The stored form of a data block: nil for a hole (an all-zero block that the inode's
    /// methods let become one), else the physical bytes and the methods byte.
    typealias Stored = (bytes: [UInt8], methods: UInt8)?

    /// Encodes `blocks` (logical contents, each already cut to its physical size) in order,
    /// as encoding them one after the other with `encode` would, `heuristic` included. The
    /// compression attempts run on every core: in each window of blocks that starts while
    /// the heuristic still tries every block (fewer than 8 failures in a row), all blocks
    /// are compressed speculatively in parallel and the sequential pass keeps exactly the
    /// results it would have computed; a window that starts in a skipping run is encoded
    /// one block at a time (it tries only every 8th block).
    static func encodeAll(_ blocks: [ArraySlice<UInt8>], compAlgo: UInt8, check: CheckMethod,
                          heuristic: inout Int) -> [Stored] {
        let algorithm = CompressionMethod(rawValue: compAlgo & 0x0F)
        let compresses = algorithm == .lz4 || algorithm == .zlib
        var stored: [Stored] = []
        stored.reserveCapacity(blocks.count)
        var start = blocks.startIndex
        while start < blocks.endIndex {
            let window = blocks[start..<min(blocks.endIndex, start + speculativeWindow)]
            start = window.endIndex
            guard compresses, heuristic < 8, window.count > 1 else {
                for block in window {
                    stored.append(block.withUnsafeBytes { encode($0, compAlgo: compAlgo, check: check, heuristic: &heuristic) })
                }
                continue
            }
            let candidates = ConcurrentResults<[UInt8]?>(count: window.count)
            DispatchQueue.concurrentPerform(iterations: window.count) { i in
                window[window.startIndex + i].withUnsafeBytes { raw in
                    if check != .none && isAllZero(raw) { return }
                    candidates[i] = compress(raw, algorithm: algorithm, level: Int(compAlgo >> 4))
                }
            }
            for (i, block) in window.enumerated() {
                stored.append(block.withUnsafeBytes { raw in
                    encode(raw, compAlgo: compAlgo, check: check, heuristic: &heuristic, precomputed: candidates[i])
                })
            }
        }
        return stored
    }

    /// As `encodeAll`, but blocks with a hint (its stored bytes and methods, for exactly
    /// that block) are taken as they are, not encoded again.
    static func encodeAll(_ blocks: [ArraySlice<UInt8>], hints: [EncodingHint?], compAlgo: UInt8, check: CheckMethod,
                          heuristic: inout Int) -> [Stored] {
        guard hints.contains(where: { $0 != nil }) else {
            return encodeAll(blocks, compAlgo: compAlgo, check: check, heuristic: &heuristic)
        }
        let missing = blocks.indices.filter { hints[$0 - blocks.startIndex] == nil }
        let encoded = encodeAll(missing.map { blocks[$0] }, compAlgo: compAlgo, check: check, heuristic: &heuristic)
        var stored: [Stored] = hints.map { $0.map { ($0.stored, $0.methods) } }
        for (k, index) in missing.enumerated() { stored[index - blocks.startIndex] = encoded[k] }
        return stored
    }

    /// Blocks compressed speculatively at once: a run of incompressible data wastes at most
    /// this many attempts beyond what the heuristic makes.
    static let speculativeWindow = 16

    /// What became of a block, as the compress.block event tells it.
    enum Decision: UInt64 { case raw = 0, compressed, incompressible, skipped, zero }

    static func encode(_ logical: UnsafeRawBufferPointer, compAlgo: UInt8, check: CheckMethod,
                       heuristic: inout Int, precomputed: [UInt8]?? = nil) -> Stored {
        let algorithm = CompressionMethod(rawValue: compAlgo & 0x0F)
        func traced(_ stored: Stored, _ decision: Decision) -> Stored {
            let physical = stored?.bytes.count ?? 0
            Trace.record(.compressed, UInt64(logical.count), UInt64(physical), UInt64(compAlgo), decision.rawValue)
            if stored != nil { Trace.withSession { $0.dataBlockWritten(logical: logical.count, physical: physical) } }
            return stored
        }
        if algorithm != .none && check != .none && isAllZero(logical) { return traced(nil, .zero) }
        var decision = Decision.raw
        if algorithm == .lz4 || algorithm == .zlib {
            decision = .skipped
            // DragonFly's rule, plus a probe of a sample of each block it would skip: data
            // that turns compressible again (text after binaries in a tar) is caught at
            // once, not up to 8 blocks later. Every block DragonFly tries, we try too.
            if heuristic < 8 || heuristic & 7 == 0 || Compressor.sampleCompresses(logical) {
                let compressed = precomputed ?? compress(logical, algorithm: algorithm, level: Int(compAlgo >> 4))
                if var stored = compressed {
                    heuristic = 0
                    var bytes = 1024
                    while bytes < stored.count { bytes *= 2 }
                    stored += [UInt8](repeating: 0, count: bytes - stored.count)
                    return traced((stored, Blockref.methods(check: check, compression: algorithm)), .compressed)
                }
                decision = .incompressible
            }
            // As hammer2_compress_and_write: every block stored raw counts, skipped ones too,
            // so a run of incompressible blocks is retried every 8th block (and the count
            // wraps back to 8 past 128) instead of stopping at the first skipped one.
            heuristic += 1
            if heuristic > 128 { heuristic = 8 }
        }
        return traced((Array(logical), Blockref.methods(check: check, compression: .none)), decision)
    }

    static func compress(_ logical: UnsafeRawBufferPointer, algorithm: CompressionMethod, level: Int) -> [UInt8]? {
        algorithm == .lz4 ? Compressor.lz4(logical) : Compressor.zlib(logical, level: level)
    }

    private static let zeros = [UInt8](repeating: 0, count: HAMMER2.physicalBufferSize)

    static func isAllZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        zeros.withUnsafeBytes { memcmp(bytes.baseAddress!, $0.baseAddress!, bytes.count) == 0 }
    }

    /// hammer2_calc_physical: bytes stored for the block at `offset` of a file of `size`.
    static func physicalBytes(fileSize size: UInt64, blockOffset offset: UInt64) -> Int {
        if offset + logicalBlockBytes <= size { return Int(logicalBlockBytes) }
        var bytes = 1024
        while UInt64(bytes) < size - offset { bytes *= 2 }
        return bytes
    }
}

/// Allocates new blocks from the freemap and writes them, merging neighbours into large
/// writes (data blocks of one file are allocated one after the other). Each copy index has
/// its own run, so the copies of consecutive blocks (placed apart) still merge.
final class FlushSink: BlockSink {
    /// Unowned: the filesystem keeps its prewrite sink (MutableFilesystem.prewriteSink).
    unowned let fs: MutableFilesystem
    private var runs: [PendingRun] = []
    /// New blocks (copies counted) and their bytes, for the flush's trace event.
    var blocksWritten = 0, bytesWritten = 0
    static let maximumWrite = 4 << 20

    /// Consecutive bytes waiting to be written at `offset`.
    final class PendingRun {
        var offset: UInt64 = 0
        var count = 0
        /// Page-aligned, so runs of whole 4 KiB pages go to the device with O_DIRECT.
        let buffer: UnsafeMutableRawPointer

        init() {
            buffer = .allocate(byteCount: FlushSink.maximumWrite + HAMMER2.physicalBufferSize, alignment: FileBlockDevice.directAlignment)
        }

        deinit { buffer.deallocate() }
    }

    init(fs: MutableFilesystem) {
        self.fs = fs
    }

    func writeNewBlock(_ bytes: [UInt8], type: BlockrefType, copies: Int) throws -> [UInt64] {
        let offsets = try fs.allocator.allocate(bytes.count, type: type, copies: copies)
        for (copy, offset) in offsets.enumerated() {
            Trace.record(.allocate, offset, UInt64(bytes.count), UInt64(type.rawValue))
            try write(bytes, at: offset, run: copy)
        }
        blocksWritten += offsets.count
        bytesWritten += bytes.count * offsets.count
        return offsets.map { Blockref.dataOffset($0, radix: bytes.count.trailingZeroBitCount) }
    }

    func write(_ bytes: [UInt8], at offset: UInt64, run index: Int = 0) throws {
        precondition(bytes.count <= HAMMER2.physicalBufferSize, "one block at a time")
        while runs.count <= index { runs.append(PendingRun()) }
        let run = runs[index]
        if run.count > 0 && (run.offset + UInt64(run.count) != offset || run.count >= Self.maximumWrite) {
            try drain(run)
        }
        if run.count == 0 { run.offset = offset }
        bytes.withUnsafeBytes { (run.buffer + run.count).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        run.count += bytes.count
    }

    /// Forgets whatever is buffered (after a failed write, before the sink is used again).
    func discard() {
        for run in runs { run.count = 0 }
    }

    /// Writes whatever is buffered.
    func drain() throws {
        for run in runs { try drain(run) }
    }

    private func drain(_ run: PendingRun) throws {
        guard run.count > 0 else { return }
        fs.reader.cache.invalidateMedia(run.offset, count: run.count)
        try fs.volumes.write(UnsafeRawBufferPointer(start: run.buffer, count: run.count), at: run.offset)
        run.count = 0
    }
}

/// A dirty block's stored form known in advance (a received stream carries blocks as
/// stored): `source` is the logical block it decodes to, `stored` and `methods` what the
/// flush writes for it.
struct EncodingHint: Sendable {
    let source: [UInt8]
    let stored: [UInt8]
    let methods: UInt8

    /// The hint for `block` when it is still the dirty block the hint was made for.
    func matching(_ block: [UInt8]) -> EncodingHint? { block == source ? self : nil }
}
