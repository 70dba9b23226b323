// Power cuts, simulated: a seeded workload runs on a device that records every write and
// flush barrier; then, for every barrier and for seeded samples between barriers (any
// subset of the writes in flight, some torn to a few 512-byte sectors), the image a power
// cut would leave is built and checked: it must open, its trees must verify, and its files
// must be exactly those of the last flush that completed (or of the one whose header write
// made it whole).

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class CrashStateTests: XCTestCase {
    typealias Tree = [String: [UInt8]]

    func testEveryPowerCutStateHoldsALastFlushedTree() throws {
        try powerCuts(copies: 1, seed: 81)
    }

    /// The same with 2 copies of data and 3 of metadata (docs/copies.md): every copy of a
    /// block is written before the header that names it.
    func testEveryPowerCutStateHoldsALastFlushedTreeWithCopies() throws {
        try powerCuts(copies: 2, seed: 82)
    }

    /// The same with bulkfree passes among the flushes, each with writes and a flush made
    /// while its scan runs without the lock (issue 20: a background pass in flight): a
    /// power cut at any point of a pass leaves a flushed tree, and blocks written during
    /// the scan are not freed (the files written after a pass reuse freed space).
    func testEveryPowerCutStateHoldsALastFlushedTreeWithBulkfreeInFlight() throws {
        try powerCuts(copies: 1, seed: 83, bulkfree: true)
    }

    /// Two PFSes of the volume written between the same flushes (issue 22: one daemon, one
    /// flush for every mounted PFS): each power-cut state holds both as one flush left them.
    func testEveryPowerCutStateHoldsALastFlushedTreeOfTwoPFSes() throws {
        try powerCuts(copies: 1, seed: 84, labels: ["DATA", "HOME"])
    }

    /// fsync through the intent log (issue 23) between the flushes: a power cut at any write
    /// of a commit (torn, reordered, lost) leaves the last commit or flush, once replayed;
    /// and a power cut at any write of that replay leaves what the replay makes.
    func testEveryPowerCutStateHoldsTheLastCommitOrFlushWithTheIntentLog() throws {
        try powerCuts(copies: 1, seed: 85, labels: ["DATA", "HOME"], logged: true)
    }

    func powerCuts(copies: Int, seed: UInt64, bulkfree: Bool = false, labels: [String] = ["DATA"], logged: Bool = false) throws {
        // Over 2 GiB: two volume header copies, so a torn header write falls back to the other.
        let size: UInt64 = (2 << 30) + (256 << 20)
        let device = RecordingDevice(size: size)
        _ = try Formatter.format(device: device, options: FormatOptions(labels: labels))
        let base = device.contents
        device.startRecording()
        // The tree after each flush (or bulkfree pass) and the barriers written by then;
        // the first: the empty PFS.
        var checkpoints: [(barriers: Int, tree: Tree)] = [(0, [:])]
        var random = SplitMix64(seed: seed)
        var committed = 0
        do {
            let fs = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: false)
            // The open zeroes the intent log's chunks (one barrier): still the empty PFS.
            checkpoints[0].barriers = RecordingDevice.barrierCount(device.log)
            let handles = try labels.map { try fs.openPFS($0) }
            if copies > 1 { try handles[0].setCopies(1, copies) }
            let caller = Caller(uid: 0, gid: 0)
            var trees: [Tree] = labels.map { _ in [:] }
            let dirs = try handles.map { try $0.create(in: 1, name: Array("d".utf8), type: .directory, mode: 0o755, caller: caller).meta.inum }
            var current = 0
            var pfs: PFSHandle { handles[current] }
            var dir: UInt64 { dirs[current] }
            var tree: Tree {
                get { trees[current] }
                set { trees[current] = newValue }
            }
            /// The files of every PFS, by "LABEL:path" when there are several.
            func allTrees() -> Tree {
                guard labels.count > 1 else { return trees[0] }
                var all: Tree = [:]
                for (index, label) in labels.enumerated() { for (path, bytes) in trees[index] { all[label + ":" + path] = bytes } }
                return all
            }
            func parent(_ name: String) -> (UInt64, String) {
                name.hasPrefix("d/") ? (dir, String(name.dropFirst(2))) : (1, name)
            }
            for step in 0..<140 {
                current = Int(random.next() % UInt64(labels.count))
                let name = (random.next() % 2 == 0 ? "d/" : "") + "f\(random.next() % 12)"
                let (dirInum, leaf) = parent(name)
                switch random.next() % 6 {
                case 0, 1, 2:
                    let bytes = random.next() % 3 == 0 ? random.bytes(Int(random.next() % 200_000))
                                                        : Array(String(repeating: "text \(step) ", count: Int(random.next() % 900)).utf8)
                    let inum: UInt64
                    if tree[name] == nil {
                        inum = try pfs.create(in: dirInum, name: Array(leaf.utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
                    } else {
                        inum = try pfs.lookup(dirInum, Array(leaf.utf8)).meta.inum
                        _ = try pfs.setAttributes(inum, AttributeChanges(size: 0))
                    }
                    _ = try bytes.withUnsafeBytes { try pfs.write(inum, offset: 0, $0) }
                    tree[name] = bytes
                case 3:
                    guard let content = tree[name] else { continue }
                    let cut = content.count / 2
                    _ = try pfs.setAttributes(try pfs.lookup(dirInum, Array(leaf.utf8)).meta.inum, AttributeChanges(size: UInt64(cut)))
                    tree[name] = Array(content[0..<cut])
                case 4:
                    guard tree[name] != nil else { continue }
                    try pfs.unlink(in: dirInum, name: Array(leaf.utf8))
                    tree[name] = nil
                default:
                    guard let content = tree[name] else { continue }
                    let target = name.hasPrefix("d/") ? "moved\(step)" : "d/moved\(step)"
                    let (targetDir, targetLeaf) = parent(target)
                    try pfs.rename(from: dirInum, name: Array(leaf.utf8), to: targetDir, newName: Array(targetLeaf.utf8))
                    tree[name] = nil
                    tree[target] = content
                }
                if logged && step % 8 != 7 {
                    // fsync after most steps, a flush after every eighth.
                    try pfs.synchronize()
                    checkpoints.append((RecordingDevice.barrierCount(device.log), allTrees()))
                } else if step % 4 == 3 {
                    try pfs.flush()
                    checkpoints.append((RecordingDevice.barrierCount(device.log), allTrees()))
                }
                if bulkfree && step % 20 == 19 {
                    // Writes and a flush while the pass scans (its progress callback runs
                    // without the lock), then the pass applies.
                    var raced = false
                    let racing = random.bytes(70_000 + Int(random.next() % 100_000))
                    let name = "raced\(step)"
                    let result = try fs.bulkfree { _ in
                        guard !raced else { return }
                        raced = true
                        do {
                            let inum = try pfs.create(in: 1, name: Array(name.utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
                            _ = try racing.withUnsafeBytes { try pfs.write(inum, offset: 0, $0) }
                            tree[name] = racing
                            try pfs.flush()
                            checkpoints.append((RecordingDevice.barrierCount(device.log), allTrees()))
                        } catch {
                            XCTFail("writing during the scan: \(error)")
                        }
                    }
                    XCTAssertTrue(raced)
                    checkpoints.append((RecordingDevice.barrierCount(device.log), allTrees()))
                    // What was written during the scan survived the pass, and new data that
                    // reuses the freed space does not overwrite it.
                    let inum = try pfs.lookup(1, Array(name.utf8)).meta.inum
                    XCTAssertEqual(try pfs.read(inum, offset: 0, count: racing.count), racing)
                    XCTAssertGreaterThan(result.freedBytes, 0, "earlier rewrites left space to free")
                }
            }
            committed = fs.intentLogCounters.commits
        }
        let log = device.log
        let barriers = RecordingDevice.barrierCount(log)
        XCTAssertEqual(barriers, checkpoints.last!.barriers)
        if logged {
            XCTAssertGreaterThan(committed, 50, "fsyncs went to the log")
        } else if !bulkfree {
            // Each flush: one barrier after its metadata, one after the header, and before
            // them one after the file data it wrote ahead without the lock (Prewrite.swift).
            for (before, after) in zip(checkpoints, checkpoints.dropFirst()) {
                XCTAssertTrue((2...3).contains(after.barriers - before.barriers),
                              "a flush wrote \(after.barriers - before.barriers) barriers (2 or 3 expected)")
            }
        }

        var tried = 0
        for cut in 0...barriers {
            // After barrier `cut`, the checkpoints reached by then are complete; between the
            // two barriers of a flush only its header write is in flight.
            let complete = checkpoints.lastIndex { $0.barriers <= cut } ?? 0  // before the open's barrier: empty too
            var allowed = [complete]
            allowed += checkpoints.indices.filter { $0 > complete && checkpoints[$0].barriers - 1 == cut }
            let inFlight = RecordingDevice.writesAfter(barrier: cut, in: log).count
            var samples: [(String, (Int) -> Bool, (Int, Int) -> Bool?)] = [("clean cut", { _ in false }, { _, _ in nil })]
            if inFlight > 0 {
                for sample in 0..<6 {
                    var pick = SplitMix64(seed: UInt64(cut * 100 + sample))
                    let kept = (0..<inFlight).map { _ in pick.next() % 2 == 0 }
                    let torn = (0..<inFlight).map { _ in pick.next() % 4 == 0 ? pick.next() : nil }
                    samples.append(("sample \(sample)", { kept[$0] }, { write, sector in
                        guard let seed = torn[write] else { return nil }
                        return (seed >> UInt64(sector % 64)) & 1 == 1  // a torn write: some sectors only
                    }))
                }
            }
            for (label, keep, sectors) in samples {
                tried += 1
                let image = RecordingDevice.crashImage(base: base, size: size, log: log, barriers: cut, keep: keep, sectors: sectors)
                let context = "cut after barrier \(cut), \(label)"
                do {
                    if logged {
                        // A read-write open replays the log (and flushes); the checks below
                        // then read what it wrote. Then power cuts during that replay.
                        let replayBase = image.contents
                        image.startRecording()
                        let expected = try replayedTree(image, labels: labels)
                        XCTAssertTrue(allowed.contains { checkpoints[$0].tree == expected },
                                      "\(context): the replayed tree is none of the committed trees \(allowed) (\(expected.count) files)")
                        if tried % 5 == 0 { try replayCuts(base: replayBase, log: image.log, size: size, labels: labels,
                                                           expected: expected, context: context) }
                    }
                    let volumes = try VolumeSet(devices: [image])
                    let verifier = Verifier(volumes: volumes)
                    let (_, problems) = verifier.verifyTree(.topology, header: volumes.header)
                    XCTAssertTrue(problems.isEmpty, "\(context): \(problems.prefix(3))")
                    let filesystem = try Filesystem(volumes: volumes)
                    let pfs = try filesystem.openPFS("DATA")
                    if copies > 1 {
                        // The first flush's header (with the copies version) is durable at its last barrier.
                        XCTAssertGreaterThanOrEqual(volumes.header.version, cut >= checkpoints[1].barriers ? HAMMER2.volumeVersionCopies : 2, context)
                    }
                    do {
                        // Every block the tree uses is allocated in the freemap that header names.
                        _ = verifier.verifyTree(.freemap, header: volumes.header)
                        let agreement = verifier.verifyFreemapAgreement(header: volumes.header)
                        XCTAssertTrue(agreement.problems.isEmpty, "\(context): \(agreement.problems.prefix(3))")
                    }
                    XCTAssertTrue(verifier.verifyNamespace(pfs).problems.isEmpty, context)
                    var found = try read(pfs)
                    if labels.count > 1 {
                        found = [:]
                        for label in labels {
                            let other = try filesystem.openPFS(label)
                            XCTAssertTrue(verifier.verifyNamespace(other).problems.isEmpty, "\(context): \(label)")
                            for (path, bytes) in try read(other) { found[label + ":" + path] = bytes }
                        }
                    }
                    XCTAssertTrue(allowed.contains { checkpoints[$0].tree == found },
                                  "\(context): the tree is none of the flushed trees \(allowed) (\(found.count) files)")
                } catch {
                    XCTFail("\(context): \(error)")
                }
            }
        }
        XCTAssertGreaterThan(tried, 200)
        print("crash states tried (copies \(copies)): \(tried), barriers: \(barriers)")
    }

    /// Opens `image` read-write (replaying its intent log), then reads every PFS back from
    /// the medium: "LABEL:path" when there are several.
    func replayedTree(_ image: RecordingDevice, labels: [String]) throws -> Tree {
        let fs = try MutableFilesystem(volumes: VolumeSet(devices: [image]), readOnly: false)
        // A torn header write reads as a possible rollback, and the replay waits for the
        // consent mount_hammer2 asks for (-o rollback-ok): given here.
        try fs.replayDeferredIntentLog()
        XCTAssertNil(fs.intentLogReplay?.problem)
        let volumes = try VolumeSet(devices: [image])
        let filesystem = try Filesystem(volumes: volumes)
        var found: Tree = [:]
        for label in labels {
            for (path, bytes) in try read(filesystem.openPFS(label)) { found[labels.count > 1 ? label + ":" + path : path] = bytes }
        }
        return found
    }

    /// Power cuts during a replay (at every barrier, and with its in-flight writes kept in
    /// part or torn): opening again must replay to the same tree.
    func replayCuts(base: [UInt64: [UInt8]], log: [RecordingDevice.Event], size: UInt64, labels: [String],
                    expected: Tree, context: String) throws {
        let barriers = RecordingDevice.barrierCount(log)
        for cut in 0...barriers {
            for sample in 0..<3 {
                var pick = SplitMix64(seed: UInt64(cut * 10 + sample))
                let keep = (0..<64).map { _ in sample == 0 ? false : pick.next() % 2 == 0 }
                let torn = (0..<64).map { _ in pick.next() }
                let image = RecordingDevice.crashImage(base: base, size: size, log: log, barriers: cut,
                                                       keep: { keep[$0 % 64] },
                                                       sectors: { write, sector in (torn[write % 64] >> UInt64(sector % 64)) & 1 == 1 })
                XCTAssertEqual(try replayedTree(image, labels: labels), expected,
                               "\(context), then a power cut in the replay after barrier \(cut), sample \(sample)")
            }
        }
    }

    /// Every file below the PFS root, by path relative to it.
    func read(_ pfs: PFS) throws -> Tree {
        var tree: Tree = [:]
        func walk(_ dir: InodeData, _ prefix: String) throws {
            var entries: [DirectoryEntry] = []
            try pfs.readDirectory(dir, from: 0) { entries.append($0); return true }
            for entry in entries {
                let inode = try pfs.inode(entry.inum)
                let path = prefix + String(decoding: entry.name, as: UTF8.self)
                if inode.meta.type == .directory {
                    try walk(inode, path + "/")
                } else {
                    tree[path] = try pfs.read(inode, offset: 0, count: Int(inode.meta.size))
                }
            }
        }
        try walk(pfs.root, "")
        return tree
    }
}
