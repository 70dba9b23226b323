// What changes the union (docs/unionfs.md, "Deletion and rename"): in the upper layer
// only, lower objects copied up first, names of lower layers deleted with whiteouts.

import CXattr
import CLinuxCalls
import Glibc

/// Who asks: new objects are theirs.
public struct UnionCaller: Sendable {
    public var uid: uid_t
    public var gid: gid_t
    public init(uid: uid_t, gid: gid_t) { (self.uid, self.gid) = (uid, gid) }
}

/// Attribute changes of a setattr (nil: unchanged).
public struct UnionAttributeChanges: Sendable {
    public var mode: mode_t?
    public var uid: uid_t?
    public var gid: gid_t?
    public var size: off_t?
    public var atime: timespec?
    public var mtime: timespec?
    public init() {}
}

extension UnionFilesystem {
    /// Whether a layer below the upper one has `path` (so deleting it needs a whiteout).
    func lowerHas(_ path: String, parentLayers: [Int]) throws -> Bool {
        try resolve(path, in: parentLayers.filter { $0 != 0 }, layers: layers, names: names) != nil
    }

    /// Makes a new object at `name` of `parent` through `make` (its name in the upper layer,
    /// or in W/work when a whiteout must be replaced in one step), owned by `caller`.
    func place(_ parent: UInt64, _ name: String, caller: UnionCaller, _ table: inout NodeTable,
               make: (_ fd: Int32, _ name: String) throws -> Void) throws -> (UnionEntry, path: String) {
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/") else { throw UnionError(EINVAL) }
        let parentPath = try copyUp(parent, &table)
        let directory = try info(parent, table)
        let path = Self.childPath(parentPath, name)
        if try resolve(path, in: directory.layers, layers: layers, names: names) != nil { throw UnionError(EEXIST) }
        let upper = try self.upper
        var replacesWhiteout = false
        if case .whiteout = try upper.entry(path, names: names) { replacesWhiteout = true }
        if replacesWhiteout {
            let work = try workLayer
            let temporary = temporaryName()
            do {
                try make(work.fd, temporary)
                if geteuid() == 0 { try check(fchownat(work.fd, temporary, caller.uid, caller.gid, AT_SYMLINK_NOFOLLOW)) }
                var st = stat()
                try check(fstatat(work.fd, temporary, &st, AT_SYMLINK_NOFOLLOW))
                if st.st_mode & S_IFMT == S_IFDIR {
                    // A directory where a deleted one was: opaque, and swapped with the
                    // whiteout in one step (rename cannot put a directory over a file).
                    try setOpaque(work.absolute(temporary))
                    try check(linux_renameat2(work.fd, temporary, upper.fd, path, linux_rename_exchange))
                    unlinkat(work.fd, temporary, 0)
                } else {
                    try check(renameat(work.fd, temporary, upper.fd, path))
                }
            } catch {
                try? removeTree(temporary, in: work)
                throw error
            }
        } else {
            try make(upper.fd, path)
            if geteuid() == 0 { try check(fchownat(upper.fd, path, caller.uid, caller.gid, AT_SYMLINK_NOFOLLOW)) }
        }
        let st = try upper.status(path)
        let resolved = Resolved(isDirectory: st.st_mode & S_IFMT == S_IFDIR, layers: [0], status: st)
        detach(parent, name, &table)
        let node = remember(parent, name, resolved, &table)
        return (UnionEntry(node: node, status: presented(st, layer: 0, inode: table.nodes[node]?.inode ?? 0)), path)
    }

    /// create(2): the new file open with `flags`; returns its descriptor too.
    public func create(_ parent: UInt64, _ name: String, mode: mode_t, flags: Int32, caller: UnionCaller) throws -> (UnionEntry, Int32) {
        try state.withLock { table in
            var fd: Int32 = -1
            let (entry, _) = try place(parent, name, caller: caller, &table) { directory, name in
                fd = try check(openat(directory, name, (flags & ~O_NOFOLLOW) | O_CREAT | O_EXCL | O_CLOEXEC, mode))
            }
            return (entry, fd)
        }
    }

    public func makeDirectory(_ parent: UInt64, _ name: String, mode: mode_t, caller: UnionCaller) throws -> UnionEntry {
        try state.withLock { table in
            try place(parent, name, caller: caller, &table) { try check(mkdirat($0, $1, mode)) }.0
        }
    }

    public func makeNode(_ parent: UInt64, _ name: String, mode: mode_t, device: dev_t, caller: UnionCaller) throws -> UnionEntry {
        // A 0/0 character device is a whiteout to the union: made through it, it would
        // delete the name instead of creating it.
        if mode & S_IFMT == S_IFCHR && device == 0 { throw UnionError(EPERM) }
        return try state.withLock { table in
            try place(parent, name, caller: caller, &table) { try check(mknodat($0, $1, mode, device)) }.0
        }
    }

    public func makeSymbolicLink(_ parent: UInt64, _ name: String, target: String, caller: UnionCaller) throws -> UnionEntry {
        try state.withLock { table in
            try place(parent, name, caller: caller, &table) { try check(symlinkat(target, $0, $1)) }.0
        }
    }

    public func link(_ node: UInt64, into parent: UInt64, _ name: String) throws -> UnionEntry {
        try state.withLock { table in
            guard try !info(node, table).isDirectory else { throw UnionError(EPERM) }
            let source = try copyUp(node, &table)
            let upper = try self.upper
            // The new name is the caller's object already: no chown.
            return try place(parent, name, caller: UnionCaller(uid: uid_t.max, gid: gid_t.max), &table) { directory, name in
                try check(linkat(upper.fd, source, directory, name, 0))
            }.0
        }
    }

    public func unlink(_ parent: UInt64, _ name: String) throws {
        try state.withLock { table in
            let directory = try info(parent, table)
            let parentPath = try path(parent, table)
            let path = Self.childPath(parentPath, name)
            guard let child = try resolve(path, in: directory.layers, layers: layers, names: names) else { throw UnionError(ENOENT) }
            guard !child.isDirectory else { throw UnionError(EISDIR) }
            try copyUp(parent, &table)
            if try lowerHas(path, parentLayers: directory.layers) {
                try whiteOut(path)
            } else {
                try check(unlinkat(try upper.fd, path, 0))
            }
            detach(parent, name, &table)
        }
    }

    public func removeDirectory(_ parent: UInt64, _ name: String) throws {
        try state.withLock { table in
            let directory = try info(parent, table)
            let path = Self.childPath(try self.path(parent, table), name)
            guard let child = try resolve(path, in: directory.layers, layers: layers, names: names) else { throw UnionError(ENOENT) }
            guard child.isDirectory else { throw UnionError(ENOTDIR) }
            guard try mergedEntries(path, child.layers).count == 2 else { throw UnionError(ENOTEMPTY) }
            try copyUp(parent, &table)
            let needsWhiteout = try lowerHas(path, parentLayers: directory.layers)
            if child.layers[0] == 0 {
                try removeWhiteouts(path)
                if needsWhiteout {
                    // The whiteout swapped in for the directory in one step, which then goes.
                    let work = try workLayer, temporary = temporaryName()
                    try check(mknodat(work.fd, temporary, S_IFCHR | 0o000, 0))
                    try check(linux_renameat2(work.fd, temporary, try upper.fd, path, linux_rename_exchange))
                    try removeTree(temporary, in: work)
                } else {
                    try check(unlinkat(try upper.fd, path, AT_REMOVEDIR))
                }
            } else {
                try whiteOut(path)
            }
            detach(parent, name, &table)
        }
    }

    public func rename(_ parent: UInt64, _ name: String, to newParent: UInt64, _ newName: String, flags: UInt32) throws {
        try state.withLock { table in
            guard !newName.isEmpty, newName != ".", newName != "..", !newName.contains("/") else { throw UnionError(EINVAL) }
            let from = try info(parent, table), to = try info(newParent, table)
            let sourcePath = Self.childPath(try path(parent, table), name)
            let targetPath = Self.childPath(try path(newParent, table), newName)
            guard let source = try resolve(sourcePath, in: from.layers, layers: layers, names: names) else { throw UnionError(ENOENT) }
            let target = try resolve(targetPath, in: to.layers, layers: layers, names: names)
            guard sourcePath != targetPath else { return }
            let sourceBelow = try lowerHas(sourcePath, parentLayers: from.layers)
            let targetBelow = try lowerHas(targetPath, parentLayers: to.layers)
            if flags & linux_rename_exchange != 0 {
                // Only between objects of the upper layer alone: anything else would need
                // both names' lower parts to move (overlayfs: EXDEV).
                guard let target, source.layers == [0], target.layers == [0], !sourceBelow, !targetBelow else { throw UnionError(EXDEV) }
                try check(linux_renameat2(try upper.fd, sourcePath, try upper.fd, targetPath, linux_rename_exchange))
                swapNames(parent, name, newParent, newName, &table)
                return
            }
            if flags & linux_rename_noreplace != 0 && target != nil { throw UnionError(EEXIST) }
            // A directory with lower parts cannot move without redirects (overlayfs
            // without redirect_dir): EXDEV, and mv copies it instead.
            if source.isDirectory && source.layers != [0] { throw UnionError(EXDEV) }
            if let target {
                if target.isDirectory {
                    guard source.isDirectory else { throw UnionError(EISDIR) }
                    guard try mergedEntries(targetPath, target.layers).count == 2 else { throw UnionError(ENOTEMPTY) }
                } else if source.isDirectory {
                    throw UnionError(ENOTDIR)
                }
            }
            // The source's node: the kernel's, or one for this rename alone.
            let known = table.byName[NodeTable.key(parent, name)]
            let node = try known ?? lookupLocked(parent, name, &table)
            defer { if known == nil { table.nodes[node] = nil } }
            try copyUp(node, &table)
            try copyUp(newParent, &table)
            let upper = try self.upper
            if source.isDirectory && targetBelow { try setOpaque(upper.absolute(sourcePath)) }
            if let target, target.isDirectory, target.layers[0] == 0 { try removeWhiteouts(targetPath) }
            var leftWhiteout = false
            if source.isDirectory, case .whiteout = try upper.entry(targetPath, names: names) {
                // A directory over a whiteout: swapped in one step; the whiteout lands at the
                // old name, where it is wanted if a lower layer has that name.
                try check(linux_renameat2(upper.fd, sourcePath, upper.fd, targetPath, linux_rename_exchange))
                if sourceBelow { leftWhiteout = true } else { try check(unlinkat(upper.fd, sourcePath, 0)) }
            } else if target?.isDirectory == true && target?.layers[0] != 0 {
                // Over a lower directory (empty in the union): the source, opaque, takes its place.
                try check(renameat(upper.fd, sourcePath, upper.fd, targetPath))
            } else {
                try check(renameat(upper.fd, sourcePath, upper.fd, targetPath))
            }
            if sourceBelow && !leftWhiteout { try whiteOut(sourcePath) }
            detach(newParent, newName, &table)
            detach(parent, name, &table)
            if known != nil, var moved = table.nodes[node] {
                moved.parent = newParent
                moved.name = newName
                moved.layers = [0]
                moved.aliases.append((newParent, newName))
                table.nodes[node] = moved
                table.byName[NodeTable.key(newParent, newName)] = node
            }
        }
    }

    /// A node for `name` the kernel does not hold (not in the name index; the caller
    /// removes it when done).
    func lookupLocked(_ parent: UInt64, _ name: String, _ table: inout NodeTable) throws -> UInt64 {
        let directory = try info(parent, table)
        let path = Self.childPath(try self.path(parent, table), name)
        guard let resolved = try resolve(path, in: directory.layers, layers: layers, names: names) else { throw UnionError(ENOENT) }
        let node = table.next
        table.next += 1
        table.nodes[node] = Node(parent: parent, name: name, lookups: 0, isDirectory: resolved.isDirectory, layers: resolved.layers)
        return node
    }

    func swapNames(_ parentA: UInt64, _ nameA: String, _ parentB: UInt64, _ nameB: String, _ table: inout NodeTable) {
        let a = table.byName[NodeTable.key(parentA, nameA)], b = table.byName[NodeTable.key(parentB, nameB)]
        detach(parentA, nameA, &table)
        detach(parentB, nameB, &table)
        for (node, parent, name) in [(a, parentB, nameB), (b, parentA, nameA)] {
            guard let node, var info = table.nodes[node] else { continue }
            (info.parent, info.name) = (parent, name)
            info.aliases.append((parent, name))
            table.nodes[node] = info
            table.byName[NodeTable.key(parent, name)] = node
        }
    }

    public func setAttributes(_ node: UInt64, _ changes: UnionAttributeChanges, fd: Int32?) throws -> stat {
        try state.withLock { table in
            let path = try copyUp(node, &table)
            let upper = try self.upper
            let at = Layer.at(path)
            if let mode = changes.mode {
                // fchmodat follows a symbolic link: never for one (Linux has no lchmod).
                guard try upper.status(path).st_mode & S_IFMT != S_IFLNK else { throw UnionError(EOPNOTSUPP) }
                try check(fchmodat(upper.fd, at, mode & 0o7777, 0))
            }
            if changes.uid != nil || changes.gid != nil {
                try check(fchownat(upper.fd, at, changes.uid ?? uid_t.max, changes.gid ?? gid_t.max, AT_SYMLINK_NOFOLLOW))
            }
            if let size = changes.size {
                if let fd { try check(ftruncate(fd, size)) } else {
                    let file = try check(openat(upper.fd, at, O_WRONLY | O_NOFOLLOW | O_CLOEXEC))
                    defer { close(file) }
                    try check(ftruncate(file, size))
                }
            }
            if changes.atime != nil || changes.mtime != nil {
                var times = [changes.atime ?? timespec(tv_sec: 0, tv_nsec: linux_utime_omit),
                             changes.mtime ?? timespec(tv_sec: 0, tv_nsec: linux_utime_omit)]
                try check(utimensat(upper.fd, at, &times, AT_SYMLINK_NOFOLLOW))
            }
            return try attributesLocked(node, table)
        }
    }

    /// open(2) of a file: copied up first when it is opened for writing.
    public func open(_ node: UInt64, flags: Int32) throws -> Int32 {
        let writes = flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0
        let openFlags = (flags & ~(O_CREAT | O_EXCL | O_NOCTTY)) | O_NOFOLLOW | O_CLOEXEC
        guard writes else {
            let (info, path) = try located(node)
            guard !info.isDirectory else { throw UnionError(EISDIR) }
            return try check(openat(layers[info.layers[0]].fd, path, openFlags))
        }
        return try state.withLock { table in
            guard try !info(node, table).isDirectory else { throw UnionError(EISDIR) }
            return try check(openat(try upper.fd, try copyUp(node, &table), openFlags))
        }
    }
}
