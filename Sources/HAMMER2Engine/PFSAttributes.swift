// Reading an inode's extended attributes from a PFS as the media holds it (docs/format.md,
// "Extended attributes"), for the tools that work offline: fsck, recover, printinode -f.

import HAMMER2Format

extension PFS {
    /// The number of the attribute inode `inode` names, nil when it has none. The root's is
    /// found by number (its bytes 0xE8 hold an encrypted PFS's MAC).
    public func attributeHolderNumber(of inode: InodeData) -> UInt64? {
        let isRoot = inode.meta.inum == PFS.rootInodeNumber || inode.meta.isPFSRoot
        if isRoot { return AttributeTable.holderNumber(of: PFS.rootInodeNumber) }
        return inode.meta.attributeInode == 0 ? nil : inode.meta.attributeInode
    }

    /// `inode`'s attributes (empty when it has none).
    public func attributeTable(of inode: InodeData) throws -> AttributeTable {
        guard let number = attributeHolderNumber(of: inode) else { return AttributeTable() }
        let holder: InodeData
        do {
            holder = try self.inode(number)
        } catch EngineError.notFound {
            if number == AttributeTable.holderNumber(of: PFS.rootInodeNumber) { return AttributeTable() }
            throw EngineError.corrupt("inode \(inode.meta.inum) names attribute inode \(hex(number, 16)), which does not exist")
        }
        let bytes = try read(holder, offset: 0, count: Int(holder.meta.size))
        do {
            return try bytes.withUnsafeBytes { try AttributeTable(decoding: $0) }
        } catch {
            throw EngineError.corrupt("attributes of inode \(inode.meta.inum) (inode \(hex(number, 16))): \(error)")
        }
    }
}
