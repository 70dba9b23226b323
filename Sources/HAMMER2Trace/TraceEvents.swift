// What the daemon records: its subsystems (a mask bit each), its events (an id whose bits
// 8-15 name the subsystem), and their arguments. The catalog is written into every segment
// (docs/ktr.md), so readers print names without being built with this file.

/// A subsystem: bit `rawValue` of the segment's mask.
public enum TraceSubsystem: UInt32, CaseIterable, Sendable {
    case fuse = 0, io, check, compression, flush, allocation, bulkfree, copies, keys

    @inlinable public var bit: UInt64 { 1 << UInt64(rawValue) }

    public var name: String {
        switch self {
        case .fuse: "fuse"
        case .io: "io"
        case .check: "check"
        case .compression: "compress"
        case .flush: "flush"
        case .allocation: "alloc"
        case .bulkfree: "bulkfree"
        case .copies: "copies"
        case .keys: "keys"
        }
    }

    /// Every subsystem: the default mask.
    public static let all: UInt64 = allCases.reduce(0) { $0 | $1.bit }

    /// Parses a mask: a number (0x… or decimal), or subsystem names separated by commas or
    /// colons (inside -o options), each optionally prefixed with + (add to `base`) or -
    /// (remove); "all" and "none".
    public static func parseMask(_ text: String, base: UInt64 = 0) -> UInt64? {
        if let number = text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text) { return number }
        var mask = text.hasPrefix("+") || text.hasPrefix("-") ? base : 0
        let parts = text.split(whereSeparator: { $0 == "," || $0 == ":" })
        guard !parts.isEmpty else { return nil }
        for part in parts {
            var name = Substring(part)
            let remove = name.hasPrefix("-")
            if name.hasPrefix("+") || name.hasPrefix("-") { name = name.dropFirst() }
            let bits: UInt64
            switch name {
            case "all": bits = all
            case "none": bits = 0
            default:
                guard let subsystem = allCases.first(where: { $0.name == name }) else { return nil }
                bits = subsystem.bit
            }
            mask = remove ? mask & ~bits : (name == "none" ? 0 : mask | bits)
        }
        return mask
    }
}

/// The FUSE requests the daemon answers; request events are `rawValue`, replies `0x80 | rawValue`.
public enum FUSEOpcode: UInt32, CaseIterable, Sendable {
    case lookup = 1, getattr, setattr, readlink, mknod, mkdir, symlink, unlink, rmdir, rename, link, create, open,
         read, write, fsync, release, opendir, readdir, readdirplus, releasedir, fsyncdir, ioctl, statfs,
         fallocate, lseek, tmpfile, getxattr, setxattr, listxattr, removexattr

    public var name: String { "\(self)" }
}

/// How a reader prints an argument.
public enum TraceArgumentFormat: UInt8, Sendable {
    case decimal = 0x64  // "d"
    case hex = 0x78      // "x": media offsets, keys
    case bytes = 0x62    // "b": sizes
    case nanoseconds = 0x74  // "t": durations
    case errno = 0x65    // "e": 0 or an errno value
}

public struct TraceEventInfo: Sendable {
    public var id: UInt32
    public var name: String
    public var arguments: [(name: String, format: TraceArgumentFormat)]
    public var subsystem: Int { Int(id >> 8) }

    public init(_ id: UInt32, _ name: String, _ arguments: [(String, TraceArgumentFormat)] = []) {
        self.id = id
        self.name = name
        self.arguments = arguments.map { (name: $0.0, format: $0.1) }
    }
}

/// An event id. The constants are computed properties so that a trace point inlines them.
public struct TraceEvent: Sendable, Equatable {
    public let rawValue: UInt32
    @inlinable public init(_ rawValue: UInt32) { self.rawValue = rawValue }
    @inlinable public var subsystemBit: UInt64 { 1 << UInt64(rawValue >> 8) }

    @inlinable public static func fuseRequest(_ op: FUSEOpcode) -> TraceEvent { TraceEvent(op.rawValue) }
    @inlinable public static func fuseReply(_ op: FUSEOpcode) -> TraceEvent { TraceEvent(0x80 | op.rawValue) }
    @inlinable public static var deviceRead: TraceEvent { TraceEvent(0x0101) }
    @inlinable public static var deviceWrite: TraceEvent { TraceEvent(0x0102) }
    @inlinable public static var deviceError: TraceEvent { TraceEvent(0x0103) }
    @inlinable public static var checkFailed: TraceEvent { TraceEvent(0x0201) }
    @inlinable public static var compressed: TraceEvent { TraceEvent(0x0301) }
    @inlinable public static var flushStart: TraceEvent { TraceEvent(0x0401) }
    @inlinable public static var flushEnd: TraceEvent { TraceEvent(0x0402) }
    @inlinable public static var prewrite: TraceEvent { TraceEvent(0x0403) }
    @inlinable public static var logCommit: TraceEvent { TraceEvent(0x0404) }
    @inlinable public static var allocate: TraceEvent { TraceEvent(0x0501) }
    @inlinable public static var bulkfreeStart: TraceEvent { TraceEvent(0x0601) }
    @inlinable public static var bulkfreeProgress: TraceEvent { TraceEvent(0x0602) }
    @inlinable public static var bulkfreeEnd: TraceEvent { TraceEvent(0x0603) }
    @inlinable public static var copyRepaired: TraceEvent { TraceEvent(0x0701) }
    @inlinable public static var copyLost: TraceEvent { TraceEvent(0x0702) }
    @inlinable public static var keyUnlocked: TraceEvent { TraceEvent(0x0801) }
    @inlinable public static var keyRejected: TraceEvent { TraceEvent(0x0802) }
    @inlinable public static var keysWiped: TraceEvent { TraceEvent(0x0803) }
    @inlinable public static var keyChanged: TraceEvent { TraceEvent(0x0804) }
    @inlinable public static var keysErased: TraceEvent { TraceEvent(0x0805) }

    /// Every event the daemon records, as the catalog names them.
    public static let catalog: [TraceEventInfo] = {
        var events: [TraceEventInfo] = []
        for op in FUSEOpcode.allCases {
            let arguments: [(String, TraceArgumentFormat)]
            switch op {
            case .read, .write: arguments = [("ino", .decimal), ("offset", .hex), ("size", .bytes)]
            case .lookup, .mknod, .mkdir, .symlink, .unlink, .rmdir, .create, .rename: arguments = [("parent", .decimal)]
            case .link: arguments = [("ino", .decimal), ("newparent", .decimal)]
            case .ioctl: arguments = [("ino", .decimal), ("command", .hex)]
            case .fallocate: arguments = [("ino", .decimal), ("offset", .hex), ("length", .bytes)]
            case .lseek: arguments = [("ino", .decimal), ("offset", .hex), ("whence", .decimal)]
            case .tmpfile: arguments = [("parent", .decimal)]
            default: arguments = [("ino", .decimal)]
            }
            events.append(TraceEventInfo(fuseRequest(op).rawValue, "fuse.\(op.name)", arguments))
            events.append(TraceEventInfo(fuseReply(op).rawValue, "fuse.\(op.name).done",
                                         [("error", .errno), ("latency", .nanoseconds), ("bytes", .bytes)]))
        }
        let volumeIO: [(String, TraceArgumentFormat)] = [("volume", .decimal), ("offset", .hex), ("size", .bytes), ("latency", .nanoseconds)]
        events += [
            TraceEventInfo(deviceRead.rawValue, "io.read", volumeIO),
            TraceEventInfo(deviceWrite.rawValue, "io.write", volumeIO),
            TraceEventInfo(deviceError.rawValue, "io.error", [("volume", .decimal), ("offset", .hex), ("size", .bytes), ("write", .decimal), ("error", .errno)]),
            TraceEventInfo(checkFailed.rawValue, "check.failed", [("offset", .hex), ("size", .bytes), ("method", .decimal), ("copy", .decimal), ("type", .decimal)]),
            TraceEventInfo(compressed.rawValue, "compress.block", [("logical", .bytes), ("physical", .bytes), ("comp_algo", .hex), ("decision", .decimal)]),
            TraceEventInfo(flushStart.rawValue, "flush.start", [("inodes", .decimal), ("dirty", .bytes)]),
            TraceEventInfo(flushEnd.rawValue, "flush.end", [("blocks", .decimal), ("bytes", .bytes), ("duration", .nanoseconds), ("error", .errno), ("tid", .hex)]),
            TraceEventInfo(prewrite.rawValue, "flush.prewrite", [("blocks", .decimal), ("bytes", .bytes), ("locked", .nanoseconds), ("duration", .nanoseconds)]),
            TraceEventInfo(logCommit.rawValue, "flush.log", [("inodes", .decimal), ("bytes", .bytes), ("offset", .hex), ("duration", .nanoseconds), ("sequence", .decimal)]),
            TraceEventInfo(allocate.rawValue, "alloc.block", [("offset", .hex), ("size", .bytes), ("type", .decimal)]),
            TraceEventInfo(bulkfreeStart.rawValue, "bulkfree.start", [("volume_bytes", .bytes), ("automatic", .decimal)]),
            TraceEventInfo(bulkfreeProgress.rawValue, "bulkfree.progress", [("scanned", .decimal), ("referenced", .bytes)]),
            TraceEventInfo(bulkfreeEnd.rawValue, "bulkfree.end", [("freed", .bytes), ("scanned", .decimal), ("duration", .nanoseconds), ("error", .errno)]),
            TraceEventInfo(copyRepaired.rawValue, "copies.repaired", [("offset", .hex), ("size", .bytes), ("copy", .decimal), ("from", .decimal)]),
            TraceEventInfo(copyLost.rawValue, "copies.lost", [("offset", .hex), ("size", .bytes), ("copies", .decimal)]),
            TraceEventInfo(keyUnlocked.rawValue, "keys.unlocked", [("key_id", .hex)]),
            TraceEventInfo(keyRejected.rawValue, "keys.rejected", [("key_id", .hex)]),
            TraceEventInfo(keysWiped.rawValue, "keys.wiped", [("count", .decimal)]),
            TraceEventInfo(keyChanged.rawValue, "keys.changed", [("key_id", .hex)]),
            TraceEventInfo(keysErased.rawValue, "keys.erased", [("erased", .decimal), ("live", .decimal)]),
        ]
        return events
    }()
}
