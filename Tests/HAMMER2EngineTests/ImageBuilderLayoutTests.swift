// Media layout of ImageBuilder images: header copies, allocation rules, the freemap,
// blockref statistics and the shape of indirect-block trees.

import Foundation
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class ImageBuilderLayoutTests: XCTestCase {
    func temporaryImage(_ name: String) -> String {
        keptOrTemporaryImage(name, test: self)
    }

    /// Every blockref reachable from the volume header's super-root, parents before children.
    func allBlockrefs(_ fs: Filesystem) throws -> [Blockref] {
        var result: [Blockref] = []
        var pending = fs.volumes.header.superRootBlockset.filter { $0.type != .empty }
        while let bref = pending.popLast() {
            result.append(bref)
            switch bref.type {
            case .inode: pending += try fs.reader.inode(bref).blockset.filter { $0.type != .empty }
            case .indirect: pending += try fs.reader.childBlockrefs(bref).filter { $0.type != .empty }
            default: break
            }
        }
        return result
    }

    func testHeadersAllocationAndFreemapAgree() throws {
        // 5 GiB: header copies at 0, 2 and 4 GiB; data spills past the first 1 GiB so the
        // allocator has to step over a reserved area and write a second freemap leaf.
        let spec = ImageSpec(size: 5 << 30, pfs: [PFSSpec(label: "DATA", entries: [
            // Zeros with comp none are still written as blocks (and cost no disk space).
            .file("a", size: 1100 << 20, compression: BlockCompression.none, check: .xxhash64) { _, _ in },
            .directory("d", (0..<100).map { .file("f\($0)", Array("file \($0)".utf8)) }),
        ])], seed: 5)
        let built = try ImageBuilder.build(spec, at: temporaryImage("freemap"))
        XCTAssertTrue(built.hasFreemap)

        let device = try FileBlockDevice(path: built.path)
        let copies = VolumeSet.readHeaderCopies(device)
        XCTAssertEqual(copies.map(\.deviceOffset), [0, 2 << 30, 4 << 30])
        XCTAssertTrue(copies.allSatisfy { $0.problem == nil }, "\(copies.map(\.problem))")
        let raw = try copies.map { try device.read(at: $0.deviceOffset, count: HAMMER2.volumeHeaderBytes) }
        XCTAssertEqual(Set(raw).count, 1, "the copies are identical")

        let fs = try Filesystem(paths: [built.path])
        let header = fs.volumes.header
        XCTAssertEqual(header.volumeSize, spec.size)
        XCTAssertEqual(header.totalSize, spec.size)
        XCTAssertEqual(header.version, HAMMER2.volumeVersionMultiVolumes)
        XCTAssertEqual(header.volumeCount, 1)
        XCTAssertEqual(header.allocatorBegin, 4 << 20)

        // Allocation rules: nothing in the reserved 4 MiB of any 1 GiB, nothing across 64 KiB,
        // no two blocks overlap.
        let refs = try allBlockrefs(fs)
        var blocks: [(UInt64, UInt64)] = []
        for bref in refs where bref.physicalBytes > 0 {
            let offset = bref.mediaOffset
            XCTAssertGreaterThanOrEqual(offset % (1 << 30), 4 << 20, "block in a reserved area: \(bref)")
            XCTAssertLessThanOrEqual(offset % 65_536 + UInt64(bref.physicalBytes), 65_536, "block straddles 64 KiB")
            blocks.append((offset, offset + UInt64(bref.physicalBytes)))
        }
        blocks.sort { $0.0 < $1.0 }
        for i in 1..<blocks.count { XCTAssertLessThanOrEqual(blocks[i - 1].1, blocks[i].0, "overlapping blocks") }
        XCTAssertEqual(blocks.reduce(0) { $0 + $1.1 - $1.0 }, built.allocatedBytes)
        XCTAssertGreaterThan(blocks.last!.0, 1 << 30, "data continued past the first 1 GiB")

        // The freemap: one leaf per 1 GiB used, at rotation 0 of the reserved area, marking
        // every 16 KiB block the tree uses as allocated, and nothing else outside the
        // reserved areas.
        let leaves = header.freemapBlockset.filter { $0.type != .empty }
        XCTAssertEqual(leaves.map(\.key), [0, 1 << 30])
        var allocated = Set<UInt64>()
        for leaf in leaves {
            XCTAssertEqual(leaf.type, .freemapLeaf)
            XCTAssertEqual(leaf.keybits, 30)
            XCTAssertEqual(leaf.checkMethod, .freemap)
            XCTAssertEqual(leaf.mediaOffset, leaf.key + 65_536)
            let entries = try decodeFreemapLeaf(try fs.reader.physical(leaf))
            XCTAssertEqual(leaf.check.freemapAvail, entries.reduce(0) { $0 + UInt64($1.avail) })
            for (i, entry) in entries.enumerated() {
                let segment = leaf.key + UInt64(i) << 22
                let counts = entry.stateCounts
                XCTAssertEqual(UInt64(entry.avail), UInt64(counts.free) * 16_384, "avail of segment \(segment)")
                if segment % (1 << 30) == 0 {
                    XCTAssertEqual(counts.allocated, 256, "reserved segment fully allocated")
                    continue
                }
                for block in 0..<256 where entry.state(ofBlock: block) == .allocated {
                    allocated.insert(segment + UInt64(block) * 16_384)
                }
            }
        }
        var used = Set<UInt64>()
        for (start, end) in blocks {
            var block = start / 16_384 * 16_384
            while block < end { used.insert(block); block += 16_384 }
        }
        XCTAssertEqual(allocated, used)
        XCTAssertEqual(header.allocatorFree, header.allocatorSize - UInt64(used.count) * 16_384)
        XCTAssertEqual(header.allocatorSize, spec.size - 5 * (4 << 20))
    }

    func testStatisticsAddUpLikeDragonFlysBaseInsert() throws {
        let spec = ImageSpec(pfs: [PFSSpec(label: "DATA", entries: [
            .file("small", Array("tiny".utf8)),
            .file("blocks", [UInt8](repeating: 7, count: 200_000), compression: BlockCompression.none),
            .directory("dir", (0..<40).map { i in .file("f\(i)", (0..<600).map { UInt8(truncatingIfNeeded: $0 + i) }) }),
        ])], seed: 6)
        let built = try ImageBuilder.build(spec, at: temporaryImage("stats"))
        let fs = try Filesystem(paths: [built.path])
        let pfs = try fs.openPFS("DATA")
        let inums = built.pfs[1].inodeNumbers

        let blocks = try pfs.record(inums[Array("/blocks".utf8)]!)
        XCTAssertEqual(blocks.bref.statsDataCount, 3 * 65_536 + 4096, "data_count sums the physical blocks")
        XCTAssertEqual(blocks.bref.statsInodeCount, 0)
        XCTAssertEqual(blocks.bref.leafCount, 4)
        XCTAssertEqual(try pfs.record(inums[Array("/small".utf8)]!).bref.statsDataCount, 0, "embedded data")

        let indexed = try TreeWalk.indexedInodeNumbers(pfs)
        XCTAssertEqual(indexed.count, 43)
        XCTAssertEqual(pfs.rootBref.statsInodeCount, 43)
        // The super-root counts the PFS roots themselves too (LOCAL and DATA).
        XCTAssertEqual(fs.superRootBref.statsInodeCount, 45)
        XCTAssertEqual(fs.superRootBref.statsDataCount, pfs.rootBref.statsDataCount + 2 * 1024
                       + (try fs.pfsEntries().first { $0.name == "LOCAL" }!.bref.statsDataCount))
        XCTAssertEqual(fs.superRootBref.copyid, 0xFF)
        XCTAssertEqual(fs.superRootBref.methods, 0x31)
        XCTAssertEqual(fs.superRoot.meta.pfsType, .superRoot)
        XCTAssertEqual(fs.superRoot.filename, Array("SUPROOT".utf8))
    }

    func testLargeFilesGetFullBottomLevelIndirectBlocks() throws {
        // 2100 blocks of 64 KiB: four full 512-entry indirect blocks (keybits 25) and one of
        // 52, too many for the blockset, so one more level (an aligned 256 MiB range) on top.
        let size: UInt64 = 2100 * 65_536
        let spec = ImageSpec(pfs: [PFSSpec(label: "DATA", entries: [
            .file("big", size: size, compression: BlockCompression.none, check: .xxhash64) { offset, buffer in
                buffer.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: offset >> 16 | 1))
            },
        ])], seed: 7)
        let built = try ImageBuilder.build(spec, at: temporaryImage("tree"))
        let fs = try Filesystem(paths: [built.path])
        let pfs = try fs.openPFS("DATA")
        let inode = try pfs.record(1024)
        let top = inode.data.blockset.filter { $0.type != .empty }
        XCTAssertEqual(top.count, 1)
        XCTAssertEqual(top[0].type, .indirect)
        XCTAssertEqual(top[0].key, 0)
        XCTAssertEqual(top[0].keybits, 28)
        let middle = try fs.reader.childBlockrefs(top[0]).filter { $0.type != .empty }
        XCTAssertEqual(middle.map(\.keybits), [25, 25, 25, 25, 22], "the last is the smallest range covering 52 blocks")
        XCTAssertEqual(middle.map(\.leafCount), [512, 512, 512, 512, 52])
        XCTAssertEqual(middle.map(\.physicalBytes), [65_536, 65_536, 65_536, 65_536, 8192])
        XCTAssertEqual(inode.bref.leafCount, 2100)
        XCTAssertEqual(top[0].statsDataCount, 2100 * 65_536 + 4 * 65_536 + 8192)
        XCTAssertEqual(try pfs.read(inode.data, offset: 2099 * 65_536 + 5, count: 3),
                       [UInt8](repeating: UInt8(truncatingIfNeeded: 2099 | 1), count: 3))
    }

    func testSeededBuildsAreReproducible() throws {
        func build(_ name: String) throws -> [UInt8] {
            let spec = ImageSpec(size: 64 << 20, pfs: [ImageBuilderTests.mixedPFS()], timestamp: 1, seed: 99)
            let built = try ImageBuilder.build(spec, at: temporaryImage(name))
            let device = try FileBlockDevice(path: built.path)
            return try device.read(at: 0, count: Int(built.size))
        }
        let first = try build("repro1")
        XCTAssertTrue(first == (try build("repro2")), "same seed and time give identical images")
        XCTAssertNoThrow(try Filesystem(paths: [temporaryImage("repro1")]), "a 64 MiB image is valid too")
    }

    func testInvalidDescriptionsAreRejected() {
        func rejects(_ spec: ImageSpec, _ why: String) {
            XCTAssertThrowsError(try ImageBuilder.build(spec, at: temporaryImage("bad")), why)
        }
        rejects(ImageSpec(size: 12 << 20, pfs: []), "size not a multiple of 8 MiB")
        rejects(ImageSpec(pfs: [PFSSpec(label: "A", entries: [.file("x", []), .file("x", [])])]), "duplicate name")
        rejects(ImageSpec(pfs: [PFSSpec(label: "A", entries: [.file("a/b", [])])]), "slash in a name")
        rejects(ImageSpec(pfs: [PFSSpec(label: "A", entries: [.hardLink("l", to: "/missing")])]), "dangling hard link")
        rejects(ImageSpec(pfs: [PFSSpec(label: "A", entries: [.directory("d", []), .hardLink("l", to: "/d")])]),
                "hard link to a directory")
        rejects(ImageSpec(pfs: [PFSSpec(label: "A"), PFSSpec(label: "A")]), "duplicate labels")
        rejects(ImageSpec(size: 8 << 20, pfs: [PFSSpec(label: "A", entries: [.file("big", [UInt8](repeating: 1, count: 5 << 20),
                                                                                  compression: BlockCompression.none)])]),
                "image full")
    }
}
