// hammer2 stat -w (and hammer2 top): a live view of a mount's statistics, built only from
// its trace segment. It knows no object or field by name: it shows every statistics object
// the segment's directory lists, with each counter's rate, so objects and fields added to
// the daemon later appear here as they are.

import Foundation
import Glibc
import HAMMER2Trace

enum StatWatch {
    static let usage = "stat -w [-i seconds] [-n count] <mountpoint|segment>  (also: top)"

    static func run(_ arguments: [String]) throws -> Int32 {
        let parsed: GetOpt
        do { parsed = try GetOpt(arguments, spec: "wi:n:a") } catch { throw ToolError.usage("stat -w: \(error)") }
        var interval = 1.0, count: Int?, all = false
        for (letter, value) in parsed.options {
            switch letter {
            case "i":
                guard let v = Double(value ?? ""), v >= 0.1, v <= 3600 else { throw ToolError.usage("stat -w: -i wants seconds (0.1 to 3600)") }
                interval = v
            case "n":
                guard let n = Int(value ?? ""), n > 0 else { throw ToolError.usage("stat -w: -n wants a positive count") }
                count = n
            case "a": all = true
            default: break
            }
        }
        guard parsed.operands.count == 1 else { throw ToolError.usage("stat -w: requires one mount point or segment file") }
        let (path, reader) = try TraceDirectives.open(parsed.operands[0])
        let terminal = standardOutputIsTerminal
        var previous: [String: [String: UInt64]] = [:]
        var previousTime = Date()
        var shown = 0
        while true {
            let now = Date()
            let elapsed = max(now.timeIntervalSince(previousTime), 1e-3)
            var current: [String: [String: UInt64]] = [:]
            var lines: [String] = []
            let mount = reader.text("mount")
            let beat = reader.heartbeat
            let age = beat == 0 ? "never" : String(format: "%.1f s ago", Double(Int64(bitPattern: Trace.now &- beat)) / 1e9)
            lines.append("\(mount["source"] ?? path) on \(mount["mountpoint"] ?? "?"): pid \(reader.writerPID) "
                         + "\(reader.writerAlive ? "running" : "gone"), heartbeat \(age)   (\(path))")
            for object in reader.objects() where object.kind == TraceObjectKind.statistics.rawValue {
                guard let values = reader.statistics(object.name) else {
                    lines.append("\(object.name): being updated (a writer that died mid-update leaves it so)")
                    continue
                }
                current[object.name] = values
                lines.append("")
                lines.append(Text.pad("\(object.name) (version \(object.version))", 31) + Text.pad("total", 12, left: false)
                             + Text.pad("per second", 14, left: false))
                for field in object.fields {
                    if field.type == TraceField.FieldType.histogram.rawValue {
                        let buckets = (0..<field.count).map { values["\(field.name)[\($0)]"] ?? 0 }
                        let total = buckets.reduce(0, +)
                        guard all || total > 0 else { continue }
                        lines.append("  " + Text.pad(field.name, 28) + " " + histogram(buckets, unit: field.unit))
                        continue
                    }
                    let value = values[field.name] ?? 0
                    guard all || value > 0 else { continue }
                    var line = "  " + Text.pad(field.name, 28) + " " + Text.pad(show(value, unit: field.unit), 12, left: false)
                    if field.type == TraceField.FieldType.counter.rawValue, let before = previous[object.name]?[field.name] {
                        let rate = Double(value &- before) / elapsed
                        line += "  " + Text.pad(show(UInt64(max(rate, 0).rounded()), unit: field.unit), 12, left: false)
                    }
                    lines.append(line)
                }
            }
            if terminal { print("\u{1B}[H\u{1B}[2J", terminator: "") }
            print(lines.joined(separator: "\n"))
            if !terminal { print("") }
            fflush(nil)
            shown += 1
            if let count, shown >= count { return ExitCode.success.rawValue }
            previous = current
            previousTime = now
            usleep(UInt32(interval * 1e6))
        }
    }

    static func show(_ value: UInt64, unit: String) -> String {
        switch unit {
        case "bytes": return Text.size(value)
        case "ns": return TraceDirectives.duration(value)
        default: return String(value)
        }
    }

    /// "n=… p50<… p99<…" from log2 buckets (bucket i: values under 2^i units).
    static func histogram(_ buckets: [UInt64], unit: String) -> String {
        let total = buckets.reduce(0, +)
        guard total > 0 else { return "n=0" }
        let base = unit.split(separator: " ").last.map(String.init) ?? ""
        let nanoseconds: UInt64? = ["ns": 1, "us": 1000, "ms": 1_000_000, "s": 1_000_000_000][base]
        func bound(_ i: Int) -> String {
            let value = UInt64(1) << UInt64(i)
            return nanoseconds.map { TraceDirectives.duration(value * $0) } ?? "\(value)\(base)"
        }
        func quantile(_ q: Double) -> String {
            var seen: UInt64 = 0
            for (i, n) in buckets.enumerated() {
                seen += n
                if Double(seen) >= q * Double(total) { return i == buckets.count - 1 ? ">=" + bound(i - 1) : "<" + bound(i) }
            }
            return "?"
        }
        return "n=\(total) p50\(quantile(0.5)) p90\(quantile(0.9)) p99\(quantile(0.99))"
    }
}
