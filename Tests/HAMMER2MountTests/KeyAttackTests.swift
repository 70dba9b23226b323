// Issue 18: attacks on encrypted PFSes by someone who can rewrite the image (with every
// check code and CRC fixed, ImageSurgeon), and the tools' answers: a tampered root is not
// re-signed by key-change, fsck with a key checks what a mount checks, a PFS swapped for a
// clear one does not take a passphrase-holder's data, and weak key parameters are refused.

import Foundation
import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class KeyAttackTests: XCTestCase {
    var folder: URL!
    var image: String { folder.appendingPathComponent("attack.img").path }
    var keyFile: String { folder.appendingPathComponent("key").path }
    var wrongKeyFile: String { folder.appendingPathComponent("wrong-key").path }
    let passphrase = "a long enough passphrase"

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("h2-keyattack-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var random = SplitMix64(seed: 18)
        try Data(random.bytes(64)).write(to: URL(fileURLWithPath: keyFile))
        try Data(random.bytes(64)).write(to: URL(fileURLWithPath: wrongKeyFile))
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: folder) }

    /// An image with PFS SECRET (key file) holding a file, and VAULT (passphrase).
    func makeImage() throws {
        let made = try Binaries.run("newfs_hammer2", ["-s", "1g", "-L", "SECRET", "-k", keyFile, image])
        XCTAssertEqual(made.status, 0, made.stderr)
        let mount = try MountedImage("\(image)@SECRET", options: ["-o", "rw,keyfile=\(keyFile)"])
        XCTAssertTrue(FileManager.default.createFile(atPath: mount.mountpoint.path + "/letter", contents: Data("dear diary".utf8)))
        XCTAssertEqual(try mount.unmount(), 0)
        let vault = try Binaries.run("hammer2", ["-f", image, "pfs-create", "-e", "-w", "14", "VAULT"], input: passphrase + "\n")
        XCTAssertEqual(vault.status, 0, vault.stderr)
    }

    func testFsckWithAWrongKeyOrAnAlteredRootFails() throws {
        try makeImage()
        let good = try Binaries.run("fsck_hammer2", ["-k", keyFile, "-l", "SECRET", image])
        XCTAssertEqual(good.status, 0, good.stdout + good.stderr)

        // A wrong key is an error, not "no key given".
        let wrong = try Binaries.run("fsck_hammer2", ["-k", wrongKeyFile, "-l", "SECRET", image])
        XCTAssertEqual(wrong.status, 1, wrong.stdout + wrong.stderr)
        XCTAssertTrue(wrong.stderr.contains("SECRET: the key given does not open it (wrong passphrase or key file"), wrong.stderr)
        XCTAssertFalse(wrong.stdout.contains("no key given"), wrong.stdout)
        let wrongKind = try Binaries.run("fsck_hammer2", ["-K", "-l", "SECRET", image], input: passphrase + "\n")
        XCTAssertEqual(wrongKind.status, 1)
        XCTAssertTrue(wrongKind.stderr.contains("unlocked by a key file"), wrongKind.stderr)
        // Without a key fsck still checks the structure and passes.
        XCTAssertEqual(try Binaries.run("fsck_hammer2", [image]).status, 0)

        // The root inode's attributes changed, check codes fixed: only the MAC notices.
        try ImageSurgeon(image).rewritePFSRoot("SECRET") { $0.meta.mode = 0o777 }
        let altered = try Binaries.run("fsck_hammer2", ["-k", keyFile, "-l", "SECRET", image])
        XCTAssertEqual(altered.status, 1, altered.stdout + altered.stderr)
        XCTAssertTrue(altered.stderr.contains("SECRET: the root inode does not match its MAC"), altered.stderr)
        XCTAssertThrowsError(try MountedImage("\(image)@SECRET", options: ["-o", "ro,keyfile=\(keyFile)"])) {
            XCTAssertTrue("\($0)".contains("does not match its MAC"), "\($0)")
        }

        // A damaged key record is named as such, by fsck and by the mount, not taken for a
        // wrong passphrase (the record's checksum tells the two apart).
        try ImageSurgeon(image).rewritePFSRoot("VAULT") { $0.keyRecord?[0x50] ^= 0x01 }  // a bit of the wrapped key
        let damaged = try Binaries.run("fsck_hammer2", ["-l", "VAULT", image])
        XCTAssertEqual(damaged.status, 1)
        XCTAssertTrue(damaged.stderr.contains("VAULT: damaged key record (its checksum does not match"), damaged.stderr)
        XCTAssertThrowsError(try MountedImage("\(image)@VAULT", options: ["-o", "ro"], input: passphrase + "\n")) {
            XCTAssertTrue("\($0)".contains("damaged key record: its checksum does not match"), "\($0)")
            XCTAssertFalse("\($0)".contains("wrong passphrase"), "\($0)")
        }
        let status = try Binaries.run("hammer2", ["-f", image, "key-status", "VAULT"])
        XCTAssertEqual(status.status, 1)
        XCTAssertTrue(status.stderr.contains("damaged key record"), status.stderr)
    }

    func testKeyChangeRefusesToResignAnAlteredRoot() throws {
        try makeImage()
        try ImageSurgeon(image).rewritePFSRoot("SECRET") { $0.meta.mtime = 4242 }
        let before = try ImageSurgeon(image).pfsRoot("SECRET").inode
        let change = try Binaries.run("hammer2", ["-f", image, "key-change", "-w", "14", "-o", keyFile, "-k", wrongKeyFile, "SECRET"])
        XCTAssertEqual(change.status, 1, change.stdout + change.stderr)
        XCTAssertTrue(change.stderr.contains("does not match its MAC; the key is not changed"), change.stderr)
        XCTAssertEqual(try ImageSurgeon(image).pfsRoot("SECRET").inode, before, "nothing written")
        // The old key still fails to mount the altered root; the new one never took.
        XCTAssertThrowsError(try MountedImage("\(image)@SECRET", options: ["-o", "ro,keyfile=\(keyFile)"]))
        XCTAssertThrowsError(try MountedImage("\(image)@SECRET", options: ["-o", "ro,keyfile=\(wrongKeyFile)"]))
    }

    /// Someone replaces the encrypted VAULT's root with a clear, empty PFS root of the same
    /// label. A user who gives the passphrase expects encryption: the mount refuses.
    func testAPFSSwappedForAClearOneIsRefusedToAPassphraseHolder() throws {
        try makeImage()
        try ImageSurgeon(image).rewritePFSRoot("VAULT") { root in
            root.meta.decryptCheck = 0
            root.meta.rootMAC0 = 0
            root.meta.rootMAC1 = 0
            root.keyRecord = nil
            root.content = .blockset([])
        }
        XCTAssertEqual(try Binaries.run("hammer2", ["-f", image, "key-status", "VAULT"]).stdout, "VAULT\tnot encrypted\n")
        XCTAssertThrowsError(try MountedImage("\(image)@VAULT", options: ["-o", "rw"], input: passphrase + "\n")) {
            XCTAssertTrue("\($0)".contains("a passphrase waits on standard input, but PFS VAULT is not encrypted"), "\($0)")
        }
        XCTAssertThrowsError(try MountedImage("\(image)@VAULT", options: ["-o", "rw,encrypted"])) {
            XCTAssertTrue("\($0)".contains("-o encrypted given, but PFS VAULT is not encrypted"), "\($0)")
        }
        XCTAssertThrowsError(try MountedImage("\(image)@VAULT", options: ["-o", "rw,keyfile=\(keyFile)"])) {
            XCTAssertTrue("\($0)".contains("keyfile= given, but PFS VAULT is not encrypted"), "\($0)")
        }
        // Mounting it in clear stays possible when nothing asks for a key.
        let clear = try MountedImage("\(image)@VAULT", options: ["-o", "ro"], input: "")
        XCTAssertEqual(try clear.unmount(), 0)
        // -o encrypted on a real encrypted PFS mounts as before.
        let secret = try MountedImage("\(image)@SECRET", options: ["-o", "ro,encrypted,keyfile=\(keyFile)"])
        XCTAssertEqual(try String(contentsOfFile: secret.mountpoint.path + "/letter", encoding: .utf8), "dear diary")
        XCTAssertEqual(try secret.unmount(), 0)
    }

    func testWeakKeyParametersAndReadableImagesAreRefused() throws {
        let fresh = folder.appendingPathComponent("fresh.img").path
        let short = try Binaries.run("newfs_hammer2", ["-s", "1g", "-e", "-w", "14", fresh], input: "hunter2\n")
        XCTAssertEqual(short.status, 1)
        XCTAssertTrue(short.stderr.contains("the passphrase has 7 bytes; at least 12 are needed"), short.stderr)
        let forced = try Binaries.run("newfs_hammer2", ["-s", "1g", "-e", "-w", "14", "-F", fresh], input: "hunter2\n")
        XCTAssertEqual(forced.status, 0, forced.stderr)
        var st = stat()
        XCTAssertEqual(stat(fresh, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600, "a new image is its owner's only")
        let status = try Binaries.run("hammer2", ["-f", fresh, "key-status", "DATA"])
        XCTAssertTrue(status.stdout.contains("scrypt N=2^14 r=8 p=1"), status.stdout)
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", "-e", "-w", "30", fresh + "2"], input: passphrase + "\n").status, 2)
        // The default cost is what the record stores when no -w is given.
        XCTAssertEqual(KeyRecord.defaultLog2N, 18)
        let record = try KeyRecord.create(source: .passphrase(Array(passphrase.utf8)), log2N: 14).0
        XCTAssertEqual(try KeyRecord(decoding: record.encoded()).scryptLog2N, 14)
    }

    /// Item 10: an EIO on an encrypted PFS is logged with inode numbers, never the name
    /// (syslog is readable by more people than the PFS).
    func testNamesOfEncryptedPFSesStayOutOfTheLog() throws {
        try makeImage()
        let secretName = "merger-plans-acme-2027.txt"
        let mount = try MountedImage("\(image)@SECRET", options: ["-o", "rw,keyfile=\(keyFile)"])
        XCTAssertTrue(FileManager.default.createFile(atPath: mount.mountpoint.path + "/" + secretName, contents: Data("x".utf8)))
        XCTAssertEqual(try mount.unmount(), 0)
        // Damage that file's inode (an encrypted block) so that looking it up fails.
        let keys = try XCTUnwrap(try MutableFilesystem(paths: [image], writable: false).encryptionStatus("SECRET"))
            .unwrap(.keyFile(Array(try Data(contentsOf: URL(fileURLWithPath: keyFile)))))
        let filesystem = try Filesystem(paths: [image])
        filesystem.reader.keyring.add(keys)
        let pfs = try filesystem.openPFS("SECRET")
        let record = try pfs.record(try pfs.lookup(in: pfs.root, name: Array(secretName.utf8)).inum)
        let surgeon = ImageSurgeon(image)
        var byte = try surgeon.read(record.bref.mediaOffset + 100, 1)
        byte[0] ^= 0x10
        try surgeon.write(byte, at: record.bref.mediaOffset + 100)

        let again = try MountedImage("\(image)@SECRET", options: ["-o", "ro,keyfile=\(keyFile)"])
        var st = stat()
        XCTAssertEqual(stat(again.mountpoint.path + "/" + secretName, &st), -1)
        XCTAssertEqual(errno, EIO)
        XCTAssertEqual(try again.unmount(), 0)
        XCTAssertTrue(again.log.contains("lookup of a name (\(secretName.utf8.count) bytes"), again.log)
        XCTAssertFalse(again.log.contains("merger-plans"), again.log)
    }

    /// Item 11: stat shows the AEAD that checks sealed files; a refused setcheck or
    /// setcopies prints no value as if it had been set.
    func testStatShowsTheAEADAndRefusedSettingsPrintNothing() throws {
        try makeImage()
        let mount = try MountedImage("\(image)@SECRET", options: ["-o", "rw,keyfile=\(keyFile)"])
        let file = mount.mountpoint.path + "/letter"
        let stat = try Binaries.run("hammer2", ["stat", file])
        XCTAssertEqual(stat.status, 0, stat.stderr)
        XCTAssertTrue(stat.stdout.contains("xaes256gcm"), stat.stdout)
        XCTAssertFalse(stat.stdout.contains("xxhash64"), stat.stdout)
        let setcheck = try Binaries.run("hammer2", ["setcheck", "sha192", file])
        XCTAssertEqual(setcheck.status, 3)
        XCTAssertEqual(setcheck.stdout, "", "nothing printed as set")
        let setcopies = try Binaries.run("hammer2", ["setcopies", "4", file])
        XCTAssertEqual(setcopies.status, 3)
        XCTAssertEqual(setcopies.stdout, "")
        let ok = try Binaries.run("hammer2", ["setcopies", "2", file])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertEqual(ok.stdout, "\(file)\tncopies=2\n")
        XCTAssertEqual(try mount.unmount(), 0)
    }

    /// Item 2 through the tools: rekey offline, a mount writes under the new key and reads
    /// the old blocks, reencrypt online retires the old key; key-status lists the keys.
    func testRekeyOfflineAndReencryptOnline() throws {
        try makeImage()
        let status = try Binaries.run("hammer2", ["-f", image, "key-status", "-k", keyFile, "SECRET"])
        XCTAssertTrue(status.stdout.contains("no older keys"), status.stdout)
        let oldKey = try XCTUnwrap(status.stdout.split(separator: "\t").first { $0.hasPrefix("key ") }).dropFirst(4)
        let rekey = try Binaries.run("hammer2", ["-f", image, "rekey", "-w", "14", "-k", keyFile, "SECRET"])
        XCTAssertEqual(rekey.status, 0, rekey.stderr)
        XCTAssertTrue(rekey.stdout.contains("key \(oldKey) is kept for older blocks"), rekey.stdout)
        let listed = try Binaries.run("hammer2", ["-f", image, "key-status", "-k", keyFile, "SECRET"])
        XCTAssertTrue(listed.stdout.contains("older keys \(oldKey) (run hammer2 reencrypt to retire them)"), listed.stdout)
        XCTAssertFalse(listed.stdout.contains("\tkey \(oldKey)\t"), "a new current key")

        let mount = try MountedImage("\(image)@SECRET", options: ["-o", "rw,keyfile=\(keyFile)"])
        XCTAssertEqual(try String(contentsOfFile: mount.mountpoint.path + "/letter", encoding: .utf8), "dear diary")
        write(mount.mountpoint.path + "/new", "under the new key")
        let online = try Binaries.run("hammer2", ["reencrypt", mount.mountpoint.path])
        XCTAssertEqual(online.status, 0, online.stderr)
        XCTAssertTrue(online.stdout.contains("no older keys or older sealing left"), online.stdout)
        XCTAssertEqual(try String(contentsOfFile: mount.mountpoint.path + "/letter", encoding: .utf8), "dear diary")
        XCTAssertEqual(try mount.unmount(), 0)
        let after = try Binaries.run("hammer2", ["-f", image, "key-status", "-k", keyFile, "SECRET"])
        XCTAssertTrue(after.stdout.contains("no older keys"), after.stdout)
        let fsck = try Binaries.run("fsck_hammer2", ["-k", keyFile, "-l", "SECRET", image])
        XCTAssertEqual(fsck.status, 0, fsck.stdout + fsck.stderr)
        XCTAssertFalse(fsck.stdout.contains("orphans"), fsck.stdout)
        // Bad uses: not encrypted, not offline, nothing to do twice.
        XCTAssertEqual(try Binaries.run("hammer2", ["-f", image, "rekey", "-k", keyFile, "DATA"]).status, 1)
        XCTAssertEqual(try Binaries.run("hammer2", ["rekey", "SECRET"]).status, 1)
        XCTAssertEqual(try Binaries.run("hammer2", ["-f", image, "reencrypt", "-k", keyFile, "SECRET"]).status, 0, "nothing left to do")
    }

    /// Re-encryption needs new space for what it rewrites; on a full volume it stops with
    /// ENOSPC and says what to do, and after bulkfree it goes on and finishes, data intact.
    func testReencryptionOnAFullVolumeStopsAndGoesOnAfterBulkfree() throws {
        let small = folder.appendingPathComponent("small.img").path
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "256m", "-L", "S", "-k", keyFile, small]).status, 0)
        var random = SplitMix64(seed: 256)
        let data = Data(random.bytes(150 << 20))
        let mount = try MountedImage("\(small)@S", options: ["-o", "rw,keyfile=\(keyFile)"])
        XCTAssertTrue(FileManager.default.createFile(atPath: mount.mountpoint.path + "/a", contents: data))
        XCTAssertEqual(try mount.unmount(), 0)
        XCTAssertEqual(try Binaries.run("hammer2", ["-f", small, "rekey", "-k", keyFile, "S"]).status, 0)
        let full = try Binaries.run("hammer2", ["-f", small, "reencrypt", "-k", keyFile, "S"])
        XCTAssertEqual(full.status, 1)
        XCTAssertTrue(full.stderr.contains("No space left on device; the blocks it replaced come back with hammer2 bulkfree"), full.stderr)
        XCTAssertEqual(try Binaries.run("fsck_hammer2", ["-k", keyFile, small]).status, 0, "a full volume stays consistent")
        XCTAssertEqual(try Binaries.run("hammer2", ["-f", small, "bulkfree"]).status, 0)
        let rest = try Binaries.run("hammer2", ["-f", small, "reencrypt", "-k", keyFile, "S"])
        XCTAssertEqual(rest.status, 0, rest.stderr)
        XCTAssertTrue(rest.stdout.contains("no older keys or older sealing left"), rest.stdout)
        let again = try MountedImage("\(small)@S", options: ["-o", "ro,keyfile=\(keyFile)"])
        XCTAssertEqual(FileManager.default.contents(atPath: again.mountpoint.path + "/a"), data)
        XCTAssertEqual(try again.unmount(), 0)
    }

    func write(_ path: String, _ text: String) {
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
    }
}
