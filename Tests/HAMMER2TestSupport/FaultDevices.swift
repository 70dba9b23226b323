// Block devices for tests: an in-memory device, and an overlay that patches bytes of
// another device (damage without copying multi-GiB sparse images).

import Foundation
import HAMMER2Engine
import Synchronization

/// Reads from `base`, except where `patches` override bytes.
public final class PatchedDevice: BlockDevice {
    public let base: any BlockDevice
    private let patches = Mutex<[UInt64: UInt8]>([:])

    public init(base: any BlockDevice) { self.base = base }

    public var name: String { base.name + " (patched)" }
    public var size: UInt64 { base.size }

    /// Overwrites bytes at `offset`.
    public func patch(_ offset: UInt64, _ bytes: [UInt8]) {
        patches.withLock { p in
            for (i, b) in bytes.enumerated() { p[offset + UInt64(i)] = b }
        }
    }

    /// Flips bits of the byte at `offset` (XOR with `mask`).
    public func flip(_ offset: UInt64, mask: UInt8 = 0x01) throws {
        let current = try read(at: offset, count: 1)[0]
        patch(offset, [current ^ mask])
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try base.read(into: buffer, at: offset)
        patches.withLock { p in
            guard !p.isEmpty else { return }
            for (position, byte) in p where position >= offset && position < offset + UInt64(buffer.count) {
                buffer[Int(position - offset)] = byte
            }
        }
    }
}

/// A device held in memory (sparse: unwritten ranges read as zeros).
public final class MemoryDevice: BlockDevice {
    public let name: String
    public let size: UInt64
    private let chunks = Mutex<[UInt64: [UInt8]]>([:])
    static let chunkSize: UInt64 = 65_536

    public init(name: String = "memory", size: UInt64) {
        self.name = name
        self.size = size
    }

    public func write(_ bytes: [UInt8], at offset: UInt64) {
        chunks.withLock { c in
            for (i, b) in bytes.enumerated() {
                let position = offset + UInt64(i)
                let base = position - position % Self.chunkSize
                if c[base] == nil { c[base] = [UInt8](repeating: 0, count: Int(Self.chunkSize)) }
                c[base]![Int(position - base)] = b
            }
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard offset + UInt64(buffer.count) <= size else {
            throw EngineError.shortRead(device: name, offset: offset, wanted: buffer.count, got: 0)
        }
        chunks.withLock { c in
            for i in 0..<buffer.count {
                let position = offset + UInt64(i)
                let base = position - position % Self.chunkSize
                buffer[i] = c[base]?[Int(position - base)] ?? 0
            }
        }
    }
}

/// The data regions of a sparse file, in order (holes skipped via SEEK_DATA/SEEK_HOLE), for
/// scanning an image's written bytes without reading gigabytes of zeros.
public func allocatedRegions(of path: String) throws -> Data {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    defer { close(fd) }
    let end = lseek(fd, 0, SEEK_END)
    var out = Data()
    var position: off_t = 0
    while position < end {
        let data = lseek(fd, position, 3 /* SEEK_DATA */)
        if data < 0 { break }
        var hole = lseek(fd, data, 4 /* SEEK_HOLE */)
        if hole < 0 { hole = end }
        var chunk = [UInt8](repeating: 0, count: Int(hole - data))
        let got = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, data) }
        if got > 0 { out += chunk[0..<got] }
        position = hole
    }
    return out
}
