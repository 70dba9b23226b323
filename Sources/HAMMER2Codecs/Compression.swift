// Compression of HAMMER2 data blocks, framed as DragonFly's hammer2_strategy.c write path
// (hammer2_compress_and_write) stores them, so Decompressor reads them back:
//   LZ4:  a 32-bit little-endian compressed length, then a raw LZ4 block.
//   zlib: one complete zlib stream.
// DragonFly only keeps a compressed block when it at most halves the input (the output
// buffer is pblksize / 2), so these return nil when the result would not fit that limit;
// the caller then stores the block raw with compression method 0.

import CLZ4
import CZlib

public enum Compressor {
    /// The framed LZ4 block for `input`, or nil if it is not at most half the input size.
    /// DragonFly gives the encoder pblksize / 2 - 8 bytes of output (the LZ4 code may
    /// overrun a buffer not padded to 8 bytes), and adds the 4-byte length prefix.
    public static func lz4(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
        let limit = input.count / 2 - 8
        guard input.count > 0, limit > 0 else { return nil }
        var output = [UInt8](repeating: 0, count: 4 + limit)
        let produced = output.withUnsafeMutableBytes { out -> Int32 in
            LZ4_compress_default(
                input.baseAddress!.assumingMemoryBound(to: CChar.self),
                (out.baseAddress! + 4).assumingMemoryBound(to: CChar.self),
                Int32(input.count), Int32(limit))
        }
        guard produced > 0 else { return nil }
        let length = UInt32(produced)
        for i in 0..<4 { output[i] = UInt8(truncatingIfNeeded: length >> UInt32(i * 8)) }
        output.removeLast(limit - Int(produced))
        return output
    }

    /// Whether a sample of `input` (4 KiB from its middle) compresses with LZ4 to at most
    /// three quarters of its size: a few microseconds that tell whether a block the
    /// compression heuristic would skip is worth a full attempt.
    public static func sampleCompresses(_ input: UnsafeRawBufferPointer) -> Bool {
        let sampleBytes = min(input.count, 4096)
        guard sampleBytes >= 256 else { return false }
        let start = (input.count - sampleBytes) / 2
        let limit = sampleBytes * 3 / 4
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: limit) { output in
            LZ4_compress_default((input.baseAddress! + start).assumingMemoryBound(to: CChar.self), output.baseAddress!,
                                 Int32(sampleBytes), Int32(limit)) > 0
        }
    }

    /// The zlib stream for `input` at `level` (DragonFly clamps it: 0 means 6, and 1-5 are
    /// raised to 6, 10+ lowered to 9), or nil if it does not end within input.count / 2 bytes.
    public static func zlib(_ input: UnsafeRawBufferPointer, level: Int) -> [UInt8]? {
        let clamped = level == 0 ? 6 : min(max(level, 6), 9)
        let limit = input.count / 2
        guard input.count > 0, limit > 0 else { return nil }
        var stream = z_stream()
        guard deflateInit_(&stream, Int32(clamped), ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            return nil
        }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: limit)
        let (status, produced) = output.withUnsafeMutableBytes { out -> (Int32, Int) in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(input.count)
            stream.next_out = out.baseAddress!.assumingMemoryBound(to: Bytef.self)
            stream.avail_out = uInt(limit)
            let status = deflate(&stream, Z_FINISH)
            return (status, limit - Int(stream.avail_out))
        }
        guard status == Z_STREAM_END else { return nil }
        output.removeLast(limit - produced)
        return output
    }
}
