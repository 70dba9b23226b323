// Little-endian field access for on-disk structures.
//
// Every decoder in this module reads fields by explicit byte offset (as given in
// hammer2_disk.h) through these helpers. They never assume alignment, and they trap on
// an out-of-range offset: callers check the buffer length once, up front, and throw a
// FormatError when it is short.

extension UnsafeRawBufferPointer {
    @inlinable public func u8(_ offset: Int) -> UInt8 {
        precondition(offset >= 0 && offset < count, "u8 read past end of buffer")
        return load(fromByteOffset: offset, as: UInt8.self)
    }

    @inlinable public func le16(_ offset: Int) -> UInt16 {
        precondition(offset >= 0 && offset + 2 <= count, "le16 read past end of buffer")
        return UInt16(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inlinable public func le32(_ offset: Int) -> UInt32 {
        precondition(offset >= 0 && offset + 4 <= count, "le32 read past end of buffer")
        return UInt32(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inlinable public func le64(_ offset: Int) -> UInt64 {
        precondition(offset >= 0 && offset + 8 <= count, "le64 read past end of buffer")
        return UInt64(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    /// A copy of `length` bytes starting at `offset`.
    @inlinable public func bytes(_ offset: Int, _ length: Int) -> [UInt8] {
        precondition(offset >= 0 && length >= 0 && offset + length <= count, "byte range past end of buffer")
        return Array(self[offset..<(offset + length)])
    }

    /// A view of `length` bytes starting at `offset` (no copy).
    @inlinable public func slice(_ offset: Int, _ length: Int) -> UnsafeRawBufferPointer {
        precondition(offset >= 0 && length >= 0 && offset + length <= count, "slice past end of buffer")
        return UnsafeRawBufferPointer(rebasing: self[offset..<(offset + length)])
    }
}

/// Errors found while decoding on-disk structures. They describe the media, never a
/// programming mistake, so they are thrown, not trapped.
public enum FormatError: Error, Equatable, CustomStringConvertible, Sendable {
    case shortBuffer(structure: String, needed: Int, got: Int)
    case badMagic(UInt64)
    case invalidField(structure: String, field: String, value: UInt64)

    public var description: String {
        switch self {
        case let .shortBuffer(structure, needed, got):
            return "\(structure): need \(needed) bytes, have \(got)"
        case let .badMagic(magic):
            return String(format: "bad volume header magic 0x%016llx", magic)
        case let .invalidField(structure, field, value):
            return String(format: "%@: invalid %@ 0x%llx", structure, field, value)
        }
    }
}

import Foundation
