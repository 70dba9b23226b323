// A device in memory that records every write and every flush barrier, so tests can build
// the images a power cut would leave: everything up to some barrier, plus any subset of the
// writes after it (the disk may reorder them), some of them torn (only some 512-byte
// sectors reached the media).

import Foundation
import HAMMER2Engine
import Synchronization

public final class RecordingDevice: BlockDevice, @unchecked Sendable {
    public enum Event: Sendable {
        case write(offset: UInt64, bytes: [UInt8])
        case barrier
    }

    public static let pageBytes: UInt64 = 65_536
    public static let sectorBytes = 512

    public let name: String
    public let size: UInt64
    private let lock = NSLock()
    private var pages: [UInt64: [UInt8]]
    private var events: [Event] = []
    private var recording = false

    public init(name: String = "recording", size: UInt64, pages: [UInt64: [UInt8]] = [:]) {
        self.name = name
        self.size = size
        self.pages = pages
    }

    /// Starts logging writes and barriers (what came before is the base image).
    public func startRecording() {
        lock.lock()
        defer { lock.unlock() }
        recording = true
        events = []
    }

    public var log: [Event] {
        lock.lock()
        defer { lock.unlock() }
        return events
    }

    public var contents: [UInt64: [UInt8]] {
        lock.lock()
        defer { lock.unlock() }
        return pages
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard offset + UInt64(buffer.count) <= size else {
            throw EngineError.shortRead(device: name, offset: offset, wanted: buffer.count, got: 0)
        }
        lock.lock()
        defer { lock.unlock() }
        var done = 0
        while done < buffer.count {
            let position = offset + UInt64(done)
            let base = position - position % Self.pageBytes
            let inPage = Int(position - base)
            let count = min(buffer.count - done, Int(Self.pageBytes) - inPage)
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + count)])
            if let page = pages[base] {
                page.withUnsafeBytes { target.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[inPage..<(inPage + count)])) }
            } else {
                target.initializeMemory(as: UInt8.self, repeating: 0)
            }
            done += count
        }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard offset + UInt64(buffer.count) <= size else {
            throw EngineError.posix(ENOSPC, "write past the end of \(name)")
        }
        lock.lock()
        defer { lock.unlock() }
        if recording { events.append(.write(offset: offset, bytes: Array(buffer))) }
        Self.apply(&pages, offset: offset, bytes: buffer)
    }

    public func synchronize() throws {
        lock.lock()
        defer { lock.unlock() }
        if recording { events.append(.barrier) }
    }

    static func apply(_ pages: inout [UInt64: [UInt8]], offset: UInt64, bytes: UnsafeRawBufferPointer) {
        var done = 0
        while done < bytes.count {
            let position = offset + UInt64(done)
            let base = position - position % pageBytes
            let inPage = Int(position - base)
            let count = min(bytes.count - done, Int(pageBytes) - inPage)
            if pages[base] == nil { pages[base] = [UInt8](repeating: 0, count: Int(pageBytes)) }
            pages[base]!.withUnsafeMutableBytes {
                ($0.baseAddress! + inPage).copyMemory(from: bytes.baseAddress! + done, byteCount: count)
            }
            done += count
        }
    }

    /// The image after `base`, every write before barrier number `barriers` (0 = none), and
    /// of the writes after it the ones `keep` selects, each torn to the sectors `sectors`
    /// selects (nil: whole).
    public static func crashImage(base: [UInt64: [UInt8]], size: UInt64, log: [Event], barriers: Int,
                                  keep: (Int) -> Bool, sectors: (Int, Int) -> Bool?) -> RecordingDevice {
        var pages = base
        var seen = 0
        var index = 0
        while index < log.count, seen < barriers {
            switch log[index] {
            case .barrier: seen += 1
            case let .write(offset, bytes): bytes.withUnsafeBytes { apply(&pages, offset: offset, bytes: $0) }
            }
            index += 1
        }
        var pending = 0
        while index < log.count {
            guard case let .write(offset, bytes) = log[index] else { break }
            defer { pending += 1; index += 1 }
            guard keep(pending) else { continue }
            let sectorCount = (bytes.count + sectorBytes - 1) / sectorBytes
            for sector in 0..<sectorCount {
                if sectors(pending, sector) == false { continue }
                let start = sector * sectorBytes, end = min(bytes.count, start + sectorBytes)
                bytes[start..<end].withUnsafeBytes { apply(&pages, offset: offset + UInt64(start), bytes: $0) }
            }
        }
        return RecordingDevice(name: "crash-state", size: size, pages: pages)
    }

    /// How many barriers the log holds.
    public static func barrierCount(_ log: [Event]) -> Int {
        log.reduce(0) { count, event in if case .barrier = event { return count + 1 } else { return count } }
    }

    /// The writes between barrier `barriers` and the next one.
    public static func writesAfter(barrier barriers: Int, in log: [Event]) -> [(offset: UInt64, bytes: Int)] {
        var seen = 0
        var result: [(UInt64, Int)] = []
        for event in log {
            switch event {
            case .barrier:
                if seen == barriers { return result }
                seen += 1
            case let .write(offset, bytes):
                if seen == barriers { result.append((offset, bytes.count)) }
            }
        }
        return result
    }
}
