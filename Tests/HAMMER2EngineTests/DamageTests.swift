// Damaged copies of the fixtures (through a patching device, so the multi-GiB sparse
// images are never copied): each kind of damage must give a clear error on exactly what
// it hits, and everything else must still read back exactly as the manifest says.

import Foundation
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class DamageTests: XCTestCase {
    struct Opened {
        var device: PatchedDevice
        var manifest: FixtureManifest
    }

    func open(_ name: String) throws -> Opened {
        let device = PatchedDevice(base: try FileBlockDevice(path: Fixtures.image(name).path))
        return Opened(device: device, manifest: try Fixtures.manifest(name))
    }

    /// Every blockref in the tree under `refs` (indirect blocks included), in key order.
    func allBrefs(_ reader: BlockReader, _ refs: [Blockref]) throws -> [Blockref] {
        var out: [Blockref] = []
        for bref in refs.sorted(by: { $0.key < $1.key }) where bref.type != .empty {
            out.append(bref)
            if bref.type == .indirect { out += try allBrefs(reader, try reader.childBlockrefs(bref)) }
        }
        return out
    }

    func resolve(_ pfs: PFS, _ path: [UInt8]) throws -> InodeData {
        var inode = pfs.root
        for component in path.split(separator: UInt8(ascii: "/")) {
            inode = try pfs.inode(try pfs.lookup(in: inode, name: Array(component)).inum)
        }
        return inode
    }

    func readAll(_ pfs: PFS, _ inode: InodeData) throws -> [UInt8] {
        try pfs.read(inode, offset: 0, count: Int(inode.meta.size))
    }

    /// Checks every manifest entry: paths under `failing` must fail with an EIO-class
    /// error; all others must match the manifest.
    /// `unlistable`: directories whose listing fails while their entries stay reachable.
    func assertDamageConfined(_ opened: Opened, pfsName: String, failing: [String], unlistable: [String] = [],
                              file: StaticString = #filePath, line: UInt = #line) throws {
        let fs = try Filesystem(volumes: VolumeSet(devices: [opened.device]), cacheBytes: 0)
        let pfs = try fs.openPFS(pfsName)
        let expected = opened.manifest.pfs.first { $0.name == pfsName }!
        var failures = 0
        for entry in expected.entries {
            let path = entry.path!
            let mustFail = failing.contains { path == $0 || path.hasPrefix($0 + "/") } || unlistable.contains(path)
            do {
                let inode = try resolve(pfs, entry.pathBytes)
                var content: [UInt8] = []
                if inode.meta.type == .regularFile { content = try readAll(pfs, inode) }
                if inode.meta.type == .softlink { content = try pfs.readLink(inode) }
                if inode.meta.type == .directory {
                    try pfs.readDirectory(inode, from: 0) { _ in true }
                }
                XCTAssertFalse(mustFail, "\(path) should have failed to read", file: file, line: line)
                XCTAssertEqual(inode.meta.size, entry.size, "\(path) size", file: file, line: line)
                if let sha = entry.sha256 { XCTAssertEqual(sha256Hex(content), sha, "\(path) content", file: file, line: line) }
                if let target = entry.targetBytes { XCTAssertEqual(content, target, "\(path) target", file: file, line: line) }
            } catch let error as EngineError {
                failures += 1
                XCTAssertTrue(mustFail, "\(path) failed unexpectedly: \(error)", file: file, line: line)
                XCTAssertEqual(error.errno, EIO, "\(path): \(error) should be an I/O error", file: file, line: line)
            }
        }
        XCTAssertGreaterThan(failures, 0, "the damage was not detected at all", file: file, line: line)
    }

    func fileBrefs(_ opened: Opened, pfs pfsName: String, path: String) throws -> (InodeRecord, [Blockref]) {
        let fs = try Filesystem(volumes: VolumeSet(devices: [opened.device]), cacheBytes: 0)
        let pfs = try fs.openPFS(pfsName)
        let inode = try resolve(pfs, Array(path.utf8))
        let record = try pfs.record(inode.meta.inum)
        return (record, try allBrefs(fs.reader, inode.blockset))
    }

    func testFlippedLZ4DataBlockFailsOnlyThatFile() throws {
        let opened = try open("sizes")
        let (_, brefs) = try fileBrefs(opened, pfs: "DATA", path: "/sizes/1MiB")
        let target = try XCTUnwrap(brefs.first { $0.type == .data && $0.compression == .lz4 })
        try opened.device.flip(target.mediaOffset + 17)
        try assertDamageConfined(opened, pfsName: "DATA", failing: ["/sizes/1MiB"])
    }

    func testFlippedZlibDataBlockFailsOnlyThatFile() throws {
        let opened = try open("compress")
        let (_, brefs) = try fileBrefs(opened, pfs: "DATA", path: "/data/text_2MiB.txt")
        let target = try XCTUnwrap(brefs.filter { $0.type == .data && $0.compression == .zlib }.dropFirst(3).first)
        try opened.device.flip(target.mediaOffset + UInt64(target.physicalBytes / 2), mask: 0x80)
        try assertDamageConfined(opened, pfsName: "DATA", failing: ["/data/text_2MiB.txt"])
    }

    func testFlippedIndirectBlockFailsOnlyThatFile() throws {
        let opened = try open("sizes")
        let (_, brefs) = try fileBrefs(opened, pfs: "DATA", path: "/sizes/10MiB")
        let indirect = try XCTUnwrap(brefs.first { $0.type == .indirect })
        try opened.device.flip(indirect.mediaOffset + 5)
        try assertDamageConfined(opened, pfsName: "DATA", failing: ["/sizes/10MiB"])
    }

    func testFlippedStoredCheckCodeIsCaughtByItsParent() throws {
        // The check value of a data blockref lives inside an indirect block: flipping it
        // changes that indirect block, whose own check code then fails.
        let opened = try open("sizes")
        let (_, brefs) = try fileBrefs(opened, pfs: "DATA", path: "/sizes/10MiB")
        let indirect = try XCTUnwrap(brefs.first { $0.type == .indirect })
        try opened.device.flip(indirect.mediaOffset + 0x40)  // slot 0's check.xxhash64
        try assertDamageConfined(opened, pfsName: "DATA", failing: ["/sizes/10MiB"])
    }

    func testFlippedInodeFailsOnlyThatFile() throws {
        let opened = try open("tiny")
        let (record, _) = try fileBrefs(opened, pfs: "DATA", path: "/tiny/t0127.bin")
        try opened.device.flip(record.bref.mediaOffset + 0x60)  // inode size field
        try assertDamageConfined(opened, pfsName: "DATA", failing: ["/tiny/t0127.bin"])
    }

    func testFlippedLongNameBlockFailsOnlyThatEntry() throws {
        let opened = try open("names")
        let fs = try Filesystem(volumes: VolumeSet(devices: [opened.device]), cacheBytes: 0)
        let pfs = try fs.openPFS("names-vol")
        // Find a directory entry whose name (> 64 bytes) lives in its own block.
        var victim: (path: String, bref: Blockref)?
        func search(_ dir: InodeData, _ prefix: String) throws {
            for bref in try allBrefs(fs.reader, dir.blockset) where victim == nil && bref.type == .dirent {
                if bref.direntNameLength > 64, bref.direntType == .regularFile {
                    let name = String(decoding: try fs.reader.physical(bref).prefix(bref.direntNameLength), as: UTF8.self)
                    victim = (prefix + "/" + name, bref)
                }
            }
            var subdirectories: [(String, InodeData)] = []
            try pfs.readDirectory(dir, from: 0) { entry in
                if entry.type == .directory {
                    subdirectories.append((prefix + "/" + String(decoding: entry.name, as: UTF8.self), try pfs.inode(entry.inum)))
                }
                return true
            }
            for (path, sub) in subdirectories where victim == nil { try search(sub, path) }
        }
        try search(pfs.root, "")
        let (path, bref) = try XCTUnwrap(victim)
        try opened.device.flip(bref.mediaOffset + 3)
        let parent = String(path[..<path.lastIndex(of: "/")!])
        // The entry itself cannot be found and its directory cannot be listed whole, but its
        // siblings are still found by name.
        try assertDamageConfined(opened, pfsName: "names-vol", failing: [path], unlistable: [parent.isEmpty ? "/" : parent])
    }

    func testZeroedOnlyVolumeHeaderIsRefusedWithReason() throws {
        let opened = try open("tiny")
        opened.device.patch(0, [UInt8](repeating: 0, count: 4096))
        XCTAssertThrowsError(try VolumeSet(devices: [opened.device])) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("no valid volume headers"), text)
            XCTAssertTrue(text.contains("bad magic"), text)
        }
    }

    func testRandomVolumeHeaderIsRefused() throws {
        let opened = try open("tiny")
        var generator = SystemRandomNumberGenerator()
        opened.device.patch(0, (0..<65_536).map { _ in UInt8.random(in: 0...255, using: &generator) })
        XCTAssertThrowsError(try VolumeSet(devices: [opened.device]))
    }

    func testVolumeHeaderCRCMismatchIsRefused() throws {
        let opened = try open("tiny")
        try opened.device.flip(0x28)  // volu_size, covered by icrc_sects[7]
        XCTAssertThrowsError(try VolumeSet(devices: [opened.device])) { error in
            XCTAssertTrue("\(error)".contains("crc mismatch sect0"), "\(error)")
        }
    }

    func testDamagedBestHeaderFallsBackToAnOlderCopy() throws {
        let opened = try open("bigdir")
        let intact = try VolumeSet(devices: [opened.device])
        let best = intact.volumes[0].headerIndex
        let bestTID = intact.header.mirrorTID
        try opened.device.flip(UInt64(best) * HAMMER2.zoneBytes + 0x78)  // mirror_tid
        let fallback = try VolumeSet(devices: [opened.device])
        XCTAssertNotEqual(fallback.volumes[0].headerIndex, best)
        XCTAssertLessThan(fallback.header.mirrorTID, bestTID)
        // The older state is a complete filesystem: it opens and lists.
        let fs = try Filesystem(volumes: fallback)
        XCTAssertFalse(try fs.pfsEntries().isEmpty)
    }

    func testTruncatedImageIsRefusedWithReason() throws {
        let image = try Fixtures.image("tiny")
        let truncated = FileManager.default.temporaryDirectory.appendingPathComponent("hammer2-truncated-\(getpid()).img")
        defer { try? FileManager.default.removeItem(at: truncated) }
        XCTAssertEqual(try Fixtures.run("/usr/bin/env", ["cp", "--sparse=always", image.path, truncated.path]), 0)
        XCTAssertEqual(truncate(truncated.path, 64 << 20), 0)
        XCTAssertThrowsError(try Filesystem(paths: [truncated.path])) { error in
            XCTAssertTrue("\(error)".contains("truncated"), "\(error)")
        }
        XCTAssertEqual(truncate(truncated.path, 1000), 0)
        XCTAssertThrowsError(try Filesystem(paths: [truncated.path])) { error in
            XCTAssertTrue("\(error)".contains("no valid volume headers"), "\(error)")
        }
    }

    /// Random bit flips in metadata blocks must never crash, hang, or produce content that
    /// differs from the manifest without an error.
    func testRandomMetadataFlipsNeverReturnWrongBytes() throws {
        let seed = UInt64(ProcessInfo.processInfo.environment["HAMMER2_DAMAGE_SEED"] ?? "") ?? UInt64.random(in: 1...UInt64.max)
        print("random metadata damage seed: \(seed) (replay with HAMMER2_DAMAGE_SEED=\(seed))")
        var rng = SplitMix64(seed: seed)
        for name in ["links", "sizes", "names"] {
            let opened = try open(name)
            let intact = try Filesystem(volumes: VolumeSet(devices: [opened.device]))
            let pfsName = opened.manifest.makefs.populated_pfs
            let metadata = try allBrefs(intact.reader, try intact.openPFS(pfsName).root.blockset)
                .filter { $0.type != .data && $0.physicalBytes > 0 }
            for _ in 0..<4 {
                let bref = metadata[Int(rng.next() % UInt64(metadata.count))]
                let offset = bref.mediaOffset + rng.next() % UInt64(bref.physicalBytes)
                try opened.device.flip(offset, mask: UInt8(1 << (rng.next() % 8)))
            }
            let fs = try Filesystem(volumes: VolumeSet(devices: [opened.device]), cacheBytes: 0)
            let pfs = try fs.openPFS(pfsName)
            let expected = opened.manifest.pfs.first { $0.name == pfsName }!
            for entry in expected.entries {
                guard let inode = try? resolve(pfs, entry.pathBytes) else { continue }
                if inode.meta.type == .regularFile, let content = try? readAll(pfs, inode), let sha = entry.sha256 {
                    XCTAssertEqual(sha256Hex(content), sha, "seed \(seed): \(name):\(entry.path!) returned wrong bytes")
                }
            }
        }
    }
}
