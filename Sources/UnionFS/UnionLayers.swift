// The layers of a union and how one name resolves in them (docs/unionfs.md, "What a name
// resolves to"). Each layer is opened once (linux_o_path): every later call is relative to that
// descriptor, so a mount over a layer's path, or the union mounted on it, changes nothing.

import CXattr
import CLinuxCalls
import Glibc

/// An errno from a system call, carried up to the FUSE reply.
public struct UnionError: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public init(_ code: Int32) { self.code = code }
    public var description: String { String(cString: strerror(code)) }
}

/// `result` unless it is negative: then errno, thrown.
@discardableResult
func check(_ result: Int32) throws -> Int32 {
    if result < 0 { throw UnionError(errno) }
    return result
}

/// One directory of the union.
final class Layer: Sendable {
    let index: Int
    let root: String
    let fd: Int32
    let writable: Bool

    init(index: Int, root: String, writable: Bool) throws {
        self.index = index
        self.root = root
        self.writable = writable
        fd = try check(open(root, linux_o_path | O_DIRECTORY | O_CLOEXEC))
    }

    deinit { close(fd) }

    /// The name a *at call takes for `path` ("" is the layer's root).
    static func at(_ path: String) -> String { path.isEmpty ? "." : path }

    /// The absolute path (for the xattr calls, which have no *at form).
    func absolute(_ path: String) -> String { path.isEmpty ? root : root + "/" + path }

    func status(_ path: String) throws -> stat {
        var st = stat()
        try check(fstatat(fd, Self.at(path), &st, AT_SYMLINK_NOFOLLOW))
        return st
    }
}

/// What a layer holds under a name.
enum LayerEntry {
    case missing
    /// A character device 0/0: the name is deleted for every layer below.
    case whiteout
    case directory(stat, opaque: Bool)
    case other(stat)
}

/// The union's private xattrs, in the namespace it writes and the one it also reads.
struct OverlayNames: Sendable {
    let prefix: String
    let other: String
    var opaque: String { prefix + "opaque" }

    init(userXattr: Bool) {
        prefix = userXattr ? "user.overlay." : "trusted.overlay."
        other = userXattr ? "trusted.overlay." : "user.overlay."
    }

    func isPrivate(_ name: String) -> Bool { name.hasPrefix("trusted.overlay.") || name.hasPrefix("user.overlay.") }
}

extension Layer {
    func entry(_ path: String, names: OverlayNames) throws -> LayerEntry {
        var st = stat()
        if fstatat(fd, Self.at(path), &st, AT_SYMLINK_NOFOLLOW) != 0 {
            if errno == ENOENT || errno == ENOTDIR { return .missing }
            throw UnionError(errno)
        }
        switch st.st_mode & S_IFMT {
        case S_IFCHR where st.st_rdev == 0: return .whiteout
        case S_IFDIR: return .directory(st, opaque: isOpaque(path, names: names))
        default: return .other(st)
        }
    }

    /// The namespace the union writes (trusted.overlay.* as root, as the kernel's overlayfs
    /// does; user.overlay.* unprivileged, where trusted.* cannot be read anyway).
    func isOpaque(_ path: String, names: OverlayNames) -> Bool {
        var value: (UInt8, UInt8) = (0, 0)
        let length = withUnsafeMutableBytes(of: &value) { lgetxattr(absolute(path), names.opaque, $0.baseAddress, $0.count) }
        return length == 1 && value.0 == UInt8(ascii: "y")
    }
}

/// A name resolved in the union: a directory merged from `layers` (top first), or another
/// object in `layers[0]`.
struct Resolved {
    var isDirectory: Bool
    var layers: [Int]
    var status: stat
}

/// Resolves `path` in the layers its parent directory is merged from (top first): down to
/// a whiteout, an opaque directory, or a non-directory under which nothing merges.
func resolve(_ path: String, in parentLayers: [Int], layers: [Layer], names: OverlayNames) throws -> Resolved? {
    var directories: [Int] = []
    var top: stat?
    search: for index in parentLayers {
        switch try layers[index].entry(path, names: names) {
        case .missing:
            continue
        case .whiteout:
            break search
        case let .directory(st, opaque):
            directories.append(index)
            if top == nil { top = st }
            if opaque { break search }
        case let .other(st):
            if directories.isEmpty { return Resolved(isDirectory: false, layers: [index], status: st) }
            break search
        }
    }
    guard let top else { return nil }
    return Resolved(isDirectory: true, layers: directories, status: top)
}
