// Storage is a parameter: the engine reads through `BlockDevice`, so tests can plug in
// devices that inject faults, and a volume can be an image file or a block device.

import Foundation
import Glibc
import Synchronization

public protocol BlockDevice: Sendable {
    /// A name for messages (the path).
    var name: String { get }
    /// Size in bytes.
    var size: UInt64 { get }
    /// Fills `buffer` from `offset`; throws on an I/O error or when the device ends first.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
    /// Writes `buffer` at `offset`; read-only devices throw EROFS.
    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws
    /// Makes every completed write durable (fsync): the flush barrier.
    func synchronize() throws
    /// Writes `buffer` at `offset` and makes that range durable before returning (the
    /// intent log's commit): other writes still in the page cache are not waited for.
    func writeDurably(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws
    /// Looks at the device's size again (after the image or partition was enlarged).
    func refreshSize() throws -> UInt64
    /// A hint that `count` bytes at `offset` will be read soon (the device may start reading
    /// them now); nothing may depend on it.
    func willNeed(_ count: Int, at offset: UInt64)
}

extension BlockDevice {
    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        throw EngineError.posix(EROFS, "\(name) is opened read-only")
    }

    public func synchronize() throws {}

    public func writeDurably(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try write(buffer, at: offset)
        try synchronize()
    }

    public func refreshSize() throws -> UInt64 { size }

    public func willNeed(_ count: Int, at offset: UInt64) {}
}

extension BlockDevice {
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return bytes
    }
}

/// An image file or block device, read with pread(2) and written with pwrite(2).
public final class FileBlockDevice: BlockDevice {
    public let name: String
    /// The size when opened or last refreshed (growfs).
    /// Read by every block read on every thread: an atomic, not a lock.
    public var size: UInt64 { currentSize.load(ordering: .acquiring) }
    private let currentSize: Atomic<UInt64>
    public let writable: Bool
    private let fd: Int32
    /// The same file opened with O_DIRECT for large aligned writes, which then skip the
    /// page cache (a copy, and the writeback an fsync waits for); -1 where the filesystem
    /// holding the image does not support it.
    private let directFD: Int32
    /// The same file opened with O_DSYNC: a write through it returns once its own range is
    /// durable (the kernel syncs that range and flushes the device cache), where fdatasync
    /// would also wait for every other dirty page of the image — a flush's data, say.
    private let dsyncFD: Int32
    /// O_DIRECT, which Glibc's Swift module leaves out (it needs _GNU_SOURCE).
    #if arch(x86_64) || arch(i386)
    static let openDirect: Int32 = 0o40000
    #else
    static let openDirect: Int32 = 0o200000
    #endif
    /// O_DIRECT's alignment of buffer address, offset and length.
    public static let directAlignment = 4096

    public init(path: String, writable: Bool = false) throws {
        let fd = Glibc.open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)
        guard fd >= 0 else { throw EngineError.io(errno: Glibc.errno, what: "open \(path)") }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = Glibc.errno
            Glibc.close(fd)
            throw EngineError.io(errno: e, what: "stat \(path)")
        }
        var size = UInt64(st.st_size)
        if (st.st_mode & S_IFMT) == S_IFBLK {
            var bytes: UInt64 = 0
            // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
            if ioctl(fd, 0x8008_1272, &bytes) == 0 { size = bytes }
        } else if (st.st_mode & S_IFMT) != S_IFREG {
            Glibc.close(fd)
            throw EngineError.invalidArgument("\(path): not a regular file or block device")
        }
        // One writer at a time: a second daemon or an offline tool writing the same image
        // would overwrite each other's blocks.
        if writable && flock(fd, LOCK_EX | LOCK_NB) != 0 {
            Glibc.close(fd)
            throw EngineError.posix(EBUSY, "\(path) is in use by another writer (mounted read-write?)")
        }
        self.fd = fd
        self.name = path
        self.currentSize = Atomic(size)
        self.writable = writable
        self.directFD = writable ? Glibc.open(path, O_RDWR | Self.openDirect | O_CLOEXEC) : -1
        self.dsyncFD = writable ? Glibc.open(path, O_WRONLY | O_DSYNC | O_CLOEXEC) : -1
    }

    deinit {
        Glibc.close(fd)
        if directFD >= 0 { Glibc.close(directFD) }
        if dsyncFD >= 0 { Glibc.close(dsyncFD) }
    }

    public func writeDurably(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard dsyncFD >= 0 else {
            try write(buffer, at: offset)
            return try synchronize()
        }
        try pwriteAll(dsyncFD, buffer, at: offset)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                throw EngineError.io(errno: Glibc.errno, what: "read \(name) at offset \(offset + UInt64(done))")
            }
            if n == 0 { throw EngineError.shortRead(device: name, offset: offset, wanted: buffer.count, got: done) }
            done += n
        }
    }

    public func willNeed(_ count: Int, at offset: UInt64) {
        _ = posix_fadvise(fd, off_t(offset), off_t(count), POSIX_FADV_WILLNEED)
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard writable else { throw EngineError.posix(EROFS, "\(name) is opened read-only") }
        let alignment = UInt(Self.directAlignment)
        let aligned = directFD >= 0 && UInt(bitPattern: buffer.baseAddress) % alignment == 0
            && UInt(offset) % alignment == 0 && UInt(buffer.count) % alignment == 0
        try pwriteAll(aligned ? directFD : fd, buffer, at: offset)
    }

    /// pwrite(2) until every byte is written, inside the device.
    private func pwriteAll(_ target: Int32, _ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard offset + UInt64(buffer.count) <= size else {
            throw EngineError.posix(ENOSPC, "write of \(buffer.count) bytes at \(offset) past the end of \(name)")
        }
        var done = 0
        while done < buffer.count {
            let n = pwrite(target, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                throw EngineError.io(errno: Glibc.errno, what: "write \(name) at offset \(offset + UInt64(done))")
            }
            done += n
        }
    }

    public func refreshSize() throws -> UInt64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw EngineError.io(errno: Glibc.errno, what: "stat \(name)") }
        var bytes = UInt64(st.st_size)
        if (st.st_mode & S_IFMT) == S_IFBLK {
            var device: UInt64 = 0
            if ioctl(fd, 0x8008_1272, &device) == 0 { bytes = device }  // BLKGETSIZE64
        }
        currentSize.store(bytes, ordering: .releasing)
        return bytes
    }

    /// fdatasync: the image's content and what is needed to read it back (allocation, size)
    /// become durable; its mtime need not, and writing it would make the host filesystem
    /// commit its journal at every flush, which stalls every write to the image meanwhile
    /// (an intent-log commit waited up to 1 ms for it, on ext4).
    public func synchronize() throws {
        guard writable else { return }
        guard fdatasync(fd) == 0 else { throw EngineError.io(errno: Glibc.errno, what: "fdatasync \(name)") }
    }

}
