// mount_unionfs's layers (docs/unionfs.md): overlayfs's option names, checked before
// anything is mounted, so that a bad layer is a clear error instead of a strange union.

import Glibc

public struct UnionConfiguration: Sendable, Equatable {
    /// Read-only layers, the top one first (lowerdir=A:B: A over B).
    public var lowers: [String]
    public var upper: String?
    public var work: String?
    /// user.overlay.* instead of trusted.overlay.* (overlayfs's userxattr; the default
    /// when the daemon is not privileged).
    public var userXattr: Bool
    /// Seconds the kernel may cache names and attributes.
    public var timeout: Double = 1
    /// Copy-ups are not synced before they are renamed into place (overlayfs's volatile).
    public var volatile = false
    /// FUSE passthrough of open files' reads and writes where the kernel offers it and the
    /// daemon may (CAP_SYS_ADMIN); `nopassthrough` turns it off.
    public var passthrough = true

    public init(lowers: [String], upper: String? = nil, work: String? = nil, userXattr: Bool = geteuid() != 0) {
        self.lowers = lowers
        self.upper = upper
        self.work = work
        self.userXattr = userXattr
    }

    public var readOnly: Bool { upper == nil }

    public enum ConfigurationError: Error, CustomStringConvertible, Equatable {
        case usage(String)
        case layer(String)

        public var description: String {
            switch self {
            case let .usage(what), let .layer(what): return what
            }
        }
    }

    /// Parses `-o` options: lowerdir, upperdir, workdir, userxattr, timeout=, volatile, nopassthrough;
    /// `others` gets what is not ours (for libfuse: allow_other, ...).
    public static func parse(_ options: [String], others: inout [String]) throws -> UnionConfiguration {
        var lowers: [String]?, upper: String?, work: String?
        var userXattr = geteuid() != 0
        var timeout = 1.0, volatile = false, passthrough = true
        for option in options where !option.isEmpty {
            let parts = option.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            let value = parts.count == 2 ? parts[1] : nil
            switch parts[0] {
            case "lowerdir":
                guard let value, !value.isEmpty else { throw ConfigurationError.usage("lowerdir= needs one or more directories") }
                // overlayfs escapes ':' in names with a backslash.
                lowers = splitLayers(value)
                guard !(lowers?.contains(where: \.isEmpty) ?? true) else { throw ConfigurationError.usage("lowerdir=\(value): an empty layer") }
            case "upperdir":
                guard let value, !value.isEmpty else { throw ConfigurationError.usage("upperdir= needs a directory") }
                upper = value
            case "workdir":
                guard let value, !value.isEmpty else { throw ConfigurationError.usage("workdir= needs a directory") }
                work = value
            case "userxattr": userXattr = true
            case "volatile": volatile = true
            case "nopassthrough": passthrough = false
            case "timeout":
                guard let value, let seconds = Double(value), seconds >= 0, seconds <= 3600 else {
                    throw ConfigurationError.usage("timeout= takes seconds (0 to 3600)")
                }
                timeout = seconds
            default:
                others.append(option)
            }
        }
        guard let lowers else { throw ConfigurationError.usage("lowerdir= is required") }
        guard (upper == nil) == (work == nil) else { throw ConfigurationError.usage("upperdir= and workdir= go together") }
        var configuration = UnionConfiguration(lowers: lowers, upper: upper, work: work, userXattr: userXattr)
        configuration.timeout = timeout
        configuration.volatile = volatile
        configuration.passthrough = passthrough
        return configuration
    }

    static func splitLayers(_ value: String) -> [String] {
        var layers: [String] = [], current = "", escaped = false
        for character in value {
            if escaped { current.append(character); escaped = false; continue }
            if character == "\\" { escaped = true; continue }
            if character == ":" { layers.append(current); current = ""; continue }
            current.append(character)
        }
        layers.append(current)
        return layers
    }

    /// Every layer's canonical path, after the checks of docs/unionfs.md ("Checked before
    /// mounting"); throws the first failure.
    public func validated() throws -> UnionConfiguration {
        func canonical(_ path: String, _ role: String) throws -> String {
            var st = stat()
            guard stat(path, &st) == 0 else {
                throw ConfigurationError.layer("\(role) \(path): \(String(cString: strerror(errno)))")
            }
            guard st.st_mode & S_IFMT == S_IFDIR else { throw ConfigurationError.layer("\(role) \(path): not a directory") }
            guard let resolved = realpath(path, nil) else {
                throw ConfigurationError.layer("\(role) \(path): \(String(cString: strerror(errno)))")
            }
            defer { free(resolved) }
            return String(cString: resolved)
        }
        var result = self
        result.lowers = try lowers.map { try canonical($0, "lowerdir") }
        result.upper = try upper.map { try canonical($0, "upperdir") }
        result.work = try work.map { try canonical($0, "workdir") }
        let all = (result.upper.map { [("upperdir", $0)] } ?? []) + (result.work.map { [("workdir", $0)] } ?? [])
            + result.lowers.map { ("lowerdir", $0) }
        for (i, (role, path)) in all.enumerated() {
            for (otherRole, other) in all[(i + 1)...] {
                if path == other { throw ConfigurationError.layer("\(path) is given twice (\(role) and \(otherRole))") }
                // Lower layers may share a tree with each other (both only read); the
                // writable ones may not overlap anything.
                guard role != "lowerdir" || otherRole != "lowerdir" else { continue }
                if Self.isInside(path, other) || Self.isInside(other, path) {
                    let (inner, outer) = Self.isInside(path, other) ? ((role, path), (otherRole, other)) : ((otherRole, other), (role, path))
                    throw ConfigurationError.layer("\(inner.0) \(inner.1) is inside \(outer.0) \(outer.1)")
                }
            }
        }
        if let upper = result.upper, let work = result.work {
            var a = stat(), b = stat()
            guard stat(upper, &a) == 0, stat(work, &b) == 0, a.st_dev == b.st_dev else {
                throw ConfigurationError.layer("upperdir \(upper) and workdir \(work) are on different filesystems (a copy-up is renamed from one to the other)")
            }
            guard access(work, W_OK) == 0, access(upper, W_OK) == 0 else {
                throw ConfigurationError.layer("upperdir and workdir must be writable: \(String(cString: strerror(errno)))")
            }
        }
        return result
    }

    static func isInside(_ path: String, _ directory: String) -> Bool {
        directory == "/" ? path != "/" : path.hasPrefix(directory + "/")
    }
}
