// The union's namespace (docs/unionfs.md): nodes the kernel knows by number, each a name
// in its parent node, resolved in the layers below. Every metadata operation runs under
// one lock (they are a few system calls each; data goes through file descriptors outside
// it), which keeps copy-up, whiteouts and renames simple to reason about.

import CXattr
import Glibc
import Synchronization

/// The attributes of a name and the number the kernel knows it by.
public struct UnionEntry: Sendable {
    public var node: UInt64
    public var status: stat
}

public final class UnionFilesystem: Sendable {
    public let configuration: UnionConfiguration
    let layers: [Layer]
    /// Whether layers[0] is the writable upper layer.
    let hasUpper: Bool
    let work: Layer?
    let names: OverlayNames
    let state = Mutex(NodeTable())
    /// Unique names for what is built in the work directory.
    let temporaryCounter = Atomic<UInt64>(0)

    struct Node {
        /// The name the node's path goes through (one of `aliases`).
        var parent: UInt64
        var name: String
        var lookups: UInt64
        var isDirectory: Bool
        /// For a directory, every layer it is merged from (top first); else the layer of
        /// the object.
        var layers: [Int]
        /// Every name the kernel knows it by (hard links are one node, as in overlayfs).
        var aliases: [(parent: UInt64, name: String)] = []
        /// The files it is (the lower one, and the upper one after a copy-up).
        var identities: [Identity] = []
        /// st_ino as first shown, kept through a copy-up (tar checks that a directory it
        /// extracts into keeps its inode number; overlayfs keeps it too).
        var inode: UInt64 = 0
    }

    struct NameKey: Hashable {
        var parent: UInt64
        var name: String
    }

    struct Identity: Hashable {
        var device: UInt64
        var inode: UInt64
        init(_ st: stat) { (device, inode) = (UInt64(st.st_dev), UInt64(st.st_ino)) }
    }

    struct NodeTable {
        var nodes: [UInt64: Node] = [:]
        var byName: [NameKey: UInt64] = [:]
        /// Non-directories by file, so that hard links share their node.
        var byIdentity: [Identity: UInt64] = [:]
        var next: UInt64 = 2

        static func key(_ parent: UInt64, _ name: String) -> NameKey { NameKey(parent: parent, name: name) }
    }

    public static let rootNode: UInt64 = 1

    public init(configuration: UnionConfiguration) throws {
        self.configuration = configuration
        var opened: [Layer] = []
        if let upper = configuration.upper { opened.append(try Layer(index: 0, root: upper, writable: true)) }
        for lower in configuration.lowers { opened.append(try Layer(index: opened.count, root: lower, writable: false)) }
        layers = opened
        hasUpper = configuration.upper != nil
        names = OverlayNames(userXattr: configuration.userXattr)
        if let workRoot = configuration.work {
            // W/work for what is being built (overlayfs's name), W/links for hard links copied up
            // (not overlayfs's W/index, whose entries it would take for its own).
            for sub in ["work", "links"] where mkdir(workRoot + "/" + sub, 0o700) != 0 && errno != EEXIST {
                throw UnionError(errno)
            }
            work = try Layer(index: -1, root: workRoot, writable: true)
            try removeLeftovers()
        } else {
            work = nil
        }
        guard let root = try resolve("", in: Array(layers.indices), layers: layers, names: names), root.isDirectory else {
            throw UnionError(ENOTDIR)
        }
        state.withLock { $0.nodes[Self.rootNode] = Node(parent: Self.rootNode, name: "", lookups: 1, isDirectory: true, layers: root.layers) }
    }

    /// What an interrupted copy-up left in W/work: never visible, removed at mount.
    func removeLeftovers() throws {
        guard let work, let directory = opendir(work.root + "/work") else { return }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard name != "." && name != ".." else { continue }
            try removeTree("work/" + name, in: work)
        }
    }

    // MARK: Nodes

    func path(_ node: UInt64, _ table: NodeTable) throws -> String {
        var components: [String] = []
        var current = node
        while current != Self.rootNode {
            guard let info = table.nodes[current], components.count < 4096 else { throw UnionError(ESTALE) }
            components.append(info.name)
            current = info.parent
        }
        return components.reversed().joined(separator: "/")
    }

    func info(_ node: UInt64, _ table: NodeTable) throws -> Node {
        guard let info = table.nodes[node] else { throw UnionError(ESTALE) }
        return info
    }

    static func childPath(_ parent: String, _ name: String) -> String { parent.isEmpty ? name : parent + "/" + name }

    /// The kernel learns a name: its node (the same one while the kernel holds it; the same
    /// for every name of one file).
    func remember(_ parent: UInt64, _ name: String, _ resolved: Resolved, _ table: inout NodeTable) -> UInt64 {
        let key = NodeTable.key(parent, name)
        let identity = Identity(resolved.status)
        let existing = table.byName[key] ?? (resolved.isDirectory ? nil : table.byIdentity[identity])
        if let existing, var node = table.nodes[existing], node.isDirectory == resolved.isDirectory {
            node.lookups += 1
            node.layers = resolved.layers
            if table.byName[key] != existing {
                node.aliases.append((parent, name))
                table.byName[key] = existing
            }
            (node.parent, node.name) = (parent, name)
            if !resolved.isDirectory && !node.identities.contains(identity) {
                node.identities.append(identity)
                table.byIdentity[identity] = existing
            }
            table.nodes[existing] = node
            return existing
        }
        let number = table.next
        table.next += 1
        var node = Node(parent: parent, name: name, lookups: 1, isDirectory: resolved.isDirectory, layers: resolved.layers)
        node.inode = Self.inodeNumber(resolved.status, layer: resolved.layers[0])
        node.aliases = [(parent, name)]
        if !resolved.isDirectory {
            node.identities = [identity]
            table.byIdentity[identity] = number
        }
        table.nodes[number] = node
        table.byName[key] = number
        return number
    }

    /// The name no longer leads to its node (unlink, rmdir, rename over it); the node goes
    /// on by another of its names, if it has one.
    func detach(_ parent: UInt64, _ name: String, _ table: inout NodeTable) {
        let key = NodeTable.key(parent, name)
        guard let number = table.byName.removeValue(forKey: key), var node = table.nodes[number] else { return }
        node.aliases.removeAll { $0.parent == parent && $0.name == name }
        if node.parent == parent && node.name == name, let other = node.aliases.last { (node.parent, node.name) = other }
        table.nodes[number] = node
    }

    /// A node's file changed identity (a copy-up): later lookups of its other names find it.
    func addIdentity(_ node: UInt64, _ st: stat, _ table: inout NodeTable) {
        guard var info = table.nodes[node], !info.isDirectory else { return }
        let identity = Identity(st)
        if !info.identities.contains(identity) { info.identities.append(identity) }
        table.nodes[node] = info
        table.byIdentity[identity] = node
    }

    public func forget(_ node: UInt64, _ count: UInt64) {
        state.withLock { table in forgetLocked(node, count, &table) }
    }

    /// A FORGET batch (the kernel evicting many inodes at once) under one taking of the lock.
    public func forget(_ batch: [(node: UInt64, count: UInt64)]) {
        state.withLock { table in
            for (node, count) in batch { forgetLocked(node, count, &table) }
        }
    }

    func forgetLocked(_ node: UInt64, _ count: UInt64, _ table: inout NodeTable) {
        guard node != Self.rootNode, var info = table.nodes[node] else { return }
        info.lookups = info.lookups > count ? info.lookups - count : 0
        if info.lookups > 0 {
            table.nodes[node] = info
            return
        }
        table.nodes[node] = nil
        for alias in info.aliases {
            let key = NodeTable.key(alias.parent, alias.name)
            if table.byName[key] == node { table.byName[key] = nil }
        }
        for identity in info.identities where table.byIdentity[identity] == node { table.byIdentity[identity] = nil }
    }

    /// st_ino of an object: its number in its layer, the layer in the high bits (hard
    /// links in one layer show as such). A directory merged from several layers has
    /// st_nlink 1, as in overlayfs: "unknown", so that fts and find do not conclude from
    /// the upper directory's count that the merged one has no subdirectories.
    func presented(_ status: stat, layer: Int, merged: Bool = false, inode: UInt64 = 0) -> stat {
        var st = status
        st.st_ino = UInt(inode != 0 ? inode : Self.inodeNumber(status, layer: layer))
        if merged { st.st_nlink = 1 }
        return st
    }

    static func inodeNumber(_ status: stat, layer: Int) -> UInt64 {
        UInt64(status.st_ino) & 0x00FF_FFFF_FFFF_FFFF | UInt64(layer + 1) << 56
    }

    // MARK: Lookup and attributes

    /// A node and its path, taken under the lock; what follows (system calls that only read)
    /// runs outside it. The kernel holds a directory's lock across lookups in it and the
    /// operations that change it, so a name cannot change under a lookup.
    func located(_ node: UInt64) throws -> (Node, String) {
        try state.withLock { table in (try info(node, table), try path(node, table)) }
    }

    public func lookup(_ parent: UInt64, _ name: String) throws -> UnionEntry {
        let (directory, parentPath) = try located(parent)
        guard directory.isDirectory else { throw UnionError(ENOTDIR) }
        let path = Self.childPath(parentPath, name)
        guard let resolved = try resolve(path, in: directory.layers, layers: layers, names: names) else { throw UnionError(ENOENT) }
        return try state.withLock { table in
            let node = remember(parent, name, resolved, &table)
            // Another name of a lower file whose hard link was copied up already: it is that
            // upper file now (linked into place), not the lower one.
            let st = resolved.status
            if let work, resolved.layers[0] != 0, st.st_mode & S_IFMT == S_IFREG, st.st_nlink > 1,
               faccessat(work.fd, "links/\(st.st_dev)-\(st.st_ino)", F_OK, AT_SYMLINK_NOFOLLOW) == 0 {
                try copyUp(node, &table)
                return UnionEntry(node: node, status: try attributesLocked(node, table))
            }
            return UnionEntry(node: node, status: presented(resolved.status, layer: resolved.layers[0],
                                                            merged: resolved.isDirectory && resolved.layers.count > 1,
                                                            inode: table.nodes[node]?.inode ?? 0))
        }
    }

    /// With `fd` (an fstat of an open file, which may have no name left), its attributes.
    public func attributes(_ node: UInt64, fd: Int32? = nil) throws -> stat {
        let (info, path) = try located(node)
        guard let fd else { return try presented(info, path) }
        var st = stat()
        try check(fstat(fd, &st))
        return presented(st, layer: info.layers[0], merged: info.isDirectory && info.layers.count > 1, inode: info.inode)
    }

    func attributesLocked(_ node: UInt64, _ table: NodeTable) throws -> stat {
        try presented(try info(node, table), try path(node, table))
    }

    /// The attributes of `info` at `path` in its top layer, as the union shows them.
    private func presented(_ info: Node, _ path: String) throws -> stat {
        presented(try layers[info.layers[0]].status(path), layer: info.layers[0], merged: info.isDirectory && info.layers.count > 1,
                  inode: info.inode)
    }

    public func readLink(_ node: UInt64) throws -> [UInt8] {
        let (info, path) = try located(node)
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlinkat(layers[info.layers[0]].fd, Layer.at(path), &buffer, buffer.count)
        guard count >= 0 else { throw UnionError(errno) }
        return Array(buffer[0..<count])
    }

    public func statistics() throws -> statvfs {
        var result = statvfs()
        try check(fstatvfs(layers[0].fd, &result))
        return result
    }

    // MARK: Directories

    /// A merged directory's entries (name, type, st_ino), "." and ".." first.
    public func listing(_ node: UInt64) throws -> [(name: String, type: UInt8, inode: UInt64)] {
        let (info, path) = try located(node)
        guard info.isDirectory else { throw UnionError(ENOTDIR) }
        return try mergedEntries(path, info.layers)
    }

    func mergedEntries(_ path: String, _ from: [Int]) throws -> [(name: String, type: UInt8, inode: UInt64)] {
        var result: [(name: String, type: UInt8, inode: UInt64)] = [(".", UInt8(DT_DIR), 1), ("..", UInt8(DT_DIR), 1)]
        var seen: Set<String> = [".", ".."]
        for index in from {
            let layer = layers[index]
            let fd = openat(layer.fd, Layer.at(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard fd >= 0, let directory = fdopendir(fd) else {
                if fd >= 0 { close(fd) }
                if errno == ENOENT || errno == ENOTDIR { continue }
                throw UnionError(errno)
            }
            defer { closedir(directory) }
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                guard seen.insert(name).inserted else { continue }
                var type = entry.pointee.d_type
                if type == UInt8(DT_CHR) || type == UInt8(DT_UNKNOWN) {
                    var st = stat()
                    if fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 {
                        if st.st_mode & S_IFMT == S_IFCHR && st.st_rdev == 0 { continue }  // whited out, here and below
                        type = UInt8((st.st_mode & S_IFMT) >> 12)
                    }
                }
                result.append((name, type, UInt64(entry.pointee.d_ino) & 0x00FF_FFFF_FFFF_FFFF | UInt64(index + 1) << 56))
            }
        }
        return result
    }

    // MARK: Extended attributes

    public func getAttribute(_ node: UInt64, _ name: String, into buffer: UnsafeMutableRawBufferPointer?) throws -> Int {
        guard !names.isPrivate(name) else { throw UnionError(ENODATA) }
        let (info, path) = try located(node)
        let count = lgetxattr(layers[info.layers[0]].absolute(path), name, buffer?.baseAddress, buffer?.count ?? 0)
        guard count >= 0 else { throw UnionError(errno) }
        return count
    }

    /// The names, less the union's own, NUL-separated.
    public func attributeNames(_ node: UInt64) throws -> [UInt8] {
        let (info, path) = try located(node)
        return try visibleAttributeNames(layers[info.layers[0]].absolute(path))
    }

    func visibleAttributeNames(_ full: String) throws -> [UInt8] {
        let size = llistxattr(full, nil, 0)
        guard size >= 0 else { throw UnionError(errno) }
        guard size > 0 else { return [] }
        var raw = [CChar](repeating: 0, count: size)
        let got = llistxattr(full, &raw, raw.count)
        guard got >= 0 else { throw UnionError(errno) }
        var result: [UInt8] = []
        for name in raw.prefix(got).split(separator: 0) {
            let text = String(decoding: name.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if !names.isPrivate(text) { result += Array(text.utf8) + [0] }
        }
        return result
    }

    public func setAttribute(_ node: UInt64, _ name: String, _ value: UnsafeRawBufferPointer, flags: Int32) throws {
        guard !names.isPrivate(name) else { throw UnionError(EPERM) }
        try state.withLock { table in
            let path = try copyUp(node, &table)
            try check(lsetxattr(layers[0].absolute(path), name, value.baseAddress, value.count, flags))
        }
    }

    public func removeAttribute(_ node: UInt64, _ name: String) throws {
        guard !names.isPrivate(name) else { throw UnionError(ENODATA) }
        try state.withLock { table in
            let info = try info(node, table)
            // Nothing to copy up for a name the object does not have.
            let full = layers[info.layers[0]].absolute(try path(node, table))
            if lgetxattr(full, name, nil, 0) < 0 { throw UnionError(errno) }
            let path = try copyUp(node, &table)
            try check(lremovexattr(layers[0].absolute(path), name))
        }
    }
}
