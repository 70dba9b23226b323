// Images for the image-level fuzzer, held in memory: a base image as its non-zero 64 KiB
// chunks, and a device that reads the base through an overlay of patched and written
// chunks, so every fuzz input starts from the same base without copying it.

import Glibc
import HAMMER2Engine
import HAMMER2Format
import Synchronization

// lseek whences Glibc does not export to Swift.
private let seekData: Int32 = 3, seekHole: Int32 = 4

public struct SparseImage: Sendable {
    public static let chunkBytes = 65_536
    public let name: String
    public let size: UInt64
    /// Non-zero chunks by their offset (a multiple of chunkBytes).
    public let chunks: [UInt64: [UInt8]]

    public init(name: String, size: UInt64, chunks: [UInt64: [UInt8]]) {
        self.name = name
        self.size = size
        self.chunks = chunks
    }

    /// Loads the image file at `path`, skipping holes. Only the first volume header is
    /// kept: the others (one per 2 GiB zone) would otherwise outvote a mutated first one.
    public static func load(path: String) throws -> SparseImage {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw EngineError.posix(errno, "cannot open \(path)") }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw EngineError.posix(errno, "cannot stat \(path)") }
        let size = UInt64(status.st_size)
        var chunks: [UInt64: [UInt8]] = [:]
        var position: off_t = 0
        var chunk = [UInt8](repeating: 0, count: chunkBytes)
        while UInt64(position) < size {
            let data = lseek(fd, position, seekData)
            if data < 0 { break }
            let start = data - data % off_t(chunkBytes)
            var hole = lseek(fd, data, seekHole)
            if hole < 0 { hole = off_t(size) }
            var offset = start
            while offset < hole {
                let got = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, chunkBytes, offset) }
                guard got >= 0 else { throw EngineError.posix(errno, "cannot read \(path) at \(offset)") }
                let isHeaderCopy = offset > 0 && UInt64(offset) % HAMMER2.zoneBytes == 0
                if got > 0, !isHeaderCopy, chunk[0..<got].contains(where: { $0 != 0 }) {
                    chunks[UInt64(offset)] = Array(chunk[0..<got]) + [UInt8](repeating: 0, count: chunkBytes - got)
                }
                offset += off_t(chunkBytes)
            }
            position = offset
        }
        return SparseImage(name: path, size: size, chunks: chunks)
    }
}

/// A writable device over a base image: writes and patches land in an overlay.
public final class OverlayDevice: BlockDevice {
    public let base: SparseImage
    private let overlay = Mutex<[UInt64: [UInt8]]>([:])

    public init(base: SparseImage) { self.base = base }

    public var name: String { base.name }
    public var size: UInt64 { base.size }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard offset <= size, UInt64(buffer.count) <= size - offset else {
            throw EngineError.shortRead(device: name, offset: offset, wanted: buffer.count, got: 0)
        }
        overlay.withLock { overlay in
            Self.forEachChunk(offset: offset, count: buffer.count) { chunkOffset, inChunk, done, length in
                let target = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + length)])
                if let chunk = overlay[chunkOffset] ?? base.chunks[chunkOffset] {
                    chunk.withUnsafeBytes { target.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[inChunk..<(inChunk + length)])) }
                } else {
                    target.initializeMemory(as: UInt8.self, repeating: 0)
                }
            }
        }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard offset <= size, UInt64(buffer.count) <= size - offset else {
            throw EngineError.posix(ENOSPC, "write past the end of \(name)")
        }
        overlay.withLock { overlay in
            Self.forEachChunk(offset: offset, count: buffer.count) { chunkOffset, inChunk, done, length in
                var chunk = overlay[chunkOffset] ?? base.chunks[chunkOffset] ?? [UInt8](repeating: 0, count: SparseImage.chunkBytes)
                chunk.withUnsafeMutableBytes { target in
                    UnsafeMutableRawBufferPointer(rebasing: target[inChunk..<(inChunk + length)])
                        .copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[done..<(done + length)]))
                }
                overlay[chunkOffset] = chunk
            }
        }
    }

    /// Splits [offset, offset + count) at chunk boundaries: (chunk offset, offset in the
    /// chunk, bytes done before this piece, piece length).
    private static func forEachChunk(offset: UInt64, count: Int, _ body: (UInt64, Int, Int, Int) -> Void) {
        var done = 0
        while done < count {
            let position = offset + UInt64(done)
            let chunkOffset = position - position % UInt64(SparseImage.chunkBytes)
            let inChunk = Int(position - chunkOffset)
            let length = min(SparseImage.chunkBytes - inChunk, count - done)
            body(chunkOffset, inChunk, done, length)
            done += length
        }
    }

    /// The base with this device's writes applied, as a new base image.
    public func snapshot(name: String) -> SparseImage {
        var chunks = base.chunks
        overlay.withLock { overlay in
            for (offset, chunk) in overlay {
                if chunk.contains(where: { $0 != 0 }) { chunks[offset] = chunk } else { chunks[offset] = nil }
            }
        }
        return SparseImage(name: name, size: size, chunks: chunks)
    }
}
