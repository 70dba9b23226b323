// mount(8), fstab and umount(8) with hammer2 (issue 26): the helpers mount.hammer2 /
// mount.fuse.hammer2 take fstab lines (mount -a) with their usual options, refuse unknown
// ones with a clear message, and umount returns only once the daemon has written
// everything and exited. The space report (hammer2 -j info) tells logical from stored
// bytes. Needs root (mount(8) looks for helpers in /sbin only).

import Foundation
import Glibc
import HAMMER2TestSupport
import XCTest

final class SystemMountTests: XCTestCase {
    var work = ""
    var linked: [String] = []

    override func setUpWithError() throws {
        work = FileManager.default.temporaryDirectory.appendingPathComponent("h2-system-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        for mountpoint in ["a", "b"] where MountedImage.isMountpoint("\(work)/\(mountpoint)") {
            _ = try? Fixtures.run("/usr/bin/env", ["fusermount3", "-uz", "\(work)/\(mountpoint)"])
        }
        for link in linked { try? FileManager.default.removeItem(atPath: link) }
        try? FileManager.default.removeItem(atPath: work)
    }

    /// mount(8)'s helpers in /sbin, pointing at the built mount_hammer2 (removed after).
    func linkHelpers() throws {
        guard getuid() == 0 else { throw XCTSkip("mount(8) with helpers needs root") }
        let target = try Binaries.path("mount_hammer2")
        for helper in ["mount.hammer2", "mount.fuse.hammer2", "umount.fuse.hammer2"] {
            let path = "/sbin/\(helper)"
            if let existing = try? FileManager.default.destinationOfSymbolicLink(atPath: path) {
                guard existing == target else { throw XCTSkip("an installed \(path) is in the way") }
                continue
            }
            guard !FileManager.default.fileExists(atPath: path) else { throw XCTSkip("an installed \(path) is in the way") }
            try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: target)
            linked.append(path)
        }
    }

    func run(_ command: String) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", command]
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("h2-sys-\(UUID().uuidString.prefix(8))")
        FileManager.default.createFile(atPath: out.path + ".o", contents: nil)
        FileManager.default.createFile(atPath: out.path + ".e", contents: nil)
        defer { try? FileManager.default.removeItem(atPath: out.path + ".o"); try? FileManager.default.removeItem(atPath: out.path + ".e") }
        // Files, not pipes: a daemon started by mount keeps no pipe end open then.
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out.path + ".o"))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: out.path + ".e"))
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return (process.terminationStatus, (try? String(contentsOfFile: out.path + ".o", encoding: .utf8)) ?? "",
                (try? String(contentsOfFile: out.path + ".e", encoding: .utf8)) ?? "")
    }

    func testFstabLinesMountAndUmountWaitsForTheDaemon() throws {
        try linkHelpers()
        let imageA = "\(work)/a.img", imageB = "\(work)/b.img"
        for image in [imageA, imageB] { XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", image]).status, 0) }
        for dir in ["a", "b"] { try FileManager.default.createDirectory(atPath: "\(work)/\(dir)", withIntermediateDirectories: true) }
        let fstab = "\(work)/fstab"
        try """
        # hammer2 lines as an admin writes them
        \(imageA)@DATA  \(work)/a  hammer2       rw,nofail,noatime,cache=1024,flush=3600,x-systemd.device-timeout=30s,_netdev,comment=test  0 0
        \(imageB)@DATA  \(work)/b  fuse.hammer2  defaults,noauto,nosuid,nodev  0 0

        """.write(toFile: fstab, atomically: true, encoding: .utf8)
        let all = try run("mount -a -T '\(fstab)'")
        XCTAssertEqual(all.status, 0, all.stderr)
        XCTAssertTrue(MountedImage.isMountpoint("\(work)/a"), "mount -a mounted the auto line")
        XCTAssertFalse(MountedImage.isMountpoint("\(work)/b"), "mount -a left the noauto line alone")
        let byPoint = try run("mount -T '\(fstab)' '\(work)/b'")
        XCTAssertEqual(byPoint.status, 0, byPoint.stderr)
        let info = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        let lineB = info.split(separator: "\n").first { $0.contains(" \(work)/b ") }.map(String.init) ?? ""
        XCTAssertTrue(lineB.contains("fuse.hammer2 \(imageB)@DATA"), lineB)
        XCTAssertTrue(lineB.contains("nosuid") && lineB.contains("nodev"), "fstab's nosuid,nodev reached the mount: \(lineB)")

        // umount returns once the daemon wrote everything and exited (with cache=1024 and
        // flush=3600 the daemon holds all of it until the unmount: without the helper,
        // umount(8) returns while the daemon still writes).
        var random = SplitMix64(seed: 26)
        let data = random.bytes(96 << 20)
        // Written without fsync (FileManager's atomic write would fsync, flushing it all).
        let file = open("\(work)/a/big", O_CREAT | O_WRONLY | O_TRUNC, 0o644)
        XCTAssertEqual(data.withUnsafeBytes { write(file, $0.baseAddress, $0.count) }, data.count)
        close(file)
        let unmounted = try run("umount '\(work)/a'")
        XCTAssertEqual(unmounted.status, 0, unmounted.stderr)
        let fd = open(imageA, O_RDONLY)
        XCTAssertEqual(flock(fd, LOCK_EX | LOCK_NB), 0, "the daemon still held the image when umount returned")
        close(fd)
        let fsck = try Binaries.run("fsck_hammer2", [imageA])
        XCTAssertEqual(fsck.status, 0, fsck.stdout)
        let check = try MountedImage(imageA + "@DATA")
        XCTAssertEqual(sha256Hex(try Data(contentsOf: URL(fileURLWithPath: check.mountpoint.path + "/big"))), sha256Hex(data))
        try check.unmount()
        XCTAssertEqual(try run("umount '\(work)/b'").status, 0)

        // Bad options: a clear error, nothing mounted; mount -f checks and mounts nothing.
        let bad = try run("mount -t hammer2 -o rw,frobnicate '\(imageA)@DATA' '\(work)/a'")
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("unknown mount option(s): frobnicate"), bad.stderr)
        let refused = try run("mount -t hammer2 -o subtype=other '\(imageA)@DATA' '\(work)/a'")
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("subtype"), refused.stderr)
        XCTAssertFalse(MountedImage.isMountpoint("\(work)/a"))
        let fake = try run("mount -f -t hammer2 '\(imageA)@DATA' '\(work)/a'")
        XCTAssertEqual(fake.status, 0, fake.stderr)
        XCTAssertFalse(MountedImage.isMountpoint("\(work)/a"), "mount -f mounts nothing")
        // -s (sloppy) drops what it does not know.
        let sloppy = try run("mount -s -t hammer2 -o ro,frobnicate '\(imageA)@DATA' '\(work)/a'")
        XCTAssertEqual(sloppy.status, 0, sloppy.stderr)
        XCTAssertTrue(MountedImage.isMountpoint("\(work)/a"))
        XCTAssertEqual(try run("umount '\(work)/a'").status, 0)
    }

    /// hammer2 -j info: per PFS logical and stored data bytes and the ratio, which follow
    /// what was written (text compresses, random bytes do not), and what snapshots hold.
    func testSpaceReportTellsLogicalFromStoredBytes() throws {
        let volume = try ScratchVolume(size: "1g")
        let text = Array(String(repeating: "HAMMER2 keeps a 64 KiB logical block per data blockref. ", count: 80_000).utf8.prefix(4 << 20))
        var random = SplitMix64(seed: 27)
        let noise = random.bytes(4 << 20)
        XCTAssertTrue(FileManager.default.createFile(atPath: volume.path("text"), contents: Data(text)))
        XCTAssertTrue(FileManager.default.createFile(atPath: volume.path("noise"), contents: Data(noise)))
        XCTAssertTrue(FileManager.default.createFile(atPath: volume.path("tail"), contents: Data(random.bytes(70_000))))
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", volume.root, "before"]).status, 0)
        XCTAssertEqual(unlink(volume.path("noise")), 0)
        func report() throws -> [String: Any] {
            let result = try Binaries.run("hammer2", ["-j", "info", volume.root])
            XCTAssertEqual(result.status, 0, result.stderr)
            let document = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
            return (document?["volumes"] as? [[String: Any]])?.first ?? [:]
        }
        let volumeReport = try report()
        let pfses = Dictionary(uniqueKeysWithValues: ((volumeReport["pfses"] as? [[String: Any]]) ?? []).map { ($0["label"] as? String ?? "", $0) })
        let data = try XCTUnwrap(pfses["DATA"]), before = try XCTUnwrap(pfses["before"])
        func number(_ pfs: [String: Any], _ key: String) -> UInt64 { (pfs[key] as? NSNumber)?.uint64Value ?? 0 }
        // Logical bytes are the files' sizes; the text compresses, the noise does not.
        XCTAssertEqual(number(data, "logical_bytes"), UInt64(4 << 20) + 70_000)
        XCTAssertEqual(number(before, "logical_bytes"), UInt64(8 << 20) + 70_000)
        XCTAssertLessThan(number(data, "physical_bytes"), UInt64(1 << 20) + 131_072, "4 MiB of text stored in under 1 MiB")
        XCTAssertGreaterThan(number(before, "physical_bytes"), UInt64(4 << 20), "random bytes stored as they are")
        let ratio = (data["compressratio"] as? NSNumber)?.doubleValue ?? 0
        XCTAssertEqual(ratio, Double(number(data, "logical_bytes")) / Double(number(data, "physical_bytes")), accuracy: 0.01)
        XCTAssertGreaterThan(ratio, 3)
        XCTAssertEqual(before["snapshot"] as? Bool, true)
        XCTAssertGreaterThanOrEqual(number(volumeReport, "snapshots_hold_bytes"), UInt64(4 << 20), "the deleted noise lives on in the snapshot")
        // Free space is what df says (both less the reserve), give or take what was
        // written since the report's flush.
        var st = statvfs()
        XCTAssertEqual(statvfs(volume.root, &st), 0)
        let dfFree = Double(UInt64(st.f_bavail) * UInt64(st.f_frsize))
        XCTAssertEqual(Double(number(volumeReport, "free_bytes")), dfFree, accuracy: Double(2 << 20))
        XCTAssertGreaterThan(number(volumeReport, "reserve_bytes"), number(volumeReport, "size_bytes") / 21)
        XCTAssertLessThan(number(volumeReport, "free_bytes") + number(volumeReport, "reserve_bytes"), number(volumeReport, "size_bytes"))
    }
}
