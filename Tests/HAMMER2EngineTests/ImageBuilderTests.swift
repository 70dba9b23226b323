// Images written by the test-support ImageBuilder, read back through the engine: every
// path, type, size, content hash, symlink target, mode, owner, time and link count must
// come back as described, and the blocks must be laid out as DragonFly's write path does
// (compression kept only when it halves a block, zero blocks as holes, check codes).

import Foundation
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

/// A path for a test image, removed after the test unless $HAMMER2_KEEP_TEST_IMAGES names a
/// folder to keep it in (to inspect it, or check it with another implementation's fsck).
func keptOrTemporaryImage(_ name: String, test: XCTestCase) -> String {
    if let folder = ProcessInfo.processInfo.environment["HAMMER2_KEEP_TEST_IMAGES"] {
        return folder + "/" + name + ".img"
    }
    let path = NSTemporaryDirectory() + "hammer2-imagebuilder-\(getpid())-\(name).img"
    test.addTeardownBlock { unlink(path) }
    return path
}

/// What the description says a path should read back as.
struct ExpectedEntry {
    var type: ObjectType
    var size: UInt64
    var sha256: String?
    var target: [UInt8]?
    var mode: UInt32
    var uid: UInt32
    var gid: UInt32
    var mtime: UInt64
    var nlink: UInt64
}

/// Expected entries of a PFS description, hard links resolved.
func expectations(of pfs: PFSSpec, timestamp: UInt64) -> [[UInt8]: ExpectedEntry] {
    var result: [[UInt8]: ExpectedEntry] = [:]
    var links: [([UInt8], [UInt8])] = []
    func attributes(_ a: NodeAttributes, _ type: ObjectType, _ defaultMode: UInt32, size: UInt64) -> ExpectedEntry {
        ExpectedEntry(type: type, size: size, mode: a.mode ?? defaultMode, uid: a.uid, gid: a.gid,
                      mtime: a.mtime ?? timestamp, nlink: 1)
    }
    func walk(_ directory: DirectorySpec, _ path: [UInt8]) {
        for entry in directory.entries {
            let childPath = path + Array("/".utf8) + entry.name
            switch entry.node {
            case let .directory(spec):
                result[childPath] = attributes(spec.attributes, .directory, 0o755, size: 0)
                walk(spec, childPath)
            case let .file(spec):
                var expected = attributes(spec.attributes, .regularFile, 0o644, size: spec.content.size)
                expected.sha256 = sha256Hex(materialize(spec.content))
                result[childPath] = expected
            case let .symlink(spec):
                var expected = attributes(spec.attributes, .softlink, 0o777, size: UInt64(spec.target.count))
                expected.target = spec.target
                result[childPath] = expected
            case let .fifo(a):
                result[childPath] = attributes(a, .fifo, 0o644, size: 0)
            case let .special(type, a, _, _):
                result[childPath] = attributes(a, type, 0o644, size: 0)
            case let .hardLink(target):
                links.append((childPath, target))
            }
        }
    }
    result[Array("/".utf8)] = attributes(pfs.root.attributes, .directory, 0o755, size: 0)
    walk(pfs.root, [])
    // Count every name first, then give each link its target's final record.
    for (_, target) in links { result[target]!.nlink += 1 }
    for (path, target) in links { result[path] = result[target] }
    return result
}

func materialize(_ content: FileContent) -> [UInt8] {
    switch content {
    case let .bytes(bytes): return bytes
    case let .generated(size, fill):
        var bytes = [UInt8](repeating: 0, count: Int(size))
        bytes.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let count = min(65_536, raw.count - offset)
                fill(UInt64(offset), UnsafeMutableRawBufferPointer(rebasing: raw[offset..<(offset + count)]))
                offset += count
            }
        }
        return bytes
    }
}

func text(_ size: Int, seed: UInt64 = 1) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: size)
    bytes.withUnsafeMutableBytes { ContentGenerator.text(seed: seed, offset: 0, into: $0) }
    return bytes
}

func random(_ size: Int, seed: UInt64 = 2) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: size)
    bytes.withUnsafeMutableBytes { ContentGenerator.random(seed: seed, offset: 0, into: $0) }
    return bytes
}

/// Two different names with the same directory hash: permutations of '.'-separated parts
/// share the upper 32 hash bits (a sum of part CRCs), so a birthday search over the
/// 16 bits taken from the whole name's CRC finds a pair quickly.
func collidingNames() -> ([UInt8], [UInt8]) {
    let parts = ["p0", "p1", "p2", "p3", "p4", "p5"]
    var seen: [UInt64: [UInt8]] = [:]
    func permutations(_ rest: [String], _ prefix: [String], _ found: inout ([UInt8], [UInt8])?) {
        if found != nil { return }
        if rest.isEmpty {
            let name = Array(prefix.joined(separator: ".").utf8)
            let key = DirectoryHash.key(for: name)
            if let other = seen[key] { found = (other, name) } else { seen[key] = name }
            return
        }
        for (i, part) in rest.enumerated() {
            var remaining = rest
            remaining.remove(at: i)
            permutations(remaining, prefix + [part], &found)
        }
    }
    var found: ([UInt8], [UInt8])?
    permutations(parts, [], &found)
    return found!
}

final class ImageBuilderTests: XCTestCase {
    static let timestamp: UInt64 = 1_700_000_000_000_000

    func temporaryImage(_ name: String) -> String {
        keptOrTemporaryImage(name, test: self)
    }

    /// A PFS with a bit of everything the builder supports.
    static func mixedPFS() -> PFSSpec {
        let methods: [EntrySpec] = [BlockCompression.none, .autozero, .lz4, .zlib(level: 9)].flatMap { comp in
            [CheckMethod.none, .iscsi32, .xxhash64, .sha192].map { check in
                // text, a zero block (a hole unless comp or check is none), random, short tail
                let bytes = text(65_536, seed: 5) + [UInt8](repeating: 0, count: 65_536) + random(65_536) + text(3_000)
                return EntrySpec.file("\(comp)-\(check)", bytes, compression: comp, check: check)
            }
        }
        let bigDirectory: [EntrySpec] = (0..<3000).map { i in
            let name = i % 7 == 0 ? "long-" + String(repeating: "n", count: 60 + i % 180) + "-\(i)" : "entry-\(i)"
            return .file(name, i % 5 == 0 ? [] : text(i % 1500, seed: UInt64(i)))
        }
        let (collisionA, collisionB) = collidingNames()
        let names: [EntrySpec] = [64, 65, 100, 255].map { .file(String(repeating: "x", count: $0), Array("\($0)".utf8)) }
            + ["café", "日本語のファイル", "emoji-😀", "with space", "tab\there", "new\nline", "...", "-dash"]
                .map { .file($0, Array($0.utf8)) }
            + [EntrySpec(name: collisionA, node: .file(FileSpec(content: .bytes(Array("a".utf8))))),
               EntrySpec(name: collisionB, node: .file(FileSpec(content: .bytes(Array("b".utf8)))))]
        var deep = EntrySpec.file("bottom", Array("deep\n".utf8))
        for level in (0..<12).reversed() { deep = .directory("d\(level)", [deep]) }
        let sizes: [EntrySpec] = [0, 1, 511, 512, 513, 1000, 1024, 1025, 65_535, 65_536, 65_537].map { size in
            .file("size-\(size)", text(size, seed: UInt64(size)))
        }
        return PFSSpec(label: "DATA", compression: .lz4, check: .xxhash64, entries: sizes + [
            .file("big300k", text(300 * 1024 + 7)),
            .file("random200k", random(200 * 1024)),
            .file("zeros256k", [UInt8](repeating: 0, count: 256 * 1024)),
            .file("zeros-none", [UInt8](repeating: 0, count: 256 * 1024), compression: BlockCompression.none),
            .file("zeros-autozero-nocheck", [UInt8](repeating: 0, count: 128 * 1024), compression: .autozero, check: CheckMethod.none),
            .file("generated-1m", size: 1 << 20, compression: .zlib(level: 6)) { offset, buffer in
                ContentGenerator.text(seed: 9, offset: offset, into: buffer)
            },
            .directory("methods", methods),
            .directory("bigdir", bigDirectory),
            .directory("names", names),
            .directory("deep", [deep]),
            .directory("links", [
                .symlink("short", target: "../size-1"),
                .symlink("absolute", target: "/etc/passwd"),
                .symlink("dangling", target: "does/not/exist"),
                .symlink("t512", target: String(repeating: "a", count: 512)),
                .symlink("t513", target: String(repeating: "b", count: 513)),
                .symlink("t2000", target: String(repeating: "c/", count: 1000), check: .sha192),
            ]),
            .fifo("fifo", attributes: NodeAttributes(mode: 0o640)),
            .directory("hard", [
                .file("orig", text(2000)),
                .hardLink("copy", to: "/hard/orig"),
                .file("big_a", random(300 * 1024, seed: 4)),
                .hardLink("big_b", to: "/hard/big_a"),
                .hardLink("link-to-symlink", to: "/links/short"),
            ]),
            .directory("other", [.hardLink("third", to: "/hard/orig")]),
            .directory("attrs", [
                .file("setuid", Array("x".utf8), attributes: NodeAttributes(mode: 0o4755, uid: 1000, gid: 100,
                                                                              mtime: 1_600_000_000_123_456)),
                .file("mode0", [], attributes: NodeAttributes(mode: 0)),
                .directory("sticky", [], attributes: NodeAttributes(mode: 0o1777, uid: 65_534, mtime: 1)),
            ], compression: .zlib(level: 9), check: .iscsi32),
        ])
    }

    func testMixedImageReadsBackThroughTheEngine() throws {
        let other = PFSSpec(label: "OTHER", compression: .zlib(level: 9), check: .sha192, entries: [
            .file("text", text(200_000)),
            .directory("sub", [.file("raw", random(70_000))], compression: BlockCompression.none, check: .iscsi32),
        ])
        let spec = ImageSpec(pfs: [Self.mixedPFS(), other], timestamp: Self.timestamp, seed: 42)
        let built = try ImageBuilder.build(spec, at: temporaryImage("mixed"))
        let fs = try Filesystem(paths: [built.path])
        XCTAssertEqual(try fs.pfsEntries().map(\.name).sorted(), ["DATA", "LOCAL", "OTHER"])

        for pfsSpec in spec.pfs {
            let pfs = try fs.openPFS(pfsSpec.label)
            let expected = expectations(of: pfsSpec, timestamp: Self.timestamp)
            let walked = try TreeWalk.walk(pfs)
            XCTAssertEqual(Set(walked.map(\.path)), Set(expected.keys), "\(pfsSpec.label): set of paths")
            XCTAssertEqual(walked.count, expected.count, "\(pfsSpec.label): duplicate paths")
            let inums = try XCTUnwrap(built.pfs.first { $0.label == pfsSpec.label }).inodeNumbers
            for got in walked {
                let path = String(decoding: got.path, as: UTF8.self)
                guard let want = expected[got.path] else { continue }
                let meta = got.inode.meta
                XCTAssertEqual(meta.type, want.type, path)
                if let direntType = got.direntType { XCTAssertEqual(direntType, meta.type, "\(path) dirent type") }
                XCTAssertEqual(meta.size, want.size, "\(path) size")
                XCTAssertEqual(meta.mode, want.mode, "\(path) mode")
                XCTAssertEqual(meta.uid.unixID, want.uid, "\(path) uid")
                XCTAssertEqual(meta.gid.unixID, want.gid, "\(path) gid")
                XCTAssertEqual(meta.mtime, want.mtime, "\(path) mtime")
                XCTAssertEqual(meta.nlinks, want.nlink, "\(path) nlinks")
                XCTAssertEqual(meta.inum, inums[got.path] ?? meta.inum, "\(path) inum")
                if let sha = want.sha256 { XCTAssertEqual(got.sha256, sha, "\(path) content") }
                if let target = want.target { XCTAssertEqual(got.target, target, "\(path) target") }
            }
            // Every inode is reachable, the index holds nothing else, and the root's
            // statistics count exactly the indexed inodes.
            let indexed = try TreeWalk.indexedInodeNumbers(pfs)
            XCTAssertEqual(Set(indexed), Set(walked.map { $0.inode.meta.inum }).subtracting([1]), pfsSpec.label)
            XCTAssertEqual(pfs.rootBref.statsInodeCount, UInt64(indexed.count), "\(pfsSpec.label) inode_count")
            XCTAssertEqual(pfs.root.meta.pfsInum, (indexed.max() ?? 15) + 1, "\(pfsSpec.label) pfs_inum")
            XCTAssertEqual(pfs.root.meta.pfsType, .master)
            XCTAssertTrue(pfs.root.meta.isPFSRoot)
            XCTAssertEqual(pfs.rootBref.flags, Blockref.flagPFSRoot)
        }

        // Every name in the 3000-entry directory is found by hash lookup too.
        let data = try fs.openPFS("DATA")
        let bigdir = try data.inode(data.lookup(in: data.root, name: Array("bigdir".utf8)).inum)
        var names: [[UInt8]] = []
        try data.readDirectory(bigdir, from: 0) { names.append($0.name); return true }
        XCTAssertEqual(names.count, 3000)
        for name in names { XCTAssertNoThrow(try data.lookup(in: bigdir, name: name)) }
    }

    func testBlocksAreLaidOutAsDragonFlyWritesThem() throws {
        let spec = ImageSpec(pfs: [Self.mixedPFS()], timestamp: Self.timestamp, seed: 1)
        let built = try ImageBuilder.build(spec, at: temporaryImage("layout"))
        let fs = try Filesystem(paths: [built.path])
        let pfs = try fs.openPFS("DATA")
        func record(_ path: String) throws -> InodeRecord { try pfs.record(built.pfs[1].inodeNumbers[Array(path.utf8)]!) }
        func dataBlocks(_ path: String) throws -> [Blockref] {
            var refs: [Blockref] = []
            try pfs.tree.forEachLeaf(in: try record(path).data.blockset, from: 0, through: UInt64.max) {
                refs.append($0)
                return true
            }
            return refs
        }
        XCTAssertEqual(built.pfs.map(\.label), ["LOCAL", "DATA"])

        // Embedded up to 512 bytes, blocks from 513; the tail block is the smallest power of
        // two >= 1 KiB that holds it.
        XCTAssertTrue(try record("/size-512").data.meta.hasDirectData)
        XCTAssertTrue(try record("/size-0").data.meta.hasDirectData)
        XCTAssertFalse(try record("/size-513").data.meta.hasDirectData)
        XCTAssertEqual(try dataBlocks("/methods/none-xxhash64").map(\.physicalBytes), [65_536, 65_536, 65_536, 4096],
                       "a 3000-byte tail takes a 4 KiB block")
        for block in try dataBlocks("/random200k") {
            XCTAssertEqual(block.compression, .none, "random data does not halve: stored raw")
            XCTAssertEqual(block.physicalBytes, block.key == 3 * 65_536 ? 8192 : 65_536)
        }
        let big = try record("/big300k")
        XCTAssertEqual(big.data.blockset.filter { $0.type != .empty }.count, 1, "5 blocks need one indirect block")
        XCTAssertEqual(big.data.blockset[0].type, .indirect)
        XCTAssertEqual(big.bref.leafCount, 5)
        for block in try dataBlocks("/big300k") {
            XCTAssertEqual(block.compression, .lz4)
            XCTAssertEqual(block.keybits, 16)
            XCTAssertLessThanOrEqual(block.physicalBytes, 32_768)
        }
        XCTAssertTrue(try dataBlocks("/zeros256k").isEmpty, "zero blocks are holes with lz4 + xxhash64")
        XCTAssertEqual(try dataBlocks("/zeros-none").count, 4, "comp none writes zero blocks")
        XCTAssertEqual(try dataBlocks("/zeros-autozero-nocheck").map(\.methods), [0x00, 0x00],
                       "check none writes zero blocks even with autozero")

        for comp in [BlockCompression.none, .autozero, .lz4, .zlib(level: 9)] {
            for check in [CheckMethod.none, .iscsi32, .xxhash64, .sha192] {
                let path = "/methods/\(comp)-\(check)"
                let blocks = try dataBlocks(path)
                let holes = comp != .none && check != .none
                XCTAssertEqual(blocks.map(\.key), holes ? [0, 0x20000, 0x30000] : [0, 0x10000, 0x20000, 0x30000], path)
                for block in blocks {
                    XCTAssertEqual(block.checkMethod, check, path)
                    let compressible = block.key != 0x20000  // text and zeros halve, random data does not
                    let expected = (comp == .lz4 || comp.method == .zlib) && compressible ? comp.method : .none
                    XCTAssertEqual(block.compression, expected, "\(path) block \(block.key)")
                }
                let inode = try record(path)
                XCTAssertEqual(inode.bref.checkMethod, check == .none ? .xxhash64 : check, "\(path) inode bref")
                XCTAssertEqual(inode.data.meta.compAlgo, comp.compAlgo)
                XCTAssertEqual(inode.data.meta.checkAlgo, check.rawValue)
            }
        }

        // Long names live in 1 KiB blocks carrying the directory's check code.
        let names = try record("/names").data
        var direntBlocks = 0
        try pfs.tree.forEachLeaf(in: names.blockset, from: 0, through: UInt64.max) { bref in
            if bref.type == .dirent && bref.direntNameLength > 64 {
                XCTAssertEqual(bref.physicalBytes, 1024)
                XCTAssertEqual(bref.checkMethod, .xxhash64)
                direntBlocks += 1
            }
            return true
        }
        XCTAssertEqual(direntBlocks, 3)
    }

    func testDirectoryKeysFollowDragonFlysCollisionScan() throws {
        let (first, second) = collidingNames()
        let hash = DirectoryHash.key(for: first)
        XCTAssertEqual(DirectoryHash.key(for: second), hash)
        let spec = ImageSpec(pfs: [PFSSpec(label: "DATA", entries: [
            EntrySpec(name: first, node: .file(FileSpec(content: .bytes([1])))),
            EntrySpec(name: second, node: .file(FileSpec(content: .bytes([2])))),
            .file("alone", [3]),
        ])], timestamp: Self.timestamp, seed: 3)
        let built = try ImageBuilder.build(spec, at: temporaryImage("collide"))
        let pfs = try Filesystem(paths: [built.path]).openPFS("DATA")
        // hammer2_inode_create_normal's scan: a lone name gets hash + 1; the next colliding
        // name finds hash itself free.
        XCTAssertEqual(try pfs.lookup(in: pfs.root, name: first).key, hash + 1)
        XCTAssertEqual(try pfs.lookup(in: pfs.root, name: second).key, hash)
        XCTAssertEqual(try pfs.lookup(in: pfs.root, name: Array("alone".utf8)).key,
                       DirectoryHash.key(for: "alone") + 1)
        XCTAssertEqual(try pfs.read(pfs.inode(pfs.lookup(in: pfs.root, name: second).inum), offset: 0, count: 1), [2])
    }
}
