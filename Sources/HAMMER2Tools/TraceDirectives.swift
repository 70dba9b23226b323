// hammer2 ktrdump, ktrmask and stat -w (top): readers of a mount's trace segment
// (docs/ktr.md). They map the segment read-only and never ask the daemon anything, so they
// work on a busy, a hung or a dead daemon alike; only ktrmask writes (the mask word).

import CAtomicMemory
import Foundation
import Glibc
import HAMMER2Trace

enum TraceDirectives {
    /// The segment for an operand: a segment file itself, or the mount point (or a path
    /// under it) of a mount_hammer2 mount. The mount point is matched as written, made
    /// absolute without touching the mount (a stat of it would wait for a hung daemon).
    static func segmentPath(_ operand: String) throws -> String {
        let path = lexicalAbsolute(operand)
        // The segment whose mount point holds the path (the deepest mount point); of several
        // for one mount point, a live writer's, else the newest (segments() is newest first).
        var best: (mountpoint: String, segment: String, alive: Bool)?
        var denied = 0
        for candidate in TraceFiles.segments() {
            let reader: TraceReader
            do { reader = try TraceReader(path: candidate.path) } catch TraceError.system(_, EACCES) { denied += 1; continue } catch { continue }
            // A daemon serving several PFSes of one volume lists each mount point.
            for mount in reader.mounts() {
                guard let mountpoint = mount["mountpoint"] else { continue }
                let prefix = mountpoint.hasSuffix("/") ? mountpoint : mountpoint + "/"
                guard path == mountpoint || path.hasPrefix(prefix) else { continue }
                let alive = reader.writerAlive
                if let current = best, mountpoint.count < current.mountpoint.count
                    || (mountpoint == current.mountpoint && (current.alive || !alive)) { continue }
                best = (mountpoint, candidate.path, alive)
            }
        }
        if let best { return best.segment }
        var st = stat()
        if lstat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFREG { return path }
        if denied > 0 {
            throw ToolError.failed("\(operand): no trace segment readable: \(denied) belong to another user (segments are "
                                   + "their daemon's owner's only; run as that user or root)")
        }
        throw ToolError.failed("\(operand): no trace segment found (not a segment file, and no mount_hammer2 mount there "
                               + "with one; mounted with -o noktr, or its segment is at the path given by -o ktr=)")
    }

    static func lexicalAbsolute(_ path: String) -> String {
        var parts: [Substring] = []
        let whole = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        for part in whole.split(separator: "/") {
            if part == "." || part.isEmpty { continue }
            if part == ".." { _ = parts.popLast(); continue }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    static func open(_ operand: String) throws -> (String, TraceReader) {
        let path = try segmentPath(operand)
        do {
            return (path, try TraceReader(path: path))
        } catch let error as TraceError {
            if case .notASegment = error { throw ToolError.failed("\(path): not a hammer2 trace segment") }
            throw ToolError.failed(error.description)
        }
    }

    // MARK: ktrdump

    static let ktrdumpUsage = "ktrdump [-f] [-m mask] [-n count] <mountpoint|segment>"

    /// Prints the events in the rings merged by time; -f follows new ones, -m shows only
    /// some subsystems, -n only the last count events.
    static func ktrdump(_ arguments: [String]) throws -> Int32 {
        let parsed: GetOpt
        do { parsed = try GetOpt(arguments, spec: "fm:n:") } catch { throw ToolError.usage("ktrdump: \(error)") }
        var follow = false, maskText: String?, last: Int?
        for (letter, value) in parsed.options {
            switch letter {
            case "f": follow = true
            case "m": maskText = value
            case "n":
                guard let n = Int(value ?? ""), n > 0 else { throw ToolError.usage("ktrdump: -n wants a positive count") }
                last = n
            default: break
            }
        }
        guard parsed.operands.count == 1 else { throw ToolError.usage("ktrdump: requires one mount point or segment file") }
        var shown = TraceSubsystem.all | ~UInt64(0)
        if let maskText {
            guard let mask = TraceSubsystem.parseMask(maskText) else {
                throw ToolError.usage("ktrdump: -m wants subsystem names (\(TraceSubsystem.allCases.map(\.name).joined(separator: ","))) or a number")
            }
            shown = mask
        }
        let (path, reader) = try open(parsed.operands[0])
        let catalog = reader.catalog()
        let mount = reader.text("mount")
        print("# \(path): \(mount["source"] ?? "?") on \(mount["mountpoint"] ?? "?"), pid \(reader.writerPID) "
              + "\(reader.writerAlive ? "running" : "gone")"
              + ", recording \(maskNames(reader.mask, catalog))")
        print("#      seconds  thread  event                    arguments")
        var next: [UInt32: UInt64] = [:]
        var origin: UInt64?
        func emit(_ records: [TraceRecord]) {
            for record in records {
                next[record.ring] = max(next[record.ring] ?? 0, record.position + 1)
            }
            var selected = records.filter { record in
                let bit: UInt64 = 1 << UInt64(record.event >> 8)
                return bit & shown != 0
            }
            if let last, selected.count > last { selected = Array(selected.suffix(last)) }
            for record in selected {
                if origin == nil { origin = record.timestamp }
                print(line(record, origin: origin!, catalog))
            }
            fflush(nil)
        }
        emit(reader.events())
        guard follow else { return ExitCode.success.rawValue }
        while true {
            usleep(100_000)
            emit(reader.events(since: next))
        }
    }

    static func line(_ record: TraceRecord, origin: UInt64, _ catalog: TraceCatalog) -> String {
        let seconds = Double(Int64(bitPattern: record.timestamp &- origin)) / 1e9
        let info = catalog.events[record.event]
        let name = info?.name ?? "event.\(String(record.event, radix: 16))"
        let arguments: String
        if let info {
            arguments = info.arguments.enumerated().map { i, argument in
                "\(argument.name)=\(format(record.arguments[i], argument.format))"
            }.joined(separator: " ")
        } else {
            arguments = record.arguments.map { "0x" + String($0, radix: 16) }.joined(separator: " ")
        }
        return Text.pad(String(format: "%.6f", seconds), 14, left: false) + " " + Text.pad(String(record.thread), 7, left: false) + "  "
            + Text.pad(name, 24) + " " + arguments
    }

    static func format(_ value: UInt64, _ format: TraceArgumentFormat) -> String {
        switch format {
        case .decimal: return String(value)
        case .hex: return "0x" + String(value, radix: 16)
        case .bytes: return String(value)
        case .nanoseconds: return duration(value)
        case .errno:
            guard value != 0 else { return "0" }
            return "\(value) (\(String(cString: strerror(Int32(truncatingIfNeeded: value)))))"
        }
    }

    static func duration(_ nanoseconds: UInt64) -> String {
        let n = Double(nanoseconds)
        if n < 1e3 { return "\(nanoseconds)ns" }
        if n < 1e6 { return String(format: "%.1fus", n / 1e3) }
        if n < 1e9 { return String(format: "%.2fms", n / 1e6) }
        return String(format: "%.3fs", n / 1e9)
    }

    static func maskNames(_ mask: UInt64, _ catalog: TraceCatalog) -> String {
        if mask == 0 { return "nothing" }
        let names = catalog.subsystems.keys.sorted().filter { mask & (1 << UInt64($0)) != 0 }.compactMap { catalog.subsystems[$0] }
        return names.isEmpty ? "0x" + String(mask, radix: 16) : names.joined(separator: ",")
    }

    // MARK: ktrmask

    /// Shows, or with a mask sets, the subsystems the daemon records (root: the segment is
    /// the daemon's file). "+io" and "-fuse" change the current mask.
    static func ktrmask(_ operands: [String]) throws -> Int32 {
        guard operands.count == 1 || operands.count == 2 else {
            throw ToolError.usage("ktrmask: requires a mount point or segment, and optionally a mask")
        }
        let (path, reader) = try open(operands[0])
        let catalog = reader.catalog()
        guard operands.count == 2 else {
            print("0x\(String(reader.mask, radix: 16)) \(maskNames(reader.mask, catalog))")
            return ExitCode.success.rawValue
        }
        guard let mask = TraceSubsystem.parseMask(operands[1], base: reader.mask) else {
            throw ToolError.usage("ktrmask: wants subsystem names (\(TraceSubsystem.allCases.map(\.name).joined(separator: ","))) or a number")
        }
        let fd = Glibc.open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw ToolError.failed("\(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard let page = mmap(nil, TraceLayout.headerBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), page != MAP_FAILED else {
            throw ToolError.failed("\(path): \(String(cString: strerror(errno)))")
        }
        defer { munmap(page, TraceLayout.headerBytes) }
        h2_store_relaxed_u64(page + TraceLayout.maskOffset, mask)
        print("0x\(String(mask, radix: 16)) \(maskNames(mask, catalog))")
        return ExitCode.success.rawValue
    }
}
