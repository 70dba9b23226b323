// The intent log (issue 23; docs/format.md, "Intent log"): fsync appends a commit to the
// reserved segments instead of flushing; a crash after it (every completed write kept, as a
// kill -9 leaves the device) is replayed by the next read-write open into exactly the
// state the fsync saw; stale, torn and edited logs are never applied.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class IntentLogTests: XCTestCase {
    let caller = Caller(uid: 0, gid: 0)
    let size: UInt64 = 3 << 30

    func formatted() throws -> RecordingDevice {
        let device = RecordingDevice(size: size)
        _ = try Formatter.format(device: device, options: FormatOptions(labels: ["DATA", "HOME"]))
        return device
    }

    /// What a kill -9 leaves: every write that completed.
    func crashed(_ device: RecordingDevice) -> RecordingDevice {
        RecordingDevice(name: "after-crash", size: size, pages: device.contents)
    }

    /// Every name under the PFS root with its type, mode, owner, size, links, mtime, data,
    /// symlink target and extended attributes, through the engine.
    func snapshot(_ pfs: PFSHandle) throws -> [String: String] {
        var tree: [String: String] = [:]
        func walk(_ inum: UInt64, _ prefix: String) throws {
            var entries: [(String, UInt64)] = []
            try pfs.readDirectory(inum, from: 0, withAttributes: false) { entry, _ in
                entries.append((String(decoding: entry.name, as: UTF8.self), entry.inum))
                return true
            }
            for (name, child) in entries {
                let path = prefix + name
                let meta = try pfs.attributes(child).meta
                var line = "\(meta.type) \(String(meta.mode, radix: 8)) \(meta.uid.unixID) \(meta.size) \(meta.nlinks) \(meta.mtime)"
                if meta.type == .regularFile {
                    let bytes = try pfs.read(child, offset: 0, count: Int(meta.size))
                    line += " " + SHA256Digest.hex(bytes)
                } else if meta.type == .softlink {
                    line += " -> " + String(decoding: try pfs.readLink(child), as: UTF8.self)
                }
                for attribute in try pfs.attributeNames(child).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                    line += " [\(String(decoding: attribute, as: UTF8.self))=\(try pfs.attribute(child, name: attribute))]"
                }
                tree[path] = line
                if meta.type == .directory { try walk(child, path + "/") }
            }
        }
        try walk(1, "")
        return tree
    }

    func write(_ pfs: PFSHandle, _ inum: UInt64, _ offset: UInt64, _ bytes: [UInt8]) throws {
        _ = try bytes.withUnsafeBytes { try pfs.write(inum, offset: offset, $0) }
    }

    func testFsyncGoesToTheLogAndACrashReplaysExactlyThatState() throws {
        let device = try formatted()
        let fs = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: false)
        let data = try fs.openPFS("DATA")
        let home = try fs.openPFS("HOME")
        var random = SplitMix64(seed: 23)
        // A flushed starting point: a directory, a large file, a small one.
        let dir = try data.create(in: 1, name: Array("dir".utf8), type: .directory, mode: 0o755, caller: caller).meta.inum
        let big = try data.create(in: dir, name: Array("big".utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        try write(data, big, 0, random.bytes(700_000))
        let small = try data.create(in: 1, name: Array("small".utf8), type: .regularFile, mode: 0o600, caller: caller).meta.inum
        try write(data, small, 0, Array("hello".utf8))
        try fs.flush()

        // Every kind of change, then fsync.
        device.startRecording()
        try write(data, big, 4096 * 37, random.bytes(4096))  // a 4 KiB overwrite inside a flushed block
        try write(data, big, 650_000, random.bytes(100_000))  // past the end, across blocks
        _ = try data.setAttributes(big, AttributeChanges(size: 300_000))  // truncate below both...
        try write(data, big, 500_000, random.bytes(3000))  // ...and write past the new end
        _ = try data.allocate(big, mode: PFSHandle.fallocatePunchHole | PFSHandle.fallocateKeepSize, offset: 65_536, length: 131_072)
        _ = try data.setAttributes(small, AttributeChanges(mode: 0o640, uid: 7, mtime: 1_700_000_000_000_000))
        try data.setAttribute(small, name: Array("user.note".utf8), value: Array("kept".utf8))
        let fresh = try data.create(in: dir, name: Array("fresh".utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        try write(data, fresh, 0, random.bytes(9000))
        _ = try data.create(in: dir, name: Array("link".utf8), type: .softlink, mode: 0o777, caller: caller, target: Array("fresh".utf8))
        _ = try data.link(fresh, into: 1, name: Array("hard".utf8))
        try data.rename(from: 1, name: Array("small".utf8), to: dir, newName: Array("moved".utf8))
        let sub = try data.create(in: dir, name: Array("sub".utf8), type: .directory, mode: 0o700, caller: caller).meta.inum
        let doomed = try data.create(in: sub, name: Array("doomed".utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        try write(data, doomed, 0, random.bytes(5000))
        try data.unlink(in: sub, name: Array("doomed".utf8))
        let homeFile = try home.create(in: 1, name: Array("h".utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        try write(home, homeFile, 0, random.bytes(20_000))
        try data.synchronize()
        let log = device.log
        XCTAssertEqual(RecordingDevice.barrierCount(log), 1, "one device flush per fsync")
        let chunks = IntentLogArea.chunks(volumeSize: size)
        for case let .write(offset, bytes) in log {
            XCTAssertTrue(chunks.contains { offset >= $0 && offset + UInt64(bytes.count) <= $0 + IntentLogArea.chunkBytes },
                          "fsync wrote outside the log, at \(offset)")
        }
        XCTAssertEqual(fs.intentLogCounters.commits, 1)
        let expected = (try snapshot(data), try snapshot(home))

        // Changes after the fsync are not promised and do not come back.
        try write(data, fresh, 0, random.bytes(100))
        _ = try data.create(in: 1, name: Array("late".utf8), type: .regularFile, mode: 0o644, caller: caller)

        let image = crashed(device)
        let reopened = try MutableFilesystem(volumes: VolumeSet(devices: [image]), readOnly: false)
        XCTAssertEqual(reopened.intentLogReplay?.commits, 1)
        XCTAssertNil(reopened.intentLogReplay?.problem)
        XCTAssertEqual(try snapshot(reopened.openPFS("DATA")), expected.0)
        XCTAssertEqual(try snapshot(reopened.openPFS("HOME")), expected.1)
        // The replay flushed: the tree on the medium verifies and holds the same files.
        let volumes = try VolumeSet(devices: [image])
        let verifier = Verifier(volumes: volumes)
        XCTAssertTrue(verifier.verifyTree(.topology, header: volumes.header).1.isEmpty)
        _ = verifier.verifyTree(.freemap, header: volumes.header)
        let agreement = verifier.verifyFreemapAgreement(header: volumes.header)
        XCTAssertTrue(agreement.problems.isEmpty, "\(agreement.problems.prefix(3))")
        XCTAssertTrue(verifier.verifyNamespace(try Filesystem(volumes: volumes).openPFS("DATA")).problems.isEmpty)
        // And the log is stale now: opening again replays nothing.
        let again = try MutableFilesystem(volumes: VolumeSet(devices: [crashed(image)]), readOnly: false)
        XCTAssertNil(again.intentLogReplay)
        XCTAssertEqual(try snapshot(again.openPFS("DATA")), expected.0)
    }

    func testCommitsAppendAndEachCrashPointReplaysItsLastCommit() throws {
        let device = try formatted()
        let fs = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: false)
        let pfs = try fs.openPFS("DATA")
        let file = try pfs.create(in: 1, name: Array("db".utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        try write(pfs, file, 0, [UInt8](repeating: 1, count: 1 << 20))
        try fs.flush()
        var random = SplitMix64(seed: 5)
        var images: [(RecordingDevice, [String: String])] = []
        for round in 0..<40 {
            try write(pfs, file, random.next() % 256 * 4096, random.bytes(4096))
            if round % 7 == 0 {
                _ = try pfs.create(in: 1, name: Array("journal\(round)".utf8), type: .regularFile, mode: 0o644, caller: caller)
            }
            if round % 7 == 3 { try pfs.unlink(in: 1, name: Array("journal\(round - 3)".utf8)) }
            try pfs.synchronize()
            images.append((crashed(device), try snapshot(pfs)))
        }
        XCTAssertEqual(fs.intentLogCounters.commits, 40)
        XCTAssertEqual(fs.intentLogCounters.fallbacks, 0)
        // A 4 KiB write costs one 8 KiB commit, not a path to the root.
        XCTAssertLessThanOrEqual(fs.intentLogCounters.bytesWritten, 40 * 8192 + 3 * 4096)
        for (index, (image, tree)) in images.enumerated() where index % 5 == 4 || index == 39 {
            let reopened = try MutableFilesystem(volumes: VolumeSet(devices: [image]), readOnly: false)
            XCTAssertEqual(reopened.intentLogReplay?.commits, index + 1)
            XCTAssertEqual(try snapshot(reopened.openPFS("DATA")), tree, "crash after commit \(index)")
        }
        // fsync with nothing changed writes nothing.
        try pfs.synchronize()
        XCTAssertEqual(fs.intentLogCounters.commits, 40)
    }

    func testAFlushRetiresTheLog() throws {
        let device = try formatted()
        let fs = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: false)
        let pfs = try fs.openPFS("DATA")
        let file = try pfs.create(in: 1, name: Array("a".utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        try write(pfs, file, 0, Array("one".utf8))
        try pfs.synchronize()
        try fs.flush()
        try write(pfs, file, 0, Array("two".utf8))
        try pfs.synchronize()  // the first commit over the new tree, at the start of the log
        let reopened = try MutableFilesystem(volumes: VolumeSet(devices: [crashed(device)]), readOnly: false)
        XCTAssertEqual(reopened.intentLogReplay?.commits, 1)
        XCTAssertEqual(try reopened.openPFS("DATA").read(file, offset: 0, count: 3), Array("two".utf8))
    }

    func testTornAndEditedCommitsAreNotApplied() throws {
        let device = try formatted()
        let fs = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: false)
        let pfs = try fs.openPFS("DATA")
        let file = try pfs.create(in: 1, name: Array("a".utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        try fs.flush()
        try write(pfs, file, 0, Array("first".utf8))
        try pfs.synchronize()
        try write(pfs, file, 0, Array("second".utf8))
        try pfs.synchronize()
        let chunk = IntentLogArea.chunks(volumeSize: size)[0]

        // The second commit torn (a byte of its payload lost): the first one is the end.
        var pages = device.contents
        let second = chunk + 4096 + 200
        pages[second - second % 65_536]![Int(second % 65_536)] ^= 0xFF
        var reopened = try MutableFilesystem(volumes: VolumeSet(devices: [RecordingDevice(size: size, pages: pages)]), readOnly: false)
        XCTAssertEqual(reopened.intentLogReplay?.commits, 1)
        XCTAssertEqual(try reopened.openPFS("DATA").read(file, offset: 0, count: 10), Array("first".utf8))

        // The first commit edited and its checksums recomputed (someone who edits the image):
        // the records do not decode, nothing is applied, the volume opens at its last flush.
        pages = device.contents
        var block = pages[chunk]!
        let header = try XCTUnwrap(block.withUnsafeBytes { IntentLogHeader(decoding: $0) })
        block[IntentLogHeader.bytes] = 0x7F  // an unknown record kind
        let payload = Array(block[IntentLogHeader.bytes..<(IntentLogHeader.bytes + Int(header.payloadBytes))])
        var forged = header
        forged.payloadHash = payload.withUnsafeBytes { CheckCode.xxhash64($0, seed: 0) }
        block.withUnsafeMutableBytes { forged.encode(into: $0) }
        pages[chunk] = block
        let messages = LockedMessages()
        reopened = try MutableFilesystem(volumes: VolumeSet(devices: [RecordingDevice(size: size, pages: pages)]), readOnly: false,
                                         copyLogger: { messages.append($0) })
        XCTAssertNotNil(reopened.intentLogReplay?.problem)
        XCTAssertTrue(messages.all.contains { $0.contains("intent log not replayed") }, "\(messages.all)")
        XCTAssertEqual(try reopened.openPFS("DATA").attributes(file).meta.size, 0)
        // No commit lands on a log that could not be replayed until a flush gives it a new base.
        let again = try reopened.openPFS("DATA")
        try write(again, file, 0, Array("third".utf8))
        try again.synchronize()
        XCTAssertEqual(reopened.intentLogCounters.commits, 0)
        let last = try MutableFilesystem(volumes: VolumeSet(devices: [RecordingDevice(size: size, pages: pages)]), readOnly: true)
        XCTAssertNotNil(last.intentLogReplay?.problem, "a read-only open finds the same damage")
    }

    /// A commit whose write fails is not taken for durable: that fsync flushes instead, and
    /// when the flush fails too, the fsync says EIO; the next fsync flushes (the log stays
    /// out of use until a flush has given it a new base), and nothing is lost.
    func testAFailedCommitWriteFlushesAndAFailedFlushIsEIO() throws {
        let device = try formatted()
        let faulty = FaultyDevice(base: device)
        let fs = try MutableFilesystem(volumes: VolumeSet(devices: [faulty]), readOnly: false)
        let pfs = try fs.openPFS("DATA")
        let inum = try pfs.create(in: 1, name: Array("a".utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        try write(pfs, inum, 0, Array("kept".utf8))
        faulty.set(FaultyDevice.Faults(failWritesFrom: 0))
        XCTAssertThrowsError(try pfs.synchronize()) { XCTAssertEqual(($0 as? EngineError)?.errno, EIO) }
        XCTAssertEqual(fs.intentLogCounters.commits, 0)
        faulty.set(FaultyDevice.Faults())
        try pfs.synchronize()
        XCTAssertEqual(fs.intentLogCounters.commits, 0, "no commit until a flush gave the log a new base")
        XCTAssertFalse(fs.hasChanges, "the second fsync flushed")
        let reopened = try MutableFilesystem(volumes: VolumeSet(devices: [crashed(device)]), readOnly: false)
        XCTAssertEqual(try reopened.openPFS("DATA").read(inum, offset: 0, count: 10), Array("kept".utf8))
        // After that flush, the log takes commits again.
        try write(pfs, inum, 0, Array("more".utf8))
        try pfs.synchronize()
        XCTAssertEqual(fs.intentLogCounters.commits, 1)
    }

    /// A commit with good checksums naming a PFS the volume does not have (a forged log) is
    /// reported and not applied; the volume opens at its last flush.
    func testACommitForAMissingPFSIsNotApplied() throws {
        let device = try formatted()
        let base = try VolumeSet(devices: [device]).header.superRootBlockset[0].mirrorTID
        let fsid = try VolumeSet(devices: [device]).header.fsid
        var meta = InodeMeta(version: 1, ctime: 1, mtime: 1, atime: 1, btime: 1, uid: .unixID(0), gid: .unixID(0),
                             type: .regularFile, mode: 0o644, inum: 99, nlinks: 1)
        meta.size = 3
        let payload = IntentLogCommit(pfses: [.init(label: Array("GONE".utf8), nextInodeNumber: 100, inodes: [
            .init(inum: 99, isNew: true, meta: meta, filename: Array("0x63".utf8), diskLimit: .max, lowestSize: .max,
                  entryChanges: [], ranges: [.init(offset: 0, length: 3, bytes: [1, 2, 3])]),
        ])]).encoded()
        var commit = [UInt8](repeating: 0, count: IntentLogHeader.bytes)
        commit.withUnsafeMutableBytes {
            IntentLogHeader(base: base, sequence: 0, payloadBytes: UInt64(payload.count), fsid: fsid,
                            payloadHash: payload.withUnsafeBytes { CheckCode.xxhash64($0, seed: 0) }).encode(into: $0)
        }
        commit += payload
        try commit.withUnsafeBytes { try device.write($0, at: IntentLogArea.chunks(volumeSize: size)[0]) }
        let messages = LockedMessages()
        let fs = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: false, copyLogger: { messages.append($0) })
        XCTAssertEqual(fs.intentLogReplay?.commits, 1)
        XCTAssertNotNil(fs.intentLogReplay?.problem)
        XCTAssertTrue(messages.all.contains { $0.contains("GONE") && $0.contains("not replayed") }, "\(messages.all)")
        XCTAssertFalse(fs.isOpen("GONE"))
        XCTAssertTrue(try fs.openPFS("DATA").attributes(1).meta.type == .directory)
    }

    func testWhatTheLogCannotTakeIsFlushed() throws {
        let device = try formatted()
        let fs = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: false)
        let pfs = try fs.openPFS("DATA")
        let file = try pfs.create(in: 1, name: Array("a".utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        var random = SplitMix64(seed: 9)
        try write(pfs, file, 0, random.bytes(3 << 20))  // more than a chunk holds
        try pfs.synchronize()
        XCTAssertEqual(fs.intentLogCounters.commits, 0)
        XCTAssertEqual(fs.intentLogCounters.fallbacks, 1)
        XCTAssertFalse(fs.hasChanges)
        // Bytes changed in more places than a commit keeps track of (random writes all over
        // a file): flushed too.
        for index in 0..<300 { try write(pfs, file, UInt64(index) * 8192, [UInt8(index & 0xFF)]) }
        try pfs.synchronize()
        XCTAssertEqual(fs.intentLogCounters.fallbacks, 2)
        XCTAssertFalse(fs.hasChanges)
        // Small changes after it go to the log again.
        try write(pfs, file, 0, Array("x".utf8))
        try pfs.synchronize()
        XCTAssertEqual(fs.intentLogCounters.commits, 1)
        let reopened = try MutableFilesystem(volumes: VolumeSet(devices: [crashed(device)]), readOnly: false)
        XCTAssertEqual(reopened.intentLogReplay?.commits, 1)
        XCTAssertEqual(try reopened.openPFS("DATA").read(file, offset: 0, count: 1), Array("x".utf8))
    }

    /// An encrypted PFS's names and data must not reach the log in the clear: its fsyncs
    /// flush; the clear PFS beside it keeps using the log, and nothing secret is on the medium.
    func testAnEncryptedPFSFlushesAndNeverReachesTheLog() throws {
        let device = try formatted()
        let fs = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: false)
        fs.keyDerivationCost = 10
        try fs.createPFS(label: "SECRET", encryption: .passphrase(Array("open sesame!".utf8)))
        let secret = try fs.openPFS("SECRET")
        let clear = try fs.openPFS("DATA")
        try fs.flush()
        let marker = Array("a secret the log must not hold".utf8)
        let inum = try secret.create(in: 1, name: Array("secret-name".utf8), type: .regularFile, mode: 0o600, caller: caller).meta.inum
        try write(secret, inum, 0, marker)
        try secret.synchronize()
        XCTAssertEqual(fs.intentLogCounters.commits, 0)
        XCTAssertEqual(fs.intentLogCounters.fallbacks, 1)
        XCTAssertFalse(fs.hasChanges, "the fsync flushed")
        let plain = try clear.create(in: 1, name: Array("plain".utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        try write(clear, plain, 0, Array("clear".utf8))
        try clear.synchronize()
        XCTAssertEqual(fs.intentLogCounters.commits, 1)
        for (_, page) in device.contents {
            XCTAssertNil(page.firstRange(of: marker), "the secret's data in the clear")
            XCTAssertNil(page.firstRange(of: Array("secret-name".utf8)), "the secret's name in the clear")
        }
    }

    func testAReadOnlyOpenReplaysInMemoryAndWritesNothing() throws {
        let device = try formatted()
        let fs = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: false)
        let pfs = try fs.openPFS("DATA")
        let inum = try pfs.create(in: 1, name: Array("a".utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        try write(pfs, inum, 0, Array("durable".utf8))
        try pfs.synchronize()
        let image = crashed(device)
        image.startRecording()
        let readOnly = try MutableFilesystem(volumes: VolumeSet(devices: [image]), readOnly: true)
        XCTAssertEqual(readOnly.intentLogReplay?.commits, 1)
        let view = try readOnly.openPFS("DATA")
        XCTAssertEqual(try view.read(view.lookup(1, Array("a".utf8)).meta.inum, offset: 0, count: 100), Array("durable".utf8))
        try view.synchronize()
        try readOnly.flush()
        XCTAssertTrue(image.log.isEmpty, "a read-only open wrote \(image.log.count) events")
        // The log is still there for the next read-write open.
        let writable = try MutableFilesystem(volumes: VolumeSet(devices: [image]), readOnly: false)
        XCTAssertEqual(writable.intentLogReplay?.commits, 1)
    }

    func testCommitDecodingRefusesMalformedPayloads() throws {
        var meta = InodeMeta.init(version: 1, ctime: 1, mtime: 2, atime: 3, btime: 4, uid: .unixID(5), gid: .unixID(6),
                                  type: .regularFile, mode: 0o644, inum: 77, nlinks: 1)
        meta.size = 10
        let commit = IntentLogCommit(pfses: [.init(label: Array("DATA".utf8), nextInodeNumber: 78, inodes: [
            .init(inum: 77, isNew: true, meta: meta, filename: Array("0x4d".utf8), diskLimit: .max, lowestSize: .max,
                  entryChanges: [.init(key: 9, entry: nil), .init(key: 10, entry: (77, .regularFile, Array("n".utf8)))],
                  ranges: [.init(offset: 0, length: 3, bytes: [1, 2, 3]), .init(offset: 65_536, length: 65_536, bytes: nil)]),
        ])])
        let bytes = commit.encoded()
        XCTAssertEqual(bytes.count, commit.encodedBytes)
        XCTAssertEqual(try bytes.withUnsafeBytes { try IntentLogCommit(decoding: $0) }, commit)
        // Every truncation and a huge count are refused, never trapped on.
        for cut in stride(from: 1, to: bytes.count, by: 7) where cut != 15 {  // 15: the PFS record alone, valid
            XCTAssertThrowsError(try Array(bytes[0..<cut]).withUnsafeBytes { try IntentLogCommit(decoding: $0) }, "cut at \(cut)")
        }
        var huge = bytes
        let countOffset = 1 + 2 + 4 + 8 + 1 + 8 + 1 + 256 + 2 + 4 + 8 + 8
        huge.replaceSubrange(countOffset..<(countOffset + 4), with: [0xFF, 0xFF, 0xFF, 0x7F])
        XCTAssertThrowsError(try huge.withUnsafeBytes { try IntentLogCommit(decoding: $0) })
    }
}

/// Messages a logger callback collects (it may run on any thread).
final class LockedMessages: @unchecked Sendable {
    private let lock = NSLock()
    private var messages: [String] = []
    func append(_ message: String) { lock.withLock { messages.append(message) } }
    var all: [String] { lock.withLock { messages } }
}

enum SHA256Digest {
    static func hex(_ bytes: [UInt8]) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return String(hash, radix: 16) + "/\(bytes.count)"
    }
}
