// Seed inputs for every target, cut out of real images (the DragonFly-made fixtures and
// an image our own writer made), and a generated base image for the image fuzzer.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format
import HAMMER2Trace

public enum FuzzSeeds {
    /// Inputs for each target taken from `image`'s metadata, at most `limit` per target,
    /// without duplicates, the smaller ones first.
    public static func extract(from image: SparseImage, limit: Int = 40) -> [FuzzTarget: [[UInt8]]] {
        let device = OverlayDevice(base: image)
        let blocks = ImageFuzzer.map(device)
        var seeds: [FuzzTarget: Set<[UInt8]>] = [:]
        func add(_ target: FuzzTarget, _ bytes: [UInt8]) { seeds[target, default: []].insert(bytes) }

        if let header = try? device.read(at: 0, count: HAMMER2.volumeHeaderBytes) {
            add(.volumeHeader, trimmed(header, keeping: 0xA00))
            add(.blockref, Array(header[0x200..<0x400]))
            add(.blockref, Array(header[0x800..<0xA00]))
        }
        for block in blocks {
            guard let bref = block.bref, let data = try? device.read(at: block.offset, count: block.bytes) else { continue }
            var children: [UInt8] = []
            switch bref.type {
            case .inode:
                add(.inode, data)
                if let inode = try? InodeData(decoding: data), !inode.meta.hasDirectData { children = Array(data[0x200..<0x400]) }
            case .indirect, .freemapNode:
                children = data
                var parent = withUnsafeBytes(of: bref.key.littleEndian) { Array($0) }
                parent.append(bref.keybits)
                add(.indirect, parent + trimmed(data, keeping: HAMMER2.blockrefBytes, multiple: HAMMER2.blockrefBytes))
            case .freemapLeaf:
                add(.freemap, trimmed(data, keeping: 128, multiple: 128))
            case .data where bref.compression == .lz4:
                add(.lz4, data)
            case .data where bref.compression == .zlib:
                add(.zlib, data)
            default:
                break
            }
            if !children.isEmpty { add(.blockref, trimmed(children, keeping: HAMMER2.blockrefBytes, multiple: HAMMER2.blockrefBytes)) }
            for at in stride(from: 0, to: children.count - HAMMER2.blockrefBytes + 1, by: HAMMER2.blockrefBytes) {
                let raw = Array(children[at..<(at + HAMMER2.blockrefBytes)])
                guard let child = try? Blockref(decoding: raw), child.type == .dirent else { continue }
                if child.direntNameLength > 64, let name = try? device.read(at: child.mediaOffset, count: max(child.physicalBytes, 0)) {
                    add(.dirent, raw + name)
                } else {
                    add(.dirent, raw)
                }
            }
        }
        var result: [FuzzTarget: [[UInt8]]] = [:]
        for (target, inputs) in seeds {
            result[target] = Array(inputs.sorted { $0.count != $1.count ? $0.count < $1.count : $0.lexicographicallyPrecedes($1) }.prefix(limit))
        }
        return result
    }

    /// Image-fuzzer inputs: each base as it is, read-only and with writes, and a few patches
    /// resealed and not.
    public static func imageSeeds(blockCount: Int = 400) -> [[UInt8]] {
        var seeds: [[UInt8]] = []
        for base in 0..<4 as Range<UInt8> {
            seeds.append([base])
            seeds.append([base | 0x40])
            for block in stride(from: 1, to: max(blockCount, 2), by: max(blockCount / 6, 1)).prefix(6) {
                let index = UInt16(block)
                seeds.append([base | 0xC0, UInt8(index & 0xFF), UInt8(index >> 8), 0x10, 0x00, 0x10, 0xFF])
            }
        }
        return seeds
    }

    /// Key-record seeds: records wrapped by the fuzz key file and by a passphrase.
    public static func keyRecordSeeds() throws -> [[UInt8]] {
        var seeds: [[UInt8]] = []
        for seed in 1...3 as ClosedRange<UInt8> {
            let keys = PFSKeys(master: [UInt8](repeating: seed, count: 32), domain: [UInt8](repeating: seed &* 3, count: 16))
            seeds.append(try KeyRecord.wrap(keys, source: .keyFile(fuzzKeyFile)).encoded())
            seeds.append(try KeyRecord.wrap(keys, source: .passphrase(Array("fuzz \(seed)".utf8)), log2N: 10).encoded())
            let name = Array("name-\(seed)".utf8)
            seeds.append(keys.sealInlineName(name, directory: UInt64(seed)) + [UInt8(name.count), seed])
        }
        return seeds
    }

    /// Send streams: a full one (begin, an inodes record, a blocks record, end), one cut
    /// short, a resumed begin, a resume token, and a raw one.
    public static func sendStreamSeeds() -> [[UInt8]] {
        var hash: UInt64 = 0
        var sequence: UInt64 = 0
        func record(_ type: SendStreamRecordType, _ payload: [UInt8]) -> [UInt8] {
            hash = SendStreamRecordHeader.hash(payload, after: hash)
            defer { sequence += 1 }
            return SendStreamRecordHeader(type: type, sequence: sequence, payloadBytes: UInt32(payload.count), payloadHash: hash).encoded() + payload
        }
        let id = HAMMER2UUID(bytes: (0..<16).map { UInt8($0) })
        let begin = SendStreamBegin(snapshotFilesystemID: id, snapshotClusterID: id, baseFilesystemID: .zero,
                                    nextInodeNumber: 1025, label: Array("snap".utf8))
        var meta = InodeMeta(version: 1, ctime: 1, mtime: 2, atime: 3, btime: 4, uid: .unixID(0), gid: .unixID(0),
                             type: .regularFile, mode: 0o644, inum: 1024, nlinks: 1)
        meta.size = 70_000
        let inode = IntentLogCommit.Inode(inum: 1024, isNew: true, meta: meta, filename: Array("0x400".utf8), diskLimit: .max,
                                          lowestSize: .max, entryChanges: [], ranges: [.init(offset: 65_536, length: 4464, bytes: nil)])
        let inodes = IntentLogCommit(pfses: [.init(label: Array(".".utf8), nextInodeNumber: 0, inodes: [inode])]).encoded()
        let blocks = SendStreamBlocks(blocks: [.init(inum: 1024, offset: 0, methods: 0x20, stored: Array(repeating: 7, count: 1024))]).encoded()
        let full = record(.begin, begin.encoded()) + record(.inodes, inodes) + record(.blocks, blocks)
            + record(.end, SendStreamEnd(inodeRecords: 2, dataBytes: 1024).encoded())
        var resumed = begin
        (resumed.resumeSequence, resumed.resumeHash) = (2, 0x1234_5678_9ABC_DEF0)
        hash = 0
        sequence = 0
        let token = SendResumeToken(snapshotFilesystemID: id, baseFilesystemID: .zero, sequence: 2, hash: 99)
        let resumedBegin = record(.begin, resumed.encoded())
        // A raw stream (RawSend.swift): a sealed data block, then the root.
        hash = 0
        sequence = 0
        var sized = begin
        sized.expectedBytes = 4096
        var sealed = Blockref(type: .data, methods: Blockref.methods(check: .xaes256gcm, compression: .none), key: 0, keybits: 16, tid: 0)
        sealed.dataOffset = 10
        let rawBlocks = SendStreamRawBlocks(blocks: [.init(tree: 1024, bref: sealed, stored: Array(repeating: 9, count: 1024))]).encoded()
        let raw = record(.rawBegin, sized.encoded()) + record(.rawBlocks, rawBlocks)
            + record(.rawRoot, [UInt8](repeating: 0, count: HAMMER2.inodeBytes)) + record(.end, SendStreamEnd(inodeRecords: 2, dataBytes: 1024).encoded())
        return [full, Array(full.prefix(full.count / 2)), resumedBegin, Array(token.text.utf8), [], raw]
    }

    /// Intent log commits (header + payload): an empty one, a new file with data and a
    /// zero range, a directory with entry changes, two PFSes.
    public static func intentLogSeeds() -> [[UInt8]] {
        func commit(_ pfses: [IntentLogCommit.PFSChanges], sequence: UInt64) -> [UInt8] {
            let payload = IntentLogCommit(pfses: pfses).encoded()
            var header = [UInt8](repeating: 0, count: IntentLogHeader.bytes)
            header.withUnsafeMutableBytes {
                IntentLogHeader(base: 16, sequence: sequence, payloadBytes: UInt64(payload.count), fsid: .zero,
                                payloadHash: payload.withUnsafeBytes { CheckCode.xxhash64($0, seed: 0) }).encode(into: $0)
            }
            return header + payload
        }
        var file = InodeMeta(version: 1, ctime: 1, mtime: 2, atime: 3, btime: 4, uid: .unixID(0), gid: .unixID(0),
                             type: .regularFile, mode: 0o644, inum: 100, nlinks: 1)
        file.size = 70_000
        var dir = file
        dir.type = .directory
        dir.inum = 101
        let fileRecord = IntentLogCommit.Inode(inum: 100, isNew: true, meta: file, filename: Array("0x64".utf8), diskLimit: .max,
                                               lowestSize: 4096, entryChanges: [],
                                               ranges: [.init(offset: 0, length: 5, bytes: Array("hello".utf8)),
                                                        .init(offset: 65_536, length: 4464, bytes: nil)])
        let dirRecord = IntentLogCommit.Inode(inum: 101, isNew: false, meta: dir, filename: Array("0x65".utf8), diskLimit: .max,
                                              lowestSize: .max,
                                              entryChanges: [.init(key: 0x8000_0000_0000_1000, entry: (100, .regularFile, Array("a".utf8))),
                                                             .init(key: 0x8000_0000_0000_2000, entry: nil)], ranges: [])
        return [
            commit([], sequence: 0),
            commit([.init(label: Array("DATA".utf8), nextInodeNumber: 101, inodes: [fileRecord])], sequence: 1),
            commit([.init(label: Array("DATA".utf8), nextInodeNumber: 102, inodes: [dirRecord, fileRecord])], sequence: 2),
            commit([.init(label: Array("DATA".utf8), nextInodeNumber: 102, inodes: [dirRecord]),
                    .init(label: Array("HOME".utf8), nextInodeNumber: 9, inodes: [fileRecord])], sequence: 3),
            commit([.init(label: Array("ROOT".utf8), nextInodeNumber: 5, inodes: [])], sequence: 4),
        ]
    }

    /// Attribute tables: empty, one of each namespace, long names and values, many records.
    public static func attributeTableSeeds() -> [[UInt8]] {
        var seeds: [[UInt8]] = [AttributeTable().encoded()]
        var table = AttributeTable()
        for namespace in AttributeTable.Namespace.allCases {
            let acl = namespace == .posixACLAccess || namespace == .posixACLDefault
            table.set(.init(namespace, acl ? [] : Array("name".utf8)), Array("value of \(namespace)".utf8))
            seeds.append(table.encoded())
        }
        var long = AttributeTable()
        long.set(.init(.user, [UInt8](repeating: 0x6E, count: AttributeTable.maximumNameBytes)), [UInt8](repeating: 7, count: 3000))
        seeds.append(long.encoded())
        var many = AttributeTable()
        for i in 0..<40 { many.set(.init(.user, Array("k\(i)".utf8)), [UInt8(i)]) }
        seeds.append(many.encoded())
        return seeds
    }

    /// Key history and dirent name seeds: histories of 0-3 older keys with cursors, and
    /// scheme-2 names of every length class (inline and name block) as the engine writes them.
    public static func keyHistorySeeds() -> [[UInt8]] {
        var seeds: [[UInt8]] = []
        for count in 0...3 {
            var entries: [KeyHistory.Entry] = []
            for i in 0..<count {
                let master = [UInt8](repeating: UInt8(i + 1), count: 32)
                entries.append(KeyHistory.Entry(keyID: UInt32(0x1000 + i), retiredAt: UInt64(50 + i), master: master))
            }
            seeds.append(KeyHistory(entries: entries, cursorInode: UInt64(count * 1024), cursorOffset: UInt64(count) << 16).encoded())
        }
        let keys = PFSKeys(master: [UInt8](repeating: 3, count: 32), domain: [UInt8](repeating: 4, count: 16), scheme: 2)
        for length in [3, 20, 40, 100] {
            let sealed = keys.sealDirentName((0..<length).map { UInt8(0x61 + $0 % 26) }, type: .regularFile, directory: 9)
            let low = UInt8(sealed.lengthField & 0xFF)
            let high: UInt8 = UInt8(sealed.lengthField >> 8) | (sealed.typeField.rawValue << 1)
            let area: [UInt8] = sealed.area ?? [UInt8](repeating: 0, count: 64)
            let block: [UInt8] = sealed.block ?? []
            seeds.append(area + [low, high] + block)
        }
        return seeds
    }

    /// Trace segment seeds: small segments with every kind of object a daemon's has
    /// (statistics, text, catalog, rings with records), whole and cut short.
    public static func traceSegmentSeeds() throws -> [[UInt8]] {
        let path = "\(TraceFiles.directory)/hammer2-seed.\(getpid()).ktr"
        defer { unlink(path) }
        var seeds: [[UInt8]] = []
        for variant in 0..<3 {
            unlink(path)
            do {
                let segment = try TraceSegment(path: path, bytes: 48 << 10)
                let stats = try segment.addStatistics(name: "volume.0", version: 1, fields: [
                    TraceField("reads", unit: "requests"), TraceField("bytes", .gauge, unit: "bytes"),
                    TraceField("latency", .histogram, count: 4, unit: "us"),
                ])
                stats.update { $0.add(stats.field("reads"), UInt64(variant + 1)) }
                try segment.addText(name: "mount", [("source", "/img/seed\(variant).img@DATA"), ("mountpoint", "/mnt")])
                if variant > 0 {
                    try segment.addCatalog(subsystems: [(0, "fuse"), (1, "io")],
                                           events: Array(TraceEvent.catalog.prefix(8 * variant)))
                }
                try segment.addRings(count: 2, records: 8)
                for i in 0..<(5 * (variant + 1)) { segment.record(UInt32(1 + i % 8), subsystem: 1, UInt64(i), UInt64(variant)) }
            }
            let whole = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            let trimmedSegment = trimmed(whole, keeping: TraceLayout.headerBytes, multiple: 8)
            seeds.append(trimmedSegment)
            seeds.append(Array(trimmedSegment.prefix(TraceLayout.headerBytes + 512 * (variant + 1))))
        }
        return seeds
    }

    /// `bytes` without trailing zeros, but at least `keeping` bytes and a multiple of `multiple`.
    static func trimmed(_ bytes: [UInt8], keeping: Int, multiple: Int = 1) -> [UInt8] {
        var end = bytes.count
        while end > keeping, bytes[end - 1] == 0 { end -= 1 }
        end = min(bytes.count, (end + multiple - 1) / multiple * multiple)
        return Array(bytes[0..<end])
    }

    /// A base image written by this implementation: LZ4 and zlib files, a directory large
    /// enough for indirect blocks, a file with an indirect data tree, a long name, links,
    /// files with 2 copies (so volume version 5, metadata with 3), an encrypted PFS, and a
    /// snapshot, after two flushes and a bulkfree.
    public static func generatedImage() throws -> SparseImage {
        let size: UInt64 = 1 << 30
        let device = OverlayDevice(base: SparseImage(name: "generated", size: size, chunks: [:]))
        _ = try Formatter.format(device: device, options: FormatOptions(labels: ["DATA"]), now: 1_700_000_000_000_000)
        let volumes = try VolumeSet(devices: [device])
        let filesystem = try MutableFilesystem(volumes: volumes, readOnly: false, cacheBytes: 8 << 20)
        let pfs = try filesystem.openPFS("DATA")
        let root = PFSHandle.rootInodeNumber
        let caller = Caller(uid: 1000, gid: 1000)
        func file(_ parent: UInt64, _ name: String, _ bytes: [UInt8]) throws -> UInt64 {
            let inum = try pfs.create(in: parent, name: Array(name.utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
            _ = try bytes.withUnsafeBytes { try pfs.write(inum, offset: 0, $0) }
            return inum
        }
        let text = Array(String(repeating: "HAMMER2 copy-on-write block ", count: 5000).utf8)
        let lz4Dir = try pfs.create(in: root, name: Array("lz4".utf8), type: .directory, mode: 0o755, caller: caller).meta.inum
        try pfs.setMethods(lz4Dir, compAlgo: InodeMeta.compAlgo(.lz4), checkAlgo: nil)
        _ = try file(lz4Dir, "text", text)
        let zlibDir = try pfs.create(in: root, name: Array("zlib".utf8), type: .directory, mode: 0o755, caller: caller).meta.inum
        try pfs.setMethods(zlibDir, compAlgo: InodeMeta.compAlgo(.zlib, level: 6), checkAlgo: CheckMethod.sha192.rawValue)
        _ = try file(zlibDir, "text", text)
        let many = try pfs.create(in: root, name: Array("many".utf8), type: .directory, mode: 0o755, caller: caller).meta.inum
        for i in 0..<120 { _ = try file(many, "entry-\(i)", Array("small file \(i)\n".utf8)) }
        let big = try file(root, "big", (0..<(1_200 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) })
        _ = try file(root, String(repeating: "long-name-", count: 10), Array("long\n".utf8))
        _ = try pfs.create(in: root, name: Array("link".utf8), type: .softlink, mode: 0o777, caller: caller, target: Array("big".utf8))
        _ = try pfs.link(big, into: many, name: Array("hardlink".utf8))
        _ = try pfs.create(in: root, name: Array("fifo".utf8), type: .fifo, mode: 0o644, caller: caller)
        let copies = try pfs.create(in: root, name: Array("copies".utf8), type: .directory, mode: 0o755, caller: caller).meta.inum
        try pfs.setCopies(copies, 2)
        for i in 0..<12 { _ = try file(copies, "copy-\(i)-" + String(repeating: "c", count: 60), Array(text.prefix(i * 9000 + 1))) }
        // An encrypted PFS (unlocked by the fixed fuzz key file) with a few entries.
        try filesystem.createPFS(label: "VAULT", encryption: .keyFile(fuzzKeyFile))
        let vault = try filesystem.openPFS("VAULT")
        let secrets = try vault.create(in: root, name: Array("secrets".utf8), type: .directory, mode: 0o700, caller: caller).meta.inum
        for i in 0..<40 {
            let inum = try vault.create(in: secrets, name: Array("note-\(i)-".utf8) + Array(repeating: UInt8(ascii: "x"), count: i * 2),
                                        type: .regularFile, mode: 0o600, caller: caller).meta.inum
            _ = try text.prefix(i * 3000).map { $0 }.withUnsafeBytes { try vault.write(inum, offset: 0, $0) }
        }
        try filesystem.flush()
        try filesystem.snapshot(of: "DATA", label: "DATA.snap")
        try pfs.unlink(in: many, name: Array("entry-7".utf8))
        _ = try pfs.setAttributes(big, AttributeChanges(size: 300_000))
        try filesystem.flush()
        _ = try filesystem.bulkfree()
        return device.snapshot(name: "generated")
    }
}

extension ImageFuzzer {
    /// The fixtures the image fuzzer mutates after its generated image, in base-selector
    /// order (flag bits 0-1): the committed corpus depends on this order.
    public static let fixtureBases = ["tiny", "links", "compress"]

    /// The generated image followed by the fixture images, given a way to find a fixture's
    /// decompressed image file by name.
    public static func standardBases(fixtureImage: (String) throws -> String) throws -> [SparseImage] {
        var bases = [try FuzzSeeds.generatedImage()]
        for name in fixtureBases { bases.append(try SparseImage.load(path: try fixtureImage(name))) }
        return bases
    }
}

/// The key file of the generated image's encrypted PFS VAULT (fuzzing only).
public let fuzzKeyFile: [UInt8] = Array("hammer2 fuzz key file, not a secret: 0123456789".utf8)
