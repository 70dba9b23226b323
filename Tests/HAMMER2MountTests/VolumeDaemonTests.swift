// One daemon per volume (issue 22): several PFSes of one image mounted at once, read-write
// and read-only, served by the first mount's process, with one flush for all of them.

import Foundation
import Glibc
import HAMMER2TestSupport
import XCTest

final class VolumeDaemonTests: XCTestCase {
    var image: URL!

    override func setUpWithError() throws {
        image = FileManager.default.temporaryDirectory.appendingPathComponent("hammer2-daemon-\(getpid())-\(UUID().uuidString.prefix(6)).img")
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "2g", image.path]).status, 0)
        let create = try Binaries.run("hammer2", ["-f", image.path, "pfs-create", "HOME"])
        XCTAssertEqual(create.status, 0, create.stderr)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: image)
    }

    func mount(_ label: String, _ options: String = "rw") throws -> MountedImage {
        try MountedImage("\(image.path)@\(label)", options: ["-o", options])
    }

    static func writeFile(_ path: String, _ bytes: [UInt8], sync: Bool = false) {
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0, path)
        XCTAssertEqual(bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }, bytes.count)
        if sync { XCTAssertEqual(fsync(fd), 0) }
        close(fd)
    }

    func writeFile(_ path: String, _ bytes: [UInt8], sync: Bool = false) { Self.writeFile(path, bytes, sync: sync) }

    func digest(_ path: String) -> String? { FileManager.default.contents(atPath: path).map { sha256Hex($0) } }

    /// The process serving a mount point, from the trace segment `hammer2 stat` finds.
    func servingPID(_ mountpoint: String) throws -> String {
        let stat = try Binaries.run("hammer2", ["stat", "-w", "-n", "1", mountpoint])
        guard let range = stat.stdout.range(of: #"pid (\d+)"#, options: .regularExpression) else {
            XCTFail("no pid in: \(stat.stdout) \(stat.stderr)")
            return ""
        }
        return String(stat.stdout[range])
    }

    func testTwoPFSesWrittenAtOnceBesideASnapshotInOneDaemon() throws {
        let data = try mount("DATA")
        let home = try mount("HOME")
        XCTAssertEqual(try servingPID(home.mountpoint.path), "pid \(data.daemonPID)", "HOME is served by DATA's daemon")
        // Both written at once, from two threads.
        var expected: [String: String] = [:]
        var jobs: [[(path: String, bytes: [UInt8], sync: Bool)]] = []
        for (name, mount) in [("data", data), ("home", home)] {
            var random = SplitMix64(seed: UInt64(name.count))
            var job: [(path: String, bytes: [UInt8], sync: Bool)] = []
            for i in 0..<40 {
                let bytes = random.bytes(Int(random.next() % 200_000) + 1)
                job.append((mount.mountpoint.path + "/\(name)-\(i)", bytes, i % 10 == 0))
                expected["\(name)/\(name)-\(i)"] = sha256Hex(bytes)
            }
            jobs.append(job)
        }
        let work = jobs
        DispatchQueue.concurrentPerform(iterations: work.count) { index in
            for file in work[index] { Self.writeFile(file.path, file.bytes, sync: file.sync) }
        }
        let snapshot = try Binaries.run("hammer2", ["snapshot", data.mountpoint.path, "snap"])
        XCTAssertEqual(snapshot.status, 0, snapshot.stderr)
        let snap = try mount("snap", "ro")
        XCTAssertEqual(try servingPID(snap.mountpoint.path), "pid \(data.daemonPID)")
        XCTAssertEqual(digest(snap.mountpoint.path + "/data-7"), expected["data/data-7"])
        expectFailure(open(snap.mountpoint.path + "/new", O_CREAT | O_WRONLY, 0o644), EROFS, "a write on the read-only mount")
        // Directives reach the PFS of the mount point they are given: a snapshot through
        // HOME's mount is of HOME.
        let homeSnapshot = try Binaries.run("hammer2", ["snapshot", home.mountpoint.path, "homesnap"])
        XCTAssertEqual(homeSnapshot.status, 0, homeSnapshot.stderr)
        let homeSnap = try mount("homesnap", "ro")
        XCTAssertEqual(digest(homeSnap.mountpoint.path + "/home-5"), expected["home/home-5"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: homeSnap.mountpoint.path + "/data-5"))
        XCTAssertEqual(try homeSnap.unmount(), 0)
        // Changes after the snapshot stay out of it.
        writeFile(data.mountpoint.path + "/after-snapshot", [1])
        XCTAssertFalse(FileManager.default.fileExists(atPath: snap.mountpoint.path + "/after-snapshot"))
        // A PFS mounts once; a mounted PFS cannot be deleted.
        XCTAssertThrowsError(try mount("HOME")) { XCTAssertTrue("\($0)".contains("already mounted"), "\($0)") }
        let delete = try Binaries.run("hammer2", ["-s", data.mountpoint.path, "pfs-delete", "HOME"])
        XCTAssertNotEqual(delete.status, 0)
        XCTAssertTrue(delete.stderr.contains("mounted"), delete.stderr)
        // The first mount may go first: the daemon serves the others on.
        XCTAssertEqual(try Fixtures.run("/usr/bin/env", ["fusermount3", "-u", data.mountpoint.path]), 0)
        XCTAssertFalse(MountedImage.isMountpoint(data.mountpoint.path))
        XCTAssertFalse(data.isStopped, "the daemon serves HOME and the snapshot on")
        writeFile(home.mountpoint.path + "/after-data-unmounted", [2])
        expected["home/after-data-unmounted"] = sha256Hex([2])
        XCTAssertEqual(digest(home.mountpoint.path + "/home-3"), expected["home/home-3"])
        XCTAssertEqual(try snap.unmount(), 0, snap.log)
        XCTAssertEqual(try home.unmount(), 0, home.log)
        XCTAssertEqual(try data.unmount(), 0, "the daemon ends with its last mount: \(data.log)")
        // The daemon ended (the image lock is free) after its final flush: both PFSes are
        // on the image, fsck clean.
        let fsck = try Binaries.run("fsck_hammer2", [image.path])
        XCTAssertEqual(fsck.status, 0, fsck.stdout + fsck.stderr)
        for label in ["DATA", "HOME"] {
            let check = try mount(label, "ro")
            for (key, digest) in expected where key.hasPrefix(label.lowercased() + "/") {
                let name = String(key.split(separator: "/")[1])
                XCTAssertEqual(self.digest(check.mountpoint.path + "/" + name), digest, "\(label): \(name)")
            }
            XCTAssertEqual(try check.unmount(), 0)
        }
        // With HOME no longer mounted, deleting it through a mount of DATA works.
        let again = try mount("DATA")
        let deleted = try Binaries.run("hammer2", ["-s", again.mountpoint.path, "pfs-delete", "HOME"])
        XCTAssertEqual(deleted.status, 0, deleted.stderr)
        XCTAssertEqual(try again.unmount(), 0)
    }

    /// kill -9 of the daemon while two PFSes are being written: each keeps every file
    /// whose fsync returned, and the volume is fsck clean.
    func testKilledDaemonKeepsWhatBothPFSesFsynced() throws {
        let data = try mount("DATA")
        let home = try mount("HOME")
        var durable: [String: String] = [:]
        var random = SplitMix64(seed: 22)
        for i in 0..<30 {
            for (label, mount) in [("DATA", data), ("HOME", home)] {
                let bytes = random.bytes(Int(random.next() % 100_000) + 1)
                let sync = i % 3 == 0
                writeFile(mount.mountpoint.path + "/f\(i)", bytes, sync: sync)
                if sync { durable["\(label)/f\(i)"] = sha256Hex(bytes) }
            }
        }
        XCTAssertEqual(Glibc.kill(data.daemonPID, SIGKILL), 0)
        while !data.isStopped { usleep(10_000) }
        _ = try data.unmount()
        _ = try home.unmount()
        let fsck = try Binaries.run("fsck_hammer2", [image.path])
        XCTAssertEqual(fsck.status, 0, fsck.stdout + fsck.stderr)
        for label in ["DATA", "HOME"] {
            let check = try mount(label, "ro")
            for (key, digest) in durable where key.hasPrefix(label + "/") {
                let name = String(key.split(separator: "/")[1])
                XCTAssertEqual(self.digest(check.mountpoint.path + "/" + name), digest, "\(label): \(name) was fsynced")
            }
            XCTAssertEqual(try check.unmount(), 0)
        }
    }

    /// An encrypted PFS mounted beside another through the daemon: a wrong key is refused
    /// with the reason, and nothing stays half-open (the right key mounts it next).
    func testEncryptedPFSAttachedWithItsKeyAndRefusedWithAWrongOne() throws {
        let right = image.path + ".k1", wrong = image.path + ".k2"
        defer { try? FileManager.default.removeItem(atPath: right); try? FileManager.default.removeItem(atPath: wrong) }
        var random = SplitMix64(seed: 5)
        FileManager.default.createFile(atPath: right, contents: Data(random.bytes(64)))
        FileManager.default.createFile(atPath: wrong, contents: Data(random.bytes(64)))
        let create = try Binaries.run("hammer2", ["-f", image.path, "pfs-create", "-e", "-k", right, "SECRET"])
        XCTAssertEqual(create.status, 0, create.stderr)
        let data = try mount("DATA")
        XCTAssertThrowsError(try mount("SECRET", "rw,keyfile=" + wrong)) {
            XCTAssertTrue("\($0)".contains("wrong passphrase or key file"), "\($0)")
        }
        XCTAssertThrowsError(try mount("SECRET", "rw,keyfile=" + image.path + ".missing"))
        let secret = try mount("SECRET", "rw,keyfile=" + right)
        XCTAssertEqual(try servingPID(secret.mountpoint.path), "pid \(data.daemonPID)")
        writeFile(secret.mountpoint.path + "/f", [1, 2, 3], sync: true)
        XCTAssertEqual(try secret.unmount(), 0)
        XCTAssertEqual(try Fixtures.run("/usr/bin/env", ["fusermount3", "-u", data.mountpoint.path]), 0)
        XCTAssertEqual(try data.unmount(), 0)
        let fsck = try Binaries.run("fsck_hammer2", ["-k", right, "-l", "SECRET", image.path])
        XCTAssertEqual(fsck.status, 0, fsck.stdout + fsck.stderr)
        let check = try mount("SECRET", "ro,keyfile=" + right)
        XCTAssertEqual(FileManager.default.contents(atPath: check.mountpoint.path + "/f").map { [UInt8]($0) }, [1, 2, 3])
        XCTAssertEqual(try check.unmount(), 0)
    }

    /// SIGTERM to the daemon unmounts every PFS it serves, after a flush.
    func testSIGTERMUnmountsEveryMountOfTheDaemon() throws {
        let data = try mount("DATA")
        let home = try mount("HOME")
        writeFile(data.mountpoint.path + "/a", [1, 2, 3])
        writeFile(home.mountpoint.path + "/b", [4, 5, 6])
        XCTAssertEqual(Glibc.kill(data.daemonPID, SIGTERM), 0)
        let deadline = Date().addingTimeInterval(15)
        while (!data.isStopped || !home.isStopped) && Date() < deadline { usleep(20_000) }
        XCTAssertTrue(data.isStopped && home.isStopped, "both processes end")
        XCTAssertFalse(MountedImage.isMountpoint(data.mountpoint.path))
        XCTAssertFalse(MountedImage.isMountpoint(home.mountpoint.path))
        let check = try mount("HOME", "ro")
        XCTAssertEqual(FileManager.default.contents(atPath: check.mountpoint.path + "/b").map { [UInt8]($0) }, [4, 5, 6])
        XCTAssertEqual(try check.unmount(), 0)
    }

    func expectFailure(_ result: Int32, _ code: Int32, _ what: String, line: UInt = #line) {
        XCTAssertEqual(result, -1, what, line: line)
        XCTAssertEqual(errno, code, "\(what): \(String(cString: strerror(errno)))", line: line)
    }
}
