// Redundant copies through the engine (docs/copies.md): where copies go, that a damaged
// copy of any kind of block is served from a good one and rewritten, that scrub finds the
// rest, that a block with every copy bad is EIO for exactly its file, and that a two-volume
// set with copies reads everything with one volume gone.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class CopiesTests: XCTestCase {
    var directory = ""
    let caller = Caller(uid: 1000, gid: 100)
    let root = PFSHandle.rootInodeNumber

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("h2-copies-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    /// Sparse images formatted as one volume set.
    func makeVolumes(_ count: Int = 1, size: off_t = 1 << 30) throws -> [String] {
        let paths = (0..<count).map { "\(directory)/vol\($0).img" }
        for path in paths {
            FileManager.default.createFile(atPath: path, contents: nil)
            XCTAssertEqual(truncate(path, size), 0)
        }
        _ = try Formatter.format(devices: paths.map { try FileBlockDevice(path: $0, writable: true) },
                                 options: FormatOptions(labels: ["DATA"]))
        return paths
    }

    /// Files of every size class (embedded, one block, compressed, indirect data tree), a
    /// directory big enough for indirect blocks, long names; returns path -> content.
    func populate(_ pfs: PFSHandle, seed: UInt64 = 7) throws -> [String: [UInt8]] {
        var random = SplitMix64(seed: seed)
        var expected: [String: [UInt8]] = [:]
        func file(_ parent: UInt64, _ path: String, _ name: String, _ bytes: [UInt8]) throws {
            let inum = try pfs.create(in: parent, name: Array(name.utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
            _ = try bytes.withUnsafeBytes { try pfs.write(inum, offset: 0, $0) }
            expected[path] = bytes
        }
        for size in [100, 4096, 65_536, 200_000, 3_000_000] {
            // Half compressible (LZ4 is the default), half not.
            try file(root, "random-\(size)", "random-\(size)", random.bytes(size))
            try file(root, "text-\(size)", "text-\(size)", Array(String(repeating: "copies \(size) ", count: size / 8 + 1).utf8.prefix(size)))
        }
        let long = String(repeating: "l", count: 100)
        try file(root, long, long, Array("long name\n".utf8))
        let many = try pfs.create(in: root, name: Array("many".utf8), type: .directory, mode: 0o755, caller: caller).meta.inum
        for i in 0..<400 {
            try file(many, "many/entry-\(i)-" + String(repeating: "x", count: 70), "entry-\(i)-" + String(repeating: "x", count: 70),
                     Array("entry \(i)\n".utf8))
        }
        return expected
    }

    /// `populate` on PFS DATA of `paths` with 2 copies, flushed.
    func populated(_ paths: [String]) throws -> [String: [UInt8]] {
        let fs = try MutableFilesystem(paths: paths, writable: true)
        let pfs = try fs.openPFS("DATA")
        try pfs.setCopies(root, 2)
        let expected = try populate(pfs)
        try fs.flush()
        return expected
    }

    func check(_ pfs: PFSHandle, _ expected: [String: [UInt8]], file: StaticString = #filePath, line: UInt = #line) throws {
        for (path, bytes) in expected {
            let inum = try pfs.resolve(path)
            XCTAssertEqual(try pfs.read(inum, offset: 0, count: bytes.count + 1), bytes, path, file: file, line: line)
        }
        var names = 0
        try pfs.readDirectory(try pfs.resolve("many"), from: 0, withAttributes: true) { _, _ in names += 1; return true }
        XCTAssertEqual(names, 400, file: file, line: line)
    }

    /// Every blockref reachable from the header (topology and freemap), each once.
    func allBlockrefs(_ reader: BlockReader) throws -> [Blockref] {
        var result: [Blockref] = []
        var seen = Set<UInt64>()
        func walk(_ refs: [Blockref]) throws {
            for bref in refs where bref.type != .empty && bref.physicalRadix != 0 {
                guard seen.insert(bref.dataOffset).inserted else { continue }
                result.append(bref)
                switch bref.type {
                case .inode: if let children = try reader.blocksetForWalk(bref) { try walk(children) }
                case .indirect, .freemapNode: try walk(reader.childBlockrefs(bref))
                default: break
                }
            }
        }
        try walk(reader.volumes.header.superRootBlockset)
        try walk(reader.volumes.header.freemapBlockset)
        return result
    }

    func verifyClean(_ paths: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let volumes = try VolumeSet(paths: paths)
        let verifier = Verifier(volumes: volumes)
        let (_, topology) = verifier.verifyTree(.topology, header: volumes.header)
        let (_, freemap) = verifier.verifyTree(.freemap, header: volumes.header)
        XCTAssertEqual((topology + freemap).map(\.description), [], file: file, line: line)
        let agreement = verifier.verifyFreemapAgreement(header: volumes.header)
        XCTAssertEqual(agreement.problems.map(\.description), [], file: file, line: line)
    }

    func corrupt(_ path: String, at offset: UInt64, count: Int, zero: Bool) throws {
        let fd = open(path, O_RDWR)
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: count)
        if !zero {
            XCTAssertEqual(bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }, count)
            for i in stride(from: 0, to: count, by: max(1, count / 7)) { bytes[i] ^= 0x5A }
        }
        XCTAssertEqual(bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, count, off_t(offset)) }, count)
    }

    // MARK: Placement and format

    func testCopiesArePlacedApartAndMarkTheVolume() throws {
        let paths = try makeVolumes()
        let expected: [String: [UInt8]]
        do {
            let fs = try MutableFilesystem(paths: paths, writable: true)
            let pfs = try fs.openPFS("DATA")
            try pfs.setCopies(root, 2)
            XCTAssertThrowsError(try pfs.setCopies(root, 5))
            XCTAssertThrowsError(try pfs.setCopies(root, 0))
            expected = try populate(pfs)
            try fs.flush()
        }
        let fs = try MutableFilesystem(paths: paths, writable: false)
        XCTAssertEqual(fs.volumes.header.version, HAMMER2.volumeVersionCopies, "DragonFly must refuse the volume")
        let pfs = try fs.openPFS("DATA")
        try check(pfs, expected)
        XCTAssertEqual(try pfs.attributes(root).meta.ncopies, 2)
        XCTAssertEqual(try pfs.attributes(try pfs.resolve("many/entry-3-" + String(repeating: "x", count: 70))).meta.ncopies, 2,
                       "inherited from the directory")

        var kinds: [BlockrefType: Int] = [:]
        for bref in try allBlockrefs(fs.reader) where bref.mirrorTID > 16 {  // written since newfs
            kinds[bref.type, default: 0] += 1
            let wanted = bref.type == .data ? 2 : 3  // metadata gets one more
            XCTAssertEqual(bref.copyCount, wanted, describe(bref))
            let offsets = bref.copyMediaOffsets
            if bref.type == .freemapLeaf || bref.type == .freemapNode {
                // Freemap copies live in the reserved area they describe, in DragonFly's unused buffers 41-63.
                XCTAssertTrue(offsets.dropFirst().allSatisfy { $0 % (1 << 22) >= 41 << 16 && $0 >> 22 == offsets[0] >> 22 }, describe(bref))
            } else {
                XCTAssertEqual(Set(offsets.map { $0 >> 22 }).count, offsets.count, "copies of \(describe(bref)) share a 4 MiB segment")
            }
            var contents = Set<[UInt8]>()
            for offset in offsets {
                var bytes = [UInt8](repeating: 0, count: bref.physicalBytes)
                try bytes.withUnsafeMutableBytes { try fs.volumes.read(into: $0, at: offset) }
                contents.insert(bytes)
            }
            XCTAssertEqual(contents.count, 1, "copies of \(describe(bref)) differ")
        }
        for kind in [BlockrefType.data, .inode, .indirect, .dirent, .freemapLeaf] {
            XCTAssertGreaterThan(kinds[kind] ?? 0, 0, "no \(kind) block with copies")
        }
        try verifyClean(paths)

        // Bulkfree keeps every copy: nothing referenced is freed, everything reads after.
        do {
            let writer = try MutableFilesystem(paths: paths, writable: true)
            let result = try writer.bulkfree()
            XCTAssertEqual(result.repairedBlocks, 0)
        }
        try verifyClean(paths)
        let after = try MutableFilesystem(paths: paths, writable: true)
        try check(try after.openPFS("DATA"), expected)
        XCTAssertEqual(try after.scrub().badCopies, 0)
    }

    // MARK: Self-healing

    func testDamagedCopiesOfEveryKindAreHealedByReadsAndScrub() throws {
        let paths = try makeVolumes()
        let expected = try populated(paths)
        // Damage one copy of ~40% of the blocks of every kind: flipped bytes or zeros.
        var random = SplitMix64(seed: UInt64(ProcessInfo.processInfo.environment["HAMMER2_COPIES_SEED"].flatMap { UInt64($0) } ?? 11))
        var damaged: [BlockrefType: Int] = [:]
        var damagedFirstCopies = 0
        do {
            let reader = try MutableFilesystem(paths: paths, writable: false).reader
            // The first block of each kind, then ~40% of the others.
            for bref in try allBlockrefs(reader) where bref.copyCount > 1 && (damaged[bref.type] == nil || random.next() % 5 < 2) {
                let copy = Int(random.next() % UInt64(bref.copyCount))
                try corrupt(paths[0], at: bref.copyMediaOffsets[copy], count: bref.physicalBytes, zero: random.next() % 2 == 0)
                damaged[bref.type, default: 0] += 1
                if copy == 0 { damagedFirstCopies += 1 }
            }
        }
        for kind in [BlockrefType.data, .inode, .indirect, .dirent, .freemapLeaf] {
            XCTAssertGreaterThan(damaged[kind] ?? 0, 0, "no \(kind) block damaged")
        }
        let total = damaged.values.reduce(0, +)

        // Reads stop at the first good copy: they see (and repair) damaged first copies.
        var logged: [String] = []
        let lines = LockedLines()
        let fs = try MutableFilesystem(paths: paths, writable: true, copyLogger: { lines.append($0) })
        try check(try fs.openPFS("DATA"), expected)
        let events = fs.reader.copyEvents
        XCTAssertEqual(events.lostBlocks, 0)
        XCTAssertEqual(events.notRepaired, 0)
        XCTAssertEqual(events.repaired, events.badCopies)
        XCTAssertGreaterThan(events.repaired, 0)
        XCTAssertLessThanOrEqual(events.repaired, damagedFirstCopies)
        logged = lines.all
        XCTAssertEqual(logged.count, events.repaired)
        XCTAssertTrue(logged.allSatisfy { $0.hasPrefix("repaired copy 0 at 0x") }, logged.first ?? "")

        // Scrub reads every copy: the rest are found and repaired; together every damaged
        // copy was repaired exactly once.
        let scrubbed = try fs.scrub()
        XCTAssertEqual(scrubbed.lostBlocks, 0, scrubbed.problems.joined(separator: "\n"))
        XCTAssertEqual(scrubbed.repaired, scrubbed.badCopies)
        XCTAssertEqual(events.repaired + scrubbed.repaired, total)
        XCTAssertEqual(try fs.scrub().badCopies, 0, "a second scrub finds nothing")
        try verifyClean(paths)
        try check(try MutableFilesystem(paths: paths, writable: false).openPFS("DATA"), expected)
    }

    func testEveryCopyBadIsEIOForExactlyThatFile() throws {
        let paths = try makeVolumes()
        let expected = try populated(paths)
        let victim = "random-200000"
        do {
            let fs = try Filesystem(paths: paths)
            let pfs = try fs.openPFS("DATA")
            let inode = try pfs.inode(try pfs.lookup(in: pfs.root, name: Array(victim.utf8)).inum)
            let block = try XCTUnwrap(inode.blockset.first { $0.type == .data })
            XCTAssertEqual(block.copyCount, 2)
            for offset in block.copyMediaOffsets { try corrupt(paths[0], at: offset, count: block.physicalBytes, zero: false) }
        }
        let fs = try MutableFilesystem(paths: paths, writable: true)
        let lines = LockedLines()
        fs.reader.copyEvents.setLogger { lines.append($0) }
        let pfs = try fs.openPFS("DATA")
        XCTAssertThrowsError(try pfs.read(try pfs.resolve(victim), offset: 0, count: 200_000)) { error in
            XCTAssertEqual((error as? EngineError)?.errno, EIO, "\(error)")
        }
        XCTAssertEqual(fs.reader.copyEvents.lostBlocks, 1)
        XCTAssertTrue(lines.all.contains { $0.hasPrefix("all 2 copies of blockref data") }, lines.all.joined(separator: "\n"))
        var others = expected
        others[victim] = nil
        try check(pfs, others)
        let scrubbed = try fs.scrub()
        XCTAssertEqual(scrubbed.lostBlocks, 1)
        XCTAssertEqual(scrubbed.problems.count, 1)
        XCTAssertTrue(scrubbed.problems[0].contains("no good copy"), scrubbed.problems[0])
    }

    func testEncryptedBlocksWithCopiesHeal() throws {
        let paths = try makeVolumes()
        let passphrase = KeySource.passphrase(Array("copies".utf8))
        let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        do {
            let fs = try MutableFilesystem(paths: paths, writable: true)
            fs.keyDerivationCost = 10
            try fs.createPFS(label: "VAULT", encryption: passphrase, copies: 3)
            XCTAssertThrowsError(try fs.createPFS(label: "OTHER", encryption: passphrase, copies: 4), "3 at most when encrypted")
            let pfs = try fs.openPFS("VAULT")
            let inum = try pfs.create(in: root, name: Array("sealed".utf8), type: .regularFile, mode: 0o600, caller: caller).meta.inum
            _ = try bytes.withUnsafeBytes { try pfs.write(inum, offset: 0, $0) }
            try fs.flush()
        }
        do {
            let fs = try MutableFilesystem(paths: paths, writable: false)
            try fs.unlockPFS("VAULT", source: passphrase)
            let refs = try allBlockrefs(fs.reader).filter { $0.checkMethod == .xaes256gcm && $0.type == .data }
            XCTAssertGreaterThan(refs.count, 0)
            for bref in refs {
                XCTAssertEqual(bref.copyCount, 3)
                try corrupt(paths[0], at: bref.copyMediaOffsets[0], count: bref.physicalBytes, zero: false)
                try corrupt(paths[0], at: bref.copyMediaOffsets[1], count: bref.physicalBytes, zero: true)
            }
        }
        let fs = try MutableFilesystem(paths: paths, writable: true, copyLogger: { _ in })
        try fs.unlockPFS("VAULT", source: passphrase)
        let pfs = try fs.openPFS("VAULT")
        XCTAssertEqual(try pfs.read(try pfs.resolve("sealed"), offset: 0, count: bytes.count), bytes)
        XCTAssertGreaterThanOrEqual(fs.reader.copyEvents.repaired, 10)
        XCTAssertEqual(fs.reader.copyEvents.lostBlocks, 0)
        XCTAssertEqual(try fs.scrub().badCopies, 0, "reads repaired both bad copies of every block")
    }

    // MARK: Volume sets

    func testTwoVolumeSetWithCopiesReadsWithOneVolumeMissing() throws {
        let paths = try makeVolumes(2)
        let expected = try populated(paths)
        do {
            let fs = try MutableFilesystem(paths: paths, writable: false)
            XCTAssertEqual(fs.volumes.volumes.count, 2)
            let half: UInt64 = 1 << 30
            for bref in try allBlockrefs(fs.reader) where bref.copyCount > 1 && bref.type != .freemapLeaf && bref.type != .freemapNode {
                let volumes = Set(bref.copyMediaOffsets.map { $0 >= half })
                XCTAssertEqual(volumes.count, 2, "copies of \(describe(bref)) are on one volume")
            }
        }
        try verifyClean(paths)
        XCTAssertThrowsError(try MutableFilesystem(paths: [paths[0]], writable: false), "a missing volume needs degraded")
        XCTAssertThrowsError(try MutableFilesystem(paths: [paths[0]], writable: true, degraded: true), "degraded is read-only")
        XCTAssertThrowsError(try MutableFilesystem(paths: [paths[1]], writable: false), "a missing root volume needs degraded")

        // Either volume alone: the second carries the header too (a set with copies).
        for (present, missing) in [(paths[0], 1), (paths[1], 0)] {
            let degraded = try MutableFilesystem(paths: [present], writable: false, degraded: true, copyLogger: { _ in })
            XCTAssertEqual(degraded.volumes.missingVolumes, [missing])
            try check(try degraded.openPFS("DATA"), expected)
            let events = degraded.reader.copyEvents
            XCTAssertEqual(events.lostBlocks, 0, "volume \(missing) missing")
            if missing == 0 { XCTAssertGreaterThan(events.badCopies, 100, "first copies were on the missing volume") }
        }
    }
}

/// Log lines collected from any thread.
final class LockedLines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ line: String) { lock.withLock { lines.append(line) } }
    var all: [String] { lock.withLock { lines } }
}

extension CopiesTests {
    /// A full volume with copies: writes fail with ENOSPC up front (copies counted), what
    /// was flushed stays intact and verifies, and bulkfree gives the space back.
    func testFullVolumeWithCopiesFailsCleanly() throws {
        let paths = try makeVolumes(1, size: 128 << 20)
        var written: [String: [UInt8]] = [:]
        var random = SplitMix64(seed: 3)
        do {
            let fs = try MutableFilesystem(paths: paths, writable: true)
            let pfs = try fs.openPFS("DATA")
            try pfs.setCopies(root, 3)
            var full = false
            for i in 0..<200 where !full {
                let bytes = random.bytes(1 << 20)
                do {
                    let inum = try pfs.create(in: root, name: Array("f\(i)".utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
                    _ = try bytes.withUnsafeBytes { try pfs.write(inum, offset: 0, $0) }
                    try fs.flush()
                    written["f\(i)"] = bytes
                } catch let error as EngineError where error.errno == ENOSPC {
                    full = true
                    try? pfs.unlink(in: root, name: Array("f\(i)".utf8))
                }
            }
            XCTAssertTrue(full, "128 MiB with 3 copies must fill up")
            XCTAssertGreaterThan(written.count, 20)
            XCTAssertLessThan(written.count, 45, "each MiB takes 3 MiB")
            try fs.flush()
        }
        try verifyClean(paths)
        let fs = try MutableFilesystem(paths: paths, writable: true)
        let pfs = try fs.openPFS("DATA")
        for (name, bytes) in written {
            XCTAssertEqual(try pfs.read(try pfs.resolve(name), offset: 0, count: bytes.count), bytes, name)
        }
        for name in written.keys.sorted().prefix(10) { try pfs.unlink(in: root, name: Array(name.utf8)) }
        let freed = try fs.bulkfree().freedBytes
        XCTAssertGreaterThanOrEqual(freed, 30 << 20, "10 MiB of data with 3 copies each")
        XCTAssertEqual(try fs.scrub().badCopies, 0)
    }
}

extension CopiesTests {
    /// A blockref whose copy addresses point at the volume header (damaged, or crafted with
    /// valid check codes) must not make a repair overwrite it: the read is served from the
    /// good copy, the bad copies in allowed places are rewritten, the header is not.
    func testRepairsNeverWriteOutsideWhereBlocksCanBe() throws {
        let paths = try makeVolumes()
        let header = try FileBlockDevice(path: paths[0]).read(at: 0, count: 65_536)
        let data = (0..<1024).map { UInt8(truncatingIfNeeded: $0 &* 29 &+ 7) }
        let good: UInt64 = 200 << 20, damaged: UInt64 = 300 << 20
        do {
            let device = try FileBlockDevice(path: paths[0], writable: true)
            try data.withUnsafeBytes { try device.write($0, at: good) }
            try [UInt8](repeating: 0xA5, count: 1024).withUnsafeBytes { try device.write($0, at: damaged) }
        }
        var bref = Blockref(type: .data, methods: Blockref.methods(check: .xxhash64, compression: .none), key: 0, keybits: 10, tid: 20)
        bref.setCheck(over: data)
        // Copy 0 damaged, copy 1 "at" the volume header (fails its check), copy 2 good.
        bref.place([damaged | 10, 0 | 10, good | 10])
        let reader = BlockReader(volumes: try VolumeSet(paths: paths, writable: true))
        let lines = LockedLines()
        reader.copyEvents.setLogger { lines.append($0) }
        XCTAssertEqual(try reader.physical(bref), data)
        XCTAssertEqual(reader.copyEvents.repaired, 1, lines.all.joined(separator: "\n"))
        XCTAssertEqual(reader.copyEvents.notRepaired, 1)
        try reader.volumes.synchronize()
        XCTAssertEqual(try FileBlockDevice(path: paths[0]).read(at: damaged, count: 1024), data, "copy 0 repaired")
        XCTAssertEqual(try FileBlockDevice(path: paths[0]).read(at: 0, count: 65_536), header, "the volume header is untouched")
        XCTAssertTrue(lines.all.contains { $0.contains("impossible location") }, lines.all.joined(separator: "\n"))
    }
}
