// Directory entries in memory over the last flushed directory tree: lookup, listing in
// hash order, and DragonFly's choice of a new entry's key (hammer2_xop_scanlhc).

import Glibc
import HAMMER2Engine
import HAMMER2Format

extension MountedPFS {
    /// The entry `name` in `dir`, from the changes since the last flush or from disk.
    func findEntry(_ dir: Node, _ name: [UInt8]) throws -> DirectoryEntry? {
        guard dir.isDirectory else { throw EngineError.notDirectory }
        guard !name.isEmpty, name.count < HAMMER2.inodeMaxName else { return nil }
        if let key = dir.addedNames[name], let entry = dir.entryChanges[key] ?? nil { return entry }
        guard dir.flushedBref != nil else { return nil }
        let found: DirectoryEntry?
        if let cached = dir.diskNames.lookup(name) {
            found = cached
        } else {
            let result = try disk.lookupWithBucket(in: dir.flushedInode, name: name)
            found = result.entry
            dir.diskNames.remember(name, found)
            dir.diskNames.rememberBucket(result.bucket, result.usedKeys)
        }
        guard let found, dir.entryChanges[found.key] == nil else { return nil }  // or removed or replaced since
        return found
    }

    /// Visits the entries of `dir` in key order from readdir cookie `cookie`.
    func listEntries(_ dir: Node, from cookie: UInt64, _ visit: (DirectoryEntry) throws -> Bool) throws {
        guard dir.isDirectory else { throw EngineError.notDirectory }
        let first = HAMMER2.dirhashVisible | (cookie & HAMMER2.dirhashUserMask)
        // Read once: a listing visits thousands of entries, each checked against the changes.
        let changes = dir.entryChanges
        let added = changes.compactMap { $0.value }.filter { $0.key >= first }.sorted { $0.key < $1.key }
        var next = 0
        var stopped = false
        if dir.flushedBref != nil {
            try disk.readDirectory(dir.flushedInode, from: cookie) { entry in
                while next < added.count && added[next].key < entry.key {
                    guard try visit(added[next]) else { stopped = true; return false }
                    next += 1
                }
                if !changes.isEmpty && changes[entry.key] != nil { return true }
                guard try visit(entry) else { stopped = true; return false }
                return true
            }
        }
        guard !stopped else { return }
        while next < added.count {
            guard try visit(added[next]) else { return }
            next += 1
        }
    }

    func isEmptyDirectory(_ dir: Node) throws -> Bool {
        var empty = true
        try listEntries(dir, from: 0) { _ in empty = false; return false }
        return empty
    }

    /// The key a new entry `name` gets: scanning the keys in use from the name's hash
    /// upward, the first gap, or the key after a contiguous run (so a lone name gets
    /// hash + 1), as hammer2_xop_scanlhc and hammer2_inode_create_normal choose it.
    func newEntryKey(_ dir: Node, _ name: [UInt8]) throws -> UInt64 {
        let hash = disk.directoryKey(for: name, in: dir.inum)
        let last = hash | HAMMER2.dirhashLowMask
        var used = Set<UInt64>()
        if dir.flushedBref != nil, let keys = dir.diskNames.bucket(hash) {
            used = Set(keys)  // walked by the lookup of this name just before
        } else if dir.flushedBref != nil, case let .blockset(refs) = dir.flushedContent {
            try BlockTree(reader: reader).forEachLeaf(in: refs, from: hash, through: last) { bref in
                if bref.type == .dirent || bref.type == .inode { used.insert(bref.key) }
                return true
            }
        }
        for key in dir.changedKeysByBucket[hash >> 15] ?? [] where key >= hash && key <= last {
            if dir.entryChanges[key]! == nil { used.remove(key) } else { used.insert(key) }
        }
        var key = hash
        var foundGap = false
        for existing in used.sorted() where existing >= hash {
            if existing != key { foundGap = true; break }
            key += 1
        }
        if !foundGap { key += 1 }
        guard key <= last, !used.contains(key) else {
            throw EngineError.posix(ENOSPC, "directory hash collision space for this name is exhausted")
        }
        return key
    }

    func addEntry(_ dir: Node, name: [UInt8], inum: UInt64, type: ObjectType) throws {
        let key = try newEntryKey(dir, name)
        dir.setEntryChange(key, DirectoryEntry(name: name, inum: inum, type: type, key: key))
    }

    func removeEntry(_ dir: Node, _ entry: DirectoryEntry) {
        dir.setEntryChange(entry.key, nil)
    }
}
