// The copy-on-write engine without FUSE: newfs, changes, flushes, reopening.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class EngineTests: XCTestCase {
    var imagePath = ""

    override func setUpWithError() throws {
        imagePath = FileManager.default.temporaryDirectory.appendingPathComponent("h2-engine-\(UUID().uuidString.prefix(8)).img").path
        FileManager.default.createFile(atPath: imagePath, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: imagePath))
        try handle.truncate(atOffset: 1 << 30)
        try handle.close()
        _ = try Formatter.format(device: FileBlockDevice(path: imagePath, writable: true), options: FormatOptions(labels: ["DATA"]))
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: imagePath)
    }

    func open() throws -> PFSHandle {
        try MutableFilesystem(paths: [imagePath], writable: true).openPFS("DATA")
    }

    let caller = Caller(uid: 0, gid: 0)

    /// A READDIRPLUS reply loads at most 128 inodes that are not in memory, the first reply
    /// of a listing (which the kernel asks with attributes whether they are wanted or not)
    /// at most 32; continuing from the last cookie lists the rest, each name once, with the
    /// right attributes.
    func testBoundedListingLoadsAtMost128InodesAndContinues() throws {
        do {
            let pfs = try open()
            let dir = try pfs.create(in: 1, name: Array("many".utf8), type: .directory, mode: 0o755, caller: caller)
            for i in 0..<300 {
                _ = try pfs.create(in: dir.meta.inum, name: Array("entry-\(i)".utf8), type: .regularFile, mode: 0o600, caller: caller)
            }
            try pfs.flush()
        }
        var dirInum: UInt64 = 0
        do {
            let pfs = try open()  // nothing in memory
            let dir = try pfs.lookup(1, Array("many".utf8))
            dirInum = dir.meta.inum
            var names: [String] = []
            var cookie: UInt64 = 0
            var replies = 0
            while true {
                var got = 0
                try pfs.readDirectory(dir.meta.inum, from: cookie, withAttributes: true, boundedLoads: true) { entry, status in
                    XCTAssertEqual((status?.meta.mode ?? 0) & 0o7777, 0o600)
                    names.append(String(decoding: entry.name, as: UTF8.self))
                    cookie = entry.nextCookie
                    got += 1
                    return true
                }
                if got == 0 { break }
                XCTAssertEqual(got, replies == 0 ? 32 : min(128, 300 - 32 - 128 * (replies - 1)))
                replies += 1
            }
            XCTAssertEqual(replies, 4)
            XCTAssertEqual(Set(names), Set((0..<300).map { "entry-\($0)" }))
            XCTAssertEqual(names.count, 300)
            // Unbounded (tools, and READDIRPLUS of inodes already in memory): one pass.
            var all = 0
            try pfs.readDirectory(dir.meta.inum, from: 0, withAttributes: true) { _, _ in all += 1; return true }
            XCTAssertEqual(all, 300)
            var again = 0
            try pfs.readDirectory(dir.meta.inum, from: 0, withAttributes: true, boundedLoads: true) { _, _ in again += 1; return true }
            XCTAssertEqual(again, 300, "inodes in memory cost nothing")
        }
        // Reopened: the first 32 are loaded again; a second listing loads no more.
        let fresh = try open()
        var first = 0, second = 0
        try fresh.readDirectory(dirInum, from: 0, withAttributes: true, boundedLoads: true) { _, _ in first += 1; return true }
        try fresh.readDirectory(dirInum, from: 0, withAttributes: true, boundedLoads: true) { _, _ in second += 1; return true }
        XCTAssertEqual(first, 32)
        XCTAssertEqual(second, 32, "a listing read again stops where the inodes in memory end")
    }

    /// Lookups remember what the on-disk directory holds (names and the keys of their hash
    /// buckets) until it changes: random creates, renames and unlinks in one directory, each
    /// after a lookup of its names as the kernel sends one, with flushes in between, leave
    /// exactly the model's names, before and after reopening.
    func testLookupsCachedAcrossFlushesNeverGoStale() throws {
        var model = Set<String>()
        var random = SplitMix64(seed: 31)
        do {
            let pfs = try open()
            let dir = try pfs.create(in: 1, name: Array("d".utf8), type: .directory, mode: 0o755, caller: caller).meta.inum
            for step in 0..<3000 {
                let name = "n\(random.next() % 200)", other = "n\(random.next() % 200)"
                _ = try? pfs.lookup(dir, Array(name.utf8))
                _ = try? pfs.lookup(dir, Array(other.utf8))
                switch random.next() % 3 {
                case 0 where !model.contains(name):
                    _ = try pfs.create(in: dir, name: Array(name.utf8), type: .regularFile, mode: 0o644, caller: caller)
                    model.insert(name)
                case 1 where model.contains(name):
                    try pfs.unlink(in: dir, name: Array(name.utf8))
                    model.remove(name)
                case 2 where model.contains(name) && name != other:
                    try pfs.rename(from: dir, name: Array(name.utf8), to: dir, newName: Array(other.utf8))
                    model.remove(name)
                    model.insert(other)
                default:
                    break
                }
                if step % 97 == 0 { try pfs.flush() }
                for probe in [name, other] {
                    XCTAssertEqual((try? pfs.lookup(dir, Array(probe.utf8))) != nil, model.contains(probe), "\(probe) at step \(step)")
                }
            }
            var listed: [String] = []
            try pfs.readDirectory(dir, from: 0, withAttributes: false) { entry, _ in
                listed.append(String(decoding: entry.name, as: UTF8.self)); return true
            }
            XCTAssertEqual(listed.sorted(), model.sorted())
            try pfs.flush()
        }
        let reopened = try open()
        let dir = try reopened.lookup(1, Array("d".utf8)).meta.inum
        var listed: [String] = []
        var keys = Set<UInt64>()
        try reopened.readDirectory(dir, from: 0, withAttributes: false) { entry, _ in
            listed.append(String(decoding: entry.name, as: UTF8.self))
            XCTAssertTrue(keys.insert(entry.key).inserted, "one entry per key")
            return true
        }
        XCTAssertEqual(listed.sorted(), model.sorted())
    }

    func testTextIsStoredCompressedAndRandomDataIsNot() throws {
        let fs = try MutableFilesystem(paths: [imagePath], writable: true)
        let pfs = try fs.openPFS("DATA")
        let text = Array((0..<100_000).map { "line \($0)\n" }.joined().utf8)
        var random = SplitMix64(seed: 2)
        let noise = random.bytes(1 << 20)
        for (name, bytes) in [("text", text), ("noise", noise)] {
            let file = try pfs.create(in: 1, name: Array(name.utf8), type: .regularFile, mode: 0o644, caller: caller)
            // In 128 KiB pieces at odd boundaries, as cat(1) through FUSE writes.
            var offset = 0
            while offset < bytes.count {
                let end = min(offset + 131_072 + 100, bytes.count)
                _ = try bytes[offset..<end].withUnsafeBytes { try pfs.write(file.meta.inum, offset: UInt64(offset), $0) }
                offset = end
            }
        }
        try pfs.flush()
        let reopened = try Filesystem(paths: [imagePath]).openPFS("DATA")
        for (name, compressed) in [("text", true), ("noise", false)] {
            let entry = try reopened.lookup(in: reopened.root, name: Array(name.utf8))
            var methods = Set<CompressionMethod>()
            try BlockTree(reader: reopened.reader).forEachLeaf(in: try reopened.inode(entry.inum).blockset, from: 0, through: .max) {
                methods.insert($0.compression)
                return true
            }
            XCTAssertEqual(methods, compressed ? [.lz4] : [.none], name)
        }
    }

    /// Flushes inside operations (too many changed inodes, a full dirty-data budget) must not
    /// lose what the operation goes on to change: a regression of the flush dropping the
    /// clean directory a create held, whose new entry then never reached the media.
    func testFlushesInsideOperationsLoseNothing() throws {
        do {
            let fs = try MutableFilesystem(paths: [imagePath], writable: true)
            fs.changedNodeLimit = 7
            let pfs = try fs.openPFS("DATA")
            var created = 0
            for d in 0..<5 {
                let dir = try pfs.create(in: 1, name: Array("d\(d)".utf8), type: .directory, mode: 0o755, caller: caller).meta.inum
                try fs.flush()  // the directory is clean when its files are created
                for i in 0..<60 {
                    let file = try pfs.create(in: dir, name: Array("f\(i)".utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
                    let bytes = [UInt8](repeating: UInt8(i), count: 70_000)
                    _ = try bytes.withUnsafeBytes { try pfs.write(file, offset: 0, $0) }
                    created += 1
                }
            }
            try fs.flush()
            XCTAssertEqual(created, 300)
        }
        let pfs = try open()
        for d in 0..<5 {
            let dir = try pfs.resolve("d\(d)")
            var names = 0
            try pfs.readDirectory(dir, from: 0, withAttributes: false) { _, _ in names += 1; return true }
            XCTAssertEqual(names, 60, "d\(d)")
            XCTAssertEqual(try pfs.read(try pfs.resolve("d\(d)/f59"), offset: 0, count: 70_001), [UInt8](repeating: 59, count: 70_000))
        }
    }

    /// Inodes held in memory stay bounded however many files are created (issue 8: the
    /// daemon's memory must not grow with the file count). Creating files never looks up an
    /// existing name, and flushes inside a create keep their clean nodes, so before clean
    /// nodes were dropped at the start of operations every created inode stayed.
    func testInodesInMemoryStayBoundedWhileCreatingManyFiles() throws {
        let fs = try MutableFilesystem(paths: [imagePath], writable: true)
        let pfs = try fs.openPFS("DATA")
        func nodesInMemory() -> Int {
            let line = fs.debugDump(all: false).first { $0.hasPrefix("pfs DATA") }!
            let field = line.split(separator: " ").first { $0.hasPrefix("nodes=") }!
            return Int(field.dropFirst(6))!
        }
        var most = 0
        for d in 0..<3 {
            let dir = try pfs.create(in: 1, name: Array("d\(d)".utf8), type: .directory, mode: 0o755, caller: caller).meta.inum
            for i in 0..<5000 {
                _ = try pfs.create(in: dir, name: Array("f\(i)".utf8), type: .regularFile, mode: 0o644, caller: caller)
                if i % 500 == 0 { most = max(most, nodesInMemory()) }
            }
        }
        // Changed inodes (flushed past changedNodeLimit) plus clean ones (dropped past 4096).
        XCTAssertLessThanOrEqual(most, fs.changedNodeLimit + 4096 + 16, "inodes in memory while creating 15,000 files")
        try fs.flush()
        var names = 0
        try pfs.readDirectory(try pfs.resolve("d2"), from: 0, withAttributes: false) { _, _ in names += 1; return true }
        XCTAssertEqual(names, 5000)
    }

    func testTruncateAcrossFlushes() throws {
        var pfs: PFSHandle! = try open()
        var random = SplitMix64(seed: 5)
        let data = random.bytes(300_000)
        let file = try pfs.create(in: 1, name: Array("cut".utf8), type: .regularFile, mode: 0o644, caller: caller)
        _ = try data.withUnsafeBytes { try pfs.write(file.meta.inum, offset: 0, $0) }
        try pfs.flush()
        _ = try pfs.setAttributes(file.meta.inum, AttributeChanges(size: 1000))
        try pfs.flush()
        _ = try pfs.setAttributes(file.meta.inum, AttributeChanges(size: 150_000))
        try pfs.flush()
        let expected = Array(data[0..<1000]) + [UInt8](repeating: 0, count: 149_000)
        XCTAssertEqual(sha256Hex(try pfs.read(file.meta.inum, offset: 0, count: 200_000)), sha256Hex(expected))
        pfs = nil  // one writer at a time: the image is locked while open for writing
        let reopened = try open()
        XCTAssertEqual(sha256Hex(try reopened.read(file.meta.inum, offset: 0, count: 200_000)), sha256Hex(expected))
        XCTAssertThrowsError(try open(), "a second writer on the same image")
    }

    func testUnlinkedOpenFileReadsItsFlushedBlocks() throws {
        let pfs = try open()
        var random = SplitMix64(seed: 1)
        let data = random.bytes(200_000)
        let file = try pfs.create(in: 1, name: Array("doomed".utf8), type: .regularFile, mode: 0o644, caller: caller)
        _ = try data.withUnsafeBytes { try pfs.write(file.meta.inum, offset: 0, $0) }
        try pfs.flush()
        try pfs.open(file.meta.inum)
        try pfs.unlink(in: 1, name: Array("doomed".utf8))
        XCTAssertEqual(sha256Hex(try pfs.read(file.meta.inum, offset: 0, count: data.count)), sha256Hex(data))
        XCTAssertEqual(try pfs.read(file.meta.inum, offset: 70_000, count: 100), Array(data[70_000..<70_100]))
        try pfs.flush()
        XCTAssertEqual(sha256Hex(try pfs.read(file.meta.inum, offset: 0, count: data.count)), sha256Hex(data))
        XCTAssertEqual(try pfs.read(file.meta.inum, offset: 140_000, count: 100), Array(data[140_000..<140_100]))
        pfs.release(file.meta.inum)
        XCTAssertThrowsError(try pfs.lookup(1, Array("doomed".utf8)))
    }
}
