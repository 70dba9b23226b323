// The flush (hammer2_flush.c): writes everything changed since the last flush to new
// places, bottom-up — file data, directory entries, inodes into the PFS's inode index, the
// PFS root, the super-root, the freemap — waits for it to be durable, then writes the next
// volume header in rotation. Until that header is written the previous state is what a
// mount sees; a crash at any point leaves it intact. In-memory state is committed only
// after the header is written, so a failed flush can simply be retried.

import Dispatch
import Glibc
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format
import HAMMER2Trace

extension MutableFilesystem {
    /// Flushes if anything changed (sync, fsync, unmount, the periodic timer). The dirty
    /// file data is written first without the lock (Prewrite.swift), so that operations
    /// wait only for the flush's metadata.
    public func flush() throws {
        waitingForFlush?(1)
        defer { waitingForFlush?(-1) }
        try flushGate.withLock {
            try prewriteAndFlushLocked { try flushLocked() }
        }
    }

    /// For a writer past the dirty limit: a flush as above, unless one is running (then
    /// waiting for it is enough).
    func flushForDirtyLimit() throws {
        waitingForFlush?(1)
        defer { waitingForFlush?(-1) }
        if flushGate.try() {
            defer { flushGate.unlock() }
            try prewriteAndFlushLocked { try flushLocked() }
        } else {
            flushGate.withLock {}
        }
    }

    /// `allHeaderCopies` writes the new header to every copy instead of the next one in
    /// rotation (after bulkfree, no older header may point at freed space).
    /// `midOperation`: the flush runs inside an operation that holds nodes it has not
    /// finished changing (ensureSpace, a write past the dirty limit); clean nodes are then
    /// kept, since one the operation holds would otherwise leave the table and its coming
    /// changes would never be flushed.
    func flushLocked(allHeaderCopies: Bool = false, midOperation: Bool = false) throws {
        guard !readOnly else { return }
        guard allHeaderCopies || allocator.hasChanges || superRootChanged
                || mounted.values.contains(where: { $0.hasChanges }) else { return }
        let savedAllocator = allocator
        let started = Trace.now
        if Trace.isOn(.flush) {
            Trace.record(.flushStart, UInt64(mounted.values.reduce(0) { $0 + $1.changedNodes }), UInt64(dirtyDataBytes))
        }
        let sink = FlushSink(fs: self)
        do {
            try flushAll(allHeaderCopies: allHeaderCopies, dropCleanNodes: !midOperation, sink: sink)
        } catch {
            allocator = savedAllocator
            Trace.record(.flushEnd, UInt64(sink.blocksWritten), UInt64(sink.bytesWritten), Trace.now &- started,
                         UInt64((error as? EngineError)?.errno ?? EIO))
            throw error
        }
        dirtyEstimate.store(dirtyDataBytes, ordering: .relaxed)
        if !deferFreeingFlushedBlocks { flushedBlocks = [] }
        let duration = Trace.now &- started
        Trace.record(.flushEnd, UInt64(sink.blocksWritten), UInt64(sink.bytesWritten), duration, 0, header.mirrorTID)
        Trace.withSession { $0.flushed(nanoseconds: duration) }
        reclaimIfWorthIt()
    }

    private func flushAll(allHeaderCopies: Bool, dropCleanNodes: Bool, sink: FlushSink) throws {
        let tid = header.mirrorTID + 1
        var commits: [() -> Void] = []
        // Extra copies make the volume one DragonFly must not write (docs/copies.md).
        if volumeCopies > 1 { header.version = max(header.version, HAMMER2.volumeVersionCopies) }
        let shared = sharedMetadataCopies
        var superRootEdit = TreeEdit()
        for pfs in mounted.values where pfs.hasChanges {
            let rootBref = try flushPFS(pfs, tid: tid, sink: sink, commits: &commits)
            superRootEdit.puts.append(rootBref)
        }
        // The super-root inode: its blockset holds the PFS roots.
        let superMethods = superRootBref.methods
        for pending in pendingRoots {
            // hammer2_inode_create_pfs: the root inode's blockref takes the super-root's methods.
            var root = pending.inode
            if !pending.presigned, let keyID = Keyring.keyID(ofRoot: root.meta) {
                guard let keys = reader.keyring.keys(for: keyID) else {
                    throw EngineError.locked(keyID: keyID, what: "PFS \(String(decoding: root.filename, as: UTF8.self))")
                }
                root = keys.signRoot(root, generation: tid)
            }
            var bref = try writeInode(root, key: pending.key, methods: superMethods, tid: tid, sink: sink, copies: shared)
            bref.flags = Blockref.flagPFSRoot
            superRootEdit.puts.append(bref)
        }
        superRootEdit.removals += pendingRootRemovals.map { $0...$0 }
        let editor = TreeEditor(reader: reader, sink: sink, tid: tid, ownerMethods: superMethods, copies: shared)
        let superBlockset = try editor.apply(superRootEdit, to: superRoot.flushedContent.blockset)
        let superInode = InodeData(meta: superRoot.meta, filename: superRoot.filename, content: .blockset(superBlockset))
        var newSuperRootBref = try writeInode(superInode, key: 0, methods: superMethods, tid: tid, sink: sink, copies: shared)
        if newSuperRootBref.extraCopyCount == 0 { newSuperRootBref.copyid = superRootBref.copyid }
        newSuperRootBref.vradix = superRootBref.vradix
        newSuperRootBref.flags = superRootBref.flags

        try writeFreemapAndHeader(tid: tid, sink: sink, superRoot: newSuperRootBref, allCopies: allHeaderCopies)
        superRootBref = newSuperRootBref
        superRoot.flushedBref = newSuperRootBref
        superRoot.flushedContent = .blockset(superBlockset)
        superRoot.dirty = false
        pendingRoots = []
        pendingRootRemovals = []
        for commit in commits { commit() }
        restartIntentLog()
        if dropCleanNodes { for pfs in mounted.values { pfs.dropCleanNodesIfMany() } }
        flushCount += 1
    }

    /// Writes the changed freemap and a new header around the same trees (after bulkfree,
    /// which must work even when dirty data cannot be flushed for lack of space).
    func commitFreemapLocked(allHeaderCopies: Bool) throws {
        let tid = header.mirrorTID + 1
        let sink = FlushSink(fs: self)
        let savedAllocator = allocator
        do {
            try writeFreemapAndHeader(tid: tid, sink: sink, superRoot: nil, allCopies: allHeaderCopies)
        } catch {
            allocator = savedAllocator
            throw error
        }
    }

    /// The end of every flush: the changed freemap, the flush barrier, then the header
    /// (with the new super-root, or the old one when only the freemap changed).
    private func writeFreemapAndHeader(tid: UInt64, sink: FlushSink, superRoot: Blockref?, allCopies: Bool) throws {
        let freemap = try allocator.flush(tid: tid, copies: sharedMetadataCopies) { offset, bytes, copy in
            try sink.write(bytes, at: offset, run: copy)
        }
        try sink.drain()
        try volumes.synchronize()
        var newHeader = header
        newHeader.mirrorTID = tid
        newHeader.freemapTID = tid
        newHeader.allocatorFree = allocator.freeBytes
        if let superRoot { newHeader.superRootBlockset = padded([superRoot]) }
        newHeader.freemapBlockset = padded(freemap)
        try writeHeader(newHeader, allCopies: allCopies)
    }

    /// Writes `newHeader` to the next slot in rotation (or to every slot) and makes it the
    /// current header.
    private func writeHeader(_ newHeader: VolumeHeader, allCopies: Bool) throws {
        let slot = nextHeaderSlot()
        let encoded = newHeader.encoded()
        try volumes.writeHeader(encoded, slot: slot)
        if newHeader.version >= HAMMER2.volumeVersionCopies && volumes.volumes.count > 1 {
            try volumes.writeHeaderToOtherVolumes(newHeader, slot: slot)
        }
        try volumes.synchronize()
        if allCopies {
            for other in VolumeHeader.copyOffsets(deviceSize: volumes.volumes[0].size).indices
            where other != slot && UInt64(other) * HAMMER2.zoneBytes + (4 << 20) <= header.volumeSize {
                try volumes.writeHeader(encoded, slot: other)
                if newHeader.version >= HAMMER2.volumeVersionCopies && volumes.volumes.count > 1 {
                    try volumes.writeHeaderToOtherVolumes(newHeader, slot: other)
                }
            }
            try volumes.synchronize()
        }
        header = newHeader
        headerSlot = slot
    }

    /// hammer2_flush's header choice: the next copy that lies inside the volume.
    private func nextHeaderSlot() -> Int {
        let copies = VolumeHeader.copyOffsets(deviceSize: volumes.volumes[0].size)
        var next = headerSlot + 1
        if next >= HAMMER2.volumeHeaderCount || next >= copies.count
            || UInt64(next) * HAMMER2.zoneBytes + (4 << 20) > header.volumeSize {
            next = 0
        }
        return next
    }

    private func padded(_ refs: [Blockref]) -> [Blockref] {
        refs + [Blockref](repeating: .empty, count: max(0, HAMMER2.blocksetCount - refs.count))
    }

    /// Writes one PFS and returns its root inode's new blockref for the super-root.
    private func flushPFS(_ pfs: MountedPFS, tid: UInt64, sink: FlushSink, commits: inout [() -> Void]) throws -> Blockref {
        var indexEdit = TreeEdit()
        for inum in pfs.nodes.keys.sorted() where inum != PFS.rootInodeNumber {
            let node = pfs.nodes[inum]!
            guard node.hasChanges else { continue }
            if node.meta.nlinks == 0 {
                // Unlinked: out of the index. An open file keeps reading its old blocks.
                if node.flushedBref != nil { indexEdit.removals.append(inum...inum) }
                // Its attribute inode goes with it (processed later in this loop when
                // loaded: its number sorts after every ordinary one).
                if node.meta.attributeInode != 0 && !AttributeTable.isHolderNumber(inum) {
                    let holder = MountedPFS.attributeInodeNumber(of: inum)
                    if let loaded = pfs.nodes[holder] {
                        loaded.meta.nlinks = 0
                        loaded.dirty = true
                    } else {
                        indexEdit.removals.append(holder...holder)
                    }
                }
                commits.append { [unowned pfs] in
                    node.flushedBref = nil
                    node.dirty = false
                    node.clearEntryChanges()
                    if node.openCount == 0 { pfs.nodes.removeValue(forKey: inum) }
                }
                continue
            }
            let methods = Self.inodeMethods(node, sealed: pfs.keys != nil)
            let (content, meta) = try flushContent(node, pfs: pfs, methods: methods, tid: tid, sink: sink, commits: &commits)
            let bref = try writeInode(InodeData(meta: meta, filename: node.filename, content: content),
                                      key: inum, methods: methods, tid: tid, sink: sink, sealWith: pfs.keys,
                                      copies: Self.metadataCopies(node.meta.ncopies))
            indexEdit.puts.append(bref)
            commits.append { node.flushedBref = bref }
        }
        indexEdit.removals += pfs.destroyedInodes.map { $0...$0 }
        let destroyed = pfs.destroyedInodes
        commits.append { [unowned pfs] in pfs.destroyedInodes.subtract(destroyed) }
        // The root: its own directory entries and the inode index share its tree.
        let root = pfs.root
        // An encrypted PFS's root inode stays in clear (it holds the wrapped key); what it
        // points to is sealed.
        let treeMethods = pfs.keys != nil ? Self.sealedMethods : pfs.rootBref.methods
        let shared = sharedMetadataCopies
        var rootEdit = try direntEdit(root, methods: treeMethods, tid: tid, sink: sink, keys: pfs.keys, copies: shared)
        rootEdit.puts += indexEdit.puts
        rootEdit.removals += indexEdit.removals
        let editor = TreeEditor(reader: reader, sink: sink, tid: tid, ownerMethods: treeMethods, keys: pfs.keys, copies: shared)
        let blockset = try editor.apply(rootEdit, to: root.flushedContent.blockset)
        var meta = root.meta
        meta.pfsInum = max(meta.pfsInum, pfs.nextInodeNumber)
        var inode = InodeData(meta: meta, filename: root.filename, content: .blockset(blockset), keyRecord: pfs.keyRecord)
        if let keys = pfs.keys { inode = keys.signRoot(inode, generation: tid) }
        var bref = try writeInode(inode, key: pfs.rootBref.key, methods: pfs.rootBref.methods, tid: tid, sink: sink, copies: shared)
        bref.flags = pfs.rootBref.flags
        if bref.extraCopyCount == 0 { bref.copyid = pfs.rootBref.copyid }
        bref.vradix = pfs.rootBref.vradix
        let newRoot = bref
        let signed = pfs.keys != nil ? rootSigned : nil
        commits.append { [unowned pfs, reader] in
            signed?(pfs.label, inode.meta)  // durable now: the header naming it is written
            root.meta = meta
            root.flushedContent = .blockset(blockset)
            root.flushedBref = newRoot
            root.dirty = false
            root.clearEntryChanges()
            pfs.rootBref = newRoot
            pfs.disk = PFS(name: pfs.label, reader: reader, rootBref: newRoot, root: inode)
        }
        return bref
    }

    /// hammer2_xop_inode_create_det: an inode's blockref takes its (inherited) comp and
    /// check algorithms; non-data blockrefs never go without a check code.
    static func inodeMethods(_ node: Node, sealed: Bool) -> UInt8 {
        if sealed { return Blockref.methods(check: .xaes256gcm, compression: node.meta.compressionAlgorithm) }
        let check = node.meta.checkAlgorithm == .none ? CheckMethod.xxhash64 : node.meta.checkAlgorithm
        return Blockref.methods(check: check, compression: node.meta.compressionAlgorithm)
    }

    /// Copies of a file's metadata (inode, indirect blocks, long names): one more than its
    /// data's when it has copies (ZFS's ditto rule), capped where the blockref's check
    /// area runs out; a single copy otherwise, as DragonFly writes.
    static func metadataCopies(_ ncopies: UInt8) -> Int {
        ncopies <= 1 ? 1 : min(Int(ncopies) + 1, HAMMER2.maximumCopies)
    }

    /// The most copies any file of the volume asks for: the super-root's ncopies, which
    /// setcopies raises (0 on DragonFly's volumes: one).
    var volumeCopies: Int { max(1, Int(superRoot.meta.ncopies)) }

    /// Records that a file asks for `copies` (the super-root's ncopies is the volume's most).
    func raiseVolumeCopies(to copies: Int) {
        guard copies > volumeCopies else { return }
        superRoot.meta.ncopies = UInt8(copies)
        superRoot.dirty = true
    }

    /// Copies of metadata every file depends on: PFS roots, their trees (directory
    /// entries and the inode index), the super-root and the freemap.
    var sharedMetadataCopies: Int { Self.metadataCopies(UInt8(volumeCopies)) }

    /// Blockrefs in an encrypted PFS: the tag is the check code.
    static let sealedMethods = Blockref.methods(check: .xaes256gcm, compression: .none)
    /// Data blocks encoded at once in a file's flush: 4 MiB, enough to keep every core busy.
    static let flushBatchBlocks = 64
    /// The embedded data area of an empty file (one array: nodes of empty files share it).
    static let emptyEmbeddedData = [UInt8](repeating: 0, count: HAMMER2.embeddedBytes)

    /// Writes a node's data blocks or directory entries and returns its new content and
    /// the metadata to store with it.
    private func flushContent(_ node: Node, pfs: MountedPFS, methods: UInt8, tid: UInt64, sink: FlushSink,
                              commits: inout [() -> Void]) throws -> (InodeContent, InodeMeta) {
        var meta = node.meta
        let copies = Self.metadataCopies(node.meta.ncopies)
        let editor = TreeEditor(reader: reader, sink: sink, tid: tid, ownerMethods: methods, keys: pfs.keys, copies: copies)
        switch node.type {
        case .directory:
            let edit = try direntEdit(node, methods: methods, tid: tid, sink: sink, keys: pfs.keys, copies: copies)
            let blockset = try editor.apply(edit, to: node.flushedContent.blockset)
            commits.append {
                // Lookups of names the flush did not change find the same in the new tree.
                let kept = node.diskNames.keeping(changedKeys: Set(node.entryChanges.keys), addedNames: node.addedNames.keys)
                node.flushedContent = .blockset(blockset)
                node.diskNames = kept
                node.clearEntryChanges()
                node.dirty = false
            }
            return (.blockset(blockset), meta)
        case .regularFile, .softlink:
            let size = meta.size
            let content: InodeContent
            if case .embedded = node.flushedContent, size <= UInt64(HAMMER2.embeddedBytes) {
                // DIRECTDATA: up to 512 bytes live in the inode, uncompressed.
                var bytes = Self.emptyEmbeddedData  // shared by every empty file until written to
                if size > 0 {
                    let block = try pfs.loadBlock(node, 0).prefix(Int(size))
                    bytes.replaceSubrange(0..<block.count, with: block)
                }
                meta.opFlags |= InodeMeta.opFlagDirectData
                content = .embedded(bytes)
            } else {
                meta.opFlags &= ~InodeMeta.opFlagDirectData
                content = .blockset(try flushFileBlocks(node, pfs: pfs, editor: editor, tid: tid, sink: sink))
            }
            let heuristic = node.compressionHeuristic
            commits.append {
                node.flushedContent = content
                node.flushedSize = size
                node.diskLimit = .max
                self.flushedBlocks.append(node.clearDirtyBlocks())
                node.dirty = false
                node.compressionHeuristic = heuristic
            }
            return (content, meta)
        default:
            commits.append { node.dirty = false }
            return (node.flushedContent, meta)
        }
    }

    private func flushFileBlocks(_ node: Node, pfs: MountedPFS, editor: TreeEditor, tid: UInt64,
                                 sink: FlushSink) throws -> [Blockref] {
        let size = node.meta.size
        var edit = TreeEdit()
        var blocks = node.dirtyBlocks
        var base: [Blockref] = []
        switch node.flushedContent {
        case .embedded:
            // Leaving DIRECTDATA: the embedded bytes become block 0 (hammer2_extend_file).
            if blocks[0] == nil, min(node.flushedSize, node.diskLimit) > 0 { blocks[0] = try pfs.loadBlock(node, 0) }
        case let .blockset(refs):
            base = refs
        }
        let diskEnd = min(node.flushedSize, node.diskLimit)
        if node.diskLimit < node.flushedSize || size < node.flushedSize {
            // Blocks past the (earlier) truncation point are dead.
            let firstDead = (min(diskEnd, size) + logicalBlockBytes - 1) / logicalBlockBytes * logicalBlockBytes
            edit.removals.append(firstDead...UInt64.max)
        }
        var heuristic = node.compressionHeuristic
        let keys = pfs.keys
        let check = keys != nil ? CheckMethod.xaes256gcm : node.meta.checkAlgorithm
        var indices: [UInt64] = []
        for index in blocks.keys.sorted() where index * logicalBlockBytes < size {
            if let ready = node.prewritten[index] {
                // Encoded and written outside the lock (Prewrite.swift), if still current.
                let physical = DataBlockEncoding.physicalBytes(fileSize: size, blockOffset: index * logicalBlockBytes)
                if ready.source == blocks[index]! && ready.physical == physical {
                    var bref = ready.bref
                    bref.mirrorTID = tid
                    bref.modifyTID = tid
                    edit.puts.append(bref)
                    if node.readModifiedBlocks.contains(index) { reader.cacheWrittenData(bref, logical: Self.logical(ready.source, physical)) }
                    continue
                }
            }
            if blocks[index]!.isEmpty {
                // Punched (fallocate): a hole, whatever the compression setting.
                edit.removals.append((index * logicalBlockBytes)...(index * logicalBlockBytes + logicalBlockBytes - 1))
            } else {
                indices.append(index)
            }
        }
        // In batches, so a large file's flush holds one batch of encoded blocks beside its
        // dirty data, not a second copy of all of it (the sink writes as it goes).
        var batchStart = 0
        while batchStart < indices.count {
            let batch = Array(indices[batchStart..<min(indices.count, batchStart + Self.flushBatchBlocks)])
            batchStart += batch.count
            let logical = batch.map { index -> ArraySlice<UInt8> in
                let physical = DataBlockEncoding.physicalBytes(fileSize: size, blockOffset: index * logicalBlockBytes)
                return Self.logical(blocks[index]!, physical)[...]
            }
            let hints = batch.map { index in node.encodingHints[index].flatMap { $0.matching(blocks[index]!) } }
            let stored = DataBlockEncoding.encodeAll(logical, hints: hints, compAlgo: node.meta.compAlgo, check: check, heuristic: &heuristic)
            // Sealing runs on every core, like compression (each block has its own nonce).
            var sealedBlocks: [(block: [UInt8], check: CheckArea)?] = []
            if let keys {
                let results = ConcurrentResults<(block: [UInt8], check: CheckArea)>(count: stored.count)
                DispatchQueue.concurrentPerform(iterations: stored.count) { i in
                    guard let (bytes, methods) = stored[i] else { return }
                    results[i] = keys.sealData(bytes, type: .data, compression: CompressionMethod(rawValue: methods & 0x0F),
                                               key: batch[i] * logicalBlockBytes, keybits: UInt8(HAMMER2.allocationMaxRadix))
                }
                sealedBlocks = (0..<stored.count).map { results[$0] }
            }
            for (position, (index, encoded)) in zip(batch, stored).enumerated() {
                let offset = index * logicalBlockBytes
                guard let (bytes, methods) = encoded else {
                    edit.removals.append(offset...(offset + logicalBlockBytes - 1))  // all zeros: a hole
                    continue
                }
                var bref = Blockref(type: .data, methods: methods, key: offset, keybits: UInt8(HAMMER2.allocationMaxRadix), tid: tid)
                let copies = min(max(1, Int(node.meta.ncopies)), Blockref.copyCapacity(bref.checkMethod))
                if keys != nil, let (sealed, area) = sealedBlocks[position] {
                    // Compressed first, then sealed: the block's physical size shows only how
                    // well it compressed (docs/encryption.md).
                    bref.check = area
                    bref.place(try sink.writeNewBlock(sealed, type: .data, copies: copies))
                } else {
                    if check != .none { bref.setCheck(over: bytes) }
                    bref.place(try sink.writeNewBlock(bytes, type: .data, copies: copies))
                }
                if node.readModifiedBlocks.contains(index) { reader.cacheWrittenData(bref, logical: Array(logical[position])) }
                edit.puts.append(bref)
            }
        }
        node.compressionHeuristic = heuristic
        return try editor.apply(edit, to: base)
    }

    /// A dirty block as stored before encoding: cut or padded with zeros to `physical`.
    static func logical(_ block: [UInt8], _ physical: Int) -> [UInt8] {
        if block.count == physical { return block }
        return block.count > physical ? Array(block[0..<physical]) : block + [UInt8](repeating: 0, count: physical - block.count)
    }

    /// The tree edit for a directory's entry changes (long names get a 1 KiB block).
    private func direntEdit(_ dir: Node, methods: UInt8, tid: UInt64, sink: FlushSink, keys: PFSKeys?, copies: Int) throws -> TreeEdit {
        var edit = TreeEdit()
        let methods = keys != nil ? Self.sealedMethods : methods
        for (key, change) in dir.entryChanges.sorted(by: { $0.key < $1.key }) {
            guard let entry = change else {
                edit.removals.append(key...key)
                continue
            }
            var bref = Blockref(type: .dirent, methods: methods, key: key, tid: tid)
            (bref.embed0, bref.embed1) = Blockref.direntEmbed(inum: entry.inum, nameLength: entry.name.count, type: entry.type)
            if let keys {
                // Scheme 2: the length field holds a length class and the type is sealed.
                let sealedName = keys.sealDirentName(entry.name, type: entry.type, directory: dir.inum)
                (bref.embed0, bref.embed1) = Blockref.direntEmbed(inum: entry.inum, nameLength: sealedName.lengthField,
                                                                  type: sealedName.typeField)
                if let area = sealedName.area {
                    bref.check = CheckArea(bytes: area)
                } else if let block = sealedName.block {
                    let (sealed, area) = keys.sealData(block, type: .dirent, compression: .none, key: key)
                    bref.check = area
                    bref.place(try sink.writeNewBlock(sealed, type: .dirent, copies: min(copies, Blockref.copyCapacity(bref.checkMethod))))
                }
            } else if entry.name.count <= 64 {
                bref.check = CheckArea(bytes: entry.name)
            } else {
                let block = entry.name + [UInt8](repeating: 0, count: HAMMER2.inodeBytes - entry.name.count)
                bref.setCheck(over: block)
                bref.place(try sink.writeNewBlock(block, type: .dirent, copies: min(copies, Blockref.copyCapacity(bref.checkMethod))))
            }
            edit.puts.append(bref)
        }
        return edit
    }

    /// Writes one 1 KiB inode block and returns its blockref (statistics from its tree).
    private func writeInode(_ inode: InodeData, key: UInt64, methods: UInt8, tid: UInt64, sink: FlushSink,
                            sealWith keys: PFSKeys? = nil, copies: Int) throws -> Blockref {
        let bytes = inode.encoded()
        var bref = Blockref(type: .inode, methods: methods, key: key, tid: tid)
        let copies = min(copies, Blockref.copyCapacity(bref.checkMethod))
        if let keys {
            let (sealed, area) = keys.sealInode(bytes, hasBlockset: !inode.meta.hasDirectData, inum: key,
                                                compression: bref.compression)
            bref.check = area
            bref.place(try sink.writeNewBlock(sealed, type: .inode, copies: copies))
        } else {
            bref.setCheck(over: bytes)
            bref.place(try sink.writeNewBlock(bytes, type: .inode, copies: copies))
        }
        reader.cacheWritten(bref, plaintext: bytes)
        if case let .blockset(refs) = inode.content { SubtreeStatistics(children: refs).apply(to: &bref) }
        return bref
    }
}
