// A HAMMER2 filesystem opened read-only: its volume set, block reader and super-root, from
// which every PFS (each a separate root, mountable by label) is reached.

import HAMMER2Format

/// A PFS as listed under the super-root.
public struct PFSEntry: Sendable {
    public var name: String
    public var bref: Blockref
    public var inode: InodeData

    public init(name: String, bref: Blockref, inode: InodeData) {
        self.name = name
        self.bref = bref
        self.inode = inode
    }
}

public final class Filesystem: Sendable {
    public let volumes: VolumeSet
    public let reader: BlockReader
    public let tree: BlockTree
    public let superRootBref: Blockref
    public let superRoot: InodeData

    public init(volumes: VolumeSet, cacheBytes: Int = 64 << 20) throws {
        self.volumes = volumes
        self.reader = BlockReader(volumes: volumes, cacheBytes: cacheBytes)
        self.tree = BlockTree(reader: reader)
        (superRootBref, superRoot) = try reader.superRoot()
        guard superRoot.meta.type == .directory else {
            throw EngineError.corrupt("super-root inode is a \(superRoot.meta.type), not a directory")
        }
    }

    /// Opens the filesystem on one device or several (a multi-volume set).
    public convenience init(paths: [String], cacheBytes: Int = 64 << 20) throws {
        try self.init(volumes: VolumeSet(paths: paths), cacheBytes: cacheBytes)
    }

    /// Every PFS under the super-root, in key (name hash) order.
    public func pfsEntries() throws -> [PFSEntry] {
        var result: [PFSEntry] = []
        try tree.forEachLeaf(in: superRoot.blockset, from: 0, through: UInt64.max) { bref in
            guard bref.type == .inode else { return true }
            let inode = try reader.inode(bref)
            result.append(PFSEntry(name: String(decoding: inode.filename, as: UTF8.self), bref: bref, inode: inode))
            return true
        }
        return result
    }

    /// Opens the PFS labelled `label`.
    public func openPFS(_ label: String) throws -> PFS {
        guard let (bref, inode) = try Self.findPFS(label, in: superRoot.blockset, reader: reader) else {
            throw EngineError.pfsNotFound(label: label, available: (try? pfsEntries().map(\.name)) ?? [])
        }
        return PFS(name: label, reader: reader, rootBref: bref, root: inode)
    }

    /// The root inode of PFS `label` among the super-root's children `blockset`, found by
    /// the directory hash of the label; nil if there is none.
    public static func findPFS(_ label: String, in blockset: [Blockref], reader: BlockReader) throws -> (Blockref, InodeData)? {
        let name = Array(label.utf8)
        let hash = DirectoryHash.key(for: name)
        var match: (Blockref, InodeData)?
        try BlockTree(reader: reader).forEachLeaf(in: blockset, from: hash, through: hash | HAMMER2.dirhashLowMask) { bref in
            guard bref.type == .inode else { return true }
            let inode = try reader.inode(bref)
            if inode.filename == name { match = (bref, inode); return false }
            return true
        }
        if let (_, inode) = match, inode.meta.type != .directory {
            throw EngineError.corrupt("PFS \(label) root is a \(inode.meta.type), not a directory")
        }
        return match
    }
}
