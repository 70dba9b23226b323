// Encrypted PFSes through the tools and a real FUSE mount: newfs_hammer2 -k, mount with
// -o keyfile=, a wrong key refused before anything is read, fsck with and without the key,
// pfs-create -e with a passphrase on standard input, key-status, key-change, an online
// snapshot of an encrypted PFS, and nothing of the files in clear on the media.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import HAMMER2Trace
import XCTest

final class EncryptionMountTests: XCTestCase {
    var folder: URL!
    var image: String { folder.appendingPathComponent("enc.img").path }
    var keyFile: String { folder.appendingPathComponent("key").path }
    var wrongKeyFile: String { folder.appendingPathComponent("wrong-key").path }

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("h2-encmount-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var random = SplitMix64(seed: 77)
        try Data(random.bytes(64)).write(to: URL(fileURLWithPath: keyFile))
        try Data(random.bytes(64)).write(to: URL(fileURLWithPath: wrongKeyFile))
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: folder) }

    func testEncryptedPFSThroughTheToolsAndTheMount() throws {
        let made = try Binaries.run("newfs_hammer2", ["-s", "2g", "-L", "SECRET", "-k", keyFile, image])
        XCTAssertEqual(made.status, 0, made.stderr)
        XCTAssertTrue(made.stdout.contains("PFS \"SECRET\" (encrypted)"), made.stdout)

        // Write through the mount, snapshot online, unmount.
        let mount = try MountedImage("\(image)@SECRET", options: ["-o", "rw,keyfile=\(keyFile)"])
        let root = mount.mountpoint.path
        // The trace names the key by id only: the key file's bytes are nowhere in it.
        let keys = try Binaries.run("hammer2", ["ktrdump", "-m", "keys", root])
        XCTAssertTrue(keys.stdout.contains("keys.unlocked            key_id=0x"), keys.stdout)
        let keyBytes = try Data(contentsOf: URL(fileURLWithPath: keyFile))
        let segment = try Data(contentsOf: URL(fileURLWithPath: TraceFiles.defaultPath(pid: mount.daemonPID)))
        XCTAssertGreaterThanOrEqual(keyBytes.count, 16)
        XCTAssertNil(segment.range(of: keyBytes.prefix(16)), "key material in the trace segment")
        let marker = String(repeating: "CONFIDENTIAL-LINE\n", count: 5000)
        XCTAssertTrue(FileManager.default.createFile(atPath: root + "/report-2026.txt", contents: Data(marker.utf8)))
        XCTAssertEqual(mkdir(root + "/private-dir", 0o700), 0)
        var random = SplitMix64(seed: 5)
        XCTAssertTrue(FileManager.default.createFile(atPath: root + "/private-dir/blob", contents: Data(random.bytes(700_000))))
        XCTAssertEqual(symlink("report-2026.txt", root + "/shortcut"), 0)
        let snapshot = try Binaries.run("hammer2", ["snapshot", root, "SECRET.snap"])
        XCTAssertEqual(snapshot.status, 0, snapshot.stderr)
        XCTAssertTrue(FileManager.default.createFile(atPath: root + "/after-snapshot", contents: Data("later".utf8)))
        // bulkfree online (the daemon holds the key) after freeing space.
        XCTAssertTrue(FileManager.default.createFile(atPath: root + "/scratch", contents: Data(random.bytes(3_000_000))))
        let fd = open(root, O_RDONLY); XCTAssertEqual(fsync(fd), 0); close(fd)
        XCTAssertEqual(unlink(root + "/scratch"), 0)
        let online = try Binaries.run("hammer2", ["bulkfree", root])
        XCTAssertEqual(online.status, 0, online.stderr)
        let tree = try TreeSnapshot.take(root)
        XCTAssertEqual(try mount.unmount(), 0)
        // bulkfree offline without the key: the tree is walkable in clear, nothing is lost.
        let offline = try Binaries.run("hammer2", ["-f", image, "bulkfree"])
        XCTAssertEqual(offline.status, 0, offline.stderr)

        // Nothing in clear on the media.
        let raw = try allocatedRegions(of: image)
        for needle in ["CONFIDENTIAL-LINE", "report-2026", "private-dir", "after-snapshot"] {
            XCTAssertNil(raw.range(of: Data(needle.utf8)), "\(needle) is on the media in clear")
        }

        // hammer2 show walks the encrypted tree (in clear) and says what is sealed.
        let show = try Binaries.run("hammer2", ["show", image])
        XCTAssertEqual(show.status, 0, show.stderr)
        XCTAssertTrue(show.stdout.contains("meth=xaes256gcm") && show.stdout.contains("filename (encrypted)")
                      && show.stdout.contains("(encrypted inode: metadata and name sealed, blockset in clear)"))
        XCTAssertFalse(show.stdout.contains("report-2026"))
        let recover = try Binaries.run("hammer2", ["recover", "\(image)@SECRET", "report-2026.txt", folder.path])
        XCTAssertEqual(recover.status, 1)
        XCTAssertTrue(recover.stderr.contains("is encrypted"), recover.stderr)

        // fsck: structure without the key, tags and namespace with it; a wrong key opens nothing.
        let keyless = try Binaries.run("fsck_hammer2", [image])
        XCTAssertEqual(keyless.status, 0, keyless.stdout + keyless.stderr)
        XCTAssertTrue(keyless.stdout.contains("SECRET: encrypted, no key given"), keyless.stdout)
        let keyed = try Binaries.run("fsck_hammer2", ["-k", keyFile, image])
        XCTAssertEqual(keyed.status, 0, keyed.stdout + keyed.stderr)
        XCTAssertTrue(keyed.stdout.contains("0 without key"), keyed.stdout)
        XCTAssertTrue(keyed.stdout.contains("SECRET: 2 directories"), keyed.stdout)

        // A wrong key file or no passphrase: the mount fails with a clear error.
        XCTAssertThrowsError(try MountedImage("\(image)@SECRET", options: ["-o", "ro,keyfile=\(wrongKeyFile)"])) {
            XCTAssertTrue("\($0)".contains("wrong passphrase or key file"), "\($0)")
        }
        let noKey = try Binaries.run("mount_hammer2", ["-f", "\(image)@SECRET", folder.path])
        XCTAssertEqual(noKey.status, 1)
        XCTAssertTrue(noKey.stderr.contains("passphrase"), noKey.stderr)

        // Read back, and the snapshot with the same key.
        let again = try MountedImage("\(image)@SECRET", options: ["-o", "ro,keyfile=\(keyFile)"])
        XCTAssertEqual(try TreeSnapshot.take(again.mountpoint.path), tree)
        XCTAssertEqual(try again.unmount(), 0)
        let snap = try MountedImage("\(image)@SECRET.snap", options: ["-o", "ro,keyfile=\(keyFile)"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: snap.mountpoint.path + "/private-dir/blob"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: snap.mountpoint.path + "/after-snapshot"))
        XCTAssertEqual(try snap.unmount(), 0)

        // A second encrypted PFS with a passphrase on stdin; key-status; key-change.
        let created = try Binaries.run("hammer2", ["-f", image, "pfs-create", "-e", "-w", "14", "VAULT"], input: "hunter2 hunter2\n")
        XCTAssertEqual(created.status, 0, created.stderr)
        let status = try Binaries.run("hammer2", ["-f", image, "key-status"])
        XCTAssertEqual(status.status, 0, status.stderr)
        XCTAssertTrue(status.stdout.contains("LOCAL\tnot encrypted"), status.stdout)
        XCTAssertTrue(status.stdout.contains("SECRET\tencrypted\tXAES-256-GCM"), status.stdout)
        XCTAssertTrue(status.stdout.contains("key file"), status.stdout)
        XCTAssertTrue(status.stdout.contains("VAULT\tencrypted") && status.stdout.contains("passphrase (scrypt N=2^14"), status.stdout)
        // A new passphrase under 12 bytes is refused unless forced (-F).
        let short = try Binaries.run("hammer2", ["-f", image, "key-change", "-w", "14", "-o", keyFile, "SECRET"], input: "new words\n")
        XCTAssertEqual(short.status, 1)
        XCTAssertTrue(short.stderr.contains("at least 12 are needed"), short.stderr)
        let changed = try Binaries.run("hammer2", ["-f", image, "key-change", "-w", "14", "-F", "-o", keyFile, "SECRET"], input: "new words\n")
        XCTAssertEqual(changed.status, 0, changed.stderr)
        XCTAssertThrowsError(try MountedImage("\(image)@SECRET", options: ["-o", "ro,keyfile=\(keyFile)"]), "the old key file no longer opens it")
        let withPassphrase = try Binaries.run("fsck_hammer2", ["-K", "-l", "SECRET", image], input: "new words\n")
        XCTAssertEqual(withPassphrase.status, 0, withPassphrase.stdout + withPassphrase.stderr)
        XCTAssertTrue(withPassphrase.stdout.contains("SECRET: 2 directories"), withPassphrase.stdout)
        let wrongOld = try Binaries.run("hammer2", ["-f", image, "key-change", "-o", wrongKeyFile, "VAULT"], input: "x\n")
        XCTAssertEqual(wrongOld.status, 1)
        XCTAssertEqual(try Binaries.run("hammer2", ["-f", image, "pfs-create", "-e", "EMPTYPASS"], input: "\n").status, 1)
        // Bad arguments: each a clear message and its exit code.
        let noPFS = try Binaries.run("newfs_hammer2", ["-s", "1g", "-L", "none", "-k", keyFile, folder.path + "/x.img"])
        XCTAssertEqual(noPFS.status, 2)
        XCTAssertTrue(noPFS.stderr.contains("-e needs a PFS"), noPFS.stderr)
        let shortKey = folder.path + "/short.key"
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: shortKey))
        let shortFile = try Binaries.run("hammer2", ["-f", image, "pfs-create", "-k", shortKey, "SHORT"])
        XCTAssertEqual(shortFile.status, 1)
        XCTAssertTrue(shortFile.stderr.contains("at least 32"), shortFile.stderr)
        for cost in ["13", "22", "x"] {
            let badCost = try Binaries.run("hammer2", ["-f", image, "pfs-create", "-e", "-w", cost, "COSTLY"], input: "long enough words\n")
            XCTAssertEqual(badCost.status, 2, "-w \(cost): \(badCost.stderr)")
            XCTAssertTrue(badCost.stderr.contains("-w wants log2 of scrypt's N, 14 to 21"), badCost.stderr)
        }
        let clearPFS = try Binaries.run("hammer2", ["-f", image, "key-change", "-o", keyFile, "LOCAL"])
        XCTAssertEqual(clearPFS.status, 1)
        XCTAssertTrue(clearPFS.stderr.contains("not encrypted"), clearPFS.stderr)
    }

    /// A tampered encrypted block through the mount: EIO for exactly that file, and a log
    /// line naming the block; the rest of the PFS reads.
    func testTamperedBlockIsEIOAndLoggedThroughTheMount() throws {
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", "-L", "SECRET", "-k", keyFile, image]).status, 0)
        let mount = try MountedImage("\(image)@SECRET", options: ["-o", "rw,keyfile=\(keyFile)"])
        var random = SplitMix64(seed: 12)
        let victim = random.bytes(300_000)
        XCTAssertTrue(FileManager.default.createFile(atPath: mount.mountpoint.path + "/victim", contents: Data(victim)))
        XCTAssertTrue(FileManager.default.createFile(atPath: mount.mountpoint.path + "/bystander", contents: Data("fine".utf8)))
        XCTAssertEqual(try mount.unmount(), 0)

        // Find the victim's second data block with a keyed reader, then flip one byte of it.
        let keys = try XCTUnwrap(try MutableFilesystem(paths: [image], writable: false).encryptionStatus("SECRET"))
            .unwrap(.keyFile(Array(try Data(contentsOf: URL(fileURLWithPath: keyFile)))))
        let filesystem = try Filesystem(paths: [image])
        filesystem.reader.keyring.add(keys)
        let pfs = try filesystem.openPFS("SECRET")
        let record = try pfs.record(try pfs.lookup(in: pfs.root, name: Array("victim".utf8)).inum)
        var blocks: [Blockref] = []
        try pfs.tree.forEachLeaf(in: record.data.blockset, from: 0, through: .max) { blocks.append($0); return true }
        let target = try XCTUnwrap(blocks.first { $0.key == 65_536 })
        let fd = open(image, O_RDWR)
        var byte: UInt8 = 0
        XCTAssertEqual(pread(fd, &byte, 1, off_t(target.mediaOffset) + 500), 1)
        byte ^= 0x40
        XCTAssertEqual(pwrite(fd, &byte, 1, off_t(target.mediaOffset) + 500), 1)
        close(fd)

        let again = try MountedImage("\(image)@SECRET", options: ["-o", "ro,keyfile=\(keyFile)"])
        let root = again.mountpoint.path
        XCTAssertEqual(try String(contentsOfFile: root + "/bystander", encoding: .utf8), "fine")
        let handle = try XCTUnwrap(FileHandle(forReadingAtPath: root + "/victim"))
        XCTAssertEqual(try handle.read(upToCount: 65_536).map(Array.init), Array(victim[0..<65_536]), "the block before reads")
        XCTAssertThrowsError(try handle.read(upToCount: 65_536)) { error in
            let underlying = (error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError ?? (error as NSError)
            XCTAssertEqual(underlying.code, Int(EIO), "\(error)")
        }
        try? handle.close()
        XCTAssertEqual(try again.unmount(), 0)
        XCTAssertTrue(again.log.contains("fails authentication"), again.log)
        XCTAssertTrue(again.log.contains("data_off=0x"), again.log)
        let fsck = try Binaries.run("fsck_hammer2", ["-k", keyFile, image])
        XCTAssertEqual(fsck.status, 1, "fsck with the key reports the block")
        XCTAssertTrue(fsck.stderr.contains("XAES256GCM"), fsck.stderr)
    }
}
