// The process's trace: one segment installed for the life of the daemon, with the standard
// statistics objects, and the trace points the engine and the FUSE adapter call. Without an
// installed segment (tools, tests), a trace point is two loads and a branch, and the
// statistics calls find no session.

import Synchronization
import CAtomicMemory

public enum Trace {
    /// Installs `session` for the rest of the process (it is never released: trace points
    /// on other threads may be using it at any moment).
    public static func install(_ session: TraceSession) {
        let context = Unmanaged.passRetained(session).toOpaque()
        h2_trace_install(session.segment.maskWord, context)
    }

    /// The installed session, if any.
    @inlinable public static var session: TraceSession? {
        guard let context = h2_trace_context() else { return nil }
        return Unmanaged<TraceSession>.fromOpaque(context).takeUnretainedValue()
    }

    /// Runs `body` with the installed session, if any, without retaining it (it lives as
    /// long as the process): the trace points on hot paths use this, so that threads do not
    /// take turns on the session's reference count.
    @inlinable public static func withSession(_ body: (TraceSession) -> Void) {
        guard let context = h2_trace_context() else { return }
        Unmanaged<TraceSession>.fromOpaque(context)._withUnsafeGuaranteedRef(body)
    }

    /// Whether events of `subsystem` are recorded now.
    @inlinable public static func isOn(_ subsystem: TraceSubsystem) -> Bool { h2_trace_mask() & subsystem.bit != 0 }

    /// Records `event` in the calling thread's ring when its subsystem is on.
    @inlinable public static func record(_ event: TraceEvent, _ a0: UInt64 = 0, _ a1: UInt64 = 0, _ a2: UInt64 = 0,
                                         _ a3: UInt64 = 0, _ a4: UInt64 = 0) {
        guard h2_trace_mask() & event.subsystemBit != 0 else { return }
        recordEnabled(event.rawValue, a0, a1, a2, a3, a4)
    }

    @usableFromInline static func recordEnabled(_ event: UInt32, _ a0: UInt64, _ a1: UInt64, _ a2: UInt64, _ a3: UInt64, _ a4: UInt64) {
        guard let context = h2_trace_context() else { return }
        Unmanaged<TraceSession>.fromOpaque(context)._withUnsafeGuaranteedRef {
            $0.segment.recordEnabled(event, a0, a1, a2, a3, a4)
        }
    }

    /// CLOCK_MONOTONIC in nanoseconds (the records' clock).
    @inlinable public static var now: UInt64 { TraceSegment.monotonicNanoseconds() }
}

/// A segment with the daemon's statistics objects (docs/ktr.md, "Objects"): one per volume,
/// one for the mounted PFS, one for FUSE requests, one for gauges sampled once a second.
public final class TraceSession: Sendable {
    public let segment: TraceSegment
    let volumes: [VolumeFields]
    let pfs: PFSFields
    let fuse: FUSEFields
    let gauges: TraceStatistics

    /// Histogram buckets: bucket i counts values below 2^i units, the last one the rest.
    public static let latencyBuckets = 20

    /// `mount`: the text object's lines (source, mountpoint, pfs), for tools to find it.
    public init(path: String, volumes volumeCount: Int, pfsLabel: String, mount: [(String, String)] = [], rings: Int = 32,
                recordsPerRing: Int = 4096, mask: UInt64 = TraceSubsystem.all) throws {
        let ringBytes = rings * (TraceLayout.ringHeaderBytes + recordsPerRing * TraceLayout.recordBytes)
        segment = try TraceSegment(path: path, bytes: (1 << 20) + ringBytes)
        segment.mask = mask
        try segment.addText(name: "mount", mount + [("pfs", pfsLabel)])
        try segment.addCatalog(subsystems: TraceSubsystem.allCases.map { (Int($0.rawValue), $0.name) },
                               events: TraceEvent.catalog)
        try segment.addRings(count: rings, records: recordsPerRing)
        let segment = segment
        volumes = try (0..<volumeCount).map { try VolumeFields(segment, index: $0) }
        pfs = try PFSFields(segment, label: pfsLabel)
        fuse = try FUSEFields(segment)
        gauges = try segment.addStatistics(name: "daemon", version: 1, fields: [
            TraceField("uptime", .gauge, unit: "ns"), TraceField("resident", .gauge, unit: "bytes"),
            TraceField("cache_bytes", .gauge, unit: "bytes"), TraceField("cache_hits", .counter, unit: "lookups"),
            TraceField("cache_misses", .counter, unit: "lookups"), TraceField("dirty_bytes", .gauge, unit: "bytes"),
            TraceField("inodes_in_memory", .gauge, unit: "inodes"),
        ])
    }

    // MARK: Volumes

    struct VolumeFields: Sendable {
        let object: TraceStatistics
        let reads, bytesRead, writes, bytesWritten, errors, checkFailures, repairs: TraceStatistics.Field
        init(_ segment: TraceSegment, index: Int) throws {
            object = try segment.addStatistics(name: "volume.\(index)", version: 1, fields: [
                TraceField("reads", unit: "requests"), TraceField("bytes_read", unit: "bytes"),
                TraceField("writes", unit: "requests"), TraceField("bytes_written", unit: "bytes"),
                TraceField("io_errors", unit: "requests"), TraceField("check_failures", unit: "blocks"),
                TraceField("repairs", unit: "copies"),
            ])
            reads = object.field("reads"); bytesRead = object.field("bytes_read")
            writes = object.field("writes"); bytesWritten = object.field("bytes_written")
            errors = object.field("io_errors"); checkFailures = object.field("check_failures"); repairs = object.field("repairs")
        }
    }

    /// A device read or write of `bytes` on volume `volume` (one request).
    public func volumeIO(_ volume: Int, write: Bool, bytes: Int, failed: Bool) {
        guard volume >= 0 && volume < volumes.count else { return }
        let v = volumes[volume]
        v.object.update { w in
            if failed { w.add(v.errors) }
            w.add(write ? v.writes : v.reads)
            w.add(write ? v.bytesWritten : v.bytesRead, UInt64(bytes))
        }
    }

    /// A copy of a block failed its check (`repaired`: and was rewritten from a good copy).
    public func checkFailure(volume: Int?, repaired: Bool = false) {
        if let volume, volume >= 0 && volume < volumes.count {
            let v = volumes[volume]
            v.object.update { w in
                if repaired { w.add(v.repairs) } else { w.add(v.checkFailures) }
            }
        }
        pfs.object.add(repaired ? pfs.repairs : pfs.checkFailures)
    }

    // MARK: The PFS

    struct PFSFields: Sendable {
        let object: TraceStatistics
        let readRequests, readBytes, writeRequests, writeBytes, blocksRead, blocksWritten, logicalFlushed, physicalFlushed,
            checkFailures, repairs, lost, flushes, flushTime, flushLatency, reclaimPasses, automaticPasses,
            reclaimedBytes, spaceWaits: TraceStatistics.Field
        init(_ segment: TraceSegment, label: String) throws {
            object = try segment.addStatistics(name: "pfs.\(label)", version: 1, fields: [
                TraceField("read_requests", unit: "requests"), TraceField("read_bytes", unit: "bytes"),
                TraceField("write_requests", unit: "requests"), TraceField("write_bytes", unit: "bytes"),
                TraceField("blocks_read", unit: "blocks"), TraceField("data_blocks_written", unit: "blocks"),
                TraceField("logical_bytes_flushed", unit: "bytes"), TraceField("physical_bytes_flushed", unit: "bytes"),
                TraceField("check_failures", unit: "blocks"), TraceField("repairs", unit: "copies"),
                TraceField("lost_blocks", unit: "blocks"), TraceField("flushes", unit: "flushes"),
                TraceField("flush_time", unit: "ns"),
                TraceField("flush_latency", .histogram, count: TraceSession.latencyBuckets, unit: "log2 ms"),
                TraceField("bulkfree_passes", unit: "passes"), TraceField("automatic_bulkfree_passes", unit: "passes"),
                TraceField("bulkfree_freed_bytes", unit: "bytes"), TraceField("space_waits", unit: "waits"),
            ])
            readRequests = object.field("read_requests"); readBytes = object.field("read_bytes")
            writeRequests = object.field("write_requests"); writeBytes = object.field("write_bytes")
            blocksRead = object.field("blocks_read"); blocksWritten = object.field("data_blocks_written")
            logicalFlushed = object.field("logical_bytes_flushed"); physicalFlushed = object.field("physical_bytes_flushed")
            checkFailures = object.field("check_failures"); repairs = object.field("repairs"); lost = object.field("lost_blocks")
            flushes = object.field("flushes"); flushTime = object.field("flush_time"); flushLatency = object.field("flush_latency")
            reclaimPasses = object.field("bulkfree_passes"); automaticPasses = object.field("automatic_bulkfree_passes")
            reclaimedBytes = object.field("bulkfree_freed_bytes"); spaceWaits = object.field("space_waits")
        }
    }

    /// File data returned to a read or accepted by a write.
    public func fileIO(write: Bool, bytes: Int) {
        pfs.object.update { w in
            w.add(write ? pfs.writeRequests : pfs.readRequests)
            w.add(write ? pfs.writeBytes : pfs.readBytes, UInt64(bytes))
        }
    }

    /// A block read from the media and verified (a cache miss).
    public func blockRead() { pfs.object.add(pfs.blocksRead) }

    /// A data block of `logical` bytes stored in `physical` bytes by a flush.
    public func dataBlockWritten(logical: Int, physical: Int) {
        pfs.object.update { w in
            w.add(pfs.blocksWritten)
            w.add(pfs.logicalFlushed, UInt64(logical))
            w.add(pfs.physicalFlushed, UInt64(physical))
        }
    }

    /// A block every copy of which failed.
    public func blockLost() { pfs.object.add(pfs.lost) }

    /// A flush that took `nanoseconds`.
    public func flushed(nanoseconds: UInt64) {
        pfs.object.update { w in
            w.add(pfs.flushes)
            w.add(pfs.flushTime, nanoseconds)
            w.add(pfs.flushLatency, index: Self.bucket(nanoseconds / 1_000_000))
        }
    }

    /// A bulkfree pass that freed `bytes` (started by the reclaimer when `automatic`).
    public func reclaimed(bytes: UInt64, automatic: Bool) {
        pfs.object.update { w in
            w.add(pfs.reclaimPasses)
            if automatic { w.add(pfs.automaticPasses) }
            w.add(pfs.reclaimedBytes, bytes)
        }
    }

    /// A writer found the volume full and waited for a bulkfree pass.
    public func waitedForSpace() { pfs.object.add(pfs.spaceWaits) }

    // MARK: FUSE requests

    struct FUSEFields: Sendable {
        let object: TraceStatistics
        let requests: [TraceStatistics.Field], errors: [TraceStatistics.Field], time: [TraceStatistics.Field],
            latency: [TraceStatistics.Field]
        init(_ segment: TraceSegment) throws {
            let ops = FUSEOpcode.allCases
            let object = try segment.addStatistics(name: "fuse", version: 1, fields: ops.flatMap { op in [
                TraceField("\(op.name).requests", unit: "requests"), TraceField("\(op.name).errors", unit: "requests"),
                TraceField("\(op.name).time", unit: "ns"),
                TraceField("\(op.name).latency", .histogram, count: TraceSession.latencyBuckets, unit: "log2 us"),
            ] })
            self.object = object
            // Indexed by opcode (index 0 unused).
            let first = object.field("\(ops[0].name).requests")
            requests = [first] + ops.map { object.field("\($0.name).requests") }
            errors = [first] + ops.map { object.field("\($0.name).errors") }
            time = [first] + ops.map { object.field("\($0.name).time") }
            latency = [first] + ops.map { object.field("\($0.name).latency") }
        }
    }

    /// A FUSE request answered after `nanoseconds`, with `failed` for an error reply.
    public func request(_ op: FUSEOpcode, nanoseconds: UInt64, failed: Bool) {
        let i = Int(op.rawValue)
        fuse.object.update { w in
            w.add(fuse.requests[i])
            if failed { w.add(fuse.errors[i]) }
            w.add(fuse.time[i], nanoseconds)
            w.add(fuse.latency[i], index: Self.bucket(nanoseconds / 1000))
        }
    }

    // MARK: Gauges

    /// The values sampled once a second by the daemon's heartbeat.
    public struct Gauges: Sendable {
        public var uptime: UInt64 = 0, resident: UInt64 = 0, cacheBytes: UInt64 = 0, cacheHits: UInt64 = 0,
                   cacheMisses: UInt64 = 0, dirtyBytes: UInt64 = 0, inodesInMemory: UInt64 = 0
        public init() {}
    }

    private let extraMounts = Mutex(0)

    /// Another mount the daemon serves (a PFS attached to it): a text object `mount.N`
    /// beside `mount`, so that tools find the segment from that mount point too.
    public func addMount(source: String, mountpoint: String, pfs: String) {
        let index = extraMounts.withLock { count -> Int in
            count += 1
            return count
        }
        try? segment.addText(name: "mount.\(index)", [("source", source), ("mountpoint", mountpoint), ("pfs", pfs)])
    }

    public func publish(_ g: Gauges) {
        gauges.update { w in
            w["uptime"] = g.uptime; w["resident"] = g.resident; w["cache_bytes"] = g.cacheBytes
            w["cache_hits"] = g.cacheHits; w["cache_misses"] = g.cacheMisses; w["dirty_bytes"] = g.dirtyBytes
            w["inodes_in_memory"] = g.inodesInMemory
        }
        segment.heartbeat()
    }

    /// The histogram bucket of `value`: i with value < 2^i, the last bucket for the rest.
    static func bucket(_ value: UInt64) -> Int {
        min(Self.latencyBuckets - 1, 64 - value.leadingZeroBitCount)
    }
}
