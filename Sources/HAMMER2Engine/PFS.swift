// One mounted PFS: its root inode, its inode index, directories, file data and symlinks.
//
// Layout (see docs/format.md): the PFS root inode's block tree holds both the inode index
// (INODE blockrefs keyed by inode number, bit 63 clear) and the root directory's entries
// (DIRENT blockrefs keyed by name hash, bit 63 set). Other directories hold only DIRENTs.
// A DIRENT names an inode number; the inode itself is always found in the index, which is
// how hard links work.

import Dispatch
import HAMMER2Encryption
import HAMMER2Format
import Synchronization

public struct DirectoryEntry: Hashable, Sendable {
    public var name: [UInt8]
    public var inum: UInt64
    public var type: ObjectType
    /// The entry's directory hash key (with bit 63 set).
    public var key: UInt64

    public init(name: [UInt8], inum: UInt64, type: ObjectType, key: UInt64) {
        self.name = name
        self.inum = inum
        self.type = type
        self.key = key
    }

    /// The readdir cookie that resumes after this entry.
    public var nextCookie: UInt64 { (key & HAMMER2.dirhashUserMask) + 1 }
}

/// An inode with the blockref that points to it (whose statistics give its space use).
public struct InodeRecord: Sendable {
    public var bref: Blockref
    public var data: InodeData
    public var meta: InodeMeta { data.meta }
}

public final class PFS: Sendable {
    public let name: String
    public let reader: BlockReader
    public let tree: BlockTree
    /// The PFS root inode's blockref in the super-root.
    public let rootBref: Blockref
    public let root: InodeData
    private let inodeCache = Mutex<(young: [UInt64: InodeRecord], old: [UInt64: InodeRecord])>(([:], [:]))
    /// Records per generation of the inum -> inode cache. It sits outside the block cache's
    /// budget (which holds the inode blocks themselves), so it stays small: 2 x 2048
    /// records of ~2 KiB bound it to ~8 MiB whatever the number of files walked.
    private static let inodeCacheGeneration = 2_048
    /// The blockrefs of the inodes the last prefetch found (one READDIRPLUS reply's, found
    /// together level by level): the loads that follow skip each one's walk from the root.
    /// This PFS's tree never changes, so they stay right; another prefetch replaces them.
    private let prefetchedInodeBrefs = Mutex<[UInt64: Blockref]>([:])

    /// The inode number of every PFS root directory.
    public static let rootInodeNumber: UInt64 = 1

    /// The keys of an encrypted PFS (nil in clear); `keyID` names them even when locked.
    public let keys: PFSKeys?
    public let keyID: UInt32?
    /// The older keys of the same encryption root held in the keyring (after a rekey):
    /// entries and blocks written before it are under them.
    public let olderKeys: [PFSKeys]

    public init(name: String, reader: BlockReader, rootBref: Blockref, root: InodeData) {
        self.name = name
        self.reader = reader
        self.tree = BlockTree(reader: reader)
        self.rootBref = rootBref
        self.root = root
        keyID = Keyring.keyID(ofRoot: root.meta)
        keys = keyID.flatMap { reader.keyring.keys(for: $0) }
        olderKeys = keys.map { current in reader.keyring.keys(forDomain: current.domain).filter { $0.keyID != current.keyID } } ?? []
        rootIsAuthentic = keys.map { $0.rootIsAuthentic(root) } ?? true
    }

    /// An encrypted PFS's root inode matches its MAC (checked once its key is loaded).
    public let rootIsAuthentic: Bool

    public var isEncrypted: Bool { keyID != nil }

    /// Throws `.locked` for an encrypted PFS whose key is not loaded.
    public func requireKey() throws {
        if let keyID, keys == nil { throw EngineError.locked(keyID: keyID, what: "PFS \(name)") }
        if !rootIsAuthentic {
            throw EngineError.authenticationFailed(bref: rootBref, reason: "the root inode of encrypted PFS \(name) does not match its MAC")
        }
    }

    /// The directory hash of `name` in directory `directory`: DragonFly's, or keyed (and
    /// bound to the directory) on an encrypted PFS.
    public func directoryKey(for name: [UInt8], in directory: UInt64) -> UInt64 {
        keys?.directoryKey(for: name, in: directory) ?? DirectoryHash.key(for: name)
    }

    // MARK: Inodes

    /// The inode numbered `inum` in this PFS.
    public func inode(_ inum: UInt64) throws -> InodeData { try record(inum).data }

    /// The inode numbered `inum` and its blockref. `remembering`: kept in this PFS's inode
    /// cache (a caller that keeps the inode itself, as the mounted PFS's nodes do, passes
    /// false: a second copy would only cost the insert).
    public func record(_ inum: UInt64, remembering: Bool = true) throws -> InodeRecord {
        if inum == Self.rootInodeNumber { return InodeRecord(bref: rootBref, data: root) }
        if let cached = inodeCache.withLock({ cache -> InodeRecord? in
            if let hit = cache.young[inum] { return hit }
            if let hit = cache.old[inum] { cache.young[inum] = hit; return hit }
            return nil
        }) {
            return cached
        }
        guard let bref = try prefetchedInodeBrefs.withLock({ $0[inum] }) ?? tree.find(in: root.blockset, key: inum, type: .inode) else {
            throw EngineError.notFound
        }
        let inode = try reader.inode(bref)
        guard inode.meta.inum == inum else {
            throw EngineError.corrupt("inode index entry \(inum) holds inode \(inode.meta.inum)")
        }
        let record = InodeRecord(bref: bref, data: inode)
        guard remembering else { return record }
        inodeCache.withLock { cache in
            cache.young[inum] = record
            if cache.young.count >= Self.inodeCacheGeneration { cache.old = cache.young; cache.young = [:] }
        }
        return record
    }

    /// Starts reading the inodes `inums` that are not cached yet (see BlockReader.prefetchInodes).
    public func prefetch(inodes inums: [UInt64]) {
        let missing = inodeCache.withLock { cache in inums.filter { cache.young[$0] == nil && cache.old[$0] == nil } }
        guard !missing.isEmpty else { return }
        guard let found = try? tree.findAll(in: root.blockset, keys: missing.sorted(), type: .inode) else { return }
        prefetchedInodeBrefs.withLock { $0 = found }
        reader.prefetchInodes(Array(found.values))
    }

    // MARK: Directories

    /// The name and target of a directory-tree leaf, or nil if it is not an entry.
    public func entry(for bref: Blockref, directory: UInt64) throws -> DirectoryEntry? {
        switch bref.type {
        case .dirent where bref.checkMethod == .xaes256gcm:
            let keys = try sealingKeys(bref)
            let lengthField = bref.direntNameLength
            let block = keys.nameIsInBlock(lengthField: lengthField) ? try reader.cachedPhysical(bref) : nil  // opened, verified
            // Inline names carry no key id: the current key first, then older generations.
            let opened = ([keys] + olderKeys).lazy.compactMap {
                $0.openDirentName(lengthField: lengthField, typeField: bref.direntType, area: bref.check.bytes,
                                  block: block, directory: directory)
            }.first
            guard let (name, type) = opened, name.count <= HAMMER2.inodeMaxName else {
                throw EngineError.authenticationFailed(bref: bref, reason: "encrypted name of directory \(directory)")
            }
            return DirectoryEntry(name: name, inum: bref.direntInodeNumber, type: type, key: bref.key)
        case .dirent:
            let name: [UInt8]
            do {
                name = try bref.direntName(nameBlock: bref.direntNameLength > 64 ? try reader.cachedPhysical(bref) : nil)
            } catch let error as FormatError {
                throw EngineError.corrupt("directory entry \(error) in \(describe(bref))")
            }
            return DirectoryEntry(name: name, inum: bref.direntInodeNumber, type: bref.direntType, key: bref.key)
        case .inode:
            // Entries that embed the inode (the super-root, and directories written by
            // HAMMER2 before DIRENTs existed) carry the name in the inode.
            let inode = try reader.inode(bref)
            return DirectoryEntry(name: inode.filename, inum: inode.meta.inum, type: inode.meta.type, key: bref.key)
        default:
            return nil
        }
    }

    /// This PFS's keys for a sealed dirent (inline names carry no key id of their own).
    private func sealingKeys(_ bref: Blockref) throws -> PFSKeys {
        guard let keys else { throw EngineError.locked(keyID: keyID ?? 0, what: "directory entry in PFS \(name)") }
        return keys
    }

    /// `name` in directory `dir` (nil when absent), and the keys taken in the hash bucket
    /// a new entry of that name would go to (the current key's): a create, link or rename
    /// looks the name up and then needs a free key there, and walks the bucket once.
    public func lookupWithBucket(in dir: InodeData, name: [UInt8]) throws -> (entry: DirectoryEntry?, bucket: UInt64, usedKeys: [UInt64]) {
        guard dir.meta.type == .directory else { throw EngineError.notDirectory }
        let hash = directoryKey(for: name, in: dir.meta.inum)
        guard !name.isEmpty, name.count <= HAMMER2.inodeMaxName else { return (nil, hash, []) }
        var (found, used) = try search(dir, for: name, inBucket: hash, collectingKeys: true)
        // After a rekey, entries not yet re-encrypted sit at their older key's hash.
        for older in olderKeys where found == nil {
            found = try search(dir, for: name, inBucket: older.directoryKey(for: name, in: dir.meta.inum), collectingKeys: false).entry
        }
        return (found, hash, used)
    }

    /// Finds `name` in directory `dir` by its directory hash.
    public func lookup(in dir: InodeData, name: [UInt8]) throws -> DirectoryEntry {
        guard let found = try lookupWithBucket(in: dir, name: name).entry else { throw EngineError.notFound }
        return found
    }

    /// The entry named `name` among the leaves of hash bucket `hash` (the collision window
    /// `hash ... hash | 0x7fff`), and with `collectingKeys` every key taken there (the
    /// walk then goes on past the entry).
    private func search(_ dir: InodeData, for name: [UInt8], inBucket hash: UInt64,
                        collectingKeys: Bool) throws -> (entry: DirectoryEntry?, keys: [UInt64]) {
        var found: DirectoryEntry?
        var keys: [UInt64] = []
        let directory = dir.meta.inum  // the closure then captures a number, not the inode (a copy per leaf)
        try tree.forEachLeaf(in: dir.blockset, from: hash, through: hash | HAMMER2.dirhashLowMask) { bref in
            if collectingKeys && (bref.type == .dirent || bref.type == .inode) { keys.append(bref.key) }
            if found == nil, let entry = try entry(for: bref, directory: directory), entry.name == name {
                found = entry
                return collectingKeys
            }
            return true
        }
        return (found, keys)
    }

    /// Visits the entries of `dir` in hash order starting at readdir cookie `cookie`
    /// (0 = from the start; otherwise a `nextCookie` returned earlier).
    public func readDirectory(_ dir: InodeData, from cookie: UInt64, _ visit: (DirectoryEntry) throws -> Bool) throws {
        guard dir.meta.type == .directory else { throw EngineError.notDirectory }
        if case .embedded = dir.content { return }
        let first = HAMMER2.dirhashVisible | (cookie & HAMMER2.dirhashUserMask)
        try tree.forEachLeaf(in: dir.blockset, from: first, through: UInt64.max) { bref in
            guard bref.key & HAMMER2.dirhashVisible != 0, let entry = try entry(for: bref, directory: dir.meta.inum) else { return true }
            return try visit(entry)
        }
    }

    // MARK: File data

    /// Reads up to `count` bytes at `offset` of a file or symlink; holes read as zeros.
    /// The logical content of the data block that starts at `blockOffset` through the block
    /// cache, as a read-modify-write wants it (a 4 KiB write into a clean 64 KiB block): a
    /// block modified this way again after a flush is then not read back. nil when the
    /// file's data is embedded in its inode or the block is a hole; the content may be
    /// shorter than the block (the rest reads as zeros).
    public func cachedBlock(_ inode: InodeData, at blockOffset: UInt64) throws -> [UInt8]? {
        guard case let .blockset(refs) = inode.content else { return nil }
        var found: Blockref?
        try tree.forEachLeaf(in: refs, from: blockOffset, through: blockOffset) { bref in
            found = bref
            return false
        }
        guard let bref = found else { return [] }
        guard bref.type == .data, bref.key == blockOffset, bref.keybits <= UInt8(HAMMER2.allocationMaxRadix) else { return nil }
        return try reader.logicalData(bref)
    }

    public func read(_ inode: InodeData, offset: UInt64, count: Int) throws -> [UInt8] {
        let size = inode.meta.size
        guard offset < size, count > 0 else { return [] }
        let total = Int(min(UInt64(count), size - offset))
        return try [UInt8](unsafeUninitializedCapacity: total) { buffer, initialized in
            initialized = try read(inode, offset: offset, into: UnsafeMutableRawBufferPointer(buffer))
        }
    }

    /// Reads up to `output.count` bytes at `offset` into `output` (a FUSE reply buffer);
    /// returns how many (fewer at the end of the file). On an error `output` holds nothing
    /// that may be used.
    public func read(_ inode: InodeData, offset: UInt64, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        let size = inode.meta.size
        guard offset < size, output.count > 0 else { return 0 }
        let end = offset + min(UInt64(output.count), size - offset)
        switch inode.content {
        case let .embedded(bytes):
            guard size <= UInt64(HAMMER2.embeddedBytes) else {
                throw EngineError.corrupt("inode \(inode.meta.inum) has embedded data but size \(size)")
            }
            bytes[Int(offset)..<Int(end)].withUnsafeBytes { output.copyMemory(from: $0) }
            return Int(end - offset)
        case let .blockset(refs):
            // Not zeroed up front (a 1 MiB memset per large read): the ranges blocks fill are
            // recorded, and only what none filled (holes, short blocks) is zeroed at the end.
            // On an error the buffer is dropped unread.
            let total = Int(end - offset)
            let out = UnsafeMutableRawBufferPointer(rebasing: output[0..<total])
            func withOut<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R { try body(out) }
            var filled: [Range<Int>] = []
            /// Copies a block's logical content into its place in `out`.
            func place(_ data: [UInt8], of bref: Blockref) {
                let logicalSize = UInt64(1) << UInt64(bref.keybits)
                let blockStart = bref.key
                // Saturating: a corrupt key near 2^64 must not overflow.
                let (sum, overflow) = blockStart.addingReportingOverflow(min(UInt64(data.count), logicalSize))
                let blockEnd = overflow ? UInt64.max : sum
                let copyStart = max(blockStart, offset)
                let copyEnd = min(blockEnd, end)
                guard copyStart < copyEnd else { return }
                filled.append(Int(copyStart - offset)..<Int(copyEnd - offset))
                withOut { dst in
                    data.withUnsafeBytes { src in
                        (dst.baseAddress! + Int(copyStart - offset)).copyMemory(
                            from: src.baseAddress! + Int(copyStart - blockStart), byteCount: Int(copyEnd - copyStart))
                    }
                }
            }
            // Encrypted blocks the request covers whole (sequential reads) are opened after
            // the walk, on every core: authentication and decryption are the cost there.
            var sealedWhole: [Blockref] = []
            try tree.forEachLeaf(in: refs, from: offset, through: end - 1) { bref in
                guard bref.type == .data else {
                    throw EngineError.corrupt("\(describe(bref)) in the data tree of inode \(inode.meta.inum)")
                }
                guard bref.keybits <= UInt8(HAMMER2.allocationMaxRadix) else {
                    throw EngineError.corrupt("data block larger than 64 KiB: \(describe(bref))")
                }
                let logicalSize = UInt64(1) << UInt64(bref.keybits)
                let blockStart = bref.key
                // Fast path: an uncompressed block wholly inside the request is read and
                // verified in place in the reply buffer.
                let physicalSize = UInt64(try reader.checkedPhysicalSize(bref))
                if bref.compression == .none || bref.compression == .autozero, physicalSize > 0,
                   bref.checkMethod != .xaes256gcm,
                   blockStart >= offset, physicalSize <= logicalSize,
                   end - blockStart >= physicalSize {
                    try withOut { dst in
                        let target = UnsafeMutableRawBufferPointer(rebasing: dst[Int(blockStart - offset)..<Int(blockStart - offset + physicalSize)])
                        do {
                            try reader.readVerified(bref, into: target)
                        } catch {
                            target.initializeMemory(as: UInt8.self, repeating: 0)  // never leave unverified bytes
                            throw error
                        }
                    }
                    filled.append(Int(blockStart - offset)..<Int(blockStart - offset + physicalSize))
                    return true
                }
                // An encrypted block wholly inside the request is opened without going
                // through the cache, which it would only churn; partial reads of one are
                // cached (a 4 KiB read must not decrypt 64 KiB each time).
                if bref.checkMethod == .xaes256gcm && bref.compression == .none
                    && blockStart >= offset && end - blockStart >= logicalSize {
                    sealedWhole.append(bref)
                    return true
                }
                place(try reader.logicalData(bref), of: bref)
                return true
            }
            // Each is decrypted straight into its place in `out` (a whole block lies inside
            // the request; its plaintext is its physical size, at most the logical size).
            var targets: [(bref: Blockref, start: Int, bytes: Int)] = []
            for bref in sealedWhole {
                let bytes = try reader.checkedPhysicalSize(bref)
                guard UInt64(bytes) <= UInt64(1) << UInt64(bref.keybits), bref.key - offset + UInt64(bytes) <= UInt64(out.count) else {
                    throw EngineError.corrupt("encrypted data block larger than its key range: \(describe(bref))")
                }
                targets.append((bref, Int(bref.key - offset), bytes))
                filled.append(Int(bref.key - offset)..<(Int(bref.key - offset) + bytes))
            }
            if !targets.isEmpty {
                try withOut { buffer in
                    let base = UInt(bitPattern: buffer.baseAddress!)
                    let targets = targets, reader = reader
                    @Sendable func open(_ i: Int) throws {
                        let target = targets[i]
                        let start = UnsafeMutableRawPointer(bitPattern: base + UInt(target.start))!
                        try reader.openSealedData(target.bref, into: UnsafeMutableRawBufferPointer(start: start, count: target.bytes))
                    }
                    if targets.count == 1 { return try open(0) }
                    let failures = ConcurrentResults<any Error>(count: targets.count)
                    DispatchQueue.concurrentPerform(iterations: targets.count) { i in
                        do { try open(i) } catch { failures[i] = error }
                    }
                    if let error = (0..<targets.count).lazy.compactMap({ failures[$0] }).first { throw error }
                }
            }
            // Zeros where no block wrote: holes, and past the end of short blocks.
            filled.sort { $0.lowerBound < $1.lowerBound }
            var zeroFrom = 0
            withOut { buffer in
                for range in filled {
                    if range.lowerBound > zeroFrom {
                        UnsafeMutableRawBufferPointer(rebasing: buffer[zeroFrom..<range.lowerBound]).initializeMemory(as: UInt8.self, repeating: 0)
                    }
                    zeroFrom = max(zeroFrom, range.upperBound)
                }
                if zeroFrom < total {
                    UnsafeMutableRawBufferPointer(rebasing: buffer[zeroFrom..<total]).initializeMemory(as: UInt8.self, repeating: 0)
                }
            }
            return total
        }
    }

    /// The target of a symbolic link.
    public func readLink(_ inode: InodeData) throws -> [UInt8] {
        guard inode.meta.type == .softlink else { throw EngineError.notSymlink }
        guard inode.meta.size <= 65_536 else {
            throw EngineError.corrupt("symlink inode \(inode.meta.inum) has size \(inode.meta.size)")
        }
        return try read(inode, offset: 0, count: Int(inode.meta.size))
    }
}
