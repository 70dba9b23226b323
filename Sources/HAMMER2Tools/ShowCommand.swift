// hammer2 show / freemap / volhdr: raw media dumps of the topology, the freemap, and the
// volume headers, in the layout of DragonFly's cmd_debug.c (cmd_show, show_bref,
// show_volhdr). Unlike the verified engine path, this prints what is on the media and
// reports check-code failures inline, so it keeps going through damage.

import Foundation
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format

public struct ShowOptions {
    public var verbose = 0
    public var quiet = 0
    /// HAMMER2_SHOW_TAB
    public var tabStep = 2
    /// HAMMER2_SHOW_DEPTH (-1 = unlimited)
    public var depth = -1
    public var minimumMirrorTID: UInt64 = 0
    public var minimumModifyTID: UInt64 = 0
    public var allVolumeHeaders = false

    public init() {}

    /// Reads DragonFly's HAMMER2_SHOW_* environment knobs.
    public mutating func applyEnvironment(_ env: [String: String]) {
        if let v = env["HAMMER2_SHOW_ALL_VOLUME_HEADERS"], let n = Int(v), n != 0 { allVolumeHeaders = true }
        if let v = env["HAMMER2_SHOW_TAB"] { let n = Int(v) ?? 2; tabStep = (0...8).contains(n) ? n : 2 }
        if let v = env["HAMMER2_SHOW_DEPTH"] { let n = Int(v) ?? -1; depth = n < 0 ? -1 : n }
        if let v = env["HAMMER2_SHOW_MIN_MIRROR_TID"] { minimumMirrorTID = UInt64(v, radix: 16) ?? 0 }
        if let v = env["HAMMER2_SHOW_MIN_MODIFY_TID"] { minimumModifyTID = UInt64(v, radix: 16) ?? 0 }
    }
}

public enum ShowWhich { case topology, freemap, volumeHeader }

public final class ShowCommand {
    let volumes: VolumeSet
    let options: ShowOptions
    let out: TextOutput
    private var initialTab = -1
    // Freemap totals (indexes are the 2-bit states).
    private var accumulated16 = [UInt64](repeating: 0, count: 4)
    private var accumulated64 = [UInt64](repeating: 0, count: 4)
    private var totalUnavailable: UInt64 = 0
    private var totalFreemap: UInt64 = 0

    public init(volumes: VolumeSet, options: ShowOptions, out: TextOutput) {
        self.volumes = volumes
        self.options = options
        self.out = out
    }

    var allHeaders: Bool { options.verbose >= 3 || options.allVolumeHeaders }

    public func run(_ which: ShowWhich) {
        let volumeList = which == .volumeHeader ? volumes.volumes : [volumes.volumes[0]]
        for (position, volume) in volumeList.enumerated() {
            if position > 0 { out.write("---------------------------------------------\n") }
            out.write("\(volume.device.name)\n")
            for copy in VolumeSet.readHeaderCopies(volume.device) {
                guard let raw = try? volume.device.read(at: copy.deviceOffset, count: HAMMER2.volumeHeaderBytes),
                      let header = try? VolumeHeader(decoding: raw) else { continue }
                let validity = copy.problem.map { " (\($0))" } ?? ""
                out.write("Volume \(header.volumeID) header \(copy.index): mirror_tid=\(Text.hex(header.mirrorTID))\(validity)\n")
                guard allHeaders || copy.index == volume.headerIndex else { continue }
                var root = Blockref.empty
                root.dataOffset = copy.deviceOffset | UInt64(HAMMER2.allocationMaxRadix)
                root.mirrorTID = header.mirrorTID
                switch which {
                case .topology:
                    root.type = .volume
                    showBref(header, tab: 0, index: copy.index, root, norecurse: 0, media: raw)
                case .freemap:
                    root.type = .freemap
                    showBref(header, tab: 0, index: copy.index, root, norecurse: 0, media: raw)
                case .volumeHeader:
                    showVolumeHeader(header, raw: raw, index: copy.index)
                }
                if allHeaders && copy.index != HAMMER2.volumeHeaderCount - 1 { out.write("\n") }
            }
        }
        if which == .freemap && options.verbose < 3 {
            let gib = 1024.0 * 1024 * 1024
            func g(_ v: UInt64) -> String { String(format: "%6.3f", Double(v) / gib) }
            out.write("Total unallocated storage:   \(g(accumulated16[0]))GB (\(g(accumulated64[0]))GB in 64KB chunks)\n")
            out.write("Total possibly free storage: \(g(accumulated16[2]))GB (\(g(accumulated64[2]))GB in 64KB chunks)\n")
            out.write("Total allocated storage:     \(g(accumulated16[3]))GB (\(g(accumulated64[3]))GB in 64KB chunks)\n")
            out.write("Total unavailable storage:   \(g(totalUnavailable))GB\n")
            out.write("Total freemap storage:       \(g(totalFreemap))GB\n")
        }
        out.flush()
    }

    /// hammer2_get_volume_id
    func volumeID(_ dataOffset: UInt64) -> Int {
        let offset = dataOffset & ~HAMMER2.offsetRadixMask
        for v in volumes.volumes where offset >= v.logicalOffset && offset - v.logicalOffset < v.size { return v.id }
        return -1
    }

    /// Reads a block's bytes from the media without judging them.
    func media(_ bref: Blockref) -> [UInt8]? {
        let bytes = bref.physicalBytes
        guard bytes > 0 else { return [] }
        var data = [UInt8](repeating: 0, count: bytes)
        do {
            try data.withUnsafeMutableBytes { try volumes.read(into: $0, at: bref.mediaOffset) }
        } catch {
            return nil
        }
        return data
    }

    func showBref(_ header: VolumeHeader, tab: Int, index: Int, _ bref: Blockref, norecurse: Int, media given: [UInt8]? = nil) {
        if bref.mirrorTID < options.minimumMirrorTID { return }
        if bref.modifyTID < options.minimumModifyTID {
            if bref.modifyTID != 0 || (bref.type == .inode && bref.leafCount == 0) { return }
        }
        if initialTab == -1 { initialTab = tab }
        let bytes = bref.physicalBytes
        var data: [UInt8] = []
        if bytes > 0 {
            if bytes > HAMMER2.physicalBufferSize || bref.physicalRadix < 6 {
                out.write("(bad block size \(bytes))\n")
                return
            }
            if bref.type != .data || options.verbose >= 1 {
                guard let read = given ?? media(bref) else {
                    out.write("(media read failed)\n")
                    return
                }
                data = read
            }
        }
        let typeName = bref.type.description
        let typePad = max(0, 8 - typeName.count)
        var children: [Blockref] = []
        var inode: InodeData?
        switch bref.type {
        case .inode where bref.checkMethod == .xaes256gcm:
            // An encrypted PFS's inode: meta and name sealed, the blockset in clear.
            children = clearBlockset(ofSealedInode: data, bref: bref).flatMap { try? decodeBlockrefs($0) } ?? []
        case .inode:
            inode = try? InodeData(decoding: data)
            if let inode, !inode.meta.hasDirectData { children = inode.blockset }
        case .indirect, .freemapNode:
            children = (try? decodeBlockrefs(data)) ?? []
        case .volume:
            children = header.superRootBlockset
        case .freemap:
            children = header.freemapBlockset
        default:
            break
        }
        let childCount = children.count
        let indexText = Text.pad("\(index)", 3)
        if options.quiet > 0 {
            out.tab(tab, "\(typeName).\(indexText) \(Text.hex(bref.dataOffset)) \(Text.hex(bref.key))/\(Text.pad("\(bref.keybits)", 2)) "
                + "vol=\(volumeID(bref.dataOffset)) mir=\(Text.hex(bref.mirrorTID)) mod=\(Text.hex(bref.modifyTID)) leafcnt=\(bref.leafCount) ")
        } else {
            out.tab(tab, "\(typeName).\(indexText)\(String(repeating: " ", count: typePad)) \(Text.hex(bref.dataOffset)) \(Text.hex(bref.key))/\(Text.pad("\(bref.keybits)", 2)) ")
            out.write("\n")
            out.tab(tab + 13, "vol=\(volumeID(bref.dataOffset)) mir=\(Text.hex(bref.mirrorTID)) mod=\(Text.hex(bref.modifyTID)) lfcnt=\(bref.leafCount) ")
            if childCount > 0 || bref.flags != 0 || bref.type == .freemapNode || bref.type == .freemapLeaf {
                out.write("\n")
                out.tab(tab + 13, "")
            }
        }
        if childCount > 0 { out.write("bcnt=\(childCount) ") }
        if bref.flags != 0 { out.write("flags=\(Text.hex(UInt64(bref.flags), width: 2)) ") }
        // Not DragonFly's: the extra copies' data_off values (docs/copies.md).
        if bref.extraCopyCount > 0 {
            out.write("copies=" + (1...bref.extraCopyCount).map { Text.hex(bref.copyDataOffset($0)) }.joined(separator: ",") + " ")
        }
        if bref.type == .freemapNode || bref.type == .freemapLeaf {
            out.write("bigmask=\(Text.hex(UInt64(bref.check.freemapBigmask), width: 8)) avail=\(bref.check.freemapAvail) ")
        }
        var failed = false
        if bytes > 0 && (bref.type != .data || options.verbose >= 1) {
            if options.quiet <= 0 { out.write("\n"); out.tab(tab + 13, "") }
            let checkName = Text.checkMode(bref.methods >> 4)
            let compName = Text.compressionMode(bref.methods & 15)
            let verdict = data.withUnsafeBytes { CheckCode.verify(bref, $0) }
            switch (bref.checkMethod, verdict) {
            case (.none, _), (.disabled, _):
                out.write("meth=\(checkName)|\(compName) ")
            case let (.iscsi32, .mismatch(expected, computed)):
                out.write("(icrc \(checkName)|\(compName) \(expected)/\(computed) failed) "); failed = true
            case (.iscsi32, _):
                out.write("meth=\(checkName)|\(compName) iscsi32=\(Text.hex(UInt64(bref.check.iscsi32), width: 8)) ")
            case let (.xxhash64, .mismatch(expected, computed)):
                out.write("(xxhash64 \(checkName)|\(compName) \(expected)/\(computed) failed) "); failed = true
            case (.xxhash64, _):
                out.write("meth=\(checkName)|\(compName) xxh=\(Text.hex(bref.check.xxhash64)) ")
            case (.sha192, .mismatch):
                out.write("(sha192 \(checkName):\(compName) failed) "); failed = true
            case (.sha192, _):
                out.write("meth=\(checkName)|\(compName) ")
            case let (.freemap, .mismatch(expected, computed)):
                out.write("(fcrc \(checkName)|\(compName) \(expected)/\(computed) failed) "); failed = true
            case (.freemap, _):
                out.write("meth=\(checkName)|\(compName) fcrc=\(Text.hex(UInt64(bref.check.freemapCRC), width: 8)) ")
            case (.xaes256gcm, _):
                // The tag verifies only with the key (fsck_hammer2 -k).
                out.write("meth=xaes256gcm|\(compName) key=\(Text.hex(UInt64(SealedCheck(bref.check).keyID), width: 8)) ")
            default:
                break
            }
        }
        let inner = tab + options.tabStep
        var openedBrace = true
        if options.quiet > 0 {
            openedBrace = false
            out.write("\n")
        } else {
            switch bref.type {
            case .empty:
                if norecurse != 0 { out.write("\n") }
                openedBrace = false
            case .dirent:
                out.write("{\n")
                let length = bref.direntNameLength
                if bref.checkMethod == .xaes256gcm {
                    out.tab(inner, "filename (encrypted)\n")
                } else {
                    let name = length <= 64 ? Array(bref.check.bytes.prefix(length)) : Array(data.prefix(length))
                    out.tab(inner, "filename \"\(String(decoding: name, as: UTF8.self))\"\n")
                }
                out.tab(inner, "inum 0x\(Text.hex(bref.direntInodeNumber))\n")
                out.tab(inner, "nlen \(length)\n")
                out.tab(inner, "type \(Text.objectType(bref.direntType))\n")
            case .inode:
                out.write("{\n")
                if let inode {
                    printInode(inode, bref, tab: inner)
                } else if bref.checkMethod == .xaes256gcm {
                    out.tab(inner, "(encrypted inode: metadata and name sealed, blockset in clear)\n")
                } else {
                    out.tab(inner, "(inode block of \(data.count) bytes does not decode)\n")
                }
            case .indirect:
                out.write("{\n")
            case .volume, .freemap:
                out.write("mirror_tid=\(Text.hex(header.mirrorTID)) freemap_tid=\(Text.hex(header.freemapTID)) ")
                out.write("{\n")
            case .freemapNode:
                out.write("{\n")
                out.tab(inner, "rotation=\(rotation(bref))\n")
            case .freemapLeaf:
                out.write("{\n")
                out.tab(inner, "rotation=\(rotation(bref))\n")
                if let leaf = try? decodeFreemapLeaf(data) {
                    for (i, entry) in leaf.enumerated() {
                        let base = bref.key &+ UInt64(i) << UInt64(HAMMER2.freemapLevel0Radix)
                        let words = entry.bitmap.map { Text.hex($0) }.joined(separator: " ")
                        out.tab(inner + 4, "\(Text.hex(base)) \(String(format: "%04d", i)).\(Text.hex(UInt64(entry.allocationClass), width: 4)) "
                            + "linear=\(Text.hex(UInt64(UInt32(bitPattern: entry.linear)), width: 6)) avail=\(Text.hex(UInt64(entry.avail), width: 6)) \(words)\n")
                    }
                    out.tab(inner, "}\n")
                }
            default:
                out.write("\n")
                openedBrace = false
            }
        }
        if bref.type == .freemapLeaf, let leaf = try? decodeFreemapLeaf(data) {
            accumulateFreemap(header, bref, leaf)
        }
        let depthOK = options.depth == -1 || (options.tabStep > 0 && (inner - initialTab) / options.tabStep <= options.depth)
        if depthOK {
            for (i, child) in children.enumerated() where norecurse == 0 && child.type != .empty {
                showBref(header, tab: inner, index: i, child, norecurse: failed ? 1 : 0)
            }
        }
        if openedBrace {
            if bref.type == .inode {
                let name = inode.map { String(decoding: $0.filename, as: UTF8.self) } ?? ""
                out.tab(tab, "} (\(typeName).\(index), \"\(name)\")\n")
            } else {
                out.tab(tab, "} (\(typeName).\(index))\n")
            }
        }
    }

    func printInode(_ inode: InodeData, _ bref: Blockref, tab: Int) {
        let m = inode.meta
        out.tab(tab, "filename \"\(String(decoding: inode.filename, as: UTF8.self))\"\n")
        out.tab(tab, "version  \(m.version)\n")
        let isRoot = m.isPFSRoot || m.pfsType == .superRoot
        if isRoot { out.tab(tab, "pfs_st   \(m.pfsSubtype) (\(PFSSubtype.name(m.pfsSubtype)))\n") }
        out.tab(tab, "uflags   0x\(Text.hex(UInt64(m.uflags), width: 8))\n")
        if m.rmajor != 0 || m.rminor != 0 {
            out.tab(tab, "rmajor   \(m.rmajor)\n")
            out.tab(tab, "rminor   \(m.rminor)\n")
        }
        out.tab(tab, "ctime    \(Text.time64(m.ctime))\n")
        out.tab(tab, "mtime    \(Text.time64(m.mtime))\n")
        out.tab(tab, "atime    \(Text.time64(m.atime))\n")
        out.tab(tab, "btime    \(Text.time64(m.btime))\n")
        out.tab(tab, "uid      \(m.uid)\n")
        out.tab(tab, "gid      \(m.gid)\n")
        out.tab(tab, "type     \(Text.objectType(m.type))\n")
        out.tab(tab, "opflgs   0x\(Text.hex(UInt64(m.opFlags), width: 2))\n")
        out.tab(tab, "capflgs  0x\(Text.hex(UInt64(m.capFlags), width: 4))\n")
        out.tab(tab, "mode     \(Text.octal(m.mode))\n")
        out.tab(tab, "inum     0x\(Text.hex(m.inum))\n")
        out.tab(tab, "size     \(m.size) ")
        out.write(m.hasDirectData && m.size <= UInt64(HAMMER2.embeddedBytes) ? "(embedded data)\n" : "\n")
        out.tab(tab, "nlinks   \(m.nlinks)\n")
        out.tab(tab, "iparent  0x\(Text.hex(m.iparent))\n")
        out.tab(tab, "name_key 0x\(Text.hex(m.nameKey))\n")
        out.tab(tab, "name_len \(m.nameLength)\n")
        out.tab(tab, "ncopies  \(m.ncopies)\n")
        out.tab(tab, "compalg  \(Text.compressionMode(m.compAlgo))\n")
        out.tab(tab, "checkalg \(Text.checkMode(m.checkAlgo))\n")
        if !isRoot && m.attributeInode != 0 { out.tab(tab, "xattrs   inode 0x\(Text.hex(m.attributeInode))\n") }
        if AttributeTable.isHolderNumber(m.inum) {
            // A hidden attribute inode: its table, when it is small enough to sit in the inode.
            if case let .embedded(bytes) = inode.content, m.size <= UInt64(bytes.count),
               let table = try? Array(bytes.prefix(Int(m.size))).withUnsafeBytes({ try AttributeTable(decoding: $0) }) {
                out.tab(tab, "xattrs of inode 0x\(Text.hex(m.inum & ~AttributeTable.holderBit)): \(table.entries.count)\n")
                for (key, value) in table.entries.sorted(by: { $0.key < $1.key }) {
                    out.tab(tab + 4, AttributeText.describe(name: key.fullName, value: value) + "\n")
                }
            } else {
                out.tab(tab, "xattrs of inode 0x\(Text.hex(m.inum & ~AttributeTable.holderBit)): table of \(m.size) bytes in data blocks\n")
            }
        }
        if isRoot {
            out.tab(tab, "pfs_nmas \(m.pfsNMasters)\n")
            out.tab(tab, "pfs_type \(m.pfsType.rawValue) (\(m.pfsType))\n")
            out.tab(tab, "pfs_inum 0x\(Text.hex(m.pfsInum))\n")
            out.tab(tab, "pfs_clid \(m.pfsClusterID)\n")
            out.tab(tab, "pfs_fsid \(m.pfsFilesystemID)\n")
            out.tab(tab, "pfs_lsnap_tid 0x\(Text.hex(m.pfsLastSnapshotTID))\n")
        }
        out.tab(tab, "data_quota  \(m.dataQuota)\n")
        out.tab(tab, "data_count  \(bref.statsDataCount)\n")
        out.tab(tab, "inode_quota \(m.inodeQuota)\n")
        out.tab(tab, "inode_count \(bref.statsInodeCount)\n")
    }

    /// Which of the eight freemap rotations (HAMMER2_ZONE_FREEMAP_00 + 5 * n) holds a block.
    func rotation(_ bref: Blockref) -> Int {
        let withinSegment = bref.mediaOffset & ((1 << HAMMER2.freemapLevel0Radix) - 1)
        return (Int(withinSegment / UInt64(HAMMER2.physicalBufferSize)) - 1) / 5
    }

    func accumulateFreemap(_ header: VolumeHeader, _ bref: Blockref, _ leaf: [BitmapData]) {
        totalFreemap += 1 << UInt64(HAMMER2.freemapLevel1Radix)
        let totalSize = header.totalSize != 0 ? header.totalSize : header.volumeSize
        for (i, entry) in leaf.enumerated() {
            let offset = bref.key &+ UInt64(i) << UInt64(HAMMER2.freemapLevel0Radix)
            guard offset >= header.auxEnd && offset < totalSize else {
                totalUnavailable += 1 << UInt64(HAMMER2.freemapLevel0Radix)
                continue
            }
            for word in entry.bitmap {
                for group in 0..<8 {
                    let byte = UInt8(truncatingIfNeeded: word >> UInt64(group * 8))
                    var fields = [Int]()
                    for f in 0..<4 { fields.append(Int((byte >> UInt8(f * 2)) & 3)) }
                    for f in fields { accumulated16[f] += 16_384 }
                    if fields.allSatisfy({ $0 == fields[0] }) { accumulated64[fields[0]] += 65_536 }
                }
            }
        }
    }

    func showVolumeHeader(_ h: VolumeHeader, raw: [UInt8], index: Int) {
        let mib = 1024.0 * 1024, gib = mib * 1024
        func f(_ v: Double) -> String { String(format: "%6.2f", v) }
        out.write("\nVolume \(h.volumeID) header \(index) {\n")
        out.write("    magic          0x\(Text.hex(h.magic))\n")
        out.write("    boot_beg       0x\(Text.hex(h.bootBegin))\n")
        out.write("    boot_end       0x\(Text.hex(h.bootEnd)) (\(f(Double(h.bootEnd &- h.bootBegin) / mib))MB)\n")
        out.write("    aux_beg        0x\(Text.hex(h.auxBegin))\n")
        out.write("    aux_end        0x\(Text.hex(h.auxEnd)) (\(f(Double(h.auxEnd &- h.auxBegin) / mib))MB)\n")
        out.write("    volu_size      0x\(Text.hex(h.volumeSize)) (\(f(Double(h.volumeSize) / gib))GB)\n")
        out.write("    version        \(h.version)\n")
        out.write("    flags          0x\(Text.hex(UInt64(h.flags), width: 8))\n")
        out.write("    copyid         \(h.copyid)\n")
        out.write("    freemap_vers   \(h.freemapVersion)\n")
        out.write("    peer_type      \(h.peerType)\n")
        out.write("    volu_id        \(h.volumeID)\n")
        out.write("    nvolumes       \(h.volumeCount)\n")
        out.write("    fsid           \(h.fsid)\n")
        out.write("    fstype         \(h.fstype)\n")
        out.write("                   (\(h.fstype.description == HAMMER2.fstypeUUIDString ? "DragonFly HAMMER2" : "?"))\n")
        out.write("    allocator_size 0x\(Text.hex(h.allocatorSize)) (\(f(Double(h.allocatorSize) / gib))GB)\n")
        out.write("    allocator_free 0x\(Text.hex(h.allocatorFree)) (\(f(Double(h.allocatorFree) / gib))GB)\n")
        out.write("    allocator_beg  0x\(Text.hex(h.allocatorBegin)) (\(f(Double(h.allocatorBegin) / gib))GB)\n")
        out.write("    mirror_tid     0x\(Text.hex(h.mirrorTID))\n")
        raw.withUnsafeBytes { r in
            out.write("    reserved0080   0x\(Text.hex(r.le64(0x80)))\n")
            out.write("    reserved0088   0x\(Text.hex(r.le64(0x88)))\n")
            out.write("    freemap_tid    0x\(Text.hex(h.freemapTID))\n")
            out.write("    bulkfree_tid   0x\(Text.hex(h.bulkfreeTID))\n")
            for i in 0..<4 { out.write("    reserved00A0/\(i) 0x\(Text.hex(r.le64(0xA0 + i * 8)))\n") }
        }
        out.write("    total_size     0x\(Text.hex(h.totalSize))\n")
        out.write("    copyexists    " + h.copyExists.map { " 0x\(Text.hex(UInt64($0), width: 2))" }.joined() + "\n")
        out.write("\n")
        raw.withUnsafeBytes { r in
            for i in 0..<8 {
                out.write("    icrc_sects[\(i)]  ")
                let stored = h.sectorCRCs[i]
                if i == VolumeHeader.sect0CRCIndex || i == VolumeHeader.sect1CRCIndex {
                    let computed = i == VolumeHeader.sect0CRCIndex ? CRC32C.checksum(r.slice(0, 508)) : CRC32C.checksum(r.slice(512, 512))
                    out.write("0x\(Text.hex(UInt64(computed), width: 8))/0x\(Text.hex(UInt64(stored), width: 8))")
                    out.write(computed == stored ? " (OK)" : " (FAILED)")
                } else {
                    out.write("0x\(Text.hex(UInt64(stored), width: 8)) (reserved)")
                }
                out.write("\n")
            }
            let computed = CRC32C.checksum(r.slice(0, HAMMER2.volumeHeaderBytes - 4))
            out.write("    icrc_volhdr    0x\(Text.hex(UInt64(computed), width: 8))/0x\(Text.hex(UInt64(h.volumeHeaderCRC), width: 8))")
            out.write(computed == h.volumeHeaderCRC ? " (OK)\n" : " (FAILED - not a critical error)\n")
        }
        out.write("\n")
        out.write("    sroot_blockset {\n")
        for (i, bref) in h.superRootBlockset.enumerated() { showBref(h, tab: 16, index: i, bref, norecurse: 2) }
        out.write("    }\n")
        out.write("    freemap_blockset {\n")
        for (i, bref) in h.freemapBlockset.enumerated() { showBref(h, tab: 16, index: i, bref, norecurse: 2) }
        out.write("    }\n")
        if h.volumeOffsets.contains(where: { $0 != 0 }) {
            out.write("\n")
            for (i, offset) in h.volumeOffsets.enumerated() where offset != UInt64.max {
                out.write("    volu_loff[\(i)]   0x\(Text.hex(offset))\n")
            }
        }
        out.write("}\n")
    }
}
