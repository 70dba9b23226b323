// The set of devices that make up one HAMMER2 filesystem, and the choice of volume header.
//
// A filesystem is one volume or up to 64 (hammer2_ondisk.c). Every volume carries its own
// header copies; the root volume's (volu_id 0) best copy describes the filesystem:
// volu_loff[i] is where volume i starts in the one logical address space that data_off
// values use. Single-volume filesystems of version 1 leave volu_loff zeroed.

import Glibc
import Synchronization
import HAMMER2Format
import HAMMER2Trace

/// What was found in one header slot of one device.
public struct VolumeHeaderCopy: Sendable {
    public var index: Int
    public var deviceOffset: UInt64
    public var header: VolumeHeader?
    public var problem: String?
    /// For a copy that fails validation but still has HAMMER2's magic: the mirror_tid it
    /// claims (unverified), to tell whether it may have been newer than the copy in use.
    public var claimedMirrorTID: UInt64? = nil
}

/// A damaged header copy that may have been newer than the one in use: the filesystem is
/// then opened at an older transaction than it last reached. A crash in the middle of a
/// header write looks the same (that flush never completed), so it is reported, and a
/// read-write mount asks for consent (-o rollback-ok) instead of silently going on.
public struct HeaderRollback: Sendable, Equatable, CustomStringConvertible {
    public var damagedSlot: Int
    /// What the damaged copy claims, nil when not even that can be read.
    public var claimedTID: UInt64?
    public var usedSlot: Int
    public var usedTID: UInt64
    public var problem: String

    public var description: String {
        let claim = claimedTID.map { "claims transaction \($0), newer than" } ?? "cannot be read (it may have been newer than"
        let close = claimedTID == nil ? ")" : ""
        let empty = problem.hasSuffix("0x0000000000000000")
            ? ", never written (a volume grown by DragonFly's growfs before its flushes reached that copy)" : ""
        return "volume header copy \(damagedSlot) is damaged (\(problem)) and \(claim) the copy in use (\(usedSlot), "
            + "transaction \(usedTID))\(close): either a flush was cut short by a crash\(empty), or the image was "
            + "altered and its newest transactions are lost (a rollback)"
    }
}

public final class Volume: Sendable {
    func setSize(_ size: UInt64) { sizeState.max(size, ordering: .acquiringAndReleasing) }

    public let device: any BlockDevice
    public let id: Int
    /// Start of this volume in the logical address space (volu_loff[id]).
    public let logicalOffset: UInt64
    /// The volume's size; grows with growfs.
    /// Read by every block read on every thread: an atomic, not a lock.
    public var size: UInt64 { sizeState.load(ordering: .acquiring) }
    private let sizeState: Atomic<UInt64>
    public let header: VolumeHeader
    public let headerIndex: Int
    public let copies: [VolumeHeaderCopy]

    init(device: any BlockDevice, id: Int, logicalOffset: UInt64, size: UInt64, header: VolumeHeader,
         headerIndex: Int, copies: [VolumeHeaderCopy]) {
        self.device = device; self.id = id; self.logicalOffset = logicalOffset; self.sizeState = Atomic(size)
        self.header = header; self.headerIndex = headerIndex; self.copies = copies
    }
}

public final class VolumeSet: Sendable {
    /// Volumes ordered by id; volumes[0] is the root volume.
    public let volumes: [Volume]

    /// The root volume's chosen header: the filesystem's current state.
    public var header: VolumeHeader { volumes[0].header }

    /// Reads every header copy of `device`, validated as DragonFly does.
    public static func readHeaderCopies(_ device: any BlockDevice) -> [VolumeHeaderCopy] {
        var copies: [VolumeHeaderCopy] = []
        for (index, offset) in VolumeHeader.copyOffsets(deviceSize: device.size).enumerated() {
            do {
                let bytes = try device.read(at: offset, count: HAMMER2.volumeHeaderBytes)
                if let problem = bytes.withUnsafeBytes({ VolumeHeader.validate($0) }) {
                    var copy = VolumeHeaderCopy(index: index, deviceOffset: offset, header: nil, problem: problem.description)
                    let magic = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian }
                    if magic == HAMMER2.volumeMagicHostOrder {
                        copy.claimedMirrorTID = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 0x78, as: UInt64.self)) }
                    }
                    copies.append(copy)
                } else {
                    copies.append(VolumeHeaderCopy(index: index, deviceOffset: offset, header: try VolumeHeader(decoding: bytes), problem: nil))
                }
            } catch {
                copies.append(VolumeHeaderCopy(index: index, deviceOffset: offset, header: nil, problem: "\(error)"))
            }
        }
        return copies
    }

    /// The valid copy with the highest mirror_tid (the first such copy on a tie).
    static func bestCopy(_ copies: [VolumeHeaderCopy]) -> (Int, VolumeHeader)? {
        var best: (Int, VolumeHeader)?
        for copy in copies {
            guard let header = copy.header else { continue }
            if best == nil || best!.1.mirrorTID < header.mirrorTID { best = (copy.index, header) }
        }
        return best
    }

    /// A damaged header copy of the root volume that may have been newer than the copy in
    /// use (nil when every copy is sound or the damaged ones are older): see HeaderRollback.
    public var headerRollback: HeaderRollback? {
        let root = volumes[0]
        guard root.headerIndex < root.copies.count, root.copies[root.headerIndex].header != nil else { return nil }
        for copy in root.copies where copy.header == nil {
            if let claimed = copy.claimedMirrorTID, claimed <= root.header.mirrorTID { continue }
            return HeaderRollback(damagedSlot: copy.index, claimedTID: copy.claimedMirrorTID, usedSlot: root.headerIndex,
                                  usedTID: root.header.mirrorTID, problem: copy.problem ?? "unreadable")
        }
        return nil
    }

    /// Ids of volumes of the set that were not given (a degraded open): reads from them fail
    /// with EIO, so only blocks with a copy elsewhere can be read.
    public let missingVolumes: [Int]

    /// Opens the volume set; `headerIndex` picks a header copy of a single volume instead of
    /// the best one (to read an older state, as recover does). With `degraded`, volumes of a
    /// set may be missing, except the root volume (docs/copies.md).
    public init(devices: [any BlockDevice], headerIndex: Int? = nil, degraded: Bool = false) throws {
        guard !devices.isEmpty else { throw EngineError.invalidArgument("no volume given") }
        var found: [(any BlockDevice, Int, VolumeHeader, [VolumeHeaderCopy])] = []
        for device in devices {
            guard device.size >= UInt64(HAMMER2.volumeHeaderBytes) else {
                throw EngineError.noValidVolumeHeader(device: device.name, problems: ["device is only \(device.size) bytes"])
            }
            let copies = Self.readHeaderCopies(device)
            let chosen: (Int, VolumeHeader)?
            if let headerIndex {
                guard devices.count == 1, headerIndex < copies.count, let header = copies[headerIndex].header else {
                    throw EngineError.invalidArgument("\(device.name): volume header copy \(headerIndex) is not valid")
                }
                chosen = (headerIndex, header)
            } else {
                chosen = Self.bestCopy(copies)
            }
            guard let (index, header) = chosen else {
                throw EngineError.noValidVolumeHeader(
                    device: device.name, problems: copies.map { "#\($0.index): \($0.problem ?? "?")" })
            }
            guard header.fstype.description == HAMMER2.fstypeUUIDString else {
                throw EngineError.badVolumeSet("\(device.name): volume fstype uuid \(header.fstype) is not HAMMER2's")
            }
            found.append((device, index, header, copies))
        }
        found.sort { $0.2.volumeID < $1.2.volumeID }
        var root = found[0].2
        if root.volumeID != 0 {
            // A set with copies writes the whole header to every volume (writeHeader), so a
            // degraded open can do without the root volume: the newest such header rules.
            let candidates = found.map(\.2).filter {
                $0.version >= HAMMER2.volumeVersionCopies && $0.superRootBlockset[0].type == .inode
            }
            guard degraded, let newest = candidates.max(by: { $0.mirrorTID < $1.mirrorTID }) else {
                throw EngineError.badVolumeSet("no root volume (volume id 0) among the given devices"
                                               + (candidates.isEmpty ? "" : " (mount with -o degraded to read what has copies on the others)"))
            }
            root = newest
            root.volumeID = 0
        }
        let multi = root.version >= HAMMER2.volumeVersionMultiVolumes && root.volumeCount > 1
        if !multi {
            guard found.count == 1 else {
                throw EngineError.badVolumeSet("the volume header describes 1 volume but \(found.count) devices were given")
            }
            let (device, index, header, copies) = found[0]
            guard header.volumeSize <= device.size else {
                throw EngineError.badVolumeSet(
                    "\(device.name): volume size \(header.volumeSize) exceeds device size \(device.size) (truncated image?)")
            }
            volumes = [Volume(device: device, id: 0, logicalOffset: 0, size: device.size, header: header,
                              headerIndex: index, copies: copies)]
            missingVolumes = []
            return
        }
        guard found.count == Int(root.volumeCount) || (degraded && found.count < Int(root.volumeCount)) else {
            throw EngineError.badVolumeSet("volume header requires \(root.volumeCount) devices, \(found.count) specified"
                                           + (found.count < Int(root.volumeCount) ? " (mount with -o degraded to read what has copies on the others)" : ""))
        }
        // A degraded set: stand-ins for the volumes not given, sized from volu_loff.
        var missing: [Int] = []
        if found.count < Int(root.volumeCount) {
            let present = Set(found.map { Int($0.2.volumeID) })
            for id in 0..<Int(root.volumeCount) where !present.contains(id) {
                let start = root.volumeOffsets[id]
                let end = id + 1 < Int(root.volumeCount) ? root.volumeOffsets[id + 1] : root.totalSize
                guard start != .max, end > start else { throw EngineError.badVolumeSet("volume \(id)'s offset is not recorded") }
                var header = root
                header.volumeID = UInt8(id)
                header.volumeSize = end - start
                if id != 0 { header.superRootBlockset = [Blockref](repeating: .empty, count: HAMMER2.blocksetCount) }
                found.append((MissingDevice(id: id, size: end - start), 0, header, []))
                missing.append(id)
            }
            found.sort { $0.2.volumeID < $1.2.volumeID }
        }
        missingVolumes = missing
        var result: [Volume] = []
        var expectedOffset: UInt64 = 0
        for (position, (device, index, header, copies)) in found.enumerated() {
            guard Int(header.volumeID) == position else {
                throw EngineError.badVolumeSet("\(device.name) has inconsistent volume id \(header.volumeID)")
            }
            guard header.fsid == root.fsid else {
                throw EngineError.badVolumeSet("\(device.name) belongs to another filesystem (fsid \(header.fsid))")
            }
            let offset = root.volumeOffsets[position]
            guard offset == expectedOffset else {
                throw EngineError.badVolumeSet("\(device.name) has inconsistent offset 0x\(String(offset, radix: 16))")
            }
            guard header.volumeSize <= device.size else {
                throw EngineError.badVolumeSet("\(device.name)'s size \(header.volumeSize) exceeds device size \(device.size)")
            }
            result.append(Volume(device: device, id: position, logicalOffset: offset, size: header.volumeSize,
                                 header: header, headerIndex: index, copies: copies))
            expectedOffset = offset + header.volumeSize
        }
        volumes = result
    }

    public convenience init(paths: [String], writable: Bool = false, headerIndex: Int? = nil, degraded: Bool = false) throws {
        try self.init(devices: paths.map { try FileBlockDevice(path: $0, writable: writable) }, headerIndex: headerIndex,
                      degraded: degraded)
    }

    /// Takes in a single volume's enlarged device (growfs); returns the new size.
    public func refreshSize() throws -> UInt64 {
        precondition(volumes.count == 1, "growfs of one volume")
        let size = try volumes[0].device.refreshSize()
        volumes[0].setSize(size)
        return size
    }

    /// Total logical size of the filesystem.
    public var totalSize: UInt64 { volumes.last.map { $0.logicalOffset + $0.size } ?? 0 }

    /// The index of the volume holding logical media offset `offset`.
    public func volumeIndex(containing offset: UInt64) -> Int? {
        volumes.firstIndex { offset >= $0.logicalOffset && offset - $0.logicalOffset < $0.size }
    }

    /// Hints the volume holding logical media offset `offset` that `count` bytes there will
    /// be read soon.
    public func willNeed(_ count: Int, at offset: UInt64) {
        for volume in volumes where offset >= volume.logicalOffset && offset - volume.logicalOffset < volume.size {
            volume.device.willNeed(count, at: offset - volume.logicalOffset)
            return
        }
    }

    /// Reads `count` bytes at logical media offset `offset` from the volume that holds it.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        for volume in volumes where offset >= volume.logicalOffset && offset - volume.logicalOffset < volume.size {
            let local = offset - volume.logicalOffset
            guard local + UInt64(buffer.count) <= volume.size else {
                throw EngineError.corrupt("block at 0x\(String(offset, radix: 16)) (\(buffer.count) bytes) crosses the end of \(volume.device.name)")
            }
            let started = Trace.isOn(.io) ? Trace.now : 0
            do {
                try volume.device.read(into: buffer, at: local)
            } catch {
                Self.traceIO(volume.id, offset, buffer.count, write: false, started: started, error: error)
                throw error
            }
            Self.traceIO(volume.id, offset, buffer.count, write: false, started: started, error: nil)
            return
        }
        throw EngineError.corrupt("media offset 0x\(String(offset, radix: 16)) is beyond the end of the volume set")
    }

    /// Writes `buffer` at logical media offset `offset` (inside one volume).
    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        for volume in volumes where offset >= volume.logicalOffset && offset - volume.logicalOffset < volume.size {
            let local = offset - volume.logicalOffset
            guard local + UInt64(buffer.count) <= volume.size else {
                throw EngineError.posix(ENOSPC, "write at 0x\(String(offset, radix: 16)) crosses the end of \(volume.device.name)")
            }
            let started = Trace.isOn(.io) ? Trace.now : 0
            do {
                try volume.device.write(buffer, at: local)
            } catch {
                Self.traceIO(volume.id, offset, buffer.count, write: true, started: started, error: error)
                throw error
            }
            Self.traceIO(volume.id, offset, buffer.count, write: true, started: started, error: nil)
            return
        }
        throw EngineError.posix(ENOSPC, "media offset 0x\(String(offset, radix: 16)) is beyond the end of the volume set")
    }

    /// Writes one encoded volume header into header slot `index` of the root volume.
    public func writeHeader(_ bytes: [UInt8], slot index: Int) throws {
        let device = volumes[0].device
        let offsets = VolumeHeader.copyOffsets(deviceSize: volumes[0].size)
        precondition(index < offsets.count, "header slot \(index) does not fit the volume")
        let started = Trace.isOn(.io) ? Trace.now : 0
        do {
            try bytes.withUnsafeBytes { try device.write($0, at: offsets[index]) }
        } catch {
            Self.traceIO(0, offsets[index], bytes.count, write: true, started: started, error: error)
            throw error
        }
        Self.traceIO(0, offsets[index], bytes.count, write: true, started: started, error: nil)
    }

    /// The trace event and volume counters of one device request (`started`: 0 when the
    /// io subsystem was off as it began).
    static func traceIO(_ volume: Int, _ offset: UInt64, _ bytes: Int, write: Bool, started: UInt64, error: (any Error)?) {
        if let error {
            let code = (error as? EngineError)?.errno ?? EIO
            Trace.record(.deviceError, UInt64(volume), offset, UInt64(bytes), write ? 1 : 0, UInt64(code))
        } else if started != 0 {
            Trace.record(write ? .deviceWrite : .deviceRead, UInt64(volume), offset, UInt64(bytes), Trace.now &- started)
        }
        Trace.withSession { $0.volumeIO(volume, write: write, bytes: bytes, failed: error != nil) }
    }

    /// A set with copies (version 5, which DragonFly refuses) also writes the root's header
    /// to the other volumes, each with its own id and size, into slot `index` (or the last
    /// one it has): any volume then describes the filesystem when the root volume is lost.
    public func writeHeaderToOtherVolumes(_ header: VolumeHeader, slot index: Int) throws {
        for volume in volumes.dropFirst() {
            var copy = header
            copy.volumeID = UInt8(volume.id)
            copy.volumeSize = volume.size
            let offsets = VolumeHeader.copyOffsets(deviceSize: volume.size)
            let bytes = copy.encoded()
            try bytes.withUnsafeBytes { try volume.device.write($0, at: offsets[min(index, offsets.count - 1)]) }
        }
    }

    /// The flush barrier: every device's completed writes are durable.
    public func synchronize() throws {
        for volume in volumes { try volume.device.synchronize() }
    }
}

/// A volume of a set that was not given (a degraded open): every read fails with EIO.
struct MissingDevice: BlockDevice {
    let id: Int
    let size: UInt64
    var name: String { "volume \(id) (missing)" }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        throw EngineError.io(errno: EIO, what: "read of volume \(id), which is missing, at offset \(offset)")
    }
}

