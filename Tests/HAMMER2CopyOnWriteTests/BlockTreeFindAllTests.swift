// BlockTree.findAll, which READDIRPLUS uses to find a reply's inodes together (level by
// level, skipping the children no key falls in): for any sorted set of keys, present or
// not, it finds exactly what looking each one up alone finds.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class BlockTreeFindAllTests: XCTestCase {
    func testFindAllAgreesWithFindForSparseDenseAndMissingKeys() throws {
        let device = RecordingDevice(size: (2 << 30) + (64 << 20))
        _ = try Formatter.format(device: device, options: FormatOptions(labels: ["DATA"]))
        let caller = Caller(uid: 0, gid: 0)
        var made: [UInt64] = []
        do {
            let fs = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: false)
            let pfs = try fs.openPFS("DATA")
            // Enough inodes for two levels of indirect blocks in the inode tree; every
            // seventh removed again, so that the tree has gaps.
            for index in 0..<3_000 {
                made.append(try pfs.create(in: 1, name: Array("f\(index)".utf8), type: .regularFile, mode: 0o644,
                                           caller: caller).meta.inum)
            }
            for index in stride(from: 0, to: 3_000, by: 7) { try pfs.unlink(in: 1, name: Array("f\(index)".utf8)) }
            try pfs.flush()
        }
        let pfs = try Filesystem(volumes: VolumeSet(devices: [RecordingDevice(size: device.size, pages: device.contents)]))
            .openPFS("DATA")
        let tree = pfs.tree
        let blockset = pfs.root.blockset
        let highest = made.max()! + 10
        var expected: [UInt64: Blockref] = [:]
        for key in 0...highest + 50 {
            if let bref = try tree.find(in: blockset, key: key, type: .inode) { expected[key] = bref }
        }
        XCTAssertGreaterThan(expected.count, 2_500)
        var random = SplitMix64(seed: 77)
        var sets: [[UInt64]] = [[], [0], [highest + 40], Array(0...highest + 50), Array(stride(from: 1, through: highest, by: 97))]
        for _ in 0..<40 {
            // Runs (a reply's consecutive inodes) and scattered keys, present and missing.
            let start = random.next() % highest
            let run = (0..<(random.next() % 200)).map { start + $0 }
            let scattered = (0..<(random.next() % 50)).map { _ in random.next() % (highest + 50) }
            sets.append(Array(Set(run + scattered)).sorted())
        }
        for keys in sets {
            let found = try tree.findAll(in: blockset, keys: keys, type: .inode)
            let wanted = expected.filter { keys.contains($0.key) }
            XCTAssertEqual(Set(found.keys), Set(wanted.keys), "\(keys.count) keys from \(keys.first ?? 0)")
            for (key, bref) in found { XCTAssertEqual(bref.dataOffset, wanted[key]?.dataOffset, "inode \(key)") }
        }
        // A PFS that found a reply's inodes together loads them as one by one would.
        let some = Array(expected.keys.sorted().prefix(300))
        pfs.prefetch(inodes: some)
        for inum in some { XCTAssertEqual(try pfs.inode(inum).meta.inum, inum) }
    }
}
