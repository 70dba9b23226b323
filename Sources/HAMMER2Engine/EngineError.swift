// The engine's error set. Media and OS failures are thrown as these; the FUSE adapter and
// the tools are the only places that turn them into errno values or exit codes.

import Foundation
import HAMMER2Format

public enum EngineError: Error, CustomStringConvertible, Sendable {
    /// A system call failed (errno) while doing `what`.
    case io(errno: Int32, what: String)
    /// The device ended before a block that a blockref points to.
    case shortRead(device: String, offset: UInt64, wanted: Int, got: Int)
    /// A block's check code did not match its blockref.
    case checkFailed(bref: Blockref, expected: String, computed: String)
    /// A block uses a check or compression method this implementation does not know.
    case unknownMethod(bref: Blockref, what: String)
    /// A compressed block did not decode.
    case decompressionFailed(bref: Blockref, reason: String)
    /// On-disk structure that violates the format.
    case corrupt(String)
    /// No usable volume header (each copy's problem is listed).
    case noValidVolumeHeader(device: String, problems: [String])
    /// The volume set is inconsistent or incomplete.
    case badVolumeSet(String)
    case pfsNotFound(label: String, available: [String])
    case notFound
    case notDirectory
    case isDirectory
    case notSymlink
    case invalidArgument(String)
    /// A POSIX error for the caller (EEXIST, ENOTEMPTY, ENOSPC, EROFS, ...) with context.
    case posix(Int32, String)
    /// An encrypted block or PFS whose key is not loaded (ENOKEY).
    case locked(keyID: UInt32, what: String)
    /// An encrypted block whose authentication tag does not match: tampered, misplaced,
    /// replayed, or read with the wrong key.
    case authenticationFailed(bref: Blockref, reason: String)

    public var description: String {
        switch self {
        case let .io(errno, what): return "\(what): \(String(cString: strerror(errno)))"
        case let .shortRead(device, offset, wanted, got):
            return "\(device): short read at offset 0x\(String(offset, radix: 16)) (wanted \(wanted) bytes, got \(got)); image truncated?"
        case let .checkFailed(bref, expected, computed):
            return "check code mismatch in \(describe(bref)): stored \(expected), computed \(computed)"
        case let .unknownMethod(bref, what): return "unknown \(what) in \(describe(bref))"
        case let .decompressionFailed(bref, reason): return "\(reason) in \(describe(bref))"
        case let .corrupt(what): return "corrupt filesystem: \(what)"
        case let .noValidVolumeHeader(device, problems):
            return "\(device) has no valid volume headers (" + problems.joined(separator: "; ") + ")"
        case let .badVolumeSet(what): return what
        case let .pfsNotFound(label, available):
            return "PFS \"\(label)\" not found; available: " + available.joined(separator: ", ")
        case .notFound: return "no such file or directory"
        case .notDirectory: return "not a directory"
        case .isDirectory: return "is a directory"
        case .notSymlink: return "not a symbolic link"
        case let .invalidArgument(what): return what
        case let .posix(code, what): return "\(what): \(String(cString: strerror(code)))"
        case let .locked(keyID, what):
            return "\(what) is encrypted with key \(hex(UInt64(keyID), 8)), which is not loaded (give its passphrase or key file)"
        case let .authenticationFailed(bref, reason): return "encrypted block fails authentication (\(reason)) in \(describe(bref))"
        }
    }

    /// The errno a POSIX caller sees for this error.
    public var errno: Int32 {
        switch self {
        case .notFound, .pfsNotFound: return ENOENT
        case .notDirectory: return ENOTDIR
        case .isDirectory: return EISDIR
        case .notSymlink, .invalidArgument: return EINVAL
        case let .posix(code, _): return code
        // A failed system call keeps its errno (a full host filesystem under an image is
        // ENOSPC to the writer, not EIO).
        case let .io(code, _): return code != 0 ? code : EIO
        case .locked: return ENOKEY
        case .shortRead, .checkFailed, .unknownMethod, .decompressionFailed, .corrupt,
             .noValidVolumeHeader, .badVolumeSet, .authenticationFailed:
            return EIO
        }
    }
}

/// One-line description of a blockref for logs: type, key, offset, methods.
public func describe(_ bref: Blockref) -> String {
    "blockref \(bref.type) key=0x\(hex(bref.key, 16))/\(bref.keybits) data_off=0x\(hex(bref.dataOffset, 16))"
        + " methods=0x\(hex(UInt64(bref.methods), 2)) (check \(bref.checkMethod), comp \(bref.compression))"
}

func hex(_ value: UInt64, _ width: Int) -> String {
    let s = String(value, radix: 16)
    return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
}
