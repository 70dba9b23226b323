// The POSIX face of one PFS: what the FUSE adapter calls. Every method takes the
// filesystem lock; errors carry the errno a POSIX caller expects.

import Glibc
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format

/// An inode's attributes as stat reports them.
public struct NodeStatus: Sendable {
    public var meta: InodeMeta
    /// Bytes the inode occupies on media (compressed), for st_blocks.
    public var allocatedBytes: UInt64
}

/// An inode's metadata with its subtree statistics (hammer2 stat, printinode).
public struct InodeInfo: Sendable {
    public var meta: InodeMeta
    /// embed.stats of the inode's blockref as last flushed.
    public var dataCount: UInt64
    public var inodeCount: UInt64
}

/// Who asks: new inodes take these ids.
public struct Caller: Sendable {
    public var uid: UInt32
    public var gid: UInt32
    /// The caller's umask when the filesystem applies it (POSIX ACLs: a parent's default
    /// ACL replaces it); nil when the mode given has it applied already.
    public var umask: UInt32?

    public init(uid: UInt32, gid: UInt32, umask: UInt32? = nil) {
        self.uid = uid
        self.gid = gid
        self.umask = umask
    }
}

/// Attribute changes (setattr); nil leaves a field alone.
public struct AttributeChanges: Sendable {
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var size: UInt64?
    public var atime: UInt64?
    public var mtime: UInt64?
    /// The kernel's ctime (with the writeback cache it owns a file's mtime and ctime); nil
    /// means now.
    public var ctime: UInt64?

    public init(mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil, size: UInt64? = nil,
                atime: UInt64? = nil, mtime: UInt64? = nil, ctime: UInt64? = nil) {
        self.mode = mode; self.uid = uid; self.gid = gid; self.size = size; self.atime = atime; self.mtime = mtime
        self.ctime = ctime
    }
}

public final class PFSHandle: @unchecked Sendable {
    public let fs: MutableFilesystem
    let pfs: MountedPFS

    init(fs: MutableFilesystem, pfs: MountedPFS) {
        self.fs = fs
        self.pfs = pfs
    }

    /// Whether the kernel keeps regular files' mtime and ctime (FUSE's writeback cache): it
    /// then sends them with a setattr after writing, and a write reaching the daemon later
    /// (at writeback) must not replace them with the daemon's clock, or a file's mtime
    /// would move after a remount.
    public var kernelOwnsFileTimes = false
    /// A read-only mount of a PFS of a volume open read-write (a snapshot beside the
    /// read-write mounts of one daemon): every change is EROFS.
    public var readOnly = false
    public var isReadOnly: Bool { fs.readOnly || readOnly }
    /// Called (with the lock held; it must not block) when a file's size on media, as
    /// stat's st_blocks reports it, changes without a request that returns attributes:
    /// the first data written to it since a flush. The FUSE server tells the kernel to
    /// drop the attributes it caches, which a writeback-cache write never refreshes.
    public var allocationChanged: (@Sendable (UInt64) -> Void)?

    public var label: String { pfs.label }
    /// Whether the PFS is encrypted (its names and contents must not reach logs).
    public var isEncrypted: Bool { pfs.keys != nil }
    /// An encrypted PFS's keys and its root inode's metadata as last flushed (authentic:
    /// the mount checked its MAC), for the host's rollback check.
    public var encryptedRoot: (keys: PFSKeys, meta: InodeMeta)? {
        locked { pfs.keys.map { ($0, pfs.disk.root.meta) } }
    }
    public static let rootInodeNumber = PFS.rootInodeNumber

    func status(_ node: Node) -> NodeStatus {
        var bytes = node.flushedBref?.statsDataCount ?? 0
        if node.type == .directory {
            bytes = UInt64(HAMMER2.inodeBytes)
        } else if !node.dirtyBlocks.isEmpty {
            bytes += UInt64(node.dirtyBytes)
        }
        return NodeStatus(meta: node.meta, allocatedBytes: bytes)
    }

    /// Runs an operation with the filesystem lock held. Clean nodes are dropped first, when
    /// many are held: at that point no operation holds a node (one dropped in the middle of
    /// an operation would take the operation's changes with it).
    func locked<T>(_ body: () throws -> T) rethrows -> T {
        try fs.withLock {
            pfs.dropCleanNodesIfMany()
            return try body()
        }
    }

    /// `locked` for operations that take space: when the volume is full but a bulkfree
    /// pass may free space (copy-on-write left old blocks behind), the operation waits for
    /// the reclaimer, without the lock, and is tried again; ENOSPC only when passes find
    /// nothing more to free. The operations check for space before changing anything.
    func lockedWaitingForSpace<T>(_ body: () throws -> T) throws -> T {
        var passes = 0
        while true {
            // Taken before the attempt: a pass that frees space between the failure and
            // the wait below (for another writer) counts as one this writer waited for.
            let mark = fs.reclaimedBytesMark
            do {
                return try locked(body)
            } catch let error as EngineError where error.errno == ENOSPC {
                // A few passes at most, and only while they find something: a volume full
                // of live data says ENOSPC after one.
                passes += 1
                guard passes <= 3, let freed = fs.waitForReclaim(since: mark), freed > 0 else { throw error }
            }
        }
    }

    func writable() throws {
        if isReadOnly { throw EngineError.posix(EROFS, "filesystem is mounted read-only") }
    }

    static func checkName(_ name: [UInt8]) throws {
        guard !name.isEmpty, !name.contains(0), !name.contains(UInt8(ascii: "/")) else {
            throw EngineError.invalidArgument("bad file name")
        }
        try checkNameLength(name)
    }

    /// POSIX: every operation given a name longer than the filesystem allows says
    /// ENAMETOOLONG, lookups and removals too (not ENOENT).
    static func checkNameLength(_ name: [UInt8]) throws {
        guard name.count < HAMMER2.inodeMaxName else { throw EngineError.posix(ENAMETOOLONG, "name of \(name.count) bytes") }
    }

    // MARK: Reading the namespace

    public func attributes(_ inum: UInt64) throws -> NodeStatus {
        try locked { status(try pfs.node(inum)) }
    }

    public func lookup(_ parent: UInt64, _ name: [UInt8]) throws -> NodeStatus {
        try Self.checkNameLength(name)
        return try locked {
            let dir = try pfs.node(parent)
            guard let entry = try pfs.findEntry(dir, name) else { throw EngineError.notFound }
            return status(try pfs.node(entry.inum))
        }
    }

    /// Entries of a READDIRPLUS reply that may need their inode loaded: the kernel asks
    /// for attributes with the first reply of a listing only (unless stats follow), and
    /// each inode not in memory is a read of its 64 KiB media buffer when cold; a reply may
    /// hold fewer entries than fit (the next request continues from there), so a cold `ls`
    /// or `find` pays for these and not for the 500 that would fit. Past them the reply
    /// goes on only with inodes in memory. Their inodes are read ahead together.
    static let readDirectoryPlusLoads = 128
    /// The same for a listing's first reply, which the kernel asks as READDIRPLUS whether
    /// or not the caller wants attributes: a cold `ls` of 100,000 names spent a fifth of
    /// its time loading 128 scattered inodes (and the inode-tree blocks above them) that
    /// it never used. A walk that stats every entry asks READDIRPLUS again from the second
    /// reply on and gets 128 there; a directory of up to 32 entries still comes whole.
    static let firstReplyLoads = 32

    /// Lists `dir` from readdir cookie `cookie`; `withAttributes` also loads each inode.
    /// `boundedLoads` (a READDIRPLUS reply) stops after `readDirectoryPlusLoads` inodes that
    /// had to be loaded (`firstReplyLoads` from cookie 0); the caller continues from the
    /// last cookie.
    public func readDirectory(_ inum: UInt64, from cookie: UInt64, withAttributes: Bool, boundedLoads: Bool = false,
                              _ visit: (DirectoryEntry, NodeStatus?) throws -> Bool) throws {
        guard withAttributes else { return try listDirectory(inum, from: cookie) { try visit($0, nil) } }
        try locked {
            let dir = try pfs.node(inum)
            let loads = cookie == 0 ? Self.firstReplyLoads : Self.readDirectoryPlusLoads
            if boundedLoads {
                // The inodes this reply will load, read ahead together (a cold directory).
                var upcoming: [UInt64] = []
                var scanned = 0
                try pfs.listEntries(dir, from: cookie) { entry in
                    if pfs.nodes[entry.inum] == nil { upcoming.append(entry.inum) }
                    scanned += 1
                    return scanned < loads
                }
                pfs.disk.prefetch(inodes: upcoming)
            }
            var visited = 0
            try pfs.listEntries(dir, from: cookie) { entry in
                // Past the first entries, only those in memory (a listing read again).
                if boundedLoads && visited >= loads && pfs.nodes[entry.inum] == nil {
                    return false
                }
                visited += 1
                return try visit(entry, status(try pfs.node(entry.inum)))
            }
        }
    }

    /// Lists `dir`'s names from readdir cookie `cookie` (a READDIR reply): no attribute
    /// record passes through the loop (an empty optional one was a 208-byte copy per entry).
    public func listDirectory(_ inum: UInt64, from cookie: UInt64, _ visit: (DirectoryEntry) throws -> Bool) throws {
        try locked { try pfs.listEntries(try pfs.node(inum), from: cookie, visit) }
    }

    public func parent(of inum: UInt64) throws -> UInt64 {
        try locked {
            let node = try pfs.node(inum)
            return node.meta.iparent == 0 ? inum : node.meta.iparent
        }
    }

    public func readLink(_ inum: UInt64) throws -> [UInt8] {
        let size = try locked { () -> UInt64 in
            let node = try pfs.node(inum)
            guard node.type == .softlink else { throw EngineError.notSymlink }
            return node.meta.size
        }
        return try read(inum, offset: 0, count: Int(size))
    }

    public func inodeInfo(_ inum: UInt64) throws -> InodeInfo {
        try locked {
            let node = try pfs.node(inum)
            var meta = node.meta
            // On an encrypted PFS every block is sealed and its AEAD tag is the check code,
            // whatever check_algo the inode inherited: report what is applied.
            if pfs.keys != nil { meta.checkAlgo = CheckMethod.xaes256gcm.rawValue }
            return InodeInfo(meta: meta, dataCount: node.flushedBref?.statsDataCount ?? 0,
                             inodeCount: node.flushedBref?.statsInodeCount ?? 0)
        }
    }

    /// hammer2 setcomp / setcheck: the methods new blocks of this inode (and, for a
    /// directory, inodes created in it) are written with. Existing blocks keep theirs.
    public func setMethods(_ inum: UInt64, compAlgo: UInt8?, checkAlgo: UInt8?) throws {
        try writable()
        if let compAlgo {
            let algorithm = CompressionMethod(rawValue: compAlgo & 0x0F), level = Int(compAlgo >> 4)
            guard [.none, .autozero, .lz4, .zlib].contains(algorithm),
                  level == 0 || (algorithm == .zlib && (6...9).contains(level)) else {
                throw EngineError.invalidArgument("unsupported comp_algo 0x\(String(compAlgo, radix: 16))")
            }
        }
        if let checkAlgo, checkAlgo > CheckMethod.sha192.rawValue {
            throw EngineError.invalidArgument("unsupported check_algo 0x\(String(checkAlgo, radix: 16))")
        }
        if checkAlgo != nil, pfs.keys != nil {
            // The tag is the check code; "none" or "disabled" would drop authentication.
            throw EngineError.invalidArgument("PFS \(pfs.label) is encrypted: its check code is the authentication tag (setcheck does not apply)")
        }
        try locked {
            let node = try pfs.node(inum)
            if let compAlgo { node.meta.compAlgo = compAlgo }
            if let checkAlgo { node.meta.checkAlgo = checkAlgo }
            node.dirty = true
        }
    }

    /// hammer2 setcopies: copies of the data written from now on to `inum` (and, for a
    /// directory, inherited by what is created in it), 1...4 (3 in an encrypted PFS, whose
    /// check area holds the nonce and tag). Metadata gets one more (docs/copies.md). The
    /// first use of copies raises the volume to version 5, which DragonFly refuses.
    public func setCopies(_ inum: UInt64, _ copies: Int) throws {
        try writable()
        let limit = Blockref.copyCapacity(pfs.keys != nil ? .xaes256gcm : .sha192)
        guard (1...limit).contains(copies) else {
            throw EngineError.invalidArgument("copies must be 1 to \(limit)" + (pfs.keys != nil ? " in an encrypted PFS" : ""))
        }
        try locked {
            let node = try pfs.node(inum)
            node.meta.ncopies = UInt8(copies)
            node.dirty = true
            fs.raiseVolumeCopies(to: copies)
        }
    }

    /// The inode a path inside this PFS names ("/" or "" is the root), following no links.
    public func resolve(_ path: String) throws -> UInt64 {
        var inum = Self.rootInodeNumber
        for part in path.split(separator: "/") where part != "." {
            inum = try lookup(inum, Array(part.utf8)).meta.inum
        }
        return inum
    }

    // MARK: Repairs (hammer2 destroy, destroy-inum)

    /// hammer2 destroy: removes the directory entry `name` from `parent` without reading
    /// the inode it names (which may be damaged). The inode stays in the index, an orphan
    /// that `destroy-inum` can remove.
    public func destroyEntry(in parent: UInt64, name: [UInt8]) throws {
        try writable()
        try Self.checkNameLength(name)
        try locked {
            let dir = try pfs.node(parent)
            guard let entry = try pfs.findEntry(dir, name) else { throw EngineError.notFound }
            pfs.removeEntry(dir, entry)
            dir.meta.mtime = currentTimeMicroseconds()
            dir.meta.ctime = dir.meta.mtime
            dir.dirty = true
        }
    }

    /// hammer2 destroy-inum: removes inode `inum` from the PFS's inode index without
    /// reading it; directory entries naming it are left (and then lead nowhere).
    public func destroyInode(_ inum: UInt64) throws {
        try writable()
        guard inum != Self.rootInodeNumber else { throw EngineError.invalidArgument("the PFS root cannot be destroyed") }
        try locked {
            guard try BlockTree(reader: fs.reader).find(in: pfs.root.flushedContent.blockset, key: inum, type: .inode) != nil
                    || pfs.nodes[inum]?.flushedBref == nil && pfs.nodes[inum] != nil else {
                throw EngineError.notFound
            }
            pfs.forget(inum)
            pfs.destroyedInodes.insert(inum)
            pfs.root.dirty = true
        }
    }

    // MARK: Creating and removing names

    /// Creates a file, directory, symlink, fifo, socket or device node named `name` in
    /// `parent`; `target` is a symlink's target, `device` a device's (major, minor).
    public func create(in parent: UInt64, name: [UInt8], type: ObjectType, mode: UInt32, caller: Caller,
                       target: [UInt8]? = nil, device: (UInt32, UInt32) = (0, 0)) throws -> NodeStatus {
        try writable()
        try Self.checkName(name)
        return try lockedWaitingForSpace {
            let dir = try pfs.node(parent)
            guard dir.isDirectory else { throw EngineError.notDirectory }
            guard dir.meta.nlinks > 0 else { throw EngineError.notFound }
            if try pfs.findEntry(dir, name) != nil { throw EngineError.posix(EEXIST, "file exists") }
            try fs.ensureSpace(for: UInt64(HAMMER2.inodeBytes))
            let node = newNode(in: dir, type: type, mode: mode, caller: caller, device: device)
            try pfs.applyCreationACL(from: dir, to: node, umask: caller.umask)
            if let target {
                try target.withUnsafeBytes { try pfs.writeData(node, at: 0, $0) }
            }
            try pfs.addEntry(dir, name: name, inum: node.inum, type: type)
            dir.meta.mtime = node.meta.ctime
            dir.meta.ctime = node.meta.ctime
            dir.dirty = true
            return status(node)
        }
    }

    /// open(O_TMPFILE): an unnamed regular file in directory `parent`, open once, that
    /// linkat(2) can give a name. Until then it has no links and is never flushed (its data
    /// lives in memory, as an unlinked open file's does); closed unnamed, it is gone.
    public func createTemporary(in parent: UInt64, mode: UInt32, caller: Caller) throws -> NodeStatus {
        try writable()
        return try lockedWaitingForSpace {
            let dir = try pfs.node(parent)
            guard dir.isDirectory else { throw EngineError.notDirectory }
            guard dir.meta.nlinks > 0 else { throw EngineError.notFound }
            try fs.ensureSpace(for: UInt64(HAMMER2.inodeBytes))
            let node = newNode(in: dir, type: .regularFile, mode: mode, caller: caller)
            try pfs.applyCreationACL(from: dir, to: node, umask: caller.umask)
            node.meta.nlinks = 0
            node.linkable = true
            node.openCount += 1
            return status(node)
        }
    }

    /// A new inode created in `dir` (inheriting its methods and copies, and its group under
    /// a setgid directory), in memory and dirty; the caller gives it a name (or none: an
    /// O_TMPFILE file). hammer2_inode_create_normal.
    func newNode(in dir: Node, type: ObjectType, mode: UInt32, caller: Caller, device: (UInt32, UInt32) = (0, 0)) -> Node {
        let now = currentTimeMicroseconds()
        let inum = pfs.allocateInodeNumber()
        var gid = caller.gid
        var mode = mode & 0o7777
        if dir.meta.mode & UInt32(S_ISGID) != 0 {
            gid = dir.meta.gid.unixID  // BSD semantics under a setgid directory
            if type == .directory { mode |= UInt32(S_ISGID) }
        }
        var meta = InodeMeta.fresh(type: type, inum: inum, mode: mode, uid: caller.uid, gid: gid, now: now)
        meta.iparent = dir.inum
        meta.atime = 0  // hammer2_inode_create_normal leaves atime and btime zero
        meta.btime = 0
        if type == .regularFile || type == .softlink { meta.opFlags = InodeMeta.opFlagDirectData }
        meta.compAlgo = dir.meta.compAlgo
        meta.checkAlgo = dir.meta.checkAlgo
        meta.ncopies = dir.meta.ncopies
        meta.nameKey = inum
        meta.rmajor = device.0
        meta.rminor = device.1
        let filename = inodeIndexName(inum)
        meta.nameLength = UInt16(filename.count)
        let directData = type == .regularFile || type == .softlink
        let node = Node(inum: inum, meta: meta, filename: filename,
                        content: directData ? .embedded([UInt8](repeating: 0, count: HAMMER2.embeddedBytes)) : .blockset([]),
                        bref: nil, owner: pfs)
        node.dirty = true
        pfs.nodes[inum] = node
        return node
    }

    public func unlink(in parent: UInt64, name: [UInt8]) throws {
        try writable()
        try Self.checkNameLength(name)
        try locked {
            let dir = try pfs.node(parent)
            guard let entry = try pfs.findEntry(dir, name) else { throw EngineError.notFound }
            let node = try pfs.node(entry.inum)
            guard !node.isDirectory else { throw EngineError.isDirectory }
            pfs.removeName(entry, from: dir, target: node)
        }
    }

    public func removeDirectory(in parent: UInt64, name: [UInt8]) throws {
        try writable()
        if name == Array(".".utf8) { throw EngineError.invalidArgument("cannot remove \".\"") }
        if name == Array("..".utf8) { throw EngineError.posix(ENOTEMPTY, "cannot remove \"..\"") }
        try Self.checkNameLength(name)
        try locked {
            let dir = try pfs.node(parent)
            guard let entry = try pfs.findEntry(dir, name) else { throw EngineError.notFound }
            let node = try pfs.node(entry.inum)
            guard node.isDirectory else { throw EngineError.notDirectory }
            guard try pfs.isEmptyDirectory(node) else { throw EngineError.posix(ENOTEMPTY, "directory not empty") }
            pfs.removeName(entry, from: dir, target: node)
        }
    }

    /// A new name for an existing non-directory inode (HAMMER2 hard links are directory
    /// entries naming the same inode number).
    public func link(_ inum: UInt64, into parent: UInt64, name: [UInt8]) throws -> NodeStatus {
        try writable()
        try Self.checkName(name)
        return try lockedWaitingForSpace {
            let node = try pfs.node(inum)
            guard !node.isDirectory else { throw EngineError.posix(EPERM, "hard links to directories are not allowed") }
            guard node.meta.nlinks > 0 || node.linkable else { throw EngineError.notFound }
            let dir = try pfs.node(parent)
            guard dir.isDirectory else { throw EngineError.notDirectory }
            if try pfs.findEntry(dir, name) != nil { throw EngineError.posix(EEXIST, "file exists") }
            try fs.ensureSpace(for: 0)
            try pfs.addEntry(dir, name: name, inum: inum, type: node.type)
            let now = currentTimeMicroseconds()
            node.meta.nlinks += 1
            node.linkable = false  // linkat publishes an O_TMPFILE file once
            node.meta.ctime = now
            node.dirty = true
            dir.meta.mtime = now
            dir.meta.ctime = now
            dir.dirty = true
            return status(node)
        }
    }

    public static let renameNoReplace: UInt32 = 1  // RENAME_NOREPLACE
    public static let renameExchange: UInt32 = 2  // RENAME_EXCHANGE
    public static let renameWhiteout: UInt32 = 4  // RENAME_WHITEOUT

    /// rename(2) and renameat2(2): NOREPLACE fails if `newName` exists, EXCHANGE swaps two
    /// existing names atomically (files or directories, across directories), WHITEOUT
    /// leaves an overlayfs whiteout (a 0/0 character device) at the old name.
    public func rename(from parent: UInt64, name: [UInt8], to newParent: UInt64, newName: [UInt8], flags: UInt32 = 0,
                       caller: Caller = Caller(uid: 0, gid: 0)) throws {
        try writable()
        try Self.checkNameLength(name)
        try Self.checkName(newName)
        let known = Self.renameNoReplace | Self.renameExchange | Self.renameWhiteout
        guard flags & ~known == 0, flags & Self.renameExchange == 0 || flags == Self.renameExchange else {
            throw EngineError.invalidArgument("unsupported rename flags 0x\(String(flags, radix: 16))")
        }
        try lockedWaitingForSpace {
            let sourceDir = try pfs.node(parent)
            let targetDir = try pfs.node(newParent)
            guard sourceDir.isDirectory, targetDir.isDirectory else { throw EngineError.notDirectory }
            guard let entry = try pfs.findEntry(sourceDir, name) else { throw EngineError.notFound }
            let node = try pfs.node(entry.inum)
            if node.isDirectory { try refuseMoveIntoItself(node, targetDir) }
            let existing = try pfs.findEntry(targetDir, newName)
            if flags & Self.renameExchange != 0 {
                guard let existing else { throw EngineError.notFound }
                try exchange(entry, node, in: sourceDir, with: existing, in: targetDir)
                return
            }
            if let existing {
                if flags & Self.renameNoReplace != 0 { throw EngineError.posix(EEXIST, "file exists") }
                if existing.inum == node.inum { return }  // both names are links to one inode (vfs_rename)
                let victim = try pfs.node(existing.inum)
                if victim.isDirectory {
                    guard node.isDirectory else { throw EngineError.isDirectory }
                    guard try pfs.isEmptyDirectory(victim) else { throw EngineError.posix(ENOTEMPTY, "directory not empty") }
                } else if node.isDirectory {
                    throw EngineError.notDirectory
                }
                try fs.ensureSpace(for: flags & Self.renameWhiteout != 0 ? UInt64(HAMMER2.inodeBytes) : 0)
                pfs.removeName(existing, from: targetDir, target: victim)
            } else {
                try fs.ensureSpace(for: flags & Self.renameWhiteout != 0 ? UInt64(HAMMER2.inodeBytes) : 0)
            }
            let now = currentTimeMicroseconds()
            pfs.removeEntry(sourceDir, entry)
            try pfs.addEntry(targetDir, name: newName, inum: node.inum, type: node.type)
            if flags & Self.renameWhiteout != 0 {
                // overlayfs's whiteout: a character device 0/0 with mode 0 (WHITEOUT_DEV).
                let whiteout = newNode(in: sourceDir, type: .characterDevice, mode: 0, caller: caller)
                try pfs.addEntry(sourceDir, name: name, inum: whiteout.inum, type: .characterDevice)
            }
            if node.isDirectory { node.meta.iparent = targetDir.inum }
            node.meta.ctime = now
            node.dirty = true
            for dir in [sourceDir, targetDir] {
                dir.meta.mtime = now
                dir.meta.ctime = now
                dir.dirty = true
            }
        }
    }

    /// Refuses moving (or exchanging) directory `node` into `targetDir` when that is the
    /// directory itself or lies under it.
    private func refuseMoveIntoItself(_ node: Node, _ targetDir: Node) throws {
        var up = targetDir.inum
        while up != 0 {
            if up == node.inum { throw EngineError.invalidArgument("cannot move a directory into itself") }
            if up == PFS.rootInodeNumber { break }
            up = try pfs.node(up).meta.iparent
        }
    }

    /// RENAME_EXCHANGE: each name then names the other's inode.
    private func exchange(_ first: DirectoryEntry, _ firstNode: Node, in firstDir: Node,
                          with second: DirectoryEntry, in secondDir: Node) throws {
        guard first.inum != second.inum else { return }  // two links to one inode: nothing to swap
        let secondNode = try pfs.node(second.inum)
        if secondNode.isDirectory { try refuseMoveIntoItself(secondNode, firstDir) }
        try fs.ensureSpace(for: 0)
        let now = currentTimeMicroseconds()
        pfs.removeEntry(firstDir, first)
        pfs.removeEntry(secondDir, second)
        try pfs.addEntry(firstDir, name: first.name, inum: secondNode.inum, type: secondNode.type)
        try pfs.addEntry(secondDir, name: second.name, inum: firstNode.inum, type: firstNode.type)
        if firstNode.isDirectory { firstNode.meta.iparent = secondDir.inum }
        if secondNode.isDirectory { secondNode.meta.iparent = firstDir.inum }
        for node in [firstNode, secondNode, firstDir, secondDir] {
            node.meta.ctime = now
            node.dirty = true
        }
        firstDir.meta.mtime = now
        secondDir.meta.mtime = now
    }

    // MARK: Attributes

    public func setAttributes(_ inum: UInt64, _ changes: AttributeChanges) throws -> NodeStatus {
        try writable()
        return try lockedWaitingForSpace {
            let node = try pfs.node(inum)
            let now = currentTimeMicroseconds()
            if let size = changes.size {
                guard !node.isDirectory else { throw EngineError.isDirectory }
                guard node.type == .regularFile else { throw EngineError.invalidArgument("truncate of a non-file") }
                if size > node.meta.size { try fs.ensureSpace(for: 0) }
                try pfs.truncate(node, to: size)
                node.meta.mtime = changes.ctime ?? now
            }
            if let mode = changes.mode {
                node.meta.mode = mode & 0o7777
                try pfs.applyModeToAccessACL(node)
            }
            // chown of a non-directory clears setuid, setgid if group-executable, and file
            // capabilities (the kernel leaves this to us under FUSE_HANDLE_KILLPRIV_V2).
            if (changes.uid != nil || changes.gid != nil) && !node.isDirectory && changes.mode == nil {
                _ = try pfs.killPrivileges(node, setgid: node.meta.mode & UInt32(S_IXGRP) != 0)
            }
            if let uid = changes.uid { node.meta.uid = .unixID(uid) }
            if let gid = changes.gid { node.meta.gid = .unixID(gid) }
            if let atime = changes.atime { node.meta.atime = atime }
            if let mtime = changes.mtime { node.meta.mtime = mtime }
            node.meta.ctime = changes.ctime ?? now
            node.dirty = true
            return status(node)
        }
    }

    // MARK: File data

    public func open(_ inum: UInt64) throws {
        try locked { try pfs.node(inum).openCount += 1 }
    }

    public func release(_ inum: UInt64) {
        locked {
            guard let node = pfs.nodes[inum] else { return }
            node.openCount = max(0, node.openCount - 1)
            if node.openCount == 0 && node.meta.nlinks == 0 {
                node.clearDirtyBlocks()  // the last close of an unlinked file: its data is gone
                if node.flushedBref == nil && !node.dirty { pfs.nodes.removeValue(forKey: inum) }
            }
        }
    }

    /// Reads up to `count` bytes at `offset`; holes and the space past a truncation read
    /// as zeros, short at the end of the file.
    public func read(_ inum: UInt64, offset: UInt64, count: Int) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: max(count, 0)) { buffer, initialized in
            initialized = try read(inum, offset: offset, into: UnsafeMutableRawBufferPointer(buffer))
        }
    }

    /// As `read`, into `output` (a reply buffer of `count` bytes or more); returns how many.
    public func read(_ inum: UInt64, offset: UInt64, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        let plan = try locked { () -> ReadPlan in
            let plan = try pfs.readPlan(try pfs.node(inum), offset: offset, count: output.count)
            fs.readsInFlight.add(1, ordering: .relaxed)
            return plan
        }
        defer { fs.readsInFlight.subtract(1, ordering: .relaxed) }
        return try plan.execute(pfs: pfs, into: output)
    }

    public func write(_ inum: UInt64, offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws -> Int {
        try writable()
        // Past the dirty limit the writer flushes (or waits for the flush running), with
        // the data written outside the lock: other operations go on meanwhile.
        if fs.dirtyEstimate.load(ordering: .relaxed) + bytes.count > fs.dirtyLimit { try fs.flushForDirtyLimit() }
        // Large writes (a stream's) take a writer slot: they keep a processor busy copying.
        let large = bytes.count >= Int(logicalBlockBytes)
        if large, fs.writerSlots.wait(timeout: .now()) == .timedOut {
            // Waiting counts as waiting for a flush: the request loops start another
            // thread, so that a small request does not queue behind the stream.
            fs.waitingForFlush?(1)
            fs.writerSlots.wait()
            fs.waitingForFlush?(-1)
        }
        defer { if large { fs.writerSlots.signal() } }
        let prepared = MountedPFS.WholeBlocks(at: offset, bytes)
        return try lockedWaitingForSpace {
            let node = try pfs.node(inum)
            guard node.type == .regularFile else {
                throw node.isDirectory ? EngineError.isDirectory : EngineError.invalidArgument("write to a non-file")
            }
            let (end, overflow) = offset.addingReportingOverflow(UInt64(bytes.count))
            guard !overflow, end <= UInt64(Int64.max) else { throw EngineError.posix(EFBIG, "file too large") }
            // Many writers at once may pass the limit together; half as much again is flushed
            // here, with the lock, to bound memory.
            if fs.dirtyDataBytes + bytes.count > fs.dirtyLimit + fs.dirtyLimit / 2 { try fs.flushLocked(midOperation: true) }
            try fs.ensureSpace(for: UInt64(bytes.count) + UInt64(HAMMER2.physicalBufferSize))
            let hadDirtyData = node.dirtyBytes > 0
            let appending = offset + UInt64(bytes.count) > node.meta.size
            try pfs.writeData(node, at: offset, bytes, prepared: prepared)
            let dirty = fs.dirtyDataBytes
            fs.dirtyEstimate.store(dirty, ordering: .relaxed)
            // A stream (writes past the end) past a quarter of the limit starts the background
            // flush, so that its writers seldom wait for one, and each flush has little to
            // write under the lock. Random overwrites do not: they would have it prewrite
            // blocks they change again, and flush at the limit instead (the limit is large
            // for them: mount_hammer2 gives it half the cache).
            if appending && dirty > fs.dirtyLimit / 4 { fs.requestFlush() }
            if !hadDirtyData { allocationChanged?(inum) }
            if !kernelOwnsFileTimes {
                let now = currentTimeMicroseconds()
                node.meta.mtime = now
                node.meta.ctime = now
            }
            return bytes.count
        }
    }

    // MARK: Durability

    /// Writes everything changed so far and a new volume header (sync, fsync, unmount).
    public func flush() throws { try fs.flushReclaimingIfFull() }

    /// fsync: every change durable, through the intent log when it can take them.
    public func synchronize() throws { try fs.synchronize() }
}

/// "0x%016x": the filename DragonFly stores in an indexed inode (hammer2_xop_setname_inum).
public func inodeIndexName(_ inum: UInt64) -> [UInt8] {
    let digits = String(inum, radix: 16)
    return Array(("0x" + String(repeating: "0", count: max(0, 16 - digits.count)) + digits).utf8)
}
