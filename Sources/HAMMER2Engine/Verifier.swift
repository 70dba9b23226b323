// The checks behind fsck_hammer2. Three passes over what the media holds:
//
//   1. Block trees (the volume topology from the super-root, and the freemap): every
//      reachable blockref's type, size, key range inside its parent, media read, check
//      code, and decodability (inodes decode, indirect blocks are whole blockrefs,
//      compressed data decompresses, long dirent names are present).
//   2. Namespace, per PFS: every directory entry names an inode that exists with the same
//      type, no directory is reachable twice, non-directory link counts equal the number
//      of entries naming them; unreachable inodes (orphans) are reported, not failed.
//      Extended attributes: each attribute inode belongs to a reachable owner that names
//      it, and its table decodes; an owner naming a missing one is a problem.
//   3. Freemap agreement: every block the topology references is marked allocated; space
//      marked allocated that nothing references is reported as a leak (bulkfree reclaims).
//
// It only reads. A block that fails its check is not descended into unless `force`.

import HAMMER2Codecs
import HAMMER2Encryption
import HAMMER2Format

public struct VerifyCounts: Sendable {
    public var total = 0, inode = 0, indirect = 0, data = 0, dirent = 0, empty = 0
    /// Encrypted blocks whose tag was verified, and those walked without their key.
    public var authenticated = 0, sealedWithoutKey = 0
    public var freemapNode = 0, freemapLeaf = 0
    /// Copies of blocks with extra copies that failed (another copy may be good).
    public var badCopies = 0
    public var bytes: UInt64 = 0
}

public struct VerifyProblem: Sendable, CustomStringConvertible {
    public var bref: Blockref?
    public var message: String

    public var description: String {
        guard let bref else { return message }
        return "\(hex(bref.dataOffset, 16)) \(bref.type.description.padding(toLength: 12, withPad: " ", startingAt: 0)) "
            + "\(hex(bref.key, 16))/\(String(bref.keybits).padding(toLength: 2, withPad: " ", startingAt: 0)) \(message)"
    }
}

public struct NamespaceReport: Sendable {
    public var pfs: String
    public var directories = 0, files = 0, others = 0
    /// Inodes with extended attributes, and the attributes they hold.
    public var attributeOwners = 0, attributes = 0
    public var orphans: [UInt64] = []
    public var problems: [VerifyProblem] = []
}

public struct FreemapReport: Sendable {
    public var referencedBytes: UInt64 = 0
    public var leakedBytes: UInt64 = 0
    public var problems: [VerifyProblem] = []
}

public final class Verifier {
    public enum TreeKind { case topology, freemap }

    public let volumes: VolumeSet
    public var countEmpty = false
    public var force = false
    /// Called every 100 blockrefs with the running counts (progress display).
    public var progress: ((VerifyCounts) -> Void)?

    /// Physical ranges the topology references, collected by `verifyTree(.topology)`.
    public private(set) var referencedRanges: [(offset: UInt64, bytes: Int)] = []
    /// Freemap leaves found by `verifyTree(.freemap)`, by the 1 GiB base they describe.
    public private(set) var freemapLeaves: [UInt64: [BitmapData]] = [:]
    private var freemapBlockRanges: [(offset: UInt64, bytes: Int)] = []

    /// Keys for encrypted PFSes: their blocks' tags are verified; without a key only the
    /// structure (which is stored in clear) is checked.
    public var keyring: Keyring?

    public init(volumes: VolumeSet) { self.volumes = volumes }

    // MARK: Pass 1: block trees

    public func verifyTree(_ kind: TreeKind, header: VolumeHeader) -> (VerifyCounts, [VerifyProblem]) {
        var counts = VerifyCounts()
        var problems: [VerifyProblem] = []
        let roots = kind == .topology ? header.superRootBlockset : header.freemapBlockset
        for bref in roots {
            visit(bref, kind, parent: 0...UInt64.max, depth: 0, &counts, &problems)
        }
        return (counts, problems)
    }

    /// `keptReceive`: under the root of an interrupted raw receive (RawReceive.swift), whose
    /// own indirect blocks (clear, key 0, 64 key bits) hold sealed subtrees of several
    /// trees side by side: their key ranges may overlap until the receive completes.
    private func visit(_ bref: Blockref, _ kind: TreeKind, parent: ClosedRange<UInt64>, depth: Int,
                       _ counts: inout VerifyCounts, _ problems: inout [VerifyProblem], keptReceive: Bool = false) {
        if bref.type == .empty {
            if countEmpty { counts.empty += 1; counts.total += 1 }
            return
        }
        counts.total += 1
        counts.bytes += UInt64(bref.physicalBytes)
        if counts.total % 100 == 0 { progress?(counts) }
        func problem(_ message: String) { problems.append(VerifyProblem(bref: bref, message: message)) }

        switch (kind, bref.type) {
        case (.topology, .inode): counts.inode += 1
        case (.topology, .indirect): counts.indirect += 1
        case (.topology, .data): counts.data += 1
        case (.topology, .dirent): counts.dirent += 1
        case (.freemap, .freemapNode): counts.freemapNode += 1
        case (.freemap, .freemapLeaf): counts.freemapLeaf += 1
        default:
            return problem("Invalid blockref type \(bref.type.rawValue)")
        }
        guard depth <= BlockTree.maximumDepth else { return problem("Tree deeper than \(BlockTree.maximumDepth) levels") }
        guard parent.contains(bref.key), parent.contains(bref.keyEnd) else {
            return problem("Key range outside parent's \(hex(parent.lowerBound, 16))-\(hex(parent.upperBound, 16))")
        }
        let radix = bref.physicalRadix
        if radix == 0 {
            if bref.type != .dirent || bref.direntNameLength > 64 { problem("No media block") }
            if bref.type == .dirent { checkDirentName(bref, nil, problem) }
            return
        }
        guard (HAMMER2.allocationMinRadix...HAMMER2.allocationMaxRadix).contains(radix),
              (bref.mediaOffset & 0xFFFF) + UInt64(bref.physicalBytes) <= 0x10000 else {
            return problem("Bad I/O bytes (radix \(radix))")
        }
        // Every copy is read and checked; the walk goes on with the first good one.
        var data: [UInt8] = []
        var checkFailed = true
        var locked = false
        var badCopies: [String] = []
        for copy in 0..<bref.copyCount {
            let offset = bref.copyDataOffset(copy) & HAMMER2.offsetMask
            let label = bref.copyCount > 1 ? "copy \(copy) at \(hex(offset, 16)): " : ""
            guard (offset & 0xFFFF) + UInt64(bref.physicalBytes) <= 0x10000 else {
                badCopies.append("\(label)crosses a 64 KiB boundary")
                continue
            }
            var bytes = [UInt8](repeating: 0, count: bref.physicalBytes)
            do {
                try bytes.withUnsafeMutableBytes { try volumes.read(into: $0, at: offset) }
            } catch {
                badCopies.append("\(label)Failed to read media: \(error)")
                continue
            }
            if kind == .topology {
                referencedRanges.append((offset, bref.physicalBytes))
            } else {
                freemapBlockRanges.append((offset, bref.physicalBytes))
            }
            var good = true
            switch bytes.withUnsafeBytes({ CheckCode.verify(bref, $0) }) {
            case .valid, .unchecked: break
            case .sealed:
                guard let keys = keyring?.keys(for: SealedCheck(bref.check).keyID) else {
                    locked = true
                    break
                }
                do {
                    bytes = try keys.open(bytes, bref: bref)
                } catch {
                    good = false
                    badCopies.append("\(label)Bad HAMMER2_CHECK_XAES256GCM: \(error)")
                }
            case .mismatch:
                good = false
                badCopies.append("\(label)Bad HAMMER2_CHECK_\(checkName(bref.checkMethod))")
            case let .unknownMethod(code):
                good = false
                badCopies.append("\(label)Unknown check method \(code)")
            }
            if good && checkFailed {
                data = bytes
                checkFailed = false
            } else if data.isEmpty {
                data = bytes  // for -f (force): descend into a bad block
            }
        }
        for message in badCopies { problem(message) }
        if bref.copyCount > 1 { counts.badCopies += badCopies.count }
        if !checkFailed {
            if locked { counts.sealedWithoutKey += 1 } else if bref.checkMethod == .xaes256gcm { counts.authenticated += 1 }
        }
        if data.isEmpty { return }
        if checkFailed && !force { return }

        var children: [Blockref] = []
        var keptReceiveRoot = false
        switch bref.type {
        case .inode where locked:
            if let clear = clearBlockset(ofSealedInode: data, bref: bref) {
                guard let refs = try? decodeBlockrefs(clear) else { return problem("Sealed inode's blockset does not decode") }
                children = refs
            }
        case .inode:
            guard data.count == HAMMER2.inodeBytes, let inode = try? InodeData(decoding: data) else {
                return problem("Inode block of \(data.count) bytes does not decode")
            }
            if !inode.meta.hasDirectData { children = inode.blockset }
            keptReceiveRoot = inode.meta.isPFSRoot && inode.filename.starts(with: Array(".receive.".utf8))
        case .indirect, .freemapNode:
            guard data.count % HAMMER2.blockrefBytes == 0, let refs = try? decodeBlockrefs(data) else {
                return problem("Indirect block of \(data.count) bytes")
            }
            children = refs
        case .data where locked, .dirent where locked:
            break
        case .data:
            checkDecompression(bref, data, problem)
        case .dirent:
            checkDirentName(bref, data, problem)
        case .freemapLeaf:
            if let leaf = try? decodeFreemapLeaf(data) {
                freemapLeaves[bref.key & ~((1 << UInt64(HAMMER2.freemapLevel1Radix)) - 1)] = leaf
            } else {
                problem("Freemap leaf of \(data.count) bytes")
            }
        default:
            break
        }
        // An inode's blockset spans the whole key space; an indirect block spans its own range.
        let range = bref.type == .inode ? 0...UInt64.max : bref.key...bref.keyEnd
        let keptLevel = (keptReceiveRoot || (keptReceive && bref.type == .indirect && bref.checkMethod != .xaes256gcm))
            && children.allSatisfy { $0.type == .empty || $0.checkMethod == .xaes256gcm || Self.isKeptReceiveIndex($0) }
        if !keptLevel {
            do {
                _ = try BlockTree.orderedChildren(children, parentRange: range, insideIndirect: bref.type != .inode)
            } catch {
                // Overlapping or self-similar children: descending could take forever.
                return problem("Bad child key ranges: \(error)")
            }
        }
        for child in children {
            visit(child, kind, parent: range, depth: depth + 1, &counts, &problems, keptReceive: keptLevel)
        }
    }

    static func isKeptReceiveIndex(_ bref: Blockref) -> Bool {
        bref.type == .indirect && bref.key == 0 && bref.keybits == 64 && bref.checkMethod != .xaes256gcm
    }

    private func checkName(_ method: CheckMethod) -> String {
        switch method {
        case .iscsi32: return "ISCSI32"
        case .xxhash64: return "XXHASH64"
        case .sha192: return "SHA192"
        case .freemap: return "FREEMAP"
        default: return "\(method.rawValue)"
        }
    }

    private func checkDecompression(_ bref: Blockref, _ data: [UInt8], _ problem: (String) -> Void) {
        do {
            switch bref.compression {
            case .none, .autozero: return
            case .lz4: _ = try data.withUnsafeBytes { try Decompressor.lz4($0) }
            case .zlib: _ = try data.withUnsafeBytes { try Decompressor.zlib($0) }
            default: problem("Unknown compression method \(bref.compression.rawValue)")
            }
        } catch {
            problem("Data does not decompress: \(error)")
        }
    }

    private func checkDirentName(_ bref: Blockref, _ data: [UInt8]?, _ problem: (String) -> Void) {
        let length = bref.direntNameLength
        if length == 0 || length > HAMMER2.inodeMaxName { return problem("Bad name length \(length)") }
        if length > 64 && (data?.count ?? 0) < length { problem("Name block shorter than name length \(length)") }
    }

    // MARK: Pass 2: namespace

    public func verifyNamespace(_ pfs: PFS) -> NamespaceReport {
        var report = NamespaceReport(pfs: pfs.name)
        var linksFound: [UInt64: Int] = [:]
        var inodes: [UInt64: InodeData] = [:]
        var visitedDirectories: Set<UInt64> = [PFS.rootInodeNumber]
        var pending: [(UInt64, InodeData)] = [(PFS.rootInodeNumber, pfs.root)]
        // Owner -> the attribute inode it names (the root's is found by number).
        var attributePointers: [UInt64: UInt64] = [:]
        report.directories = 1
        func problem(_ message: String) { report.problems.append(VerifyProblem(bref: nil, message: "PFS \(pfs.name): \(message)")) }
        while let (dirInum, dir) = pending.popLast() {
            var entries: [DirectoryEntry] = []
            do {
                try pfs.readDirectory(dir, from: 0) { entries.append($0); return true }
            } catch {
                problem("directory inode \(dirInum) cannot be listed: \(error)")
                continue
            }
            for entry in entries {
                let name = String(decoding: entry.name, as: UTF8.self)
                if entry.name.contains(0) || entry.name.contains(UInt8(ascii: "/")) {
                    problem("entry \"\(name)\" in directory \(dirInum) contains NUL or '/'")
                }
                let inode: InodeData
                do {
                    inode = try pfs.inode(entry.inum)
                } catch {
                    problem("entry \"\(name)\" in directory \(dirInum) names inode \(entry.inum): \(error)")
                    continue
                }
                if inode.meta.attributeInode != 0 { attributePointers[entry.inum] = inode.meta.attributeInode }
                if inode.meta.type != entry.type {
                    problem("entry \"\(name)\" in directory \(dirInum) says \(entry.type) but inode \(entry.inum) is \(inode.meta.type)")
                }
                if inode.meta.type == .directory {
                    guard visitedDirectories.insert(entry.inum).inserted else {
                        problem("directory inode \(entry.inum) is reachable more than once (\"\(name)\" in \(dirInum))")
                        continue
                    }
                    report.directories += 1
                    pending.append((entry.inum, inode))
                } else {
                    linksFound[entry.inum, default: 0] += 1
                    inodes[entry.inum] = inode
                    if inode.meta.type == .regularFile { report.files += 1 } else { report.others += 1 }
                }
            }
        }
        for (inum, count) in linksFound.sorted(by: { $0.key < $1.key }) {
            let nlinks = inodes[inum]!.meta.nlinks
            if nlinks != UInt64(count) { problem("inode \(inum) has nlinks \(nlinks) but \(count) directory entries") }
        }
        var holders: [UInt64] = []
        do {
            try pfs.tree.forEachLeaf(in: pfs.root.blockset, from: 0, through: HAMMER2.dirhashVisible - 1) { bref in
                guard bref.type == .inode else { return true }
                if AttributeTable.isHolderNumber(bref.key) {
                    holders.append(bref.key)
                } else if !visitedDirectories.contains(bref.key) && linksFound[bref.key] == nil
                    // An encrypted PFS's key history (inode 2) is in no directory by design.
                    && !(pfs.isEncrypted && bref.key == KeyHistory.inodeNumber) {
                    report.orphans.append(bref.key)
                }
                return true
            }
        } catch {
            problem("inode index cannot be walked: \(error)")
        }
        let holderSet = Set(holders)
        for holder in holders {
            let owner = holder & ~AttributeTable.holderBit
            let reachable = visitedDirectories.contains(owner) || linksFound[owner] != nil
            guard reachable, owner == PFS.rootInodeNumber || attributePointers[owner] == holder else {
                // Left behind by an owner removed while its attributes were not loaded:
                // bulkfree-style garbage, reported as an orphan like any unreachable inode.
                report.orphans.append(holder)
                continue
            }
            do {
                let inode = try pfs.inode(holder)
                let bytes = try pfs.read(inode, offset: 0, count: Int(inode.meta.size))
                let table = try bytes.withUnsafeBytes { try AttributeTable(decoding: $0) }
                report.attributeOwners += 1
                report.attributes += table.entries.count
            } catch {
                problem("extended attributes of inode \(owner) (attribute inode \(hex(holder, 16))): \(error)")
            }
        }
        for (owner, holder) in attributePointers.sorted(by: { $0.key < $1.key }) where !holderSet.contains(holder) {
            problem("inode \(owner) names attribute inode \(hex(holder, 16)), which does not exist")
        }
        if pfs.isEncrypted {
            do { _ = try pfs.keyHistory() } catch { problem("\(error)") }
        }
        return report
    }

    // MARK: Pass 3: freemap agreement

    /// Counts another zone's references as in use too: older volume-header copies still
    /// point at their trees, whose blocks stay allocated until bulkfree runs.
    public func addReferences(from other: Verifier) {
        guard other !== self else { return }
        referencedRanges += other.referencedRanges
    }

    /// Compares the references collected by the topology and freemap passes with the freemap.
    public func verifyFreemapAgreement(header: VolumeHeader) -> FreemapReport {
        var report = FreemapReport()
        // An empty freemap is fine for a filesystem that allocated nothing dynamically;
        // any block in use beyond allocator_beg is then reported as not covered.
        let blockBytes = UInt64(1) << UInt64(HAMMER2.freemapBlockRadix)
        func state(_ offset: UInt64) -> FreemapBlockState? {
            let leafBase = offset & ~((UInt64(1) << UInt64(HAMMER2.freemapLevel1Radix)) - 1)
            guard let leaf = freemapLeaves[leafBase] else { return nil }
            let entry = Int((offset >> UInt64(HAMMER2.freemapLevel0Radix)) & 0xFF)
            let block = Int((offset >> UInt64(HAMMER2.freemapBlockRadix)) & 0xFF)
            return leaf[entry].state(ofBlock: block)
        }
        var referencedBlocks = Set<UInt64>()
        var uniqueRanges = Set<UInt64>()
        for (offset, bytes) in referencedRanges {
            // Several header copies reference the same blocks: count each once.
            if uniqueRanges.insert(offset | UInt64(bytes.trailingZeroBitCount)).inserted { report.referencedBytes += UInt64(bytes) }
            var block = offset & ~(blockBytes - 1)
            while block < offset + UInt64(bytes) {
                referencedBlocks.insert(block)
                block += blockBytes
            }
        }
        // DragonFly's bulkfree leaves the freemap alone below allocator_beg (rounded up to a
        // 4 MiB segment): newfs's initial allocations there are not tracked by it.
        let segmentMask = (UInt64(1) << UInt64(HAMMER2.freemapLevel0Radix)) - 1
        let trackedFrom = (header.allocatorBegin + segmentMask) & ~segmentMask
        var reported = 0
        for block in referencedBlocks.sorted() where block >= header.allocatorBegin {
            let s = state(block)
            guard s != .allocated else { continue }
            reported += 1
            if reported <= 100 {
                let what = s == nil ? "not covered by any freemap leaf"
                    : (s == .free ? "marked free in the freemap" : "marked possibly free in the freemap")
                report.problems.append(VerifyProblem(bref: nil, message: "block \(hex(block, 16)) is in use but \(what)"))
            }
        }
        if reported > 100 {
            report.problems.append(VerifyProblem(bref: nil, message: "... \(reported - 100) more blocks in use but not marked allocated"))
        }
        // Leaks: allocated 16 KiB blocks that nothing in the topology references, outside the
        // reserved first 4 MiB of every 1 GiB (H2FMZONEBASE: volume header copies, freemap
        // rotations) and below the tracked start.
        let zoneReserved = UInt64(4 << 20)
        let reservedPeriod = UInt64(1) << UInt64(HAMMER2.freemapLevel1Radix)
        // A leaf covers 1 GiB: on a volume that ends inside it, the space past the end is
        // marked allocated (it cannot be handed out) and is no leak.
        let volumeEnd = volumes.totalSize
        for (base, leaf) in freemapLeaves {
            for (entryIndex, entry) in leaf.enumerated() {
                let entryBase = base + UInt64(entryIndex) << UInt64(HAMMER2.freemapLevel0Radix)
                if entryBase % reservedPeriod < zoneReserved || entryBase < trackedFrom { continue }
                for b in 0..<BitmapData.blocksPerEntry where entry.state(ofBlock: b) == .allocated {
                    let block = entryBase + UInt64(b) * blockBytes
                    if block < volumeEnd && !referencedBlocks.contains(block) { report.leakedBytes += blockBytes }
                }
            }
        }
        return report
    }
}
