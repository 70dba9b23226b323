// A trace segment: one file (in /dev/shm for a mount) holding a self-describing directory of
// objects — statistics updated under a sequence lock, and per-thread rings of fixed-size
// event records — that readers map read-only at memory speed (issue 9, docs/ktr.md). The
// writer never waits for a reader; a reader of a dead writer's file sees what was
// committed. All integers little-endian (the only byte order this runs on).

import CAtomicMemory
import Glibc
import Synchronization

/// Offsets and sizes of the segment layout (docs/ktr.md is the reference).
public enum TraceLayout {
    public static let magic: UInt64 = 0x4745_5352_544B_3248  // "H2KTRSEG"
    public static let version: UInt32 = 1
    public static let headerBytes = 4096
    // Header fields.
    public static let magicOffset = 0x00, versionOffset = 0x08, objectCountOffset = 0x0C
    public static let segmentBytesOffset = 0x10, pidOffset = 0x18, createdOffset = 0x20
    public static let heartbeatOffset = 0x28, maskOffset = 0x30, nextFreeOffset = 0x38
    // Directory: entries of 128 bytes from 0x100 to the end of the header page.
    public static let directoryOffset = 0x100, entryBytes = 128
    public static let maxObjects = (headerBytes - directoryOffset) / entryBytes
    public static let nameBytes = 48
    // Entry fields.
    public static let entryKind = 48, entryVersion = 52, entryOffset = 56, entryBytesField = 64
    public static let entrySchemaOffset = 72, entrySchemaCount = 80
    // Schema fields: 64 bytes each.
    public static let fieldBytes = 64, fieldNameBytes = 32, fieldType = 32, fieldOffset = 36, fieldCount = 40
    public static let fieldUnit = 44, fieldUnitBytes = 20
    // Rings object: ring count, records per ring, rings claimed; then rings of a 64-byte
    // header (head = records ever written, thread id) and 64-byte records.
    public static let ringsHeaderBytes = 64, ringHeaderBytes = 64, recordBytes = 64
    // Record fields: timestamp, event, ring, five arguments, commit (position + 1).
    public static let recordArguments = 5, recordCommit = 56
}

/// What an object in the directory holds.
public enum TraceObjectKind: UInt32, Sendable {
    case statistics = 1
    case rings = 2
}

/// A field of a statistics object: a name, a type, an offset in the object's data (after
/// its sequence word), how many values (histograms), and a unit.
public struct TraceField: Sendable, Equatable {
    public enum FieldType: UInt32, Sendable { case counter = 1, gauge = 2, histogram = 3 }
    public var name: String
    public var type: FieldType
    public var count: Int
    public var unit: String

    public init(_ name: String, _ type: FieldType = .counter, count: Int = 1, unit: String = "") {
        self.name = name; self.type = type; self.count = count; self.unit = unit
    }
}

public enum TraceError: Error, Equatable {
    case system(String, Int32)
    case full(String)
    case notASegment(String)
}

/// The writer's side of a segment.
public final class TraceSegment: @unchecked Sendable {
    public let path: String
    public let bytes: Int
    let base: UnsafeMutableRawPointer
    /// Distinguishes this segment's thread rings from an earlier segment's in the same thread.
    let generation: UInt64
    private static let generations = Atomic<UInt64>(1)
    private let layoutLock = Mutex(())
    private var ringsObject: (offset: Int, count: Int, records: Int)?

    /// Creates (or replaces) the segment file at `path` with room for `bytes`.
    public init(path: String, bytes: Int = 4 << 20) throws {
        self.path = path
        self.bytes = bytes
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw TraceError.system("open \(path)", errno) }
        defer { close(fd) }
        guard ftruncate(fd, off_t(bytes)) == 0 else { throw TraceError.system("ftruncate \(path)", errno) }
        guard let mapped = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), mapped != MAP_FAILED else {
            throw TraceError.system("mmap \(path)", errno)
        }
        base = mapped
        generation = Self.generations.wrappingAdd(1, ordering: .relaxed).newValue
        store64(TraceLayout.segmentBytesOffset, UInt64(bytes))
        store32(TraceLayout.versionOffset, TraceLayout.version)
        store32(TraceLayout.pidOffset, UInt32(bitPattern: getpid()))
        store64(TraceLayout.createdOffset, Self.realtimeNanoseconds())
        store64(TraceLayout.nextFreeOffset, UInt64(TraceLayout.headerBytes))
        h2_store_release_u64(base + TraceLayout.maskOffset, ~0)
        // The magic last: a reader that sees it sees a complete header.
        h2_store_release_u64(base + TraceLayout.magicOffset, TraceLayout.magic)
    }

    deinit { munmap(base, bytes) }

    /// Subsystems whose events are recorded (a bit each); tools may change it at run time.
    public var mask: UInt64 {
        get { h2_load_relaxed_u64(base + TraceLayout.maskOffset) }
        set { h2_store_relaxed_u64(base + TraceLayout.maskOffset, newValue) }
    }

    /// Marks the writer alive (readers show how long ago it last beat).
    public func heartbeat() {
        h2_store_release_u64(base + TraceLayout.heartbeatOffset, Self.monotonicNanoseconds())
    }

    // MARK: Objects

    /// Adds a statistics object; readers find it by name and read its fields by name.
    public func addStatistics(name: String, version: UInt32, fields: [TraceField]) throws -> TraceStatistics {
        let dataBytes = 8 + fields.reduce(0) { $0 + 8 * $1.count }
        let (offset, _) = try addObject(name: name, kind: .statistics, version: version, bytes: dataBytes, fields: fields)
        var offsets: [String: Int] = [:]
        var at = 8
        for field in fields { offsets[field.name] = at; at += 8 * field.count }
        return TraceStatistics(segment: self, offset: offset, fieldOffsets: offsets)
    }

    /// Adds the event rings: `count` rings of `records` records (a power of two), one per
    /// recording thread; threads past `count` record nothing. Called once, before any
    /// thread records (recording reads the rings' place without a lock).
    public func addRings(count: Int, records: Int) throws {
        precondition(records > 0 && records & (records - 1) == 0, "records per ring: a power of two")
        let size = TraceLayout.ringsHeaderBytes + count * (TraceLayout.ringHeaderBytes + records * TraceLayout.recordBytes)
        precondition(layoutLock.withLock { _ in ringsObject == nil }, "one rings object per segment")
        let (offset, _) = try addObject(name: "events", kind: .rings, version: 1, bytes: size, fields: [])
        store32(offset, UInt32(count))
        store32(offset + 4, UInt32(records))
        layoutLock.withLock { _ in ringsObject = (offset, count, records) }
    }

    private func addObject(name: String, kind: TraceObjectKind, version: UInt32, bytes: Int,
                           fields: [TraceField]) throws -> (Int, Int) {
        try layoutLock.withLock { _ in
            let count = Int(h2_load_acquire_u32(base + TraceLayout.objectCountOffset))
            guard count < TraceLayout.maxObjects else { throw TraceError.full("directory of \(path)") }
            var next = Int(load64(TraceLayout.nextFreeOffset))
            let schemaOffset = next
            next += fields.count * TraceLayout.fieldBytes
            let offset = (next + 63) & ~63
            guard offset + bytes <= self.bytes else { throw TraceError.full("\(path): no room for \(name)") }
            var at = 8
            for (i, field) in fields.enumerated() {
                let f = schemaOffset + i * TraceLayout.fieldBytes
                storeString(f, field.name, TraceLayout.fieldNameBytes)
                store32(f + TraceLayout.fieldType, field.type.rawValue)
                store32(f + TraceLayout.fieldOffset, UInt32(at))
                store32(f + TraceLayout.fieldCount, UInt32(field.count))
                storeString(f + TraceLayout.fieldUnit, field.unit, TraceLayout.fieldUnitBytes)
                at += 8 * field.count
            }
            let entry = TraceLayout.directoryOffset + count * TraceLayout.entryBytes
            storeString(entry, name, TraceLayout.nameBytes)
            store32(entry + TraceLayout.entryKind, kind.rawValue)
            store32(entry + TraceLayout.entryVersion, version)
            store64(entry + TraceLayout.entryOffset, UInt64(offset))
            store64(entry + TraceLayout.entryBytesField, UInt64(bytes))
            store64(entry + TraceLayout.entrySchemaOffset, UInt64(schemaOffset))
            store32(entry + TraceLayout.entrySchemaCount, UInt32(fields.count))
            store64(TraceLayout.nextFreeOffset, UInt64(offset + bytes))
            // Published last: readers only look at entries below the count.
            h2_store_release_u32(base + TraceLayout.objectCountOffset, UInt32(count + 1))
            return (offset, bytes)
        }
    }

    // MARK: Events

    /// Records event `event` of the subsystems in `subsystem` (a mask bit) with up to five
    /// arguments in the calling thread's ring. Masked off, it is one load and a branch.
    @inline(__always)
    public func record(_ event: UInt32, subsystem: UInt64, _ a0: UInt64 = 0, _ a1: UInt64 = 0, _ a2: UInt64 = 0,
                       _ a3: UInt64 = 0, _ a4: UInt64 = 0) {
        guard h2_load_relaxed_u64(base + TraceLayout.maskOffset) & subsystem != 0 else { return }
        recordEnabled(event, a0, a1, a2, a3, a4)
    }

    private func recordEnabled(_ event: UInt32, _ a0: UInt64, _ a1: UInt64, _ a2: UInt64, _ a3: UInt64, _ a4: UInt64) {
        guard let rings = ringsObject else { return }
        var ring = h2_thread_ring(generation)
        if ring < 0 {
            ring = Int64(h2_fetch_add_u32(base + rings.offset + 8, 1))
            h2_set_thread_ring(generation, ring)
            if ring < rings.count {
                store64(ringOffset(rings, Int(ring)) + 8, UInt64(h2_thread_id()))
            }
        }
        guard ring < rings.count else { return }
        let ringBase = ringOffset(rings, Int(ring))
        let head = load64(ringBase)  // only this thread writes it
        let record = ringBase + TraceLayout.ringHeaderBytes + Int(head & UInt64(rings.records - 1)) * TraceLayout.recordBytes
        // Invalidate the slot first, so a reader never takes old and new halves for one record.
        h2_store_release_u64(base + record + TraceLayout.recordCommit, 0)
        h2_fence_release()
        store64(record, Self.monotonicNanoseconds())
        store32(record + 8, event)
        store32(record + 12, UInt32(ring))
        store64(record + 16, a0)
        store64(record + 24, a1)
        store64(record + 32, a2)
        store64(record + 40, a3)
        store64(record + 48, a4)
        h2_store_release_u64(base + record + TraceLayout.recordCommit, head + 1)
        h2_store_release_u64(base + ringBase, head + 1)
    }

    private func ringOffset(_ rings: (offset: Int, count: Int, records: Int), _ ring: Int) -> Int {
        rings.offset + TraceLayout.ringsHeaderBytes + ring * (TraceLayout.ringHeaderBytes + rings.records * TraceLayout.recordBytes)
    }

    // MARK: Raw access

    func store64(_ offset: Int, _ value: UInt64) { (base + offset).storeBytes(of: value.littleEndian, as: UInt64.self) }
    func load64(_ offset: Int) -> UInt64 { UInt64(littleEndian: (base + offset).loadUnaligned(as: UInt64.self)) }
    func store32(_ offset: Int, _ value: UInt32) { (base + offset).storeBytes(of: value.littleEndian, as: UInt32.self) }
    private func storeString(_ offset: Int, _ text: String, _ capacity: Int) {
        let bytes = Array(text.utf8.prefix(capacity - 1))
        (base + offset).initializeMemory(as: UInt8.self, repeating: 0, count: capacity)
        bytes.withUnsafeBytes { (base + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    static func realtimeNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// A statistics object: `update` changes fields under the object's sequence lock (odd while
/// a change is under way), so readers retry rather than see a torn update.
public struct TraceStatistics: @unchecked Sendable {
    let segment: TraceSegment
    let offset: Int
    let fieldOffsets: [String: Int]

    /// One writer at a time per object (the caller's lock); readers never block it.
    public func update(_ body: (inout TraceStatisticsWriter) -> Void) {
        let sequence = segment.load64(offset)
        h2_store_release_u64(segment.base + offset, sequence &+ 1)
        h2_fence_release()
        var writer = TraceStatisticsWriter(statistics: self)
        body(&writer)
        h2_store_release_u64(segment.base + offset, sequence &+ 2)
    }
}

public struct TraceStatisticsWriter {
    let statistics: TraceStatistics

    public subscript(field: String, index: Int = 0) -> UInt64 {
        get { statistics.segment.load64(statistics.offset + statistics.fieldOffsets[field]! + 8 * index) }
        nonmutating set { statistics.segment.store64(statistics.offset + statistics.fieldOffsets[field]! + 8 * index, newValue) }
    }
}
