// One PFS of an image: numbers its inodes, writes file data, directory entries, the inode
// index and the PFS root inode, and returns the root's blockref for the super-root.
//
// Inode numbers follow DragonFly: the PFS root is 1, everything else is allocated from
// HAMMER2_INODE_START (1024) up, in creation (depth-first, entry) order. Hard links are
// extra directory entries naming the same inum; the inode's nlinks counts them.

import HAMMER2CopyOnWrite
import HAMMER2Format

struct PFSBuilder {
    let session: ImageBuildSession
    let spec: PFSSpec

    /// The PFS root blockref newfs_hammer2 writes: xxhash64, compression none, whatever the
    /// PFS's own algorithms (those go into the root inode's comp_algo/check_algo).
    static let rootMethods = Blockref.methods(check: .xxhash64, compression: .none)
    static let rootInodeNumber: UInt64 = 1
    /// newfs_hammer2's pfs_inum for a PFS with no inodes yet.
    static let emptyPFSInodeAllocator: UInt64 = 16

    private var inodes: [UInt64: PendingInode] = [:]
    private var paths: [[UInt8]: UInt64] = [:]
    private var nextInum = HAMMER2.inodeStart
    /// Hard links waiting for the whole tree to be numbered: (directory inum, name, target).
    private var links: [(directory: UInt64, index: Int, target: [UInt8])] = []

    init(session: ImageBuildSession, spec: PFSSpec) {
        self.session = session
        self.spec = spec
    }

    func build() throws -> (Blockref, BuiltImage.PFS) {
        var builder = self
        return try builder.buildMutating()
    }

    private mutating func buildMutating() throws -> (Blockref, BuiltImage.PFS) {
        let label = Array(spec.label.utf8)
        guard !label.isEmpty, label.count <= HAMMER2.inodeMaxName - 1 else {
            throw ImageBuildError.invalidSpec("PFS label \"\(spec.label)\" must be 1 to 255 bytes")
        }
        inodes[Self.rootInodeNumber] = PendingInode(
            inum: Self.rootInodeNumber, type: .directory, attributes: spec.root.attributes,
            compression: spec.compression, check: spec.check, iparent: 0)
        paths[Array("/".utf8)] = Self.rootInodeNumber
        try number(spec.root, inum: Self.rootInodeNumber, path: [])
        try resolveLinks()

        // Data first, in inode order, so each large file's blocks are one run on the media.
        var blocksets: [UInt64: [Blockref]] = [:]
        for inum in inodes.keys.sorted() {
            let inode = inodes[inum]!
            if let content = inode.content, content.size > UInt64(HAMMER2.embeddedBytes) {
                blocksets[inum] = try writeData(content, of: inode)
            }
        }
        var rootEntries: [Blockref] = []
        for inum in inodes.keys.sorted() where inodes[inum]!.type == .directory {
            let inode = inodes[inum]!
            if inum == Self.rootInodeNumber {
                rootEntries = try directoryEntries(of: inode, methods: Self.rootMethods)
            } else {
                let entries = try directoryEntries(of: inode, methods: inode.brefMethods)
                blocksets[inum] = try session.treeBuilder(parentMethods: inode.brefMethods).build(leaves: entries)
            }
        }
        var index: [Blockref] = []
        for inum in inodes.keys.sorted() where inum != Self.rootInodeNumber {
            index.append(try writeIndexedInode(inodes[inum]!, blockset: blocksets[inum] ?? []))
        }
        let rootBlockset = try session.treeBuilder(parentMethods: Self.rootMethods).build(leaves: index + rootEntries)
        let highest = inodes.keys.max()!
        let rootBref = try writeRoot(label: label, blockset: rootBlockset, highestInum: highest)
        return (rootBref, BuiltImage.PFS(label: spec.label, inodeNumbers: paths, highestInodeNumber: highest))
    }

    // MARK: Numbering

    private mutating func number(_ directory: DirectorySpec, inum: UInt64, path: [UInt8]) throws {
        var seen = Set<[UInt8]>()
        let parent = inodes[inum]!
        for entry in directory.entries {
            let name = entry.name
            guard !name.isEmpty, name.count <= 255, !name.contains(0), !name.contains(UInt8(ascii: "/")),
                  name != Array(".".utf8), name != Array("..".utf8) else {
                throw ImageBuildError.invalidSpec("bad name \(String(decoding: name, as: UTF8.self).debugDescription)")
            }
            guard seen.insert(name).inserted else {
                throw ImageBuildError.invalidSpec("duplicate name \(String(decoding: name, as: UTF8.self)) in inode \(inum)")
            }
            let childPath = path + Array("/".utf8) + name
            if case let .hardLink(target) = entry.node {
                inodes[inum]!.entries.append((name, 0))
                links.append((inum, inodes[inum]!.entries.count - 1, target))
                continue
            }
            let child = nextInum
            nextInum += 1
            var pending: PendingInode
            switch entry.node {
            case let .directory(spec):
                pending = PendingInode(inum: child, type: .directory, attributes: spec.attributes,
                                       compression: spec.compression ?? parent.compression,
                                       check: spec.check ?? parent.check, iparent: inum)
            case let .file(spec):
                pending = PendingInode(inum: child, type: .regularFile, attributes: spec.attributes,
                                       compression: spec.compression ?? parent.compression,
                                       check: spec.check ?? parent.check, iparent: inum)
                pending.content = spec.content
            case let .symlink(spec):
                guard !spec.target.isEmpty, spec.target.count <= 65_536 else {
                    throw ImageBuildError.invalidSpec("symlink target of \(spec.target.count) bytes")
                }
                pending = PendingInode(inum: child, type: .softlink, attributes: spec.attributes,
                                       compression: spec.compression ?? parent.compression,
                                       check: spec.check ?? parent.check, iparent: inum)
                pending.content = .bytes(spec.target)
            case let .fifo(attributes):
                pending = PendingInode(inum: child, type: .fifo, attributes: attributes,
                                       compression: parent.compression, check: parent.check, iparent: inum)
            case let .special(type, attributes, major, minor):
                pending = PendingInode(inum: child, type: type, attributes: attributes,
                                       compression: parent.compression, check: parent.check, iparent: inum)
                pending.rmajor = major
                pending.rminor = minor
            case .hardLink:
                preconditionFailure("handled above")
            }
            inodes[child] = pending
            paths[childPath] = child
            inodes[inum]!.entries.append((name, child))
            if case let .directory(spec) = entry.node {
                try number(spec, inum: child, path: childPath)
            }
        }
    }

    private mutating func resolveLinks() throws {
        for link in links {
            guard let target = paths[link.target], let inode = inodes[target] else {
                throw ImageBuildError.invalidSpec("hard link to missing \(String(decoding: link.target, as: UTF8.self))")
            }
            guard inode.type != .directory else {
                throw ImageBuildError.invalidSpec("hard link to directory \(String(decoding: link.target, as: UTF8.self))")
            }
            inodes[link.directory]!.entries[link.index].inum = target
            inodes[target]!.nlinks += 1
        }
    }

    // MARK: Writing

    private func writeData(_ content: FileContent, of inode: PendingInode) throws -> [Blockref] {
        let writer = DataBlockWriter(compression: inode.compression, check: inode.check, tid: session.tid)
        let session = self.session
        let blocks = try writer.write(content, allocate: { bytes in
            try session.allocator.allocate(bytes, type: .data)
        }, store: { bytes, offset in
            try session.file.write(bytes, at: offset)
        })
        return try session.treeBuilder(parentMethods: inode.brefMethods).build(leaves: blocks)
    }

    /// DIRENT blockrefs of a directory, with names longer than 64 bytes in 1 KiB blocks.
    private func directoryEntries(of directory: PendingInode, methods: UInt8) throws -> [Blockref] {
        var keys = DirectoryKeyAllocator()
        var refs: [Blockref] = []
        for (name, inum) in directory.entries {
            var bref = Blockref.empty
            bref.type = .dirent
            bref.methods = methods
            bref.key = keys.key(for: name)
            bref.mirrorTID = session.tid
            bref.modifyTID = session.tid
            (bref.embed0, bref.embed1) = Blockref.direntEmbed(inum: inum, nameLength: name.count, type: inodes[inum]!.type)
            if name.count <= 64 {
                bref.check = CheckArea(bytes: name)
            } else {
                let block = name + [UInt8](repeating: 0, count: 1024 - name.count)
                bref.dataOffset = Blockref.dataOffset(try session.writeBlock(block, type: .dirent),
                                                      radix: HAMMER2.allocationMinRadix)
                bref.setCheck(over: block)
            }
            refs.append(bref)
        }
        return refs
    }

    /// An inode of the index: its filename is "0x%016x" of its inum and name_key the inum,
    /// as hammer2_inode_create_normal sets them (the directory entry holds the real name).
    private func writeIndexedInode(_ inode: PendingInode, blockset: [Blockref]) throws -> Blockref {
        let size = inode.content?.size ?? 0
        let embedded = inode.content != nil && size <= UInt64(HAMMER2.embeddedBytes)
        let name = inodeIndexName(inode.inum)
        var meta = metadata(of: inode)
        meta.size = size
        meta.nameKey = inode.inum
        meta.nameLength = UInt16(name.count)
        let content: InodeContent
        if embedded {
            meta.opFlags = InodeMeta.opFlagDirectData
            var bytes = [UInt8](repeating: 0, count: HAMMER2.embeddedBytes)
            if size > 0 {
                bytes.withUnsafeMutableBytes { inode.content!.fill(0, $0.mutableSliceFromStart(Int(size))) }
            }
            content = .embedded(bytes)
        } else {
            content = .blockset(blockset)
        }
        return try session.writeInode(InodeData(meta: meta, filename: name, content: content),
                                      key: inode.inum, methods: inode.brefMethods)
    }

    private func writeRoot(label: [UInt8], blockset: [Blockref], highestInum: UInt64) throws -> Blockref {
        let root = inodes[Self.rootInodeNumber]!
        var meta = metadata(of: root)
        meta.btime = session.spec.timestamp
        meta.opFlags = InodeMeta.opFlagPFSRoot
        meta.nameKey = DirectoryHash.key(for: label)
        meta.nameLength = UInt16(label.count)
        meta.pfsType = .master
        // What the kernel's flush stores: the next inum to hand out.
        meta.pfsInum = highestInum == Self.rootInodeNumber ? Self.emptyPFSInodeAllocator : highestInum + 1
        meta.pfsClusterID = session.uuids.next()
        meta.pfsFilesystemID = session.uuids.next()
        var bref = try session.writeInode(InodeData(meta: meta, filename: label, content: .blockset(blockset)),
                                          key: meta.nameKey, methods: Self.rootMethods)
        bref.flags = Blockref.flagPFSRoot
        bref.copyid = ImageBuilder.copyIDLocal
        bref.vradix = UInt8(HAMMER2.allocationMinRadix)
        return bref
    }

    /// The fields every inode shares: version, type, times, ownership, mode, links, methods.
    private func metadata(of inode: PendingInode) -> InodeMeta {
        let attributes = inode.attributes
        let now = session.spec.timestamp
        return InodeMeta(
            version: 1, rmajor: inode.rmajor, rminor: inode.rminor,
            ctime: attributes.ctime ?? now, mtime: attributes.mtime ?? now,
            uid: .unixID(attributes.uid), gid: .unixID(attributes.gid),
            type: inode.type, mode: (attributes.mode ?? inode.defaultMode) & 0o7777,
            inum: inode.inum, nlinks: inode.type == .directory ? 1 : inode.nlinks, iparent: inode.iparent,
            compAlgo: inode.compression.compAlgo, checkAlgo: inode.check.rawValue)
    }
}
