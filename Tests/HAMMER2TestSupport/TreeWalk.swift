// Walks a PFS through the engine the way a reader of the mount would, producing records
// comparable with a fixture manifest entry.

import Crypto
import Foundation
import HAMMER2Engine
import HAMMER2Format

public struct WalkedEntry: Sendable {
    public var path: [UInt8]
    public var inode: InodeData
    public var direntType: ObjectType?
    public var sha256: String?
    public var target: [UInt8]?
}

public func sha256Hex<D: DataProtocol>(_ data: D) -> String {
    SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
}

public enum TreeWalk {
    /// Every path reachable from the PFS root, depth first; file contents hashed.
    public static func walk(_ pfs: PFS) throws -> [WalkedEntry] {
        var out: [WalkedEntry] = [WalkedEntry(path: Array("/".utf8), inode: pfs.root, direntType: nil)]
        try walkDirectory(pfs, pfs.root, prefix: [], into: &out)
        return out
    }

    static func walkDirectory(_ pfs: PFS, _ dir: InodeData, prefix: [UInt8], into out: inout [WalkedEntry]) throws {
        var entries: [DirectoryEntry] = []
        try pfs.readDirectory(dir, from: 0) { entries.append($0); return true }
        for entry in entries {
            let path = prefix + Array("/".utf8) + entry.name
            let inode = try pfs.inode(entry.inum)
            var record = WalkedEntry(path: path, inode: inode, direntType: entry.type)
            switch inode.meta.type {
            case .regularFile:
                var hasher = SHA256()
                var offset: UInt64 = 0
                while offset < inode.meta.size {
                    let chunk = try pfs.read(inode, offset: offset, count: 1 << 20)
                    if chunk.isEmpty { break }
                    hasher.update(data: chunk)
                    offset += UInt64(chunk.count)
                }
                record.sha256 = hasher.finalize().map { String(format: "%02x", $0) }.joined()
            case .softlink:
                record.target = try pfs.readLink(inode)
            default:
                break
            }
            out.append(record)
            if inode.meta.type == .directory {
                try walkDirectory(pfs, inode, prefix: path, into: &out)
            }
        }
    }

    /// Every inode number in the PFS's inode index.
    public static func indexedInodeNumbers(_ pfs: PFS) throws -> [UInt64] {
        var inums: [UInt64] = []
        try pfs.tree.forEachLeaf(in: pfs.root.blockset, from: 0, through: HAMMER2.dirhashVisible - 1) { bref in
            if bref.type == .inode { inums.append(bref.key) }
            return true
        }
        return inums
    }
}

/// The manifest's name for an inode type.
public func manifestTypeName(_ type: ObjectType) -> String {
    switch type {
    case .directory: return "dir"
    case .regularFile: return "file"
    case .softlink: return "symlink"
    case .fifo: return "fifo"
    case .socket: return "socket"
    case .characterDevice: return "cdev"
    case .blockDevice: return "bdev"
    default: return "unknown"
    }
}
