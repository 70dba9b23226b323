// Builds a single-volume HAMMER2 image file from an ImageSpec, following the layout
// DragonFly's newfs_hammer2 and kernel write path produce (see docs/format.md and the
// fixtures' README):
//
//   volume header (copies at 0, 2, 4, 6 GiB that fit)
//     sroot_blockset -> super-root inode (inum 0, SUPROOT)
//       blockset -> one inode per PFS, keyed by the directory hash of its label
//         PFS root inode (inum 1, OPFLAG_PFSROOT, MASTER)
//           block tree -> INODE blockrefs keyed by inum (the inode index, inums >= 1024)
//                      -> DIRENT blockrefs of the root directory (keys with bit 63 set)
//             each directory inode -> DIRENTs; each file/symlink inode -> DATA blocks
//     freemap_blockset -> FREEMAP_LEAF per 1 GiB that holds allocations
//
// Work order: all file data first (so large files are contiguous), then directory entries,
// then inode blocks bottom-up (a parent's blockref statistics sum its children's), then the
// PFS roots, the super-root, the freemap and last the volume headers.

import Foundation
import HAMMER2Format

public enum ImageBuilder {
    /// Writes the image described by `spec` to `path` (created or truncated, sparse).
    public static func build(_ spec: ImageSpec, at path: String) throws -> BuiltImage {
        try ImageBuildSession(spec: spec, path: path).run()
    }

    /// The transaction id stamped on every blockref and the volume header (newfs_hammer2
    /// uses 16 for everything it writes).
    static let transactionID: UInt64 = 16
    /// allocator_beg: allocations start right after the reserved first 4 MiB (no boot or
    /// aux area is set aside).
    static let allocatorBegin: UInt64 = 4 << 20
    /// DMSG_PEER_HAMMER2, as newfs_hammer2 sets peer_type.
    static let peerTypeHAMMER2: UInt8 = 3
    /// HAMMER2_COPYID_LOCAL, carried by the blockrefs newfs_hammer2 writes.
    static let copyIDLocal: UInt8 = 0xFF
}

/// Random UUIDs (version 4 layout) from a seed or from the system generator.
struct UUIDSource {
    private var state: UInt64?

    init(seed: UInt64?) { state = seed }

    mutating func next() -> HAMMER2UUID {
        var bytes = (0..<2).flatMap { _ in
            let word = nextWord()
            return (0..<8).map { UInt8(truncatingIfNeeded: word >> UInt64($0 * 8)) }
        }
        bytes[7] = bytes[7] & 0x0F | 0x40  // time_hi_and_version (little-endian): version 4
        bytes[8] = bytes[8] & 0x3F | 0x80  // clock_seq_hi: RFC 4122 variant
        return HAMMER2UUID(bytes: bytes)
    }

    private mutating func nextWord() -> UInt64 {
        guard var s = state else { return UInt64.random(in: 0...UInt64.max) }
        s &+= 0x9E37_79B9_7F4A_7C15  // SplitMix64
        state = s
        var z = s
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Directory-entry keys as hammer2_inode_create_normal/hammer2_xop_scanlhc pick them: scan
/// the keys in use from the name's hash upward; the first gap is taken, and if every key
/// found was contiguous from the hash (or none was), the key after them. So a lone name
/// gets hash + 1, a second colliding name the hash itself.
struct DirectoryKeyAllocator {
    /// Keys in use per collision bucket (hash >> 16), sorted.
    private var buckets: [UInt64: [UInt64]] = [:]

    mutating func key(for name: [UInt8]) -> UInt64 {
        let hash = DirectoryHash.key(for: name)
        let used = buckets[hash >> 16, default: []]
        var key = hash
        var foundGap = false
        for existing in used where existing >= hash {
            if existing != key { foundGap = true; break }
            key += 1
        }
        if !foundGap { key += 1 }
        precondition((hash ^ key) & ~HAMMER2.dirhashLowMask == 0, "directory hash collision space exhausted")
        buckets[hash >> 16, default: []].append(key)
        buckets[hash >> 16]!.sort()
        return key
    }
}

/// One inode of a PFS being built.
struct PendingInode {
    var inum: UInt64
    var type: ObjectType
    var attributes: NodeAttributes
    var compression: BlockCompression
    var check: CheckMethod
    var iparent: UInt64
    var nlinks: UInt64 = 1
    /// Device nodes: DragonFly's rmajor/rminor.
    var rmajor: UInt32 = 0
    var rminor: UInt32 = 0
    /// Files and symlinks.
    var content: FileContent?
    /// Directories: (name, inum) in creation order.
    var entries: [(name: [UInt8], inum: UInt64)] = []

    /// Methods of this inode's blockref: its own comp/check algos, the check promoted to the
    /// default (xxhash64) when none, as hammer2_chain_create does for non-data blockrefs.
    var brefMethods: UInt8 {
        Blockref.methods(check: check == .none ? .xxhash64 : check, compression: compression.method)
    }

    var defaultMode: UInt32 {
        switch type {
        case .directory: return 0o755
        case .softlink: return 0o777
        default: return 0o644
        }
    }
}

final class ImageBuildSession {
    let spec: ImageSpec
    let file: SparseImageFile
    var allocator: MediaAllocator
    var uuids: UUIDSource
    let tid = ImageBuilder.transactionID

    init(spec: ImageSpec, path: String) throws {
        guard spec.size >= MediaLayout.volumeAlign, spec.size % MediaLayout.volumeAlign == 0 else {
            throw ImageBuildError.invalidSpec("size \(spec.size) is not a positive multiple of 8 MiB")
        }
        self.spec = spec
        self.file = try SparseImageFile(path: path, size: spec.size)
        self.allocator = MediaAllocator(volumeSize: spec.size, allocatorBegin: ImageBuilder.allocatorBegin)
        self.uuids = UUIDSource(seed: spec.seed)
    }

    func run() throws -> BuiltImage {
        var pfsList = spec.pfs
        if !pfsList.contains(where: { $0.label == "LOCAL" }) {
            pfsList.insert(PFSSpec(label: "LOCAL"), at: 0)  // newfs_hammer2 always creates LOCAL
        }
        let labels = pfsList.map(\.label)
        guard Set(labels).count == labels.count else { throw ImageBuildError.invalidSpec("duplicate PFS labels \(labels)") }
        let volumeFSID = uuids.next()
        let superRootCLID = uuids.next()
        let superRootFSID = uuids.next()

        var roots: [Blockref] = []
        var built: [BuiltImage.PFS] = []
        for pfs in pfsList {
            let (bref, summary) = try PFSBuilder(session: self, spec: pfs).build()
            roots.append(bref)
            built.append(summary)
        }
        guard Set(roots.map(\.key)).count == roots.count else {
            throw ImageBuildError.invalidSpec("PFS labels \(labels) collide in the directory hash")
        }
        let superRoot = try writeSuperRoot(pfsRoots: roots, clusterID: superRootCLID, filesystemID: superRootFSID)
        let freemap = FreemapImage(allocator: allocator, tid: tid)
        for (offset, bytes) in freemap.blocks { try file.write(bytes, at: offset) }
        try writeVolumeHeaders(superRoot: superRoot, freemap: freemap.blockset, fsid: volumeFSID)
        return BuiltImage(path: file.path, size: spec.size, pfs: built,
                          allocatedBytes: allocator.allocatedBytes, hasFreemap: !freemap.blockset.isEmpty)
    }

    /// Allocates and writes one block.
    func writeBlock(_ bytes: [UInt8], type: BlockrefType) throws -> UInt64 {
        let offset = try allocator.allocate(bytes.count, type: type)
        try file.write(bytes, at: offset)
        return offset
    }

    func treeBuilder(parentMethods: UInt8) -> BlockTreeBuilder {
        BlockTreeBuilder(parentMethods: parentMethods, tid: tid) { [unowned self] bytes, type in
            try self.writeBlock(bytes, type: type)
        }
    }

    /// The super-root (newfs_hammer2's format_hammer2_inode): inum 0, mode 0700, nlinks 2,
    /// autozero/xxhash64, holding the PFS root inodes.
    private func writeSuperRoot(pfsRoots: [Blockref], clusterID: HAMMER2UUID,
                                filesystemID: HAMMER2UUID) throws -> Blockref {
        let methods = Blockref.methods(check: .xxhash64, compression: .autozero)
        let blockset = try treeBuilder(parentMethods: methods).build(leaves: pfsRoots)
        let name = Array("SUPROOT".utf8)
        let meta = InodeMeta(
            version: 1, ctime: spec.timestamp, mtime: spec.timestamp, btime: spec.timestamp,
            type: .directory, mode: 0o700, inum: 0, nlinks: 2, nameKey: 0, nameLength: UInt16(name.count),
            compAlgo: InodeMeta.compAlgo(.autozero), checkAlgo: CheckMethod.xxhash64.rawValue,
            pfsType: .superRoot, pfsInum: 0, pfsClusterID: clusterID, pfsFilesystemID: filesystemID)
        var bref = try writeInode(InodeData(meta: meta, filename: name, content: .blockset(blockset)),
                                  key: 0, methods: methods)
        bref.copyid = ImageBuilder.copyIDLocal
        bref.vradix = UInt8(HAMMER2.allocationMinRadix)
        return bref
    }

    /// Allocates, writes and references one 1 KiB inode block.
    func writeInode(_ inode: InodeData, key: UInt64, methods: UInt8) throws -> Blockref {
        let bytes = inode.encoded()
        var bref = Blockref.empty
        bref.type = .inode
        bref.methods = methods
        bref.key = key
        bref.mirrorTID = tid
        bref.modifyTID = tid
        bref.dataOffset = Blockref.dataOffset(try writeBlock(bytes, type: .inode), radix: HAMMER2.allocationMinRadix)
        bref.setCheck(over: bytes)
        SubtreeStatistics(children: inode.blockset).apply(to: &bref)
        return bref
    }

    private func writeVolumeHeaders(superRoot: Blockref, freemap: [Blockref], fsid: HAMMER2UUID) throws {
        let begin = ImageBuilder.allocatorBegin
        let allocatorSize = allocator.allocatorSize
        var volumeOffsets = [UInt64](repeating: UInt64.max, count: HAMMER2.maxVolumes)
        volumeOffsets[0] = 0
        let header = VolumeHeader(
            bootBegin: begin, bootEnd: begin, auxBegin: begin, auxEnd: begin, volumeSize: spec.size,
            version: HAMMER2.volumeVersionMultiVolumes, peerType: ImageBuilder.peerTypeHAMMER2,
            volumeID: 0, volumeCount: 1, fsid: fsid, fstype: .hammer2FilesystemType,
            allocatorSize: allocatorSize, allocatorFree: allocatorSize - allocator.allocatedFreemapBytes,
            allocatorBegin: begin, mirrorTID: tid, freemapTID: tid, totalSize: spec.size,
            superRootBlockset: padded([superRoot]), freemapBlockset: padded(freemap),
            volumeOffsets: volumeOffsets)
        let bytes = header.encoded()
        for offset in VolumeHeader.copyOffsets(deviceSize: spec.size) {
            try file.write(bytes, at: offset)
        }
    }

    private func padded(_ refs: [Blockref]) -> [Blockref] {
        refs + [Blockref](repeating: .empty, count: HAMMER2.blocksetCount - refs.count)
    }
}
