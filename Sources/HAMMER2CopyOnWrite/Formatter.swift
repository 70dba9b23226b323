// newfs_hammer2's layout (sbin/newfs_hammer2/mkfs_hammer2.c), written exactly as DragonFly
// writes it:
//   [0, 4 MiB)            reserved: volume header, freemap rotation slots
//   [4 MiB, boot end)     boot area;  [boot end, aux end) aux area
//   aux end               super-root inode (1 KiB), then one PFS root inode per label
//   allocator_beg         = aux end + 1 KiB * (1 + labels): the allocator starts here
// No freemap is written: the first allocation in each GiB creates its leaf, with
// everything below allocator_beg marked allocated. Header copies go to every 2 GiB zone
// inside the volume.

import Glibc
import Foundation
import HAMMER2Engine
import HAMMER2Format

public struct FormatOptions: Sendable {
    /// PFS labels besides LOCAL (which is always created first).
    public var labels: [String]
    public var bootAreaBytes: UInt64?
    public var auxAreaBytes: UInt64?
    public var version: UInt32 = HAMMER2.volumeVersionMultiVolumes
    /// Filesystem size (rounded down to 8 MiB); nil for the whole device.
    public var size: UInt64?

    public init(labels: [String], bootAreaBytes: UInt64? = nil, auxAreaBytes: UInt64? = nil,
                version: UInt32 = HAMMER2.volumeVersionMultiVolumes, size: UInt64? = nil) {
        self.labels = labels
        self.bootAreaBytes = bootAreaBytes
        self.auxAreaBytes = auxAreaBytes
        self.version = version
        self.size = size
    }

    /// DragonFly's default label from the device name's last character.
    public static func defaultLabel(forDevice path: String) -> String {
        switch path.last {
        case "a": return "BOOT"
        case "d": return "ROOT"
        default: return "DATA"
        }
    }
}

public struct FormatResult: Sendable {
    public var volumeSize: UInt64
    public var bootAreaBytes: UInt64
    public var auxAreaBytes: UInt64
    public var freeBytes: UInt64
    public var fsid: HAMMER2UUID
    public var labels: [String]
}

public enum Formatter {
    static let align: UInt64 = 8 << 20  // HAMMER2_NEWFS_ALIGN / HAMMER2_VOLUME_ALIGN
    static let reservedPerGiB: UInt64 = 4 << 20
    static let leafBytes: UInt64 = 1 << 30  // HAMMER2_FREEMAP_LEVEL1_SIZE
    public static let minimumSize: UInt64 = 64 << 20
    static let newfsTID: UInt64 = 16

    /// Boot or aux area size: `start`, halved while above a twentieth of the volume,
    /// at least 8 MiB, rounded up to 8 MiB.
    static func areaSize(start: UInt64, total: UInt64) -> UInt64 {
        var bytes = start
        while bytes > total / 20 && bytes > align { bytes /= 2 }
        bytes = max(bytes, align)
        return (bytes + align - 1) / align * align
    }

    public static func format(device: any BlockDevice, options: FormatOptions, now: UInt64 = currentTimeMicroseconds()) throws -> FormatResult {
        try format(devices: [device], options: options, now: now)
    }

    /// Formats one volume, or a volume set (mkfs_hammer2 with several devices): every
    /// volume but the last is cut to a multiple of 1 GiB (so each starts on a freemap leaf
    /// boundary), the last to 8 MiB; volume i starts where volume i-1 ends in the logical
    /// address space. The root volume (the first) holds the super-root; the others carry
    /// only their headers.
    public static func format(devices: [any BlockDevice], options: FormatOptions, now: UInt64 = currentTimeMicroseconds()) throws -> FormatResult {
        guard let device = devices.first else { throw EngineError.invalidArgument("no device to format") }
        guard devices.count <= HAMMER2.maxVolumes else { throw EngineError.invalidArgument("at most \(HAMMER2.maxVolumes) volumes") }
        if devices.count > 1 && options.version < HAMMER2.volumeVersionMultiVolumes {
            throw EngineError.invalidArgument("several volumes need volume version 2")
        }
        if let size = options.size, size > device.size, devices.count == 1 {
            throw EngineError.invalidArgument("requested size \(size) exceeds the device's \(device.size) bytes")
        }
        var volumeSizes: [UInt64] = []
        var remaining = options.size ?? .max
        for (i, volume) in devices.enumerated() {
            var size = min(volume.size, remaining)
            size = i == devices.count - 1 ? size / align * align : size / leafBytes * leafBytes
            guard size > 0, i == devices.count - 1 || size >= leafBytes else {
                throw EngineError.invalidArgument("\(volume.name): too small for a volume of a volume set (at least 1 GiB but the last)")
            }
            volumeSizes.append(size)
            remaining -= min(remaining, size)
        }
        var total = volumeSizes.reduce(0, +)
        guard total >= minimumSize else {
            throw EngineError.invalidArgument("\(device.name): \(total) bytes is too small for HAMMER2 (minimum \(minimumSize >> 20) MiB)")
        }
        guard options.version >= HAMMER2.volumeVersionMin && options.version <= HAMMER2.volumeVersionMultiVolumes else {
            throw EngineError.invalidArgument("volume version \(options.version) is not 1 or 2")
        }
        let labels = ["LOCAL"] + options.labels
        guard labels.count <= HAMMER2.blocksetCount else {
            throw EngineError.invalidArgument("at most \(HAMMER2.blocksetCount - 1) labels besides LOCAL")
        }
        for label in labels {
            guard !label.isEmpty, label.utf8.count < HAMMER2.inodeMaxName, !label.contains("/") else {
                throw EngineError.invalidArgument("bad PFS label \"\(label)\"")
            }
        }
        guard Set(labels).count == labels.count else { throw EngineError.invalidArgument("duplicate PFS labels \(labels)") }
        let keys = labels.map { DirectoryHash.key(for: $0) }
        guard Set(keys).count == keys.count else { throw EngineError.invalidArgument("PFS labels collide in the directory hash") }

        let boot = options.bootAreaBytes ?? areaSize(start: 64 << 20, total: total)
        let aux = options.auxAreaBytes ?? areaSize(start: 256 << 20, total: total)
        let reserved = (total + (1 << 30) - 1) / (1 << 30) * reservedPerGiB
        guard reserved + boot + aux + (16 << 20) <= total else {
            throw EngineError.invalidArgument("boot and aux areas leave no room in \(total) bytes")
        }
        total = total / align * align
        let bootBegin = reservedPerGiB
        let auxBegin = bootBegin + boot
        let auxEnd = auxBegin + aux
        let freeBytes = total - reserved - boot - aux

        var random = SystemRandomNumberGenerator()
        func uuid() -> HAMMER2UUID {
            var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &random) }
            bytes[7] = bytes[7] & 0x0F | 0x40
            bytes[8] = bytes[8] & 0x3F | 0x80
            return HAMMER2UUID(bytes: bytes)
        }

        // PFS root inodes, each in the 1 KiB after the super-root's.
        var pfsRefs: [Blockref] = []
        var block = [UInt8]()
        for (i, label) in labels.enumerated() {
            let name = Array(label.utf8)
            let comp: CompressionMethod = label.lowercased() == "boot" ? .autozero : .lz4
            let meta = InodeMeta(version: 1, ctime: now, mtime: now, btime: now, type: .directory,
                                 opFlags: InodeMeta.opFlagPFSRoot, mode: 0o755, inum: 1, nlinks: 1,
                                 nameKey: keys[i], nameLength: UInt16(name.count),
                                 compAlgo: InodeMeta.compAlgo(comp), checkAlgo: CheckMethod.xxhash64.rawValue,
                                 pfsType: .master, pfsInum: 16, pfsClusterID: uuid(), pfsFilesystemID: uuid())
            let bytes = InodeData(meta: meta, filename: name, content: .blockset([])).encoded()
            var bref = Blockref.empty
            bref.type = .inode
            bref.methods = Blockref.methods(check: .xxhash64, compression: .none)
            bref.key = keys[i]
            bref.flags = Blockref.flagPFSRoot
            bref.copyid = 0xFF  // HAMMER2_COPYID_LOCAL
            bref.vradix = UInt8(HAMMER2.allocationMinRadix)
            bref.mirrorTID = newfsTID
            bref.dataOffset = Blockref.dataOffset(auxEnd + UInt64(HAMMER2.inodeBytes * (i + 1)), radix: HAMMER2.allocationMinRadix)
            bref.setCheck(over: bytes)
            pfsRefs.append(bref)
            block += bytes
        }
        let superName = Array("SUPROOT".utf8)
        let superMeta = InodeMeta(version: 1, ctime: now, mtime: now, btime: now, type: .directory, mode: 0o700,
                                  inum: 0, nlinks: 2, nameLength: UInt16(superName.count),
                                  compAlgo: InodeMeta.compAlgo(.autozero), checkAlgo: CheckMethod.xxhash64.rawValue,
                                  pfsType: .superRoot, pfsClusterID: uuid(), pfsFilesystemID: uuid())
        let superBytes = InodeData(meta: superMeta, filename: superName,
                                   content: .blockset(pfsRefs.sorted { $0.key < $1.key })).encoded()
        var superRef = Blockref.empty
        superRef.type = .inode
        superRef.methods = Blockref.methods(check: .xxhash64, compression: .autozero)
        superRef.copyid = 0xFF
        superRef.vradix = UInt8(HAMMER2.allocationMinRadix)
        superRef.mirrorTID = newfsTID
        superRef.dataOffset = Blockref.dataOffset(auxEnd, radix: HAMMER2.allocationMinRadix)
        superRef.setCheck(over: superBytes)
        block = superBytes + block
        try block.withUnsafeBytes { try device.write($0, at: auxEnd) }

        var volumeOffsets = [UInt64](repeating: .max, count: HAMMER2.maxVolumes)
        var start: UInt64 = 0
        for (i, size) in volumeSizes.enumerated() {
            volumeOffsets[i] = start
            start += size
        }
        let fsid = uuid()
        var header = VolumeHeader(
            bootBegin: bootBegin, bootEnd: auxBegin, auxBegin: auxBegin, auxEnd: auxEnd, volumeSize: volumeSizes[0],
            version: options.version, peerType: 3, volumeID: 0, volumeCount: UInt8(devices.count), fsid: fsid, fstype: .hammer2FilesystemType,
            allocatorSize: freeBytes, allocatorFree: freeBytes,
            allocatorBegin: auxEnd + UInt64(HAMMER2.inodeBytes * (labels.count + 1)),
            mirrorTID: newfsTID, freemapTID: newfsTID, totalSize: total, volumeOffsets: volumeOffsets)
        header.superRootBlockset[0] = superRef
        // Old headers and freemap slots from an earlier filesystem must not survive.
        let zeros = [UInt8](repeating: 0, count: Int(reservedPerGiB))
        for (i, volume) in devices.enumerated() {
            var volumeHeader = header
            if i > 0 {
                // mkfs_hammer2: no boot/aux areas, allocator fields or super-root of its own.
                volumeHeader = VolumeHeader(
                    bootBegin: 0, bootEnd: 0, auxBegin: 0, auxEnd: 0, volumeSize: volumeSizes[i],
                    version: options.version, peerType: 3, volumeID: UInt8(i), volumeCount: UInt8(devices.count), fsid: fsid,
                    fstype: .hammer2FilesystemType, allocatorSize: freeBytes, allocatorFree: 0, allocatorBegin: 0,
                    mirrorTID: newfsTID, freemapTID: newfsTID, totalSize: total, volumeOffsets: volumeOffsets)
                for slot in 0..<HAMMER2.blocksetCount { volumeHeader.superRootBlockset[slot].type = .invalid }
            }
            let headerBytes = volumeHeader.encoded()
            try zeros.withUnsafeBytes { try volume.write($0, at: 0) }
            for offset in VolumeHeader.copyOffsets(deviceSize: volumeSizes[i]) {
                try headerBytes.withUnsafeBytes { try volume.write($0, at: offset) }
            }
            try volume.synchronize()
        }
        return FormatResult(volumeSize: total, bootAreaBytes: boot, auxAreaBytes: aux, freeBytes: freeBytes,
                            fsid: fsid, labels: labels)
    }
}
