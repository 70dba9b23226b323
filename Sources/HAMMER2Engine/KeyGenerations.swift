// Reading an encryption root's older keys (after hammer2 rekey, docs/encryption.md,
// "Changing keys"): the key history in the PFS's hidden inode 2, sealed under the current
// key, read once the current key is unlocked; its keys join the keyring, so blocks and
// names written before the rekey stay readable.

import HAMMER2Encryption
import HAMMER2Format

extension PFS {
    /// The key history of this (unlocked, encrypted) PFS; nil when it was never rekeyed.
    public func keyHistory() throws -> KeyHistory? {
        guard keys != nil else { return nil }
        let inode: InodeData
        do { inode = try self.inode(KeyHistory.inodeNumber) } catch EngineError.notFound { return nil }
        let bytes = try read(inode, offset: 0, count: Int(min(inode.meta.size, 1 << 20)))
        do {
            return try KeyHistory(decoding: bytes)
        } catch {
            throw EngineError.corrupt("PFS \(name): the key history (inode \(KeyHistory.inodeNumber)): \(error)")
        }
    }
}

extension Keyring {
    /// Adds the older keys of `pfs`'s encryption root from its key history; returns how many.
    @discardableResult
    public func addHistory(of pfs: PFS) throws -> Int {
        guard let current = pfs.keys, let history = try pfs.keyHistory() else { return 0 }
        let older = history.keys(domain: current.domain, scheme: current.scheme)
        for keys in older where self.keys(for: keys.keyID) == nil { add(keys) }
        return older.count
    }
}
