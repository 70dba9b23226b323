// Issue 18, item 2: rekey gives new writes a new key while older blocks stay readable under
// the old one (from the key history); reencrypt, interrupted and resumed, moves everything
// to the new key, after which the new key alone reads the whole PFS and the old one is
// retired; a snapshot made before keeps its key.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class RekeyTests: XCTestCase {
    var image = ""
    let caller = Caller(uid: 1000, gid: 100)
    let passphrase = KeySource.passphrase(Array("rekey me please".utf8))
    let root = PFSHandle.rootInodeNumber

    override func setUpWithError() throws {
        image = FileManager.default.temporaryDirectory.appendingPathComponent("h2-rekey-\(UUID().uuidString.prefix(8)).img").path
        FileManager.default.createFile(atPath: image, contents: nil)
        XCTAssertEqual(truncate(image, 1 << 30), 0)
        _ = try Formatter.format(device: FileBlockDevice(path: image, writable: true), options: FormatOptions(labels: ["DATA"]))
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: image) }

    func open(writable: Bool = true) throws -> MutableFilesystem {
        let fs = try MutableFilesystem(paths: [image], writable: writable)
        fs.keyDerivationCost = 10
        return fs
    }

    func file(_ pfs: PFSHandle, _ parent: UInt64, _ name: String, _ bytes: [UInt8]) throws {
        let inum = try pfs.create(in: parent, name: Array(name.utf8), type: .regularFile, mode: 0o640, caller: caller).meta.inum
        _ = try bytes.withUnsafeBytes { try pfs.write(inum, offset: 0, $0) }
    }

    /// Every file and directory of the PFS, read through `pfs`: path -> content (or "dir").
    func tree(_ pfs: PFS) throws -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        func walk(_ dir: InodeData, _ prefix: String) throws {
            var entries: [DirectoryEntry] = []
            try pfs.readDirectory(dir, from: 0) { entries.append($0); return true }
            for entry in entries {
                let path = prefix + String(decoding: entry.name, as: UTF8.self)
                let inode = try pfs.inode(entry.inum)
                if inode.meta.type == .directory {
                    out[path] = Array("dir".utf8)
                    try walk(inode, path + "/")
                } else {
                    out[path] = try pfs.read(inode, offset: 0, count: Int(inode.meta.size))
                }
            }
        }
        try walk(pfs.root, "")
        return out
    }

    /// The PFS read with exactly `keys` in the keyring (no history).
    func disk(_ label: String, with keys: [PFSKeys]) throws -> PFS {
        let filesystem = try Filesystem(volumes: VolumeSet(paths: [image]))
        for key in keys { filesystem.reader.keyring.add(key) }
        return try filesystem.openPFS(label)
    }

    func currentKeys(_ label: String) throws -> PFSKeys {
        try XCTUnwrap(try open(writable: false).encryptionStatus(label)).unwrap(passphrase)
    }

    func testRekeyKeepsOldBlocksReadableAndReencryptRetiresTheOldKey() throws {
        var random = SplitMix64(seed: 2)
        do {
            let fs = try open()
            try fs.createPFS(label: "SECRET", encryption: passphrase)
            let pfs = try fs.openPFS("SECRET")
            let docs = try pfs.create(in: root, name: Array("docs".utf8), type: .directory, mode: 0o755, caller: caller).meta.inum
            try file(pfs, docs, "small", Array("embedded".utf8))
            try file(pfs, docs, "big", random.bytes(700_000))
            try file(pfs, docs, String(repeating: "long-name-", count: 12), Array("long".utf8))
            _ = try pfs.create(in: docs, name: Array("ln".utf8), type: .softlink, mode: 0o777, caller: caller, target: Array("big".utf8))
            for i in 0..<40 { try file(pfs, root, "f\(i)", random.bytes(Int(random.next() % 100_000))) }
            try fs.flush()
            try fs.snapshot(of: "SECRET", label: "SECRET.before")
        }
        let first = try currentKeys("SECRET")
        let before = try tree(try disk("SECRET", with: [first]))
        XCTAssertEqual(before.count, 45)

        // Rekey: a new key for new writes, the old one in the history.
        let result = try open().rekeyPFS("SECRET", source: passphrase)
        XCTAssertEqual(result.oldKeyID, first.keyID)
        XCTAssertNotEqual(result.newKeyID, first.keyID)
        let second = try currentKeys("SECRET")
        XCTAssertEqual(second.keyID, result.newKeyID)
        XCTAssertEqual(second.domain, first.domain, "the same encryption root")
        do {
            let fs = try open()
            try fs.unlockPFS("SECRET", source: passphrase)
            XCTAssertEqual(try fs.keyGenerations("SECRET").older, [first.keyID])
            let pfs = try fs.openPFS("SECRET")
            try file(pfs, root, "after-rekey", random.bytes(200_000))
            try fs.flush()
        }
        // Old blocks need the old key: the new key alone cannot read them (no history).
        XCTAssertThrowsError(try tree(try disk("SECRET", with: [second]))) { error in
            XCTAssertEqual((error as? EngineError)?.errno, EIO, "\(error)")
        }
        let mixed = try tree(try disk("SECRET", with: [second, first]))
        XCTAssertEqual(mixed.filter { $0.key != "after-rekey" }, before)
        // The new file is under the new key.
        let newDisk = try disk("SECRET", with: [second, first])
        let newFile = try newDisk.record(try newDisk.lookup(in: newDisk.root, name: Array("after-rekey".utf8)).inum)
        XCTAssertEqual(SealedCheck(newFile.bref.check).keyID, second.keyID)

        // Re-encryption, interrupted after two small steps, then resumed from its cursor.
        do {
            let fs = try open()
            try fs.unlockPFS("SECRET", source: passphrase)
            let partial = try fs.reencrypt("SECRET", stepBytes: 128 << 10, maxSteps: 2)
            XCTAssertFalse(partial.finished)
            XCTAssertGreaterThan(partial.cursor, 0)
        }
        do {
            let fs = try open()
            try fs.unlockPFS("SECRET", source: passphrase)
            let generations = try fs.keyGenerations("SECRET")
            XCTAssertEqual(generations.older, [first.keyID], "still needed")
            XCTAssertGreaterThan(generations.cursor, 0, "the cursor survived the reopen")
            let rest = try fs.reencrypt("SECRET", stepBytes: 1 << 20)
            XCTAssertTrue(rest.finished)
            XCTAssertEqual(rest.olderKeys, 0)
            XCTAssertEqual(try fs.keyGenerations("SECRET").older, [])
        }
        // The new key alone now reads everything: names, inodes, blocks.
        let after = try tree(try disk("SECRET", with: [second]))
        XCTAssertEqual(after.filter { $0.key != "after-rekey" }, before)
        XCTAssertEqual(after["after-rekey"], mixed["after-rekey"])
        let checked = try disk("SECRET", with: [second])
        let verifier = Verifier(volumes: try VolumeSet(paths: [image]))
        verifier.keyring = Keyring()
        verifier.keyring?.add(second)
        let report = verifier.verifyNamespace(checked)
        XCTAssertEqual(report.problems.map(\.description), [])
        XCTAssertEqual(report.orphans, [], "the key history inode is no orphan")
        // The snapshot made before keeps the first key, and still opens with the passphrase.
        let snapshotKeys = try XCTUnwrap(try open(writable: false).encryptionStatus("SECRET.before")).unwrap(passphrase)
        XCTAssertEqual(snapshotKeys.keyID, first.keyID)
        XCTAssertEqual(try tree(try disk("SECRET.before", with: [snapshotKeys])), before)
        // A wrong passphrase rekeys nothing.
        XCTAssertThrowsError(try open().rekeyPFS("SECRET", source: .passphrase(Array("not the one".utf8))))
    }
}
