// Decompression of HAMMER2 data blocks, framed as DragonFly's hammer2_strategy.c stores them:
//   LZ4:  a 32-bit little-endian compressed length, then a raw LZ4 block.
//   zlib: one complete zlib stream (header, deflate data, adler32).
// The decompressed size of a logical block is at most 64 KiB. Unlike DragonFly, which logs
// and zero-fills a block that fails to decompress, these throw: the caller turns that into
// EIO, so bytes that did not decode are never handed to a reader.

import CLZ4
import CZlib

public enum DecompressionError: Error, Equatable, CustomStringConvertible, Sendable {
    case lz4BadLengthPrefix(length: Int, available: Int)
    case lz4Corrupt(code: Int)
    case zlibCorrupt(code: Int32)
    case zlibTruncated

    public var description: String {
        switch self {
        case let .lz4BadLengthPrefix(length, available):
            return "lz4 length prefix \(length) exceeds the \(available) bytes of the block"
        case let .lz4Corrupt(code): return "lz4 data corrupt (decoder returned \(code))"
        case let .zlibCorrupt(code): return "zlib data corrupt (inflate returned \(code))"
        case .zlibTruncated: return "zlib stream does not end inside the block or the 64 KiB limit"
        }
    }
}

public enum Decompressor {
    /// The largest logical block HAMMER2 compresses (HAMMER2_PBUFSIZE).
    public static let maximumOutput = 65_536

    /// Decodes a HAMMER2 LZ4 block. Returns the decompressed bytes (possibly fewer than the
    /// logical block size; the caller zero-fills the rest, as DragonFly does).
    public static func lz4(_ block: UnsafeRawBufferPointer, maximumOutput: Int = maximumOutput) throws -> [UInt8] {
        guard block.count >= 4 else { throw DecompressionError.lz4BadLengthPrefix(length: 0, available: block.count) }
        let length = Int(Int32(bitPattern: UInt32(littleEndian: block.loadUnaligned(as: UInt32.self))))
        guard length >= 0, length <= block.count - 4 else {
            throw DecompressionError.lz4BadLengthPrefix(length: length, available: block.count - 4)
        }
        // Uninitialized: LZ4 writes every byte it reports (no 64 KiB memset per block).
        var produced: Int32 = 0
        let output = [UInt8](unsafeUninitializedCapacity: maximumOutput) { out, initialized in
            let src = block.baseAddress!.advanced(by: 4).assumingMemoryBound(to: CChar.self)
            produced = out.withMemoryRebound(to: CChar.self) {
                LZ4_decompress_safe(src, $0.baseAddress!, Int32(length), Int32(maximumOutput))
            }
            initialized = max(0, Int(produced))
        }
        guard produced >= 0 else { throw DecompressionError.lz4Corrupt(code: Int(produced)) }
        return output
    }

    /// Decodes a HAMMER2 zlib block (a zlib stream that must end inside the block).
    public static func zlib(_ block: UnsafeRawBufferPointer, maximumOutput: Int = maximumOutput) throws -> [UInt8] {
        var stream = z_stream()
        var status = inflateInit_(&stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else { throw DecompressionError.zlibCorrupt(code: status) }
        defer { inflateEnd(&stream) }
        // Uninitialized: inflate writes every byte it reports.
        let output = [UInt8](unsafeUninitializedCapacity: maximumOutput) { out, initialized in
            stream.next_in = UnsafeMutablePointer(mutating: block.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(block.count)
            stream.next_out = out.baseAddress!
            stream.avail_out = uInt(maximumOutput)
            status = inflate(&stream, Z_FINISH)
            initialized = maximumOutput - Int(stream.avail_out)
        }
        switch status {
        case Z_STREAM_END:
            return output
        case Z_BUF_ERROR, Z_OK:
            throw DecompressionError.zlibTruncated
        default:
            throw DecompressionError.zlibCorrupt(code: status)
        }
    }
}
