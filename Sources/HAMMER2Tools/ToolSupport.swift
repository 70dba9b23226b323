// What every command-line tool shares: exit codes, messages to stderr, and the parsing of
// DragonFly's "special[@label]" volume syntax (special may be dev1:dev2:... for a
// multi-volume filesystem).

import Foundation
import Glibc

/// Exit codes scripts can rely on; see docs/tools.md.
public enum ExitCode: Int32 {
    case success = 0
    /// fsck: damage found; other tools: the operation failed.
    case failure = 1
    /// Bad command line.
    case usage = 2
}

public func printError(_ tool: String, _ message: String) {
    FileHandle.standardError.write(Data("\(tool): \(message)\n".utf8))
}

/// A command-line mistake, reported as DragonFly's tools do: the message, then the usage
/// text, on stderr. Returns the usage exit code.
public func usageError(_ tool: String, _ message: String, usage: String) -> Int32 {
    printError(tool, message)
    FileHandle.standardError.write(Data((usage + "\n").utf8))
    return ExitCode.usage.rawValue
}

/// "special[@label]": device paths and an optional PFS label.
public struct VolumeSpecifier: Equatable, Sendable {
    public var devices: [String]
    public var label: String?

    /// Parses DragonFly's syntax. The label follows the last '@'.
    public init(_ text: String) throws {
        var special = text
        if let at = text.lastIndex(of: "@") {
            label = String(text[text.index(after: at)...])
            special = String(text[..<at])
            if label!.isEmpty { label = nil }
        }
        devices = special.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard !special.isEmpty, !devices.contains(where: { $0.isEmpty }) else {
            throw ToolError.usage("empty device path in \"\(text)\"")
        }
    }

    /// DragonFly's default label when none is given: from the partition letter of the
    /// (first) device, 'a' → BOOT, 'd' → ROOT, anything else → DATA.
    public var labelOrDefault: String {
        if let label { return label }
        switch devices[0].last {
        case "a": return "BOOT"
        case "d": return "ROOT"
        default: return "DATA"
        }
    }
}

public enum ToolError: Error, CustomStringConvertible {
    case usage(String)
    case failed(String)

    public var description: String {
        switch self {
        case let .usage(m), let .failed(m): return m
        }
    }
}

/// Whether standard output is a terminal (progress lines are shown only there).
public var standardOutputIsTerminal: Bool { isatty(STDOUT_FILENO) == 1 }

/// The mounted hammer2 filesystem containing `path`, from /proc/self/mountinfo: the
/// mount point and its source ("IMAGE@LABEL" as mount_hammer2 names it).
public func mountedFilesystem(containing path: String) -> (mountpoint: String, source: String)? {
    guard let info = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
    let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
    var best: (String, String)?
    for line in info.split(separator: "\n") {
        // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
        let halves = line.components(separatedBy: " - ")
        guard halves.count == 2 else { continue }
        let left = halves[0].split(separator: " ")
        let right = halves[1].split(separator: " ")
        guard left.count >= 5, right.count >= 2, right[0] == "fuse.hammer2" else { continue }
        let mountpoint = unescapeMountinfo(String(left[4]))
        let source = unescapeMountinfo(String(right[1]))
        let prefix = mountpoint.hasSuffix("/") ? mountpoint : mountpoint + "/"
        if resolved == mountpoint || resolved.hasPrefix(prefix) {
            if best == nil || mountpoint.count > best!.0.count { best = (mountpoint, source) }
        }
    }
    return best.map { (mountpoint: $0.0, source: $0.1) }
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
func unescapeMountinfo(_ s: String) -> String {
    var out: [UInt8] = []
    let bytes = Array(s.utf8)
    var i = 0
    while i < bytes.count {
        if bytes[i] == UInt8(ascii: "\\"), i + 3 < bytes.count,
           let value = UInt8(String(decoding: bytes[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
            out.append(value)
            i += 4
        } else {
            out.append(bytes[i])
            i += 1
        }
    }
    return String(decoding: out, as: UTF8.self)
}

/// The mount point of a hammer2 mount whose source names the image or device `path`.
public func mountedFilesystem(source path: String) -> String? {
    guard let info = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
    let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
    for line in info.split(separator: "\n") {
        let halves = line.components(separatedBy: " - ")
        guard halves.count == 2 else { continue }
        let left = halves[0].split(separator: " ")
        let right = halves[1].split(separator: " ")
        guard left.count >= 5, right.count >= 2, right[0] == "fuse.hammer2",
              let specifier = try? VolumeSpecifier(unescapeMountinfo(String(right[1]))) else { continue }
        if specifier.devices.contains(where: { URL(fileURLWithPath: $0).resolvingSymlinksInPath().path == resolved }) {
            return unescapeMountinfo(String(left[4]))
        }
    }
    return nil
}
