// The reader's side of a trace segment: maps the file read-only, never writes to it and
// never waits for the writer (a live daemon or a dead one's file), and knows objects and
// fields only by the names in the segment's own directory.

import CAtomicMemory
import Glibc
import Synchronization

public struct TraceRecord: Sendable, Equatable {
    public var timestamp: UInt64
    public var event: UInt32
    /// The recording thread's kernel id.
    public var thread: UInt32
    public var ring: UInt32
    /// The record's position in its ring (0 for a ring's first record).
    public var position: UInt64
    public var arguments: [UInt64]
}

/// Names from a segment's catalog.
public struct TraceCatalog: Sendable {
    public var subsystems: [Int: String] = [:]
    public var events: [UInt32: TraceEventInfo] = [:]
}

public struct TraceObjectInfo: Sendable, Equatable {
    public var name: String
    public var kind: UInt32
    public var version: UInt32
    public var offset: Int
    public var bytes: Int
    public var fields: [(name: String, type: UInt32, offset: Int, count: Int, unit: String)]

    public static func == (a: Self, b: Self) -> Bool {
        a.name == b.name && a.kind == b.kind && a.version == b.version && a.offset == b.offset
    }
}

public final class TraceReader: @unchecked Sendable {
    public let path: String
    let base: UnsafeRawPointer
    let bytes: Int
    private let layoutCache = Mutex<[String: (TraceObjectInfo, [(String, Int)])]>([:])

    public init(path: String) throws {
        self.path = path
        // Non-blocking: a FIFO planted under a segment's name must not hang the tools.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw TraceError.system("open \(path)", errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw TraceError.system("stat \(path)", errno) }
        guard st.st_mode & S_IFMT == S_IFREG else { throw TraceError.notASegment(path) }
        bytes = Int(st.st_size)
        guard bytes >= TraceLayout.headerBytes else { throw TraceError.notASegment(path) }
        guard let mapped = mmap(nil, bytes, PROT_READ, MAP_SHARED, fd, 0), mapped != MAP_FAILED else {
            throw TraceError.system("mmap \(path)", errno)
        }
        base = UnsafeRawPointer(mapped)
        // The file may shrink while it is read (its owner truncates it): reads past the new
        // end then see zeros instead of killing the tool with SIGBUS.
        _ = h2_mapping_guard_add(mapped, UInt64(bytes))
        guard h2_load_acquire_u64(base + TraceLayout.magicOffset) == TraceLayout.magic else {
            h2_mapping_guard_remove(mapped)
            munmap(mapped, bytes)
            throw TraceError.notASegment(path)
        }
    }

    deinit {
        h2_mapping_guard_remove(UnsafeMutableRawPointer(mutating: base))
        munmap(UnsafeMutableRawPointer(mutating: base), bytes)
    }

    public var writerPID: Int32 { Int32(bitPattern: load32(TraceLayout.pidOffset)) }
    /// When the segment was made (CLOCK_REALTIME ns) and the writer's last heartbeat
    /// (CLOCK_MONOTONIC ns, 0 if it never beat).
    public var created: UInt64 { load64(TraceLayout.createdOffset) }
    public var heartbeat: UInt64 { h2_load_acquire_u64(base + TraceLayout.heartbeatOffset) }
    /// Whether the writer named in the header still runs.
    public var writerAlive: Bool { writerPID > 0 && (kill(writerPID, 0) == 0 || errno == EPERM) }

    /// The "key=value" lines of text object `name` ("mount": source, mountpoint, pfs).
    /// Every mount the daemon serves: `mount`, then `mount.1`, `mount.2`... for the PFSes
    /// attached to it later (some may have been unmounted since).
    public func mounts() -> [[String: String]] {
        let names = objects().filter { $0.kind == TraceObjectKind.text.rawValue && ($0.name == "mount" || $0.name.hasPrefix("mount.")) }
        return names.map { text($0.name) }
    }

    public func text(_ name: String) -> [String: String] {
        guard let object = objects().first(where: { $0.name == name && $0.kind == TraceObjectKind.text.rawValue }) else { return [:] }
        let bytes = UnsafeRawBufferPointer(start: base + object.offset, count: object.bytes)
        var values: [String: String] = [:]
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return values
    }

    /// The subsystems and events named in the segment's catalog (empty without one).
    public func catalog() -> TraceCatalog {
        var catalog = TraceCatalog()
        guard let object = objects().first(where: { $0.kind == TraceObjectKind.catalog.rawValue }),
              object.bytes >= TraceLayout.catalogHeaderBytes else { return catalog }
        let subsystems = Int(load32(object.offset)), events = Int(load32(object.offset + 4))
        guard TraceLayout.catalogHeaderBytes + subsystems * TraceLayout.subsystemBytes + events * TraceLayout.eventInfoBytes
                <= object.bytes else { return catalog }
        var at = object.offset + TraceLayout.catalogHeaderBytes
        for _ in 0..<subsystems {
            catalog.subsystems[Int(load32(at))] = string(at + 4, TraceLayout.subsystemNameBytes)
            at += TraceLayout.subsystemBytes
        }
        for _ in 0..<events {
            let count = min(Int(load32(at + TraceLayout.eventArgumentCount)), TraceLayout.recordArguments)
            let arguments = (0..<count).map { i in
                let a = at + TraceLayout.eventArguments + i * TraceLayout.argumentBytes
                return (name: string(a, TraceLayout.argumentBytes - 1),
                        format: TraceArgumentFormat(rawValue: base.load(fromByteOffset: a + TraceLayout.argumentBytes - 1, as: UInt8.self)) ?? .decimal)
            }
            var info = TraceEventInfo(load32(at), string(at + TraceLayout.eventNameOffset, TraceLayout.eventNameBytes))
            info.arguments = arguments
            catalog.events[info.id] = info
            at += TraceLayout.eventInfoBytes
        }
        return catalog
    }
    public var mask: UInt64 { h2_load_relaxed_u64(base + TraceLayout.maskOffset) }

    /// Every object in the directory, with its schema; objects added later appear on the
    /// next call.
    public func objects() -> [TraceObjectInfo] {
        let count = min(Int(h2_load_acquire_u32(base + TraceLayout.objectCountOffset)), TraceLayout.maxObjects)
        return (0..<count).compactMap { i in
            let entry = TraceLayout.directoryOffset + i * TraceLayout.entryBytes
            // Damaged values (past the file, or past Int) skip the object.
            guard let offset = Int(exactly: load64(entry + TraceLayout.entryOffset)), offset <= bytes,
                  let size = Int(exactly: load64(entry + TraceLayout.entryBytesField)), size <= bytes,
                  let schema = Int(exactly: load64(entry + TraceLayout.entrySchemaOffset)), schema <= bytes else { return nil }
            let fieldCount = Int(load32(entry + TraceLayout.entrySchemaCount))
            guard offset + size <= bytes,
                  schema + fieldCount * TraceLayout.fieldBytes <= bytes else { return nil }  // damaged: skipped
            let fields = (0..<fieldCount).map { f in
                let at = schema + f * TraceLayout.fieldBytes
                return (name: string(at, TraceLayout.fieldNameBytes), type: load32(at + TraceLayout.fieldType),
                        offset: Int(load32(at + TraceLayout.fieldOffset)), count: Int(load32(at + TraceLayout.fieldCount)),
                        unit: string(at + TraceLayout.fieldUnit, TraceLayout.fieldUnitBytes))
            }
            return TraceObjectInfo(name: string(entry, TraceLayout.nameBytes), kind: load32(entry + TraceLayout.entryKind),
                                   version: load32(entry + TraceLayout.entryVersion), offset: offset, bytes: size, fields: fields)
        }
    }

    /// A consistent copy of a statistics object's fields by name (histograms as `name[i]`),
    /// retried while the writer is mid-update; nil if the object is missing or the writer
    /// stays mid-update (a writer killed inside an update leaves it odd for good).
    public func statistics(_ name: String, attempts: Int = 10_000) -> [String: UInt64]? {
        guard let (object, keys) = statisticsLayout(name) else { return nil }
        var copy = [UInt64](repeating: 0, count: object.bytes / 8)
        for _ in 0..<attempts {
            let before = h2_load_acquire_u64(base + object.offset)
            if before & 1 == 1 { sched_yield(); continue }
            copy.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(start: base + object.offset, count: $0.count)) }
            h2_fence_acquire()
            guard h2_load_relaxed_u64(base + object.offset) == before else { continue }
            var values: [String: UInt64] = [:]
            values.reserveCapacity(keys.count)
            for (key, offset) in keys { values[key] = UInt64(littleEndian: copy[offset / 8]) }
            return values
        }
        return nil
    }

    /// An object's entry and its value names with their offsets, worked out once per
    /// object (the directory only grows, and an entry never changes once published).
    private func statisticsLayout(_ name: String) -> (TraceObjectInfo, [(String, Int)])? {
        if let known = layoutCache.withLock({ $0[name] }) { return known }
        guard let object = objects().first(where: { $0.name == name && $0.kind == TraceObjectKind.statistics.rawValue }),
              object.bytes >= 8 else { return nil }
        var keys: [(String, Int)] = []
        for field in object.fields where field.offset + 8 * field.count <= object.bytes && field.offset >= 8 {
            for i in 0..<field.count { keys.append((field.count == 1 ? field.name : "\(field.name)[\(i)]", field.offset + 8 * i)) }
        }
        layoutCache.withLock { $0[name] = (object, keys) }
        return (object, keys)
    }

    /// The records still in the rings, merged by time (per ring in the order written);
    /// with `since`, only records of each ring at or after the position given for it (a
    /// follower passes the positions after what it printed).
    public func events(since: [UInt32: UInt64] = [:]) -> [TraceRecord] {
        guard let rings = objects().first(where: { $0.kind == TraceObjectKind.rings.rawValue }) else { return [] }
        let count = Int(load32(rings.offset)), records = Int(load32(rings.offset + 4))
        guard records > 0, records & (records - 1) == 0, records <= rings.bytes / TraceLayout.recordBytes,
              count <= rings.bytes / TraceLayout.ringHeaderBytes,
              TraceLayout.ringsHeaderBytes + count * (TraceLayout.ringHeaderBytes + records * TraceLayout.recordBytes) <= rings.bytes
        else { return [] }
        var all: [TraceRecord] = []
        for ring in 0..<count {
            let ringBase = rings.offset + TraceLayout.ringsHeaderBytes + ring * (TraceLayout.ringHeaderBytes + records * TraceLayout.recordBytes)
            let head = h2_load_acquire_u64(base + ringBase)
            let first = max(head > UInt64(records) ? head - UInt64(records) : 0, since[UInt32(ring)] ?? 0)
            guard first < head else { continue }
            for position in first..<head {
                let at = ringBase + TraceLayout.ringHeaderBytes + Int(position & UInt64(records - 1)) * TraceLayout.recordBytes
                let commit = h2_load_acquire_u64(base + at + TraceLayout.recordCommit)
                guard commit == position + 1 else { continue }  // overwritten since, or being written
                let record = TraceRecord(timestamp: load64(at), event: load32(at + 8), thread: load32(at + TraceLayout.recordThread),
                                         ring: UInt32(ring), position: position,
                                         arguments: (0..<TraceLayout.recordArguments).map { load64(at + 16 + 8 * $0) })
                h2_fence_acquire()
                guard h2_load_relaxed_u64(base + at + TraceLayout.recordCommit) == commit else { continue }
                all.append(record)
            }
        }
        return all.sorted { ($0.timestamp, $0.ring, $0.position) < ($1.timestamp, $1.ring, $1.position) }
    }

    func load64(_ offset: Int) -> UInt64 { UInt64(littleEndian: (base + offset).loadUnaligned(as: UInt64.self)) }
    func load32(_ offset: Int) -> UInt32 { UInt32(littleEndian: (base + offset).loadUnaligned(as: UInt32.self)) }
    func string(_ offset: Int, _ capacity: Int) -> String {
        let bytes = UnsafeRawBufferPointer(start: base + offset, count: capacity)
        return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }
}
