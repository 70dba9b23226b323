// What someone holding an image file can do with the format's public facts (issue 18's
// attacker): rewrite a PFS root inode, or point the super-root at another (older) root
// inode, and then fix every check code and CRC on the way up to the volume header, so that
// only the keyed checks (the root MAC, rollback detection) can notice.

import Foundation
import Glibc
import HAMMER2Engine
import HAMMER2Format

public struct ImageSurgeon {
    public let path: String

    public init(_ path: String) { self.path = path }

    /// The header copy a mount uses, and the super-root inode it points at.
    func current() throws -> (slot: Int, header: VolumeHeader, superBref: Blockref, superRoot: InodeData) {
        let volumes = try VolumeSet(paths: [path])
        let header = volumes.header
        let superBref = try XCTUnwrapLike(header.superRootBlockset.first { $0.type == .inode }, "no super-root")
        return (volumes.volumes[0].headerIndex, header, superBref, try InodeData(decoding: read(superBref.mediaOffset, 1024)))
    }

    /// The blockref of PFS `label`'s root in the super-root's blockset, and its inode.
    public func pfsRoot(_ label: String) throws -> (bref: Blockref, inode: InodeData) {
        let (_, _, _, superRoot) = try current()
        for bref in superRoot.blockset where bref.type == .inode {
            let inode = try InodeData(decoding: read(bref.mediaOffset, 1024))
            if inode.filename == Array(label.utf8) { return (bref, inode) }
        }
        throw SurgeonError.notFound(label)
    }

    /// Rewrites PFS `label`'s root inode in place through `change`, then fixes the check
    /// codes above it.
    public func rewritePFSRoot(_ label: String, _ change: (inout InodeData) -> Void) throws {
        let (bref, inode) = try pfsRoot(label)
        var changed = inode
        change(&changed)
        let bytes = changed.encoded()
        try write(bytes, at: bref.mediaOffset)
        var updated = bref
        updated.setCheck(over: bytes)
        try replaceSuperRootEntry(key: bref.key, with: updated)
    }

    /// Points the super-root's entry of PFS `label` at `older` (a root blockref saved
    /// before), whose inode must still be on the media: a rollback of that one PFS.
    public func pointPFSRoot(_ label: String, at older: Blockref) throws {
        let (bref, _) = try pfsRoot(label)
        var replaced = older
        replaced.key = bref.key
        try replaceSuperRootEntry(key: bref.key, with: replaced)
    }

    /// Writes raw bytes (a hex editor).
    public func write(_ bytes: [UInt8], at offset: UInt64) throws {
        let fd = open(path, O_RDWR)
        guard fd >= 0 else { throw SurgeonError.io(path) }
        defer { close(fd) }
        guard bytes.withUnsafeBytes({ pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }) == bytes.count else {
            throw SurgeonError.io(path)
        }
    }

    public func read(_ offset: UInt64, _ count: Int) throws -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw SurgeonError.io(path) }
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: count)
        guard out.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, count, off_t(offset)) }) == count else {
            throw SurgeonError.io(path)
        }
        return out
    }

    /// Replaces the super-root blockset entry with `key` and restamps the super-root
    /// inode's check code in the header copy in use, and that header's CRCs.
    func replaceSuperRootEntry(key: UInt64, with bref: Blockref) throws {
        let (slot, header, superBref, superRoot) = try current()
        var refs = superRoot.blockset
        guard let index = refs.firstIndex(where: { $0.key == key && $0.type == .inode }) else { throw SurgeonError.notFound("key \(key)") }
        refs[index] = bref
        var newSuper = superRoot
        newSuper.content = .blockset(refs)
        let superBytes = newSuper.encoded()
        try write(superBytes, at: superBref.mediaOffset)
        var newSuperBref = superBref
        newSuperBref.setCheck(over: superBytes)
        var newHeader = header
        if let at = newHeader.superRootBlockset.firstIndex(where: { $0.type == .inode }) {
            newHeader.superRootBlockset[at] = newSuperBref
        }
        let offset = try VolumeSet(paths: [path]).volumes[0].copies[slot].deviceOffset
        try write(newHeader.encoded(), at: offset)
    }
}

public enum SurgeonError: Error {
    case notFound(String)
    case io(String)
}

func XCTUnwrapLike<T>(_ value: T?, _ what: String) throws -> T {
    guard let value else { throw SurgeonError.notFound(what) }
    return value
}
