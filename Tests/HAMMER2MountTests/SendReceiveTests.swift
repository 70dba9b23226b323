// hammer2 send | hammer2 receive (issue 25), through a pipe between two images: a full
// stream and two incrementals reproduce each snapshot exactly (type, mode, owner, times,
// links, sparse files, xattrs, contents), the receiving volume passes fsck; a damaged,
// cut, truncated, replayed or misdirected stream is refused and leaves the volume as it was.

import Foundation
import CXattr
import Glibc
import HAMMER2TestSupport
import XCTest

final class SendReceiveTests: XCTestCase {
    var work = ""

    override func setUpWithError() throws {
        work = FileManager.default.temporaryDirectory.appendingPathComponent("h2-sendrecv-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: work) }

    func bash(_ command: String) throws -> (status: Int32, stdout: String, stderr: String) {
        try Binaries.runProgram("/bin/bash", ["-o", "pipefail", "-c", command],
                                environment: ["PATH": try Binaries.directory().path + ":/usr/bin:/bin:/usr/sbin:/sbin"])
    }

    func write(_ path: String, _ bytes: [UInt8]) {
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)), path)
    }

    /// The tree of snapshot `label` of `image` and its extended attributes (SnapshotLook.swift).
    func look(_ image: String, _ label: String) throws -> (TreeSnapshot, [String: [String: [UInt8]]]) {
        try lookAtSnapshot(image + "@" + label)
    }

    func labels(_ image: String) throws -> [String] {
        let list = try Binaries.run("hammer2", ["-f", image, "pfs-list"])
        XCTAssertEqual(list.status, 0, list.stderr)
        return list.stdout.split(separator: "\n").dropFirst().compactMap { $0.split(separator: " ").last.map(String.init) }.sorted()
    }

    func testFullAndIncrementalStreamsReproduceEachSnapshot() throws {
        let source = "\(work)/source.img", target = "\(work)/target.img"
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", source]).status, 0)
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", "-L", "none", target]).status, 0)
        var random = SplitMix64(seed: 25)
        let mount = try MountedImage(source + "@DATA", options: ["-o", "rw"])
        let root = mount.mountpoint.path
        // Round 1: every kind of object.
        try FileManager.default.createDirectory(atPath: root + "/docs/deep/er", withIntermediateDirectories: true)
        write(root + "/docs/text", Array(String(repeating: "send and receive ", count: 40_000).utf8))
        write(root + "/docs/deep/er/random", random.bytes(700_000))
        write(root + "/small", Array("tiny".utf8))
        XCTAssertEqual(link(root + "/docs/text", root + "/hardlink"), 0)
        XCTAssertEqual(symlink("docs/text", root + "/symlink"), 0)
        XCTAssertEqual(mkfifo(root + "/fifo", 0o640), 0)
        XCTAssertEqual(mknod(root + "/device", S_IFCHR | 0o600, makedev(1, 7)), 0)
        let sparse = open(root + "/sparse", O_CREAT | O_WRONLY, 0o644)
        XCTAssertEqual(pwrite(sparse, "end", 3, 50 << 20), 3)
        close(sparse)
        XCTAssertEqual(setxattr(root + "/docs/text", "user.origin", "sender", 6, 0), 0)
        XCTAssertEqual(setxattr(root + "/docs", "user.kind", "directory", 9, 0), 0)
        XCTAssertEqual(chown(root + "/small", 1234, 5678), 0)
        var times = [timespec(tv_sec: 1_000_000_000, tv_nsec: 0), timespec(tv_sec: 1_100_000_000, tv_nsec: 0)]
        XCTAssertEqual(utimensat(AT_FDCWD, root + "/docs/deep", &times, 0), 0)
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", root, "s1"]).status, 0)
        // Round 2: changes of every kind.
        XCTAssertEqual(unlink(root + "/small"), 0)
        XCTAssertEqual(rename(root + "/docs/deep/er/random", root + "/moved"), 0)
        let append = open(root + "/docs/text", O_WRONLY | O_APPEND)
        XCTAssertEqual(Glibc.write(append, "more", 4), 4)
        close(append)
        XCTAssertEqual(truncate(root + "/sparse", 1000), 0)
        XCTAssertEqual(chmod(root + "/docs", 0o700), 0)
        XCTAssertEqual(setxattr(root + "/docs/text", "user.origin", "changed", 7, 0), 0)
        try FileManager.default.createDirectory(atPath: root + "/new", withIntermediateDirectories: true)
        write(root + "/new/big", random.bytes(3 << 20))
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", root, "s2"]).status, 0)
        // Round 3: more, including removing what round 2 added and a whole directory.
        XCTAssertEqual(unlink(root + "/new/big"), 0)
        try FileManager.default.removeItem(atPath: root + "/docs/deep")
        XCTAssertEqual(removexattr(root + "/docs", "user.kind"), 0)
        let overwrite = open(root + "/moved", O_WRONLY)
        XCTAssertEqual(pwrite(overwrite, random.bytes(5000), 5000, 100_000), 5000)
        // A hole punched in the middle: the block goes, the size stays.
        XCTAssertEqual(GNUCalls.fallocate(overwrite, GNUCalls.punchHole | GNUCalls.keepSize, 196_608, 131_072), 0)
        close(overwrite)
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", root, "s3"]).status, 0)
        try mount.unmount()

        var sizes: [Int] = []
        for (label, base) in [("s1", nil), ("s2", "s1"), ("s3", "s2")] as [(String, String?)] {
            let send = "hammer2 -f '\(source)' send \(base.map { "-i \($0) " } ?? "")\(label)"
            let piped = try bash("\(send) | tee '\(work)/\(label).stream' | hammer2 -f '\(target)' receive \(label)")
            XCTAssertEqual(piped.status, 0, piped.stderr)
            XCTAssertTrue(piped.stdout.contains("received \(base == nil ? "full" : "incremental") stream as \(label)"), piped.stdout)
            sizes.append(Int((try FileManager.default.attributesOfItem(atPath: "\(work)/\(label).stream")[.size] as? NSNumber)?.intValue ?? 0))
            let fsck = try Binaries.run("fsck_hammer2", [target])
            XCTAssertEqual(fsck.status, 0, fsck.stdout)
            let (sent, sentAttributes) = try look(source, label)
            let (received, receivedAttributes) = try look(target, label)
            XCTAssertEqual(received, sent, "snapshot \(label) arrived different")
            XCTAssertEqual(receivedAttributes, sentAttributes, "extended attributes of \(label)")
        }
        XCTAssertEqual(try labels(target), ["LOCAL", "s1", "s2", "s3"])
        // Blocks travel as stored: each received snapshot's data takes the bytes the
        // sender's does (no recompression), and holds the same logical bytes.
        func space(_ image: String) throws -> [String: (logical: Int, physical: Int)] {
            let result = try Binaries.run("hammer2", ["-j", "info", image])
            let document = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
            let pfses = ((document?["volumes"] as? [[String: Any]])?.first?["pfses"] as? [[String: Any]]) ?? []
            return Dictionary(uniqueKeysWithValues: pfses.map {
                ($0["label"] as? String ?? "", (($0["logical_bytes"] as? NSNumber)?.intValue ?? -1, ($0["physical_bytes"] as? NSNumber)?.intValue ?? -1))
            })
        }
        let (sent, received) = (try space(source), try space(target))
        for label in ["s1", "s2", "s3"] {
            XCTAssertEqual(received[label]?.physical, sent[label]?.physical, "\(label): stored bytes")
            XCTAssertEqual(received[label]?.logical, sent[label]?.logical, "\(label): logical bytes")
        }
        XCTAssertLessThan(sizes[0], sent["s1"]!.logical, "the full stream carries the text compressed")
        // send -n tells the size without reading the data: within 1% of each stream's.
        for (index, (label, base)) in ([("s1", nil), ("s2", "s1"), ("s3", "s2")] as [(String, String?)]).enumerated() {
            let estimate = try Binaries.run("hammer2", ["-f", source, "send", "-n"] + (base.map { ["-i", $0] } ?? []) + [label])
            XCTAssertEqual(estimate.status, 0, estimate.stderr)
            let words = estimate.stdout.split(separator: " ")
            let bytes = words.firstIndex(of: "about").flatMap { Double(words[$0 + 1]) } ?? 0
            XCTAssertEqual(bytes, Double(sizes[index]), accuracy: Double(sizes[index]) / 100, "\(label): \(estimate.stdout)")
        }
        // An incremental carries what changed: s2's stream is about its 3 MiB file, not the
        // whole tree again; s3's (deletions and 5000 bytes) is small.
        XCTAssertLessThan(sizes[1], (3 << 20) + 800_000)
        XCTAssertLessThan(sizes[2], 200_000)
    }

    func testDamagedCutAndMisdirectedStreamsAreRefused() throws {
        let source = "\(work)/source.img", target = "\(work)/target.img", other = "\(work)/other.img"
        for image in [source, target, other] {
            XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "512m", image]).status, 0)
        }
        let mount = try MountedImage(source + "@DATA", options: ["-o", "rw"])
        var random = SplitMix64(seed: 26)
        for i in 0..<40 { write(mount.mountpoint.path + "/f\(i)", random.bytes(60_000)) }
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", mount.mountpoint.path, "s1"]).status, 0)
        write(mount.mountpoint.path + "/later", random.bytes(100_000))
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", mount.mountpoint.path, "s2"]).status, 0)
        try mount.unmount()
        XCTAssertEqual(try bash("hammer2 -f '\(source)' send s1 > '\(work)/full'").status, 0)
        XCTAssertEqual(try bash("hammer2 -f '\(source)' send -i s1 s2 > '\(work)/incremental'").status, 0)
        let full = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(work)/full")))

        func refused(_ bytes: [UInt8], into image: String, label: String = "s1", because reason: String, line: UInt = #line) throws {
            let path = "\(work)/bad"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let labelsBefore = try labels(image)
            let result = try bash("hammer2 -f '\(image)' receive \(label) < '\(path)'")
            XCTAssertEqual(result.status, 1, "accepted: \(reason)", line: line)
            XCTAssertTrue(result.stderr.contains(reason), result.stderr, line: line)
            // The volume's PFSes are as they were; records that arrived before the break are
            // kept hidden for a resume (said, and dropped by receive -A), or nothing is.
            let kept = result.stderr.contains("what arrived is kept")
            XCTAssertTrue(kept || result.stderr.contains("nothing was changed"), result.stderr, line: line)
            XCTAssertEqual(try labels(image).filter { !$0.hasPrefix(".receive") }, labelsBefore, line: line)
            XCTAssertEqual(try labels(image).contains { $0.hasPrefix(".receive") }, kept, line: line)
            XCTAssertEqual(try Binaries.run("hammer2", ["-f", image, "receive", "-A"]).status, 0, line: line)
            XCTAssertFalse(try labels(image).contains { $0.hasPrefix(".receive") }, "receive -A left the hidden PFS", line: line)
            XCTAssertEqual(try Binaries.run("fsck_hammer2", [image]).status, 0, line: line)
        }
        // One byte changed in the middle: a record fails its checksum.
        var damaged = full
        damaged[full.count / 2] ^= 0x40
        try refused(damaged, into: target, because: "fails its checksum")
        // A whole record dropped (the second one): the numbering shows it.
        let firstPayload = Int(UInt32(full[0x10]) | UInt32(full[0x11]) << 8 | UInt32(full[0x12]) << 16 | UInt32(full[0x13]) << 24)
        let second = 32 + firstPayload
        let secondPayload = Int(UInt32(full[second + 0x10]) | UInt32(full[second + 0x11]) << 8
                                | UInt32(full[second + 0x12]) << 16 | UInt32(full[second + 0x13]) << 24)
        try refused(Array(full[..<second] + full[(second + 32 + secondPayload)...]), into: target, because: "a record is missing")
        // Cut short, and cut at a record boundary (no end record).
        try refused(Array(full.prefix(full.count - 1000)), into: target, because: "truncated")
        try refused(Array(full.prefix(second)), into: target, because: "truncated")
        // Not a stream at all.
        try refused(Array("hello, this is not a stream of records".utf8), into: target, because: "magic")
        // An incremental over a snapshot the volume does not have.
        let incremental = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(work)/incremental")))
        try refused(incremental, into: other, label: "s2", because: "which this volume does not have")
        // The real thing goes in; the same stream again is refused.
        XCTAssertEqual(try bash("hammer2 -f '\(target)' receive s1 < '\(work)/full'").status, 0)
        let again = try bash("hammer2 -f '\(target)' receive copy < '\(work)/full'")
        XCTAssertEqual(again.status, 1)
        XCTAssertTrue(again.stderr.contains("already here, as PFS s1"), again.stderr)
        // A label in use is refused without -F; -F replaces it once the new one is whole.
        XCTAssertEqual(try bash("hammer2 -f '\(other)' receive DATA < '\(work)/full'").status, 1)
        XCTAssertEqual(try bash("hammer2 -f '\(other)' receive -F DATA < '\(work)/full'").status, 0)
        XCTAssertEqual(try Binaries.run("fsck_hammer2", [other]).status, 0)
        // Usage: no -f for receive, a terminal for send.
        XCTAssertEqual(try Binaries.run("hammer2", ["receive", "x"]).status, 2)
    }

    /// A receive cut short (the stream ends early) or killed outright keeps what arrived;
    /// send -t with its token sends the rest, and the snapshot arrives whole.
    func testInterruptedReceiveResumes() throws {
        let source = "\(work)/source.img", target = "\(work)/target.img"
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "512m", source]).status, 0)
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "512m", "-L", "none", target]).status, 0)
        let mount = try MountedImage(source + "@DATA", options: ["-o", "rw"])
        var random = SplitMix64(seed: 27)
        for i in 0..<12 { write(mount.mountpoint.path + "/f\(i)", random.bytes(1_500_000)) }
        write(mount.mountpoint.path + "/text", Array(String(repeating: "resumable ", count: 200_000).utf8))
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", mount.mountpoint.path, "s1"]).status, 0)
        try mount.unmount()
        XCTAssertEqual(try bash("hammer2 -f '\(source)' send s1 > '\(work)/full'").status, 0)
        let full = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(work)/full")))
        let small = "HAMMER2_RECEIVE_CHECKPOINT_BYTES=1000000"

        // Cut at half: refused, what arrived kept, the token said and listed.
        try Data(full.prefix(full.count / 2)).write(to: URL(fileURLWithPath: "\(work)/half"))
        let cut = try bash("\(small) hammer2 -f '\(target)' receive s1 < '\(work)/half'")
        XCTAssertEqual(cut.status, 1)
        XCTAssertTrue(cut.stderr.contains("truncated") && cut.stderr.contains("s1 was not made"), cut.stderr)
        let said = try XCTUnwrap(cut.stderr.components(separatedBy: "send -t ").last?.split(separator: " ").first.map(String.init))
        let listed = try Binaries.run("hammer2", ["-f", target, "receive", "-T"])
        XCTAssertEqual(listed.stdout.split(separator: "\t").first.map(String.init), said, listed.stdout)
        XCTAssertFalse(try labels(target).contains("s1"))
        XCTAssertEqual(try Binaries.run("fsck_hammer2", [target]).status, 0)
        // The rest: a shorter stream, and the snapshot whole.
        let rest = try bash("hammer2 -f '\(source)' send -t \(said) | tee '\(work)/rest' | hammer2 -f '\(target)' receive s1")
        XCTAssertEqual(rest.status, 0, rest.stderr)
        let restBytes = (try FileManager.default.attributesOfItem(atPath: "\(work)/rest")[.size] as? NSNumber)?.intValue ?? 0
        XCTAssertLessThan(restBytes, full.count * 3 / 4, "the resumed stream leaves out what arrived")
        XCTAssertEqual(try look(target, "s1").0, try look(source, "s1").0)
        XCTAssertEqual(try Binaries.run("fsck_hammer2", [target]).status, 0)
        XCTAssertEqual(try Binaries.run("hammer2", ["-f", target, "receive", "-T"]).stdout, "", "nothing left to resume")

        // Killed outright while it waits for the end record: resumed from its last checkpoint.
        XCTAssertEqual(try bash("hammer2 -f '\(target)' pfs-delete s1").status, 0)
        let receiver = Process()
        receiver.executableURL = URL(fileURLWithPath: try Binaries.path("hammer2"))
        receiver.arguments = ["-f", target, "receive", "s1"]
        receiver.environment = ProcessInfo.processInfo.environment.merging(["HAMMER2_RECEIVE_CHECKPOINT_BYTES": "1000000"]) { $1 }
        let input = Pipe()
        receiver.standardInput = input
        receiver.standardOutput = FileHandle.nullDevice
        receiver.standardError = FileHandle.nullDevice
        try receiver.run()
        input.fileHandleForWriting.write(Data(full.dropLast(48)))  // all but the end record
        sleep(3)
        kill(receiver.processIdentifier, SIGKILL)
        receiver.waitUntilExit()
        try input.fileHandleForWriting.close()
        let token = try Binaries.run("hammer2", ["-f", target, "receive", "-T"]).stdout.split(separator: "\t").first.map(String.init) ?? ""
        XCTAssertTrue(token.hasPrefix("1-"), "no resume token after the kill: \(token)")
        let resumed = try bash("hammer2 -f '\(source)' send -t \(token) | hammer2 -f '\(target)' receive s1")
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try look(target, "s1").0, try look(source, "s1").0)
        XCTAssertEqual(try Binaries.run("fsck_hammer2", [target]).status, 0)
        // A token for another point than the one kept is refused.
        let wrong = try bash("hammer2 -f '\(source)' send -t \(said) | hammer2 -f '\(target)' receive again")
        XCTAssertEqual(wrong.status, 1)
    }

    /// Receiving onto a mounted volume: the stream goes to the volume's daemon, which
    /// receives it beside the mount it serves; the mount goes on working.
    func testReceiveOntoAMountedVolume() throws {
        let source = "\(work)/source.img", target = "\(work)/target.img"
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "512m", source]).status, 0)
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "512m", target]).status, 0)
        let mount = try MountedImage(source + "@DATA", options: ["-o", "rw"])
        var random = SplitMix64(seed: 28)
        write(mount.mountpoint.path + "/a", random.bytes(300_000))
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", mount.mountpoint.path, "s1"]).status, 0)
        write(mount.mountpoint.path + "/b", random.bytes(200_000))
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", mount.mountpoint.path, "s2"]).status, 0)
        try mount.unmount()
        let live = try MountedImage(target + "@DATA", options: ["-o", "rw"])
        defer { try? live.unmount() }
        write(live.mountpoint.path + "/mine", Array("still here".utf8))
        for (label, base) in [("s1", nil), ("s2", "s1")] as [(String, String?)] {
            let result = try bash("hammer2 -f '\(source)' send \(base.map { "-i \($0) " } ?? "")\(label) | hammer2 -s '\(live.mountpoint.path)' receive \(label)")
            XCTAssertEqual(result.status, 0, result.stderr)
            XCTAssertTrue(result.stdout.contains("stream as \(label)"), result.stdout)
        }
        let again = try bash("hammer2 -f '\(source)' send s1 | hammer2 -s '\(live.mountpoint.path)' receive s1")
        XCTAssertEqual(again.status, 1)
        XCTAssertTrue(again.stderr.contains("already here"), again.stderr)
        XCTAssertEqual(try String(contentsOfFile: live.mountpoint.path + "/mine", encoding: .utf8), "still here")
        write(live.mountpoint.path + "/after", Array("written after".utf8))
        // The received snapshots mount beside DATA (the same daemon) and hold what was sent.
        XCTAssertEqual(try look(target, "s2").0, try look(source, "s2").0)
        try live.unmount()
        XCTAssertEqual(try Binaries.run("fsck_hammer2", [target]).status, 0)
    }

    /// The last mount of the volume going away while a receive runs through its daemon:
    /// the daemon stays until the receive ends, then flushes and exits.
    func testAnOnlineReceiveOutlivesTheLastUnmount() throws {
        signal(SIGPIPE, SIG_IGN)  // a daemon gone early must fail the test, not kill it
        let source = "\(work)/source.img", target = "\(work)/target.img"
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "512m", source]).status, 0)
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "512m", target]).status, 0)
        let mount = try MountedImage(source + "@DATA", options: ["-o", "rw"])
        var random = SplitMix64(seed: 29)
        for i in 0..<8 { write(mount.mountpoint.path + "/f\(i)", random.bytes(1_000_000)) }
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", mount.mountpoint.path, "s1"]).status, 0)
        try mount.unmount()
        XCTAssertEqual(try bash("hammer2 -f '\(source)' send s1 > '\(work)/full'").status, 0)
        let full = try Data(contentsOf: URL(fileURLWithPath: "\(work)/full"))

        let live = try MountedImage(target + "@DATA", options: ["-o", "rw"])
        defer { try? live.unmount() }
        let receiver = Process()
        receiver.executableURL = URL(fileURLWithPath: try Binaries.path("hammer2"))
        receiver.arguments = ["-s", live.mountpoint.path, "receive", "s1"]
        let input = Pipe(), output = Pipe()
        receiver.standardInput = input
        receiver.standardOutput = output
        receiver.standardError = output
        try receiver.run()
        input.fileHandleForWriting.write(full.prefix(full.count / 2))
        usleep(500_000)
        XCTAssertEqual(try Fixtures.run("/usr/bin/env", ["fusermount3", "-u", live.mountpoint.path]), 0)
        usleep(500_000)
        XCTAssertFalse(live.isStopped, "the daemon left in the middle of a receive")
        input.fileHandleForWriting.write(full.suffix(from: full.count / 2))
        try input.fileHandleForWriting.close()
        receiver.waitUntilExit()
        let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(receiver.terminationStatus, 0, said)
        XCTAssertTrue(said.contains("received full stream as s1"), said)
        let deadline = Date().addingTimeInterval(15)
        while !live.isStopped && Date() < deadline { usleep(50_000) }
        XCTAssertTrue(live.isStopped, "the daemon did not end after the receive")
        XCTAssertEqual(try Binaries.run("fsck_hammer2", [target]).status, 0)
        XCTAssertEqual(try look(target, "s1").0, try look(source, "s1").0)
    }

    /// receive -c: the receiver's compression instead of the sender's (blocks stored
    /// otherwise are compressed anew); without it they arrive as stored.
    func testReceiveWithAnotherCompression() throws {
        let source = "\(work)/source.img"
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "512m", source]).status, 0)
        let mount = try MountedImage(source + "@DATA", options: ["-o", "rw"])
        var text = ""
        var random = SplitMix64(seed: 30)
        for line in 0..<60_000 { text += "line \(line): value \(random.next() % 1000) of a compressible log\n" }
        write(mount.mountpoint.path + "/log", Array(text.utf8))
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", mount.mountpoint.path, "s1"]).status, 0)
        try mount.unmount()
        func space(_ image: String, _ label: String) throws -> (logical: Int, physical: Int) {
            let result = try Binaries.run("hammer2", ["-j", "info", image])
            let document = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
            let pfses = ((document?["volumes"] as? [[String: Any]])?.first?["pfses"] as? [[String: Any]]) ?? []
            let pfs = try XCTUnwrap(pfses.first { $0["label"] as? String == label }, result.stdout)
            return ((pfs["logical_bytes"] as? NSNumber)?.intValue ?? -1, (pfs["physical_bytes"] as? NSNumber)?.intValue ?? -1)
        }
        XCTAssertEqual(try bash("hammer2 -f '\(source)' send s1 > '\(work)/full'").status, 0)
        var received: [String: (logical: Int, physical: Int)] = [:]
        for (name, option) in [("asSent", ""), ("zlib", "-c zlib:9"), ("none", "-c none")] {
            let target = "\(work)/\(name).img"
            XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "512m", target]).status, 0)
            let result = try bash("hammer2 -f '\(target)' receive \(option) s1 < '\(work)/full'")
            XCTAssertEqual(result.status, 0, result.stderr)
            XCTAssertEqual(try look(target, "s1").0, try look(source, "s1").0, name)
            XCTAssertEqual(try Binaries.run("fsck_hammer2", [target]).status, 0)
            received[name] = try space(target, "s1")
        }
        let sent = try space(source, "s1")
        XCTAssertEqual(received["asSent"]?.physical, sent.physical, "as stored")
        XCTAssertLessThan(received["zlib"]?.physical ?? .max, sent.physical, "zlib:9 packs this text tighter than LZ4")
        XCTAssertGreaterThanOrEqual(received["none"]?.physical ?? 0, received["none"]?.logical ?? .max, "stored whole")
        XCTAssertEqual(Set(received.values.map(\.logical) + [sent.logical]).count, 1)
        // Through a daemon too.
        let target = "\(work)/online.img"
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "512m", target]).status, 0)
        let live = try MountedImage(target + "@DATA", options: ["-o", "rw"])
        defer { try? live.unmount() }
        let online = try bash("hammer2 -s '\(live.mountpoint.path)' receive -c zlib s1 < '\(work)/full'")
        XCTAssertEqual(online.status, 0, online.stderr)
        try live.unmount()
        XCTAssertLessThan(try space(target, "s1").physical, sent.physical)
        XCTAssertEqual(try bash("hammer2 -f '\(target)' receive -c bogus x < '\(work)/full'").status, 1)
    }
}
