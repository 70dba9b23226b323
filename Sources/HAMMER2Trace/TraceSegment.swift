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
    // Rings object: ring count, records per ring, a bitmap of the rings held by threads;
    // then rings of a 64-byte header (head = records ever written, holder's thread id) and
    // 64-byte records.
    public static let ringsHeaderBytes = 64, ringHeaderBytes = 64, recordBytes = 64, maxRings = 64
    public static let ringsClaimedOffset = 8
    // Record fields: timestamp, event, thread id, five arguments, commit (position + 1).
    public static let recordArguments = 5, recordThread = 12, recordCommit = 56
    // Catalog object: subsystem count, event count; subsystems (32 bytes: bit, name) from
    // 64, then events (128 bytes: id, subsystem bit, name, argument count, five arguments
    // of a 15-byte name and a format letter).
    public static let catalogHeaderBytes = 64, subsystemBytes = 32, subsystemNameBytes = 28
    public static let eventInfoBytes = 128, eventNameOffset = 8, eventNameBytes = 32, eventArgumentCount = 40
    public static let eventArguments = 48, argumentBytes = 16
}

/// What an object in the directory holds.
public enum TraceObjectKind: UInt32, Sendable {
    case statistics = 1
    case rings = 2
    /// Names of the subsystems and events, with their arguments' names and formats.
    case catalog = 3
    /// UTF-8 text, "key=value" lines (the mount's source, mount point, PFS).
    case text = 4
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
    /// A file at the segment's path that must not be written (someone else's, a link).
    case unsafeFile(String, String)
}

extension TraceError: CustomStringConvertible {
    public var description: String {
        switch self {
        case let .system(what, code): return "\(what): \(String(cString: strerror(code)))"
        case let .full(what): return "segment full: \(what)"
        case let .notASegment(path): return "\(path) is not a trace segment"
        case let .unsafeFile(path, why): return "refusing \(path): it \(why)"
        }
    }
}

/// The writer's side of a segment.
public final class TraceSegment: @unchecked Sendable {
    /// Where the file is (it follows a daemon that renames it after forking).
    public var path: String {
        get { layoutLock.withLock { _ in currentPath } }
        set { layoutLock.withLock { _ in currentPath = newValue } }
    }
    private var currentPath: String
    public let bytes: Int
    let base: UnsafeMutableRawPointer
    /// Distinguishes this segment's thread rings from an earlier segment's in the same thread.
    let generation: UInt64
    private static let generations = Atomic<UInt64>(1)
    private let layoutLock = Mutex(())
    private var ringsObject: (offset: Int, count: Int, records: Int)?

    /// Creates the segment file at `path` with room for `bytes`. A file already there is
    /// used only when it is the caller's own regular file, with no other link, and empty or
    /// a dead writer's segment (`openForWriting`); a symbolic link is never followed.
    public init(path: String, bytes: Int = 4 << 20) throws {
        self.currentPath = path
        self.bytes = bytes
        let fd = try Self.openForWriting(path)
        defer { close(fd) }
        guard ftruncate(fd, off_t(bytes)) == 0 else { throw TraceError.system("ftruncate \(path)", errno) }
        guard let mapped = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), mapped != MAP_FAILED else {
            throw TraceError.system("mmap \(path)", errno)
        }
        // Its owner (or root) can still truncate the file: a store past the new end then
        // lands in anonymous memory instead of killing the daemon with SIGBUS.
        _ = h2_mapping_guard_add(mapped, UInt64(bytes))
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

    deinit {
        h2_ring_unregister(generation)
        h2_mapping_guard_remove(base)
        munmap(base, bytes)
    }

    /// A new file is created exclusively (O_EXCL: a name someone planted, a symbolic link
    /// included, is an error rather than followed or taken over). An existing file is
    /// opened without following links and used only if it is a regular file of the
    /// caller's, with one link (not a hard link to a file elsewhere), empty or a segment
    /// whose writer is gone. The file is owner-only: events name inodes, offsets and sizes
    /// (of encrypted PFSes too).
    static func openForWriting(_ path: String) throws -> Int32 {
        let created = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        if created >= 0 { return created }
        guard errno == EEXIST else { throw TraceError.system("create \(path)", errno) }
        let fd = open(path, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ELOOP { throw TraceError.unsafeFile(path, "is a symbolic link") }
            throw TraceError.system("open \(path)", errno)
        }
        do {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw TraceError.system("stat \(path)", errno) }
            guard st.st_mode & S_IFMT == S_IFREG else { throw TraceError.unsafeFile(path, "is not a regular file") }
            guard st.st_uid == geteuid() else { throw TraceError.unsafeFile(path, "belongs to uid \(st.st_uid)") }
            guard st.st_nlink == 1 else { throw TraceError.unsafeFile(path, "has \(st.st_nlink) links") }
            if st.st_size > 0 {
                var header = [UInt8](repeating: 0, count: TraceLayout.pidOffset + 4)
                let got = pread(fd, &header, header.count, 0)
                let magic = header.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian }
                guard got == header.count, magic == TraceLayout.magic else {
                    throw TraceError.unsafeFile(path, "holds something other than a trace segment")
                }
                let pid = header.withUnsafeBytes { Int32(littleEndian: $0.loadUnaligned(fromByteOffset: TraceLayout.pidOffset, as: Int32.self)) }
                if pid > 0 && pid != getpid() && (kill(pid, 0) == 0 || errno == EPERM) {
                    throw TraceError.unsafeFile(path, "is the live segment of process \(pid)")
                }
            }
            guard ftruncate(fd, 0) == 0 else { throw TraceError.system("truncate \(path)", errno) }
            _ = fchmod(fd, 0o600)
            return fd
        } catch {
            close(fd)
            throw error
        }
    }

    /// Whether a page of the segment had to be replaced by anonymous memory because the
    /// file shrank under the writer (what is recorded from there on is not in the file).
    public static var anyMappingLost: Bool { h2_mapping_guard_replacements() > 0 }

    /// The pid named in the header (a daemon that forked into the background sets its own).
    public func setWriterPID(_ pid: Int32) { store32(TraceLayout.pidOffset, UInt32(bitPattern: pid)) }

    /// Subsystems whose events are recorded (a bit each); tools may change it at run time.
    public var mask: UInt64 {
        get { h2_load_relaxed_u64(base + TraceLayout.maskOffset) }
        set { h2_store_relaxed_u64(base + TraceLayout.maskOffset, newValue) }
    }

    /// The mask word, for the process's installed trace (Trace.install).
    var maskWord: UnsafeMutablePointer<UInt64> { (base + TraceLayout.maskOffset).assumingMemoryBound(to: UInt64.self) }

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

    /// Adds the event rings: `count` rings (at most 64) of `records` records (a power of
    /// two), one per recording thread, given back when the thread exits; threads past
    /// `count` record nothing. Called once, before any thread records (recording reads the
    /// rings' place without a lock).
    public func addRings(count: Int, records: Int) throws {
        precondition(records > 0 && records & (records - 1) == 0, "records per ring: a power of two")
        precondition(count > 0 && count <= TraceLayout.maxRings, "1 to 64 rings")
        let size = TraceLayout.ringsHeaderBytes + count * (TraceLayout.ringHeaderBytes + records * TraceLayout.recordBytes)
        precondition(layoutLock.withLock { _ in ringsObject == nil }, "one rings object per segment")
        let (offset, _) = try addObject(name: "events", kind: .rings, version: 1, bytes: size, fields: [])
        store32(offset, UInt32(count))
        store32(offset + 4, UInt32(records))
        h2_ring_register(generation, base + offset + TraceLayout.ringsClaimedOffset)
        layoutLock.withLock { _ in ringsObject = (offset, count, records) }
    }

    /// Adds a text object of "key=value" lines.
    public func addText(name: String, _ values: [(String, String)]) throws {
        let text = Array(values.map { "\($0.0)=\($0.1)\n" }.joined().utf8)
        let (offset, _) = try addObject(name: name, kind: .text, version: 1, bytes: text.count, fields: [], publish: false)
        text.withUnsafeBytes { (base + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        publishObjects()
    }

    /// Adds the catalog readers print events with: subsystem names by bit, and each
    /// event's name and arguments.
    public func addCatalog(subsystems: [(bit: Int, name: String)], events: [TraceEventInfo]) throws {
        let size = TraceLayout.catalogHeaderBytes + subsystems.count * TraceLayout.subsystemBytes
            + events.count * TraceLayout.eventInfoBytes
        let (offset, _) = try addObject(name: "catalog", kind: .catalog, version: 1, bytes: size, fields: [], publish: false)
        store32(offset, UInt32(subsystems.count))
        store32(offset + 4, UInt32(events.count))
        var at = offset + TraceLayout.catalogHeaderBytes
        for subsystem in subsystems {
            store32(at, UInt32(subsystem.bit))
            storeString(at + 4, subsystem.name, TraceLayout.subsystemNameBytes)
            at += TraceLayout.subsystemBytes
        }
        for event in events {
            precondition(event.arguments.count <= TraceLayout.recordArguments, "five arguments at most")
            store32(at, event.id)
            store32(at + 4, UInt32(event.subsystem))
            storeString(at + TraceLayout.eventNameOffset, event.name, TraceLayout.eventNameBytes)
            store32(at + TraceLayout.eventArgumentCount, UInt32(event.arguments.count))
            for (i, argument) in event.arguments.enumerated() {
                let a = at + TraceLayout.eventArguments + i * TraceLayout.argumentBytes
                storeString(a, argument.name, TraceLayout.argumentBytes - 1)
                (base + a + TraceLayout.argumentBytes - 1).storeBytes(of: argument.format.rawValue, as: UInt8.self)
            }
            at += TraceLayout.eventInfoBytes
        }
        publishObjects()
    }

    /// Makes every entry added so far visible to readers.
    private func publishObjects() {
        layoutLock.withLock { _ in
            h2_store_release_u32(base + TraceLayout.objectCountOffset, UInt32(pendingObjects))
        }
    }
    private var pendingObjects = 0

    private func addObject(name: String, kind: TraceObjectKind, version: UInt32, bytes: Int,
                           fields: [TraceField], publish: Bool = true) throws -> (Int, Int) {
        try layoutLock.withLock { _ in
            let count = pendingObjects
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
            pendingObjects = count + 1
            // Published last: readers only look at entries below the count (an object
            // filled in after its entry, such as the catalog, is published by its filler).
            if publish { h2_store_release_u32(base + TraceLayout.objectCountOffset, UInt32(count + 1)) }
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

    func recordEnabled(_ event: UInt32, _ a0: UInt64, _ a1: UInt64, _ a2: UInt64, _ a3: UInt64, _ a4: UInt64) {
        guard let rings = ringsObject else { return }
        var ring = h2_thread_ring(generation)
        if ring < 0 {
            ring = h2_ring_claim(generation, base + rings.offset + TraceLayout.ringsClaimedOffset, UInt32(rings.count))
            guard ring >= 0 else { return }  // every ring held: this thread records nothing
            store64(ringOffset(rings, Int(ring)) + 8, UInt64(h2_thread_id()))
        }
        let ringBase = ringOffset(rings, Int(ring))
        let head = load64(ringBase)  // only this thread writes it
        let record = ringBase + TraceLayout.ringHeaderBytes + Int(head & UInt64(rings.records - 1)) * TraceLayout.recordBytes
        // Invalidate the slot first, so a reader never takes old and new halves for one record.
        h2_store_release_u64(base + record + TraceLayout.recordCommit, 0)
        h2_fence_release()
        store64(record, Self.monotonicNanoseconds())
        store32(record + 8, event)
        store32(record + TraceLayout.recordThread, h2_thread_id())
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

    public static func monotonicNanoseconds() -> UInt64 {
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
/// a change is under way), so readers retry rather than see a torn update. The sequence
/// word also keeps writers apart: any thread may update.
public struct TraceStatistics: @unchecked Sendable {
    let segment: TraceSegment
    let offset: Int
    let fieldOffsets: [String: Int]

    /// A field's place, looked up once (updates on hot paths use it, not the name).
    public struct Field: Sendable {
        let offset: Int
    }

    public func field(_ name: String) -> Field {
        guard let at = fieldOffsets[name] else { preconditionFailure("no field \(name) in this statistics object") }
        return Field(offset: at)
    }

    public func update(_ body: (inout TraceStatisticsWriter) -> Void) {
        let begun = h2_seq_write_begin(segment.base + offset)
        var writer = TraceStatisticsWriter(statistics: self)
        body(&writer)
        h2_seq_write_end(segment.base + offset, begun)
    }

    /// Adds `value` to one field.
    public func add(_ field: Field, _ value: UInt64 = 1) {
        let begun = h2_seq_write_begin(segment.base + offset)
        segment.store64(offset + field.offset, segment.load64(offset + field.offset) &+ value)
        h2_seq_write_end(segment.base + offset, begun)
    }
}

public struct TraceStatisticsWriter {
    let statistics: TraceStatistics

    public subscript(field: String, index: Int = 0) -> UInt64 {
        get { statistics.segment.load64(statistics.offset + statistics.fieldOffsets[field]! + 8 * index) }
        nonmutating set { statistics.segment.store64(statistics.offset + statistics.fieldOffsets[field]! + 8 * index, newValue) }
    }

    public subscript(field: TraceStatistics.Field, index: Int = 0) -> UInt64 {
        get { statistics.segment.load64(statistics.offset + field.offset + 8 * index) }
        nonmutating set { statistics.segment.store64(statistics.offset + field.offset + 8 * index, newValue) }
    }

    public func add(_ field: TraceStatistics.Field, _ value: UInt64 = 1, index: Int = 0) {
        self[field, index] = self[field, index] &+ value
    }
}
