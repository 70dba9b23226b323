// Requests the hammer2 utility sends to a mounted filesystem, as ioctls on any file or
// directory of the mount (DragonFly's hammer2 directives are ioctls too). FUSE passes
// "restricted" ioctls whose argument size is encoded in the command, so every request is
// a fixed 64-byte little-endian structure read and written in place.

import HAMMER2Format

public enum ControlRequest {
    /// _IOWR('h', 92, 64 bytes): the number DragonFly gives HAMMER2IOC_BULKFREE_SCAN.
    public static let bulkfree: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 92, size: argumentBytes)
    public static let argumentBytes = 64
    /// _IOWR('h', 81/82/84, 512 bytes): DragonFly's HAMMER2IOC_PFS_CREATE, _DELETE and
    /// _SNAPSHOT numbers with our argument: label[256] at 0 (the snapshot's label comes
    /// back there), pfs_type at 256, pfs_subtype at 257, ncopies at 258 (0: one copy),
    /// pfs_clid at 272 (zero: random).
    public static let pfsCreate: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 81, size: pfsArgumentBytes)
    public static let pfsDelete: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 82, size: pfsArgumentBytes)
    public static let pfsSnapshot: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 84, size: pfsArgumentBytes)
    public static let pfsArgumentBytes = 512

    public struct PFSArgument: Equatable, Sendable {
        public var label: String
        public var type: PFSType = .master
        public var subtype: UInt8 = 0
        public var clusterID: HAMMER2UUID?
        /// Copies of the new PFS's data (setcopies on its root), 0 or 1 for one.
        public var copies: UInt8 = 0

        public init(label: String, type: PFSType = .master, subtype: UInt8 = 0, clusterID: HAMMER2UUID? = nil, copies: UInt8 = 0) {
            self.copies = copies
            self.label = label
            self.type = type
            self.subtype = subtype
            self.clusterID = clusterID
        }

        public func encoded() -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: pfsArgumentBytes)
            let name = Array(label.utf8.prefix(255))
            bytes.replaceSubrange(0..<name.count, with: name)
            bytes[256] = type.rawValue
            bytes[257] = subtype
            bytes[258] = copies
            if let clusterID { bytes.replaceSubrange(272..<288, with: clusterID.bytes) }
            return bytes
        }

        public init(decoding bytes: [UInt8]) {
            let name = bytes.prefix(256).prefix { $0 != 0 }
            label = String(decoding: name, as: UTF8.self)
            type = PFSType(rawValue: bytes[256])
            subtype = bytes[257]
            copies = bytes[258]
            let clid = Array(bytes[272..<288])
            clusterID = clid.allSatisfy { $0 == 0 } ? nil : HAMMER2UUID(bytes: clid)
        }
    }

    static func ioctlReadWrite(type: UInt8, number: UInt8, size: Int) -> UInt32 {
        (3 << 30) | (UInt32(size) << 16) | (UInt32(type) << 8) | UInt32(number)
    }

    /// The bulkfree reply: scanned blockrefs, referenced, freed bytes, repaired blocks.
    public static func encode(_ result: BulkfreeResult) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: argumentBytes)
        for (i, value) in [UInt64(result.blockrefsScanned), result.referencedBytes, result.freedBytes,
                           UInt64(result.repairedBlocks)].enumerated() {
            for b in 0..<8 { bytes[i * 8 + b] = UInt8(truncatingIfNeeded: value >> UInt64(b * 8)) }
        }
        return bytes
    }

    public static func decodeBulkfree(_ bytes: [UInt8]) -> BulkfreeResult {
        let words = bytes.withUnsafeBytes { raw in (0..<4).map { raw.le64($0 * 8) } }
        return BulkfreeResult(blockrefsScanned: Int(words[0]), referencedBytes: words[1], freedBytes: words[2],
                              repairedBlocks: Int(words[3]))
    }

    /// _IOWR('h', 86/87, 512 bytes): DragonFly's HAMMER2IOC_INODE_GET and _SET numbers
    /// with our argument, on the inode of the file the ioctl is issued on: flags (u32 at 0:
    /// 1 set comp_algo, 2 set check_algo, 4 set ncopies), comp_algo at 4, check_algo at 5, ncopies at 6,
    /// type at 7, inum at 8, data_count at 16, inode_count at 24, data_quota at 32,
    /// inode_quota at 40; the whole inode metadata (hammer2_inode_meta_t) at 256 in replies.
    public static let inodeGet: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 86, size: inodeArgumentBytes)
    public static let inodeSet: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 87, size: inodeArgumentBytes)
    public static let inodeArgumentBytes = 512

    public struct InodeArgument: Equatable, Sendable {
        public static let setCompression: UInt32 = 1
        public static let setCheck: UInt32 = 2
        public static let setCopies: UInt32 = 4

        public var flags: UInt32 = 0
        public var compAlgo: UInt8 = 0
        public var checkAlgo: UInt8 = 0
        public var ncopies: UInt8 = 0
        public var type: UInt8 = 0
        public var inum: UInt64 = 0
        public var dataCount: UInt64 = 0
        public var inodeCount: UInt64 = 0
        public var dataQuota: UInt64 = 0
        public var inodeQuota: UInt64 = 0
        public var meta = InodeMeta()

        public init() {}

        public init(_ info: InodeInfo) {
            compAlgo = info.meta.compAlgo
            checkAlgo = info.meta.checkAlgo
            ncopies = info.meta.ncopies
            type = info.meta.type.rawValue
            inum = info.meta.inum
            dataCount = info.dataCount
            inodeCount = info.inodeCount
            dataQuota = info.meta.dataQuota
            inodeQuota = info.meta.inodeQuota
            meta = info.meta
        }

        public func encoded() -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: inodeArgumentBytes)
            func put(_ value: UInt64, at offset: Int, _ count: Int) {
                for i in 0..<count { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> UInt64(i * 8)) }
            }
            put(UInt64(flags), at: 0, 4)
            bytes[4] = compAlgo
            bytes[5] = checkAlgo
            bytes[6] = ncopies
            bytes[7] = type
            for (offset, value) in [(8, inum), (16, dataCount), (24, inodeCount), (32, dataQuota), (40, inodeQuota)] {
                put(value, at: offset, 8)
            }
            bytes.withUnsafeMutableBytes { meta.encode(into: UnsafeMutableRawBufferPointer(rebasing: $0[256..<512])) }
            return bytes
        }

        public init(decoding bytes: [UInt8]) {
            bytes.withUnsafeBytes { raw in
                flags = raw.le32(0)
                inum = raw.le64(8)
                dataCount = raw.le64(16)
                inodeCount = raw.le64(24)
                dataQuota = raw.le64(32)
                inodeQuota = raw.le64(40)
            }
            meta = (try? bytes.withUnsafeBytes { try InodeMeta(decoding: UnsafeRawBufferPointer(rebasing: $0[256..<512])) }) ?? InodeMeta()
            compAlgo = bytes[4]
            checkAlgo = bytes[5]
            ncopies = bytes[6]
            type = bytes[7]
        }
    }

    /// _IOWR('h', 94, 512 bytes): DragonFly's HAMMER2IOC_DESTROY number with our argument:
    /// command (u32 at 0: 1 an entry of the directory the ioctl is issued on, 2 an inode
    /// number), inum (u64 at 8), name (NUL-terminated, at 16, up to 255 bytes).
    public static let destroy: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 94, size: destroyArgumentBytes)
    public static let destroyArgumentBytes = 512
    public static let destroyEntry: UInt32 = 1  // HAMMER2_DELETE_FILE
    public static let destroyInode: UInt32 = 2  // HAMMER2_DELETE_INUM

    public static func encodeDestroy(command: UInt32, inum: UInt64 = 0, name: [UInt8] = []) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: destroyArgumentBytes)
        for i in 0..<4 { bytes[i] = UInt8(truncatingIfNeeded: command >> UInt32(i * 8)) }
        for i in 0..<8 { bytes[8 + i] = UInt8(truncatingIfNeeded: inum >> UInt64(i * 8)) }
        let clipped = name.prefix(255)
        bytes.replaceSubrange(16..<(16 + clipped.count), with: clipped)
        return bytes
    }

    public static func decodeDestroy(_ bytes: [UInt8]) -> (command: UInt32, inum: UInt64, name: [UInt8]) {
        let (command, inum) = bytes.withUnsafeBytes { ($0.le32(0), $0.le64(8)) }
        return (command, inum, Array(bytes[16..<destroyArgumentBytes].prefix { $0 != 0 }))
    }

    /// _IOWR('h', 91, int): HAMMER2IOC_DEBUG_DUMP, as DragonFly's; the int is dumpchain's flags.
    public static let debugDump: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 91, size: 4)

    /// _IOWR('h', 97, 64 bytes), not DragonFly's: hammer2 scrub. The reply holds blocks,
    /// copies checked, bad copies, repaired, blocks lost and blocks not verified (no key),
    /// u64 each from 0; the daemon logs each problem.
    public static let scrub: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 97, size: argumentBytes)

    public static func encode(_ result: ScrubResult) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: argumentBytes)
        let values = [result.blocks, result.copiesChecked, result.badCopies, result.repaired, result.lostBlocks, result.notVerified]
        for (i, value) in values.enumerated() {
            for b in 0..<8 { bytes[i * 8 + b] = UInt8(truncatingIfNeeded: UInt64(value) >> UInt64(b * 8)) }
        }
        return bytes
    }

    public static func decodeScrub(_ bytes: [UInt8]) -> ScrubResult {
        let words = bytes.withUnsafeBytes { raw in (0..<6).map { Int(raw.le64($0 * 8)) } }
        var result = ScrubResult()
        (result.blocks, result.copiesChecked, result.badCopies) = (words[0], words[1], words[2])
        (result.repaired, result.lostBlocks, result.notVerified) = (words[3], words[4], words[5])
        return result
    }

    /// _IOWR('h', 98, 64 bytes), not DragonFly's: hammer2 reencrypt on the mounted PFS. The
    /// reply holds inodes, bytes, entries, cursor, older keys left and finished (u64 each).
    public static let reencrypt: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 98, size: argumentBytes)

    public static func encode(_ progress: ReencryptionProgress) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: argumentBytes)
        let values = [UInt64(progress.inodes), progress.bytes, UInt64(progress.entries), progress.cursor,
                      UInt64(progress.olderKeys), progress.finished ? 1 : 0]
        for (i, value) in values.enumerated() {
            for b in 0..<8 { bytes[i * 8 + b] = UInt8(truncatingIfNeeded: value >> UInt64(b * 8)) }
        }
        return bytes
    }

    public static func decodeReencryption(_ bytes: [UInt8]) -> ReencryptionProgress {
        let words = bytes.withUnsafeBytes { raw in (0..<6).map { raw.le64($0 * 8) } }
        var progress = ReencryptionProgress()
        progress.inodes = Int(words[0]); progress.bytes = words[1]; progress.entries = Int(words[2])
        progress.cursor = words[3]; progress.olderKeys = Int(words[4]); progress.finished = words[5] != 0
        return progress
    }

    /// _IOWR('h', 96, 64 bytes): HAMMER2IOC_GROWFS's number; the reply holds modified
    /// (u32 at 0) and the size (u64 at 8).
    public static let growfs: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 96, size: argumentBytes)

    /// _IOWR('h', 99, 64 bytes), ours: flush now — every change and a new volume header
    /// written, the intent log retired (fsync only appends to the log; sync(1) cannot
    /// reach a libfuse 3.14 daemon). Anyone may ask, as anyone may fsync.
    public static let flush: UInt32 = ioctlReadWrite(type: UInt8(ascii: "h"), number: 99, size: argumentBytes)
}
