// A device that fails on command: writes fail with EIO from the n-th one on, barriers fail,
// or reads of chosen ranges come back with flipped bits (a disk silently returning wrong
// data). Wraps another device.

import Foundation
import HAMMER2Engine
import Synchronization

public final class FaultyDevice: BlockDevice, @unchecked Sendable {
    public struct Faults: Sendable {
        /// Writes numbered from here on (0-based, counted from when the faults were set) fail
        /// with `writeErrno` (EIO: a failing disk; ENOSPC: a full thin-provisioned one).
        public var failWritesFrom: Int?
        public var writeErrno: Int32 = EIO
        public var failBarriers = false
        /// Reads overlapping these media ranges return every byte XOR 0x5a.
        public var corruptReads: [ClosedRange<UInt64>] = []

        public init(failWritesFrom: Int? = nil, writeErrno: Int32 = EIO, failBarriers: Bool = false,
                    corruptReads: [ClosedRange<UInt64>] = []) {
            self.failWritesFrom = failWritesFrom
            self.writeErrno = writeErrno
            self.failBarriers = failBarriers
            self.corruptReads = corruptReads
        }
    }

    public let base: any BlockDevice
    private let state = Mutex<(faults: Faults, writes: Int, failed: Int)>((Faults(), 0, 0))

    public init(base: any BlockDevice) { self.base = base }

    public var name: String { base.name }
    public var size: UInt64 { base.size }

    public func set(_ faults: Faults) { state.withLock { $0 = (faults, 0, 0) } }

    /// Writes refused so far.
    public var failedWrites: Int { state.withLock { $0.failed } }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try base.read(into: buffer, at: offset)
        let ranges = state.withLock { $0.faults.corruptReads }
        let request = offset...(offset + UInt64(max(buffer.count, 1)) - 1)
        for range in ranges where range.overlaps(request) {
            for i in 0..<buffer.count where range.contains(offset + UInt64(i)) { buffer[i] ^= 0x5a }
        }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        let fail = state.withLock { s -> Int32? in
            defer { s.writes += 1 }
            guard let from = s.faults.failWritesFrom, s.writes >= from else { return nil }
            s.failed += 1
            return s.faults.writeErrno
        }
        if let code = fail { throw EngineError.io(errno: code, what: "injected write error at \(offset)") }
        try base.write(buffer, at: offset)
    }

    public func synchronize() throws {
        if state.withLock({ $0.faults.failBarriers }) { throw EngineError.io(errno: EIO, what: "injected flush error") }
        try base.synchronize()
    }
}
