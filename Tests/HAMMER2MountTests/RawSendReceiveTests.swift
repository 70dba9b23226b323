// Raw streams of encrypted snapshots (issue 25; docs/send-receive.md, "Raw streams"): the
// blocks travel sealed, the receiving side never has the key, and the received snapshots
// mount with the sender's key holding exactly what was sent. A stream tampered with by
// whoever carries it is written as it came (the receiver cannot tell) and then refused
// by the key holder: EIO for a block, a refused mount for the root. PFSes sealed before
// version 2 are refused until reencrypt brings them up to date.

import Foundation
import CXattr
import Glibc
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class RawSendReceiveTests: XCTestCase {
    var work = ""
    var keyFile = ""

    override func setUpWithError() throws {
        work = FileManager.default.temporaryDirectory.appendingPathComponent("h2-raw-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: work + "/state", withIntermediateDirectories: true)
        setenv("HAMMER2_STATE_DIR", work + "/state", 1)  // the daemons' rollback state, this test's own
        keyFile = work + "/key"
        var random = SplitMix64(seed: 250)
        try Data(random.bytes(32)).write(to: URL(fileURLWithPath: keyFile))
    }

    override func tearDownWithError() throws {
        unsetenv("HAMMER2_STATE_DIR")
        try? FileManager.default.removeItem(atPath: work)
    }

    func bash(_ command: String, environment extra: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
        var environment = ["PATH": try Binaries.directory().path + ":/usr/bin:/bin:/usr/sbin:/sbin", "HAMMER2_STATE_DIR": work + "/state"]
        environment.merge(extra) { $1 }
        return try Binaries.runProgram("/bin/bash", ["-o", "pipefail", "-c", command], environment: environment)
    }

    func write(_ path: String, _ bytes: [UInt8]) {
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)), path)
    }

    /// The tree of snapshot `label` of `image` mounted with the key, and its extended
    /// attributes (SnapshotLook.swift).
    func look(_ image: String, _ label: String) throws -> (TreeSnapshot, [String: [String: [UInt8]]]) {
        try lookAtSnapshot(image + "@" + label, options: ["-o", "ro,keyfile=\(keyFile)"])
    }

    func labels(_ image: String) throws -> [String] {
        let list = try Binaries.run("hammer2", ["-f", image, "pfs-list"])
        XCTAssertEqual(list.status, 0, list.stderr)
        return list.stdout.split(separator: "\n").dropFirst().compactMap { $0.split(separator: " ").last.map(String.init) }.sorted()
    }

    /// An encrypted PFS with one of everything and two snapshots, s1 and s2; `version1`:
    /// sealed as before sealing version 2 (a test hook of the daemon and the tools).
    func makeSource(_ image: String, version1: Bool = false, seed: UInt64) throws {
        if version1 { setenv("HAMMER2_TEST_SEALING_V1", "1", 1) }
        defer { unsetenv("HAMMER2_TEST_SEALING_V1") }
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", "-L", "DATA", "-k", keyFile, image]).status, 0)
        let mount = try MountedImage(image + "@DATA", options: ["-o", "rw,keyfile=\(keyFile)"])
        let root = mount.mountpoint.path
        var random = SplitMix64(seed: seed)
        try FileManager.default.createDirectory(atPath: root + "/docs/deep", withIntermediateDirectories: true)
        write(root + "/docs/text", Array(String(repeating: "PLAINTEXT-MARKER sent raw ", count: 30_000).utf8))
        write(root + "/docs/deep/random", random.bytes(900_000))  // indirect blocks
        try FileManager.default.createDirectory(atPath: root + "/many", withIntermediateDirectories: true)
        for i in 0..<300 { write(root + "/many/entry-\(i)", Array("\(i)".utf8)) }  // a directory with indirect blocks
        write(root + "/a-long-file-name-that-needs-a-block-of-its-own-to-hold-it", Array("long".utf8))
        XCTAssertEqual(link(root + "/docs/text", root + "/hardlink"), 0)
        XCTAssertEqual(symlink("docs/text", root + "/symlink"), 0)
        let sparse = open(root + "/sparse", O_CREAT | O_WRONLY, 0o644)
        XCTAssertEqual(pwrite(sparse, "end", 3, 20 << 20), 3)
        close(sparse)
        XCTAssertEqual(setxattr(root + "/docs/text", "user.origin", "sender", 6, 0), 0)
        XCTAssertEqual(chown(root + "/hardlink", 1234, 5678), 0)
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", root, "s1"]).status, 0)
        let append = open(root + "/docs/text", O_WRONLY | O_APPEND)
        XCTAssertEqual(Glibc.write(append, "more", 4), 4)
        close(append)
        XCTAssertEqual(unlink(root + "/many/entry-7"), 0)
        XCTAssertEqual(rename(root + "/docs/deep/random", root + "/moved"), 0)
        write(root + "/new", random.bytes(2 << 20))
        XCTAssertEqual(setxattr(root + "/docs/text", "user.origin", "changed", 7, 0), 0)
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", root, "s2"]).status, 0)
        try mount.unmount()
    }

    func testEncryptedSnapshotsTravelRawAndMountWithTheSendersKey() throws {
        let source = "\(work)/source.img", target = "\(work)/target.img"
        try makeSource(source, seed: 251)
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", "-L", "none", target]).status, 0)
        // Full, then incremental through the daemon of a mounted target: no key on that side.
        let full = try bash("hammer2 -f '\(source)' send s1 | tee '\(work)/s1.stream' | hammer2 -f '\(target)' receive s1")
        XCTAssertEqual(full.status, 0, full.stderr)
        XCTAssertTrue(full.stdout.contains("received full stream as s1"), full.stdout)
        let live = try MountedImage(target + "@LOCAL", options: ["-o", "rw"])
        let incremental = try bash("hammer2 -f '\(source)' send -i s1 s2 | tee '\(work)/s2.stream' | hammer2 -s '\(live.mountpoint.path)' receive s2")
        XCTAssertEqual(incremental.status, 0, incremental.stderr)
        try live.unmount()
        // Sealed in the stream: no contents, no names.
        let stream = try Data(contentsOf: URL(fileURLWithPath: "\(work)/s1.stream"))
        for secret in ["PLAINTEXT-MARKER", "entry-12", "a-long-file-name", "user.origin"] {
            XCTAssertNil(stream.range(of: Data(secret.utf8)), "\(secret) in the clear in the stream")
        }
        let sizes = try ["s1", "s2"].map { (try FileManager.default.attributesOfItem(atPath: "\(work)/\($0).stream")[.size] as? NSNumber)?.intValue ?? 0 }
        XCTAssertLessThan(sizes[1], (2 << 20) + sizes[0] / 4, "the incremental stream carries what changed (2 MiB new)")
        // Without the key: the structure checks out, it does not mount.
        let fsck = try Binaries.run("fsck_hammer2", [target])
        XCTAssertEqual(fsck.status, 0, fsck.stdout)
        XCTAssertThrowsError(try MountedImage(target + "@s2", options: ["-o", "ro"]))
        // With the sender's key: every tag and both roots authenticate, and each snapshot is
        // what was sent.
        let keyed = try Binaries.run("fsck_hammer2", ["-k", keyFile, target])
        XCTAssertEqual(keyed.status, 0, keyed.stdout)
        XCTAssertTrue(keyed.stdout.contains("0 without key"), keyed.stdout)
        for label in ["s1", "s2"] {
            let (sent, sentAttributes) = try look(source, label)
            let (received, receivedAttributes) = try look(target, label)
            XCTAssertEqual(received, sent, "snapshot \(label) arrived different")
            XCTAssertEqual(receivedAttributes, sentAttributes, "extended attributes of \(label)")
        }
        XCTAssertEqual(try send(source, "-n s1").status, 0)
        // The received copy is a PFS like any other: written with the key, it verifies after.
        let writable = try MountedImage(target + "@s2", options: ["-o", "rw,keyfile=\(keyFile)"])
        write(writable.mountpoint.path + "/after", Array("written on the receiver".utf8))
        try writable.unmount()
        XCTAssertEqual(try look(target, "s2").0.entries["after"]?.size, 23)
        XCTAssertEqual(try Binaries.run("fsck_hammer2", ["-k", keyFile, target]).status, 0)
        // Refused: the same snapshot again, an incremental over a base the volume lacks.
        let again = try bash("hammer2 -f '\(target)' receive copy < '\(work)/s1.stream'")
        XCTAssertTrue(again.status == 1 && again.stderr.contains("already here"), again.stderr)
        let other = "\(work)/other.img"
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "512m", "-L", "none", other]).status, 0)
        let orphan = try bash("hammer2 -f '\(other)' receive s2 < '\(work)/s2.stream'")
        XCTAssertTrue(orphan.status == 1 && orphan.stderr.contains("does not have"), orphan.stderr)
        // A stream whose blocks wait for parents past the limit (here lowered) is refused.
        let flood = try bash("hammer2 -f '\(other)' receive s1 < '\(work)/s1.stream'", environment: ["HAMMER2_RAW_RECEIVE_PENDING_LIMIT": "5"])
        XCTAssertTrue(flood.status == 1 && flood.stderr.contains("wait for a parent"), flood.stderr)
        XCTAssertEqual(try bash("hammer2 -f '\(other)' receive -A").status, 0)
                let recompress = try bash("hammer2 -f '\(other)' receive -c zlib s1 < '\(work)/s1.stream'")
        XCTAssertTrue(recompress.status == 1 && recompress.stderr.contains("raw"), recompress.stderr)
        XCTAssertEqual(try labels(other), ["LOCAL"])
        // On a terminal the receiving side shows the share done and the time left: the
        // stream's begin record carries the size the sender expected.
        let shown = try bash("script -qec \"hammer2 -f '\(other)' receive s1 < '\(work)/s1.stream'\" /dev/null")
        XCTAssertEqual(shown.status, 0, shown.stdout)
        XCTAssertTrue(shown.stdout.contains(" of ~") && shown.stdout.contains("ETA"), shown.stdout)
    }

    /// A file's bytes, or the errno a read failed with.
    func readWhole(_ path: String) -> ([UInt8]?, Int32) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return (nil, errno) }
        defer { close(fd) }
        var bytes: [UInt8] = [], buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let got = read(fd, &buffer, buffer.count)
            if got < 0 { return (nil, errno) }
            if got == 0 { return (bytes, 0) }
            bytes += buffer[0..<got]
        }
    }

    func send(_ image: String, _ arguments: String) throws -> (status: Int32, stdout: String, stderr: String) {
        try bash("hammer2 -f '\(image)' send \(arguments) > /dev/null")
    }

    /// Records of a stream file, and the same stream framed again after `edit` changed
    /// payloads (the chained hashes made anew, as a hostile carrier would).
    func reframed(_ stream: [UInt8], edit: (Int, UInt16, inout [UInt8]) -> Void) -> [UInt8] {
        var out: [UInt8] = [], position = 0, previous: UInt64 = 0, index = 0
        while position + 32 <= stream.count {
            var header = Array(stream[position..<(position + 32)])
            let length = Int(UInt32(header[0x10]) | UInt32(header[0x11]) << 8 | UInt32(header[0x12]) << 16 | UInt32(header[0x13]) << 24)
            let type = UInt16(header[4]) | UInt16(header[5]) << 8
            var payload = Array(stream[(position + 32)..<(position + 32 + length)])
            edit(index, type, &payload)
            previous = payload.withUnsafeBytes { CheckCode.xxhash64($0, seed: previous) }
            withUnsafeBytes(of: previous.littleEndian) { header.replaceSubrange(0x18..<0x20, with: $0) }
            out += header + payload
            position += 32 + length
            index += 1
        }
        return out
    }

    /// Whoever carries a raw stream can change it without being noticed on the way (the
    /// receiver has no key), never without being noticed by the key holder.
    func testTamperedRawStreamsAreCaughtByTheKeyHolder() throws {
        let source = "\(work)/source.img"
        try makeSource(source, seed: 252)
        XCTAssertEqual(try bash("hammer2 -f '\(source)' send s1 > '\(work)/s1.stream'").status, 0)
        let stream = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(work)/s1.stream")))
        // One byte of the first data block's ciphertext.
        var changedBlock = false
        let damagedData = reframed(stream) { _, type, payload in
            guard type == 6, !changedBlock else { return }
            var position = 4
            while position + 136 <= payload.count {
                let radix = Int(payload[position + 8 + 0x20] & 0x3F)
                if payload[position + 8] == 4 {  // BREF_TYPE_DATA
                    payload[position + 136 + 100] ^= 0x01
                    changedBlock = true
                    return
                }
                position += 136 + (1 << radix)
            }
        }
        XCTAssertTrue(changedBlock)
        let target = "\(work)/target.img"
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", "-L", "none", target]).status, 0)
        try Data(damagedData).write(to: URL(fileURLWithPath: "\(work)/bad"))
        XCTAssertEqual(try bash("hammer2 -f '\(target)' receive s1 < '\(work)/bad'").status, 0, "the receiver cannot tell")
        let fsck = try Binaries.run("fsck_hammer2", ["-k", keyFile, target])
        XCTAssertNotEqual(fsck.status, 0, fsck.stdout)
        XCTAssertTrue((fsck.stdout + fsck.stderr).contains("XAES"), fsck.stdout + fsck.stderr)
        // Read through the mount: every file is what was sent or EIO, never other bytes.
        let sent = try MountedImage(source + "@s1", options: ["-o", "ro,keyfile=\(keyFile)"])
        defer { try? sent.unmount() }
        let received = try MountedImage(target + "@s1", options: ["-o", "ro,keyfile=\(keyFile)"])
        defer { try? received.unmount() }
        var failures = 0
        let files = try FileManager.default.subpathsOfDirectory(atPath: sent.mountpoint.path)
        for path in files where (try? FileManager.default.attributesOfItem(atPath: sent.mountpoint.path + "/" + path)[.type] as? FileAttributeType) == .typeRegular {
            let expected = try Data(contentsOf: URL(fileURLWithPath: sent.mountpoint.path + "/" + path))
            let (got, error) = readWhole(received.mountpoint.path + "/" + path)
            if let got {
                XCTAssertEqual(got, [UInt8](expected), path)
            } else {
                failures += 1
                XCTAssertEqual(error, EIO, path)
            }
        }
        XCTAssertEqual(failures, 1, "the changed block's file reads as EIO")
        try received.unmount()

        // The root's attributes changed (its mode): the mount refuses it.
        let damagedRoot = reframed(stream) { _, type, payload in
            if type == 7 { payload[0x54] ^= 0x02 }
        }
        let target2 = "\(work)/target2.img"
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", "-L", "none", target2]).status, 0)
        try Data(damagedRoot).write(to: URL(fileURLWithPath: "\(work)/bad"))
        XCTAssertEqual(try bash("hammer2 -f '\(target2)' receive s1 < '\(work)/bad'").status, 0)
        XCTAssertThrowsError(try MountedImage(target2 + "@s1", options: ["-o", "ro,keyfile=\(keyFile)"]))
        XCTAssertNotEqual(try Binaries.run("fsck_hammer2", ["-k", keyFile, target2]).status, 0)
    }

    /// A raw receive cut short keeps what arrived (bulkfree leaves it alone) and goes on
    /// from its token; a PFS sealed before version 2 is refused until reencrypt.
    func testRawReceiveResumesAndOlderSealingIsBroughtUpToDate() throws {
        let source = "\(work)/source.img", target = "\(work)/target.img"
        try makeSource(source, version1: true, seed: 253)
        let refused = try send(source, "s1")
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("reencrypt"), refused.stderr)
        let upgrade = try bash("hammer2 -f '\(source)' reencrypt -k '\(keyFile)' DATA")
        XCTAssertEqual(upgrade.status, 0, upgrade.stderr)
        XCTAssertTrue(upgrade.stdout.contains("no older keys or older sealing left"), upgrade.stdout)
        let nothingLeft = try bash("hammer2 -f '\(source)' reencrypt -k '\(keyFile)' DATA")
        XCTAssertTrue(nothingLeft.stdout.hasPrefix("reencrypt: 0 inodes, 0 directory entries, 0.00B"), nothingLeft.stdout)
        let mount = try MountedImage(source + "@DATA", options: ["-o", "rw,keyfile=\(keyFile)"])
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", mount.mountpoint.path, "s3"]).status, 0)
        try mount.unmount()
        XCTAssertEqual(try bash("hammer2 -f '\(source)' send s3 > '\(work)/s3.stream'").status, 0)
        let full = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(work)/s3.stream")))

        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", "-L", "none", target]).status, 0)
        try Data(full.prefix(full.count * 2 / 3)).write(to: URL(fileURLWithPath: "\(work)/cut"))
        let cut = try bash("hammer2 -f '\(target)' receive s3 < '\(work)/cut'", environment: ["HAMMER2_RECEIVE_CHECKPOINT_BYTES": "500000"])
        XCTAssertEqual(cut.status, 1)
        XCTAssertTrue(cut.stderr.contains("what arrived is kept"), cut.stderr)
        XCTAssertEqual(try Binaries.run("fsck_hammer2", [target]).status, 0)
        XCTAssertEqual(try Binaries.run("hammer2", ["-f", target, "bulkfree"]).status, 0)
        let token = try Binaries.run("hammer2", ["-f", target, "receive", "-T"]).stdout.split(separator: "\t").first.map(String.init) ?? ""
        XCTAssertTrue(token.hasPrefix("1-"), token)
        let rest = try bash("hammer2 -f '\(source)' send -t \(token) | tee '\(work)/rest' | hammer2 -f '\(target)' receive s3")
        XCTAssertEqual(rest.status, 0, rest.stderr)
        let restBytes = (try FileManager.default.attributesOfItem(atPath: "\(work)/rest")[.size] as? NSNumber)?.intValue ?? 0
        XCTAssertLessThan(restBytes, full.count * 2 / 3, "the resumed stream leaves out what arrived")
        XCTAssertEqual(try look(target, "s3").0, try look(source, "s3").0)
        XCTAssertEqual(try Binaries.run("fsck_hammer2", ["-k", keyFile, target]).status, 0)
        XCTAssertEqual(try Binaries.run("hammer2", ["-f", target, "receive", "-T"]).stdout, "")
    }
}
