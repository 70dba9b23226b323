// Writing into images DragonFly made: each new file is stored the way the directory's
// comp_algo/check_algo say (zlib + sha192, autozero + no check, lz4 + xxhash64), the
// DragonFly-written files stay intact, and the image passes fsck and reads back.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class FixtureWriteTests: XCTestCase {
    struct Expectation {
        var fixture: String
        var text: CompressionMethod  // how a compressible block is stored
        var check: CheckMethod
    }

    /// A private sparse copy of a fixture image (the cached original must not change).
    func copyOf(_ fixture: String) throws -> URL {
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("h2-fixture-write-\(fixture)-\(getpid()).img")
        try? FileManager.default.removeItem(at: copy)
        XCTAssertEqual(try Fixtures.run("/usr/bin/env", ["cp", "--sparse=always", try Fixtures.image(fixture).path, copy.path]), 0)
        return copy
    }

    func testNewFilesFollowTheMethodsOfTheirDirectory() throws {
        for expected in [Expectation(fixture: "compress", text: .zlib, check: .sha192),
                         Expectation(fixture: "autozero", text: .none, check: .none),
                         Expectation(fixture: "sizes", text: .lz4, check: .xxhash64)] {
            let image = try copyOf(expected.fixture)
            defer { try? FileManager.default.removeItem(at: image) }
            let manifest = try Fixtures.manifest(expected.fixture)
            let before = try TreeWalk.walk(try Filesystem(paths: [image.path]).openPFS("DATA"))

            let mount = try MountedImage("\(image.path)@DATA", options: ["-o", "rw"])
            let root = mount.mountpoint.path
            let text = Array((0..<40_000).map { "record \($0) of a compressible file\n" }.joined().utf8)
            var random = SplitMix64(seed: 31)
            let noise = random.bytes(200_000)
            let zeros = [UInt8](repeating: 0, count: 256 << 10)
            for (name, bytes) in [("new-text", text), ("new-noise", noise), ("new-zeros", zeros)] {
                XCTAssertTrue(FileManager.default.createFile(atPath: root + "/" + name, contents: Data(bytes)), name)
            }
            XCTAssertEqual(mkdir(root + "/new-dir", 0o755), 0)
            XCTAssertEqual(try mount.unmount(), 0)

            let fsck = try Binaries.run("fsck_hammer2", [image.path])
            XCTAssertEqual(fsck.status, 0, "\(expected.fixture): \(fsck.stdout)\n\(fsck.stderr)")
            let pfs = try Filesystem(paths: [image.path]).openPFS("DATA")
            func leaves(_ name: String) throws -> [Blockref] {
                let entry = try pfs.lookup(in: pfs.root, name: Array(name.utf8))
                var refs: [Blockref] = []
                try BlockTree(reader: pfs.reader).forEachLeaf(in: try pfs.inode(entry.inum).blockset, from: 0, through: .max) {
                    refs.append($0)
                    return true
                }
                return refs
            }
            let textBlocks = try leaves("new-text")
            XCTAssertEqual(Set(textBlocks.map(\.compression)), [expected.text], "\(expected.fixture): text blocks")
            XCTAssertEqual(Set(textBlocks.map(\.checkMethod)), [expected.check], "\(expected.fixture): check method")
            XCTAssertEqual(Set(try leaves("new-noise").map(\.compression)), [.none], "\(expected.fixture): random data is stored raw")
            // All-zero blocks become holes unless the check method is none (DragonFly's rule).
            let zeroBlocks = try leaves("new-zeros").count
            if expected.check == .none { XCTAssertEqual(zeroBlocks, 4) } else { XCTAssertEqual(zeroBlocks, 0) }
            for (name, bytes) in [("new-text", text), ("new-noise", noise), ("new-zeros", zeros)] {
                let entry = try pfs.lookup(in: pfs.root, name: Array(name.utf8))
                XCTAssertEqual(sha256Hex(try pfs.read(try pfs.inode(entry.inum), offset: 0, count: bytes.count)), sha256Hex(bytes), name)
            }
            // What DragonFly wrote is unchanged.
            let after = try TreeWalk.walk(pfs)
            let old = Set(manifest.pfs.first { $0.name == "DATA" }!.entries.map(\.path))
            for entry in before where old.contains(String(decoding: entry.path, as: UTF8.self)) && entry.path != Array("/".utf8) {
                let now = after.first { $0.path == entry.path }
                XCTAssertEqual(now?.sha256, entry.sha256, "\(expected.fixture): \(String(decoding: entry.path, as: UTF8.self))")
            }
        }
    }
}
