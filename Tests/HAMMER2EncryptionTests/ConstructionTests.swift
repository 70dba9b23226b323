// Known answers and properties of the encryption constructions (docs/encryption.md).

import Crypto
import Foundation
import HAMMER2Format
import XCTest
@testable import HAMMER2Encryption

func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

final class ConstructionTests: XCTestCase {
    let nonce = Array("ABCDEFGHIJKLMNOPQRSTUVWX".utf8)
    let plaintext = Array("XAES-256-GCM".utf8)

    /// The C2SP XAES-256-GCM test vectors, including the derived key of the first.
    func testXAESKnownAnswers() {
        let first = XAES256GCM(key: SymmetricKey(data: [UInt8](repeating: 1, count: 32)))
        XCTAssertEqual(first.derivedKey(nonce).withUnsafeBytes { hex(Array($0)) },
                       "c8612c9ed53fe43e8e005b828a1631a0bbcb6ab2f46514ec4f439fcfd0fa969b")
        let (c1, t1) = first.seal(plaintext, nonce: nonce, authenticating: [UInt8]())
        XCTAssertEqual(hex(c1 + t1), "ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271")
        XCTAssertEqual(first.open(c1, tag: t1, nonce: nonce, authenticating: [UInt8]()), plaintext)

        let second = XAES256GCM(key: SymmetricKey(data: [UInt8](repeating: 3, count: 32)))
        let ad = Array("c2sp.org/XAES-256-GCM".utf8)
        let (c2, t2) = second.seal(plaintext, nonce: nonce, authenticating: ad)
        XCTAssertEqual(hex(c2 + t2), "986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d")
        XCTAssertEqual(second.open(c2, tag: t2, nonce: nonce, authenticating: ad), plaintext)
    }

    func testXAESRejectsAnyChange() {
        let cipher = XAES256GCM(key: SymmetricKey(size: .bits256))
        let data = (0..<4096).map { UInt8(truncatingIfNeeded: $0) }
        let ad = Array("context".utf8)
        let (ciphertext, tag) = cipher.seal(data, nonce: nonce, authenticating: ad)
        XCTAssertNotEqual(ciphertext, data)
        var flipped = ciphertext; flipped[100] ^= 1
        XCTAssertNil(cipher.open(flipped, tag: tag, nonce: nonce, authenticating: ad))
        var badTag = tag; badTag[0] ^= 0x80
        XCTAssertNil(cipher.open(ciphertext, tag: badTag, nonce: nonce, authenticating: ad))
        var badNonce = nonce; badNonce[3] ^= 1  // in the key-deriving half
        XCTAssertNil(cipher.open(ciphertext, tag: tag, nonce: badNonce, authenticating: ad))
        badNonce = nonce; badNonce[20] ^= 1  // in the GCM half
        XCTAssertNil(cipher.open(ciphertext, tag: tag, nonce: badNonce, authenticating: ad))
        XCTAssertNil(cipher.open(ciphertext, tag: tag, nonce: nonce, authenticating: Array("contexT".utf8)))
        XCTAssertNil(XAES256GCM(key: SymmetricKey(size: .bits256)).open(ciphertext, tag: tag, nonce: nonce, authenticating: ad))
        XCTAssertEqual(cipher.open(ciphertext, tag: tag, nonce: nonce, authenticating: ad), data)
    }

    /// The large-read path opens a data block read into swift-crypto's combined layout and
    /// decrypts into the reply: the same plaintext as openData, nothing written on a bad tag.
    func testOpeningDataIntoABuffer() throws {
        let keys = PFSKeys(master: [UInt8](repeating: 9, count: 32), domain: [UInt8](repeating: 8, count: 16))
        let data = (0..<65_536).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 8) }
        let (sealed, check) = keys.sealData(data, type: .data, compression: .none, key: 0x20000, keybits: 16)
        var bref = Blockref(type: .data, methods: Blockref.methods(check: .xaes256gcm, compression: .none), key: 0x20000, keybits: 16, tid: 1)
        bref.check = check
        func open(_ block: [UInt8], _ bref: Blockref) throws -> [UInt8] {
            var combined = Data(count: XAES256GCM.combinedPrefixBytes + block.count + XAES256GCM.combinedSuffixBytes)
            combined.replaceSubrange(XAES256GCM.combinedPrefixBytes..<(XAES256GCM.combinedPrefixBytes + block.count), with: block)
            var out = [UInt8](repeating: 0xEE, count: block.count)
            try out.withUnsafeMutableBytes { try keys.openData(combined: &combined, bref: bref, into: $0) }
            return out
        }
        XCTAssertEqual(try open(sealed, bref), data)
        XCTAssertEqual(try open(sealed, bref), try keys.openData(sealed, bref: bref))
        var flipped = sealed; flipped[40_000] ^= 4
        XCTAssertThrowsError(try open(flipped, bref)) { XCTAssertEqual($0 as? SealError, .authenticationFailed) }
        var moved = bref; moved.key = 0x30000
        XCTAssertThrowsError(try open(sealed, moved), "bound to its offset in the file")
    }

    func testRandomNoncesDiffer() {
        let nonces = Set((0..<1000).map { _ in XAES256GCM.randomNonce() })
        XCTAssertEqual(nonces.count, 1000)
        XCTAssertTrue(nonces.allSatisfy { $0.count == 24 })
    }

    func testKeyRecordPassphraseAndKeyFile() throws {
        let (record, keys) = try KeyRecord.create(source: .passphrase(Array("correct horse".utf8)), log2N: 10)
        let decoded = try KeyRecord(decoding: record.encoded())
        XCTAssertEqual(decoded, record)
        XCTAssertEqual(record.encoded().count, KeyRecord.bytes)
        let unwrapped = try decoded.unwrap(.passphrase(Array("correct horse".utf8)))
        XCTAssertEqual(unwrapped.masterKey, keys.masterKey)
        XCTAssertEqual(unwrapped.keyID, keys.keyID)
        XCTAssertThrowsError(try decoded.unwrap(.passphrase(Array("correct horsf".utf8)))) {
            XCTAssertEqual($0 as? KeyError, .wrongKey)
        }
        XCTAssertThrowsError(try decoded.unwrap(.keyFile([UInt8](repeating: 7, count: 32))))
        XCTAssertThrowsError(try decoded.unwrap(.passphrase([]))) { XCTAssertEqual($0 as? KeyError, .emptyPassphrase) }

        // Any change to the record's parameters is caught (they are authenticated).
        var tampered = record.encoded(); tampered[0x20] ^= 1  // salt
        XCTAssertThrowsError(try KeyRecord(decoding: tampered).unwrap(.passphrase(Array("correct horse".utf8))))
        tampered = record.encoded(); tampered[0x12] ^= 1  // domain
        XCTAssertThrowsError(try KeyRecord(decoding: tampered).unwrap(.passphrase(Array("correct horse".utf8))))

        // key-change: the same master key under a key file; the old passphrase no longer opens it.
        let material = (0..<64).map { UInt8($0) }
        let rewrapped = try KeyRecord.wrap(unwrapped, source: .keyFile(material))
        XCTAssertEqual(rewrapped.keyID, record.keyID)
        XCTAssertEqual(rewrapped.domain, record.domain)
        XCTAssertEqual(try rewrapped.unwrap(.keyFile(material)).masterKey, keys.masterKey)
        XCTAssertThrowsError(try rewrapped.unwrap(.passphrase(Array("correct horse".utf8))))
        XCTAssertThrowsError(try KeyRecord.wrap(unwrapped, source: .keyFile([1, 2, 3]))) {
            XCTAssertEqual($0 as? KeyError, .keyFileTooShort(3))
        }
    }

    func testInlineNamesAndKeyedHash() {
        let keys = PFSKeys(master: [UInt8](repeating: 9, count: 32), domain: [UInt8](repeating: 1, count: 16))
        let other = PFSKeys(master: [UInt8](repeating: 8, count: 32), domain: [UInt8](repeating: 1, count: 16))
        let name = Array("secret-report.pdf".utf8)
        let area = keys.sealInlineName(name, directory: 5)
        XCTAssertEqual(area.count, 64)
        XCTAssertNil(area.firstRange(of: name))
        XCTAssertEqual(keys.openInlineName(area, length: name.count, directory: 5), name)
        XCTAssertNil(keys.openInlineName(area, length: name.count, directory: 6), "bound to its directory")
        XCTAssertNil(other.openInlineName(area, length: name.count, directory: 5), "another key")
        var flipped = area; flipped[20] ^= 1
        XCTAssertNil(keys.openInlineName(flipped, length: name.count, directory: 5))
        XCTAssertNotEqual(keys.sealInlineName(name, directory: 6), area, "the same name in another directory looks different")

        let key = keys.directoryKey(for: name, in: 5)
        XCTAssertEqual(key, keys.directoryKey(for: name, in: 5))
        XCTAssertNotEqual(key, keys.directoryKey(for: name, in: 6), "scheme 2: equal names in two directories differ")
        XCTAssertNotEqual(key, other.directoryKey(for: name, in: 5))
        XCTAssertNotEqual(key, DirectoryHash.key(for: name))
        XCTAssertEqual(key & 0xFFFF, 0x8000)
        XCTAssertEqual(key & HAMMER2.dirhashVisible, HAMMER2.dirhashVisible)
        let schemeOne = PFSKeys(master: [UInt8](repeating: 9, count: 32), domain: [UInt8](repeating: 1, count: 16), scheme: 1)
        XCTAssertEqual(schemeOne.directoryKey(for: name, in: 5), schemeOne.directoryKey(for: name, in: 6), "scheme 1: the name alone")

        // Both are on the media: pinned to HMAC-SHA256 under the derived keys (directory
        // key: the first 8 bytes with DragonFly's low bits; IV: the first 16 bytes).
        let dirhashMAC = Array(HMAC<SHA256>.authenticationCode(for: [5, 0, 0, 0, 0, 0, 0, 0] + name, using: keys.dirhash))
        let word = dirhashMAC[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << UInt64(8 * $1.offset) }
        XCTAssertEqual(key, (word & ~UInt64(0xFFFF)) | HAMMER2.dirhashVisible | 0x8000)
        let oneMAC = Array(HMAC<SHA256>.authenticationCode(for: name, using: schemeOne.dirhash))
        let oneWord = oneMAC[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << UInt64(8 * $1.offset) }
        XCTAssertEqual(schemeOne.directoryKey(for: name, in: 5), (oneWord & ~UInt64(0xFFFF)) | HAMMER2.dirhashVisible | 0x8000)
        let ivMAC = Array(HMAC<SHA256>.authenticationCode(for: [5, 0, 0, 0, 0, 0, 0, 0] + name, using: keys.siv))
        XCTAssertEqual(Array(area[0..<16]), Array(ivMAC[0..<16]))
    }

    /// Scheme 2 dirents: a length class instead of the length, the type sealed with the
    /// name, every length and type round trips, and a changed byte does not open.
    func testSchemeTwoDirentNamesHideLengthAndType() {
        let keys = PFSKeys(master: [UInt8](repeating: 4, count: 32), domain: [UInt8](repeating: 2, count: 16))
        let other = PFSKeys(master: [UInt8](repeating: 5, count: 32), domain: [UInt8](repeating: 2, count: 16))
        var classes = Set<Int>()
        for length in 1...255 {
            let name = (0..<length).map { UInt8(0x41 + $0 % 26) }
            for type in [ObjectType.regularFile, .directory, .softlink] {
                let sealed = keys.sealDirentName(name, type: type, directory: 77)
                XCTAssertEqual(sealed.typeField, .unknown)
                XCTAssertEqual(sealed.lengthField, length <= 15 ? 16 : length <= 31 ? 32 : length <= 47 ? 48 : 255, "\(length)")
                classes.insert(sealed.lengthField)
                XCTAssertEqual(sealed.area == nil, length > 47)
                let opened = keys.openDirentName(lengthField: sealed.lengthField, typeField: sealed.typeField,
                                                 area: sealed.area ?? [UInt8](repeating: 0, count: 64), block: sealed.block,
                                                 directory: 77)
                XCTAssertEqual(opened?.name, name)
                XCTAssertEqual(opened?.type, type)
                if let area = sealed.area {
                    XCTAssertNil(area.firstRange(of: name))
                    XCTAssertNil(keys.openDirentName(lengthField: sealed.lengthField, typeField: .unknown, area: area, block: nil, directory: 78))
                    XCTAssertNil(other.openDirentName(lengthField: sealed.lengthField, typeField: .unknown, area: area, block: nil, directory: 77))
                    XCTAssertNil(keys.openDirentName(lengthField: 32 - sealed.lengthField % 32 + 16, typeField: .unknown, area: area,
                                                     block: nil, directory: 77), "another length class")
                }
            }
        }
        XCTAssertEqual(classes, [16, 32, 48, 255], "four length classes in all")
        // A name block whose padding is not zeros (a forged block) does not parse.
        var block = keys.sealDirentName(Array(repeating: 0x61, count: 60), type: .regularFile, directory: 1).block!
        block[200] = 1
        XCTAssertNil(keys.openDirentName(lengthField: 255, typeField: .unknown, area: [], block: block, directory: 1))
    }

    /// The derivations are part of the on-disk format: fixed inputs give fixed outputs, so a
    /// change to them (which would make existing encrypted PFSes unreadable) fails here.
    func testKeyDerivationKnownAnswers() {
        let keys = PFSKeys(master: (0..<32).map { UInt8($0) }, domain: (0..<16).map { UInt8(0xA0 + $0) }, scheme: 1)
        XCTAssertEqual(String(format: "%08x", keys.keyID), "d5d5c178")
        XCTAssertEqual(String(keys.directoryKey(for: Array("hello.txt".utf8), in: 1), radix: 16), "c23d8171e06b8000")
        XCTAssertEqual(hex(keys.sealInlineName(Array("hello.txt".utf8), directory: 1)), "e70c688e4c64ba09b7146340690ff673bd83c220cfccc2708b" + String(repeating: "0", count: 78))
        let nonce = [UInt8](repeating: 0x11, count: 24)
        let ad = keys.associatedData(type: .data, compression: .lz4, key: 0x10000, keybits: 16, physicalBytes: 1024, clear: [])
        let (c, t) = keys.blocks.seal(Array("block".utf8), nonce: nonce, authenticating: ad)
        XCTAssertEqual(hex(c + t), "ced460a73a42c02458f246408ce4b6a385307270cf")
    }

    /// The PFS root inode is stored in clear; its MAC covers every field and its blockset.
    func testRootMAC() throws {
        let keys = PFSKeys(master: [UInt8](repeating: 6, count: 32), domain: [UInt8](repeating: 3, count: 16))
        var raw = [UInt8](repeating: 0, count: 1024)
        raw[0x50] = ObjectType.directory.rawValue
        raw[0x54] = 0xED; raw[0x55] = 0x01
        for i in 0x200..<0x280 { raw[i] = UInt8(truncatingIfNeeded: i) }
        let root = keys.signRoot(try InodeData(decoding: raw))
        XCTAssertTrue(keys.rootIsAuthentic(root))
        XCTAssertNotEqual(root.meta.rootMAC0 | root.meta.rootMAC1, 0)
        XCTAssertTrue(keys.rootIsAuthentic(try InodeData(decoding: root.encoded())), "survives encode/decode")
        var changed = root; changed.meta.mode ^= 0o002
        XCTAssertFalse(keys.rootIsAuthentic(changed))
        changed = root
        if case var .blockset(refs) = changed.content { refs[0].key ^= 1; changed.content = .blockset(refs) }
        XCTAssertFalse(keys.rootIsAuthentic(changed), "a changed child blockref")
        let other = PFSKeys(master: [UInt8](repeating: 7, count: 32), domain: [UInt8](repeating: 3, count: 16))
        XCTAssertFalse(other.rootIsAuthentic(root))
    }

    func testSealedLayouts() throws {
        let keys = PFSKeys(master: [UInt8](repeating: 4, count: 32), domain: [UInt8](repeating: 2, count: 16))
        var inode = (0..<1024).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let (block, check) = keys.sealInode(inode, hasBlockset: true, inum: 42)
        XCTAssertEqual(Array(block[0x200...]), Array(inode[0x200...]), "the blockset stays readable")
        XCTAssertNotEqual(Array(block[0..<0x200]), Array(inode[0..<0x200]))
        var bref = Blockref(type: .inode, methods: Blockref.methods(check: .xaes256gcm, compression: .none), key: 42, tid: 1)
        bref.check = check
        XCTAssertEqual(try keys.openInode(block, bref: bref), inode)
        XCTAssertEqual(clearBlockset(ofSealedInode: block, bref: bref), Array(inode[0x200...]))
        var changed = block; changed[0x300] ^= 1
        XCTAssertThrowsError(try keys.openInode(changed, bref: bref)) { XCTAssertEqual($0 as? SealError, .authenticationFailed) }
        var moved = bref; moved.key = 43
        XCTAssertThrowsError(try keys.openInode(block, bref: moved), "bound to its inode number")

        inode[0x51] = InodeMeta.opFlagDirectData
        let (embedded, embeddedCheck) = keys.sealInode(inode, hasBlockset: false, inum: 42)
        XCTAssertNotEqual(Array(embedded[0x200...]), Array(inode[0x200...]), "embedded data is encrypted")
        bref.check = embeddedCheck
        XCTAssertNil(clearBlockset(ofSealedInode: embedded, bref: bref))
        XCTAssertEqual(try keys.openInode(embedded, bref: bref), inode)

        let indirect = (0..<2048).map { UInt8(truncatingIfNeeded: $0) }
        var ibref = Blockref(type: .indirect, methods: Blockref.methods(check: .xaes256gcm, compression: .none),
                             key: 0, keybits: 20, tid: 1)
        ibref.check = keys.sealIndirect(indirect, type: .indirect, key: 0, keybits: 20)
        XCTAssertNoThrow(try keys.verifyIndirect(indirect, bref: ibref))
        var other = indirect; other[5] ^= 1
        XCTAssertThrowsError(try keys.verifyIndirect(other, bref: ibref))
        var wrongKeyID = SealedCheck(ibref.check); wrongKeyID.keyID ^= 1
        ibref.check = wrongKeyID.area
        XCTAssertThrowsError(try keys.verifyIndirect(indirect, bref: ibref)) {
            guard case .wrongKey = $0 as? SealError else { return XCTFail("\($0)") }
        }
    }

    /// Sealing version 2 (docs/encryption.md): blockrefs in clear are authenticated without
    /// their locations and transaction ids, so a tree written elsewhere still verifies,
    /// while anything else about a child still fails its parent.
    func testLocationFreeSealing() throws {
        let keys = PFSKeys(master: [UInt8](repeating: 5, count: 32), domain: [UInt8](repeating: 6, count: 16))
        func child(_ key: UInt64) -> Blockref {
            var bref = Blockref(type: .data, methods: Blockref.methods(check: .xaes256gcm, compression: .lz4), key: key,
                                keybits: 16, tid: 77)
            bref.check = keys.sealData([UInt8](repeating: UInt8(key >> 16), count: 4096), type: .data, compression: .lz4, key: key).check
            bref.place([Blockref.dataOffset(0x40_0000 + key, radix: 12), Blockref.dataOffset(0x80_0000 + key, radix: 12)])
            return bref
        }
        let children = (0..<4).map { child(UInt64($0) << 16) }
        let block = encodeBlockrefs(children, bytes: 4096)
        var parent = Blockref(type: .indirect, methods: Blockref.methods(check: .xaes256gcm, compression: .none), key: 0, keybits: 18, tid: 77)
        parent.check = keys.sealIndirect(block, type: .indirect, key: 0, keybits: 18)
        XCTAssertEqual(SealedCheck(parent.check).flags & SealedCheck.flagLocationFree, SealedCheck.flagLocationFree)
        XCTAssertNoThrow(try keys.verifyIndirect(block, bref: parent))
        func edited(_ change: (inout Blockref) -> Void) -> [UInt8] {
            var refs = children
            change(&refs[2])
            return encodeBlockrefs(refs, bytes: 4096)
        }
        // Written elsewhere, by another transaction: still authentic.
        XCTAssertNoThrow(try keys.verifyIndirect(edited {
            $0.place([Blockref.dataOffset(0x1234_0000, radix: 12), Blockref.dataOffset(0x5678_0000, radix: 12)])
            ($0.mirrorTID, $0.modifyTID, $0.updateTID) = (900, 901, 902)
        }, bref: parent))
        XCTAssertEqual(children[2].locationFree, edited { $0.dataOffset = Blockref.dataOffset(0x9999_0000, radix: 12) }
            .withUnsafeBytes { try! Blockref(decoding: UnsafeRawBufferPointer(rebasing: $0[256..<384])) }.locationFree)
        // Anything else about a child is bound: its key, size, methods, copies, tag.
        for (what, change) in [("key", { (b: inout Blockref) in b.key ^= 0x10000 }),
                               ("size", { $0.dataOffset = ($0.dataOffset & HAMMER2.offsetMask) | 13 }),
                               ("methods", { $0.methods = Blockref.methods(check: .xaes256gcm, compression: .none) }),
                               ("copies", { $0.copyid = 0 }),
                               ("tag", { var sealed = SealedCheck($0.check); sealed.tag[0] ^= 1; $0.check = sealed.area }),
                               ("swapped", { $0 = children[3] })] as [(String, (inout Blockref) -> Void)] {
            XCTAssertThrowsError(try keys.verifyIndirect(edited(change), bref: parent), what)
        }
        // Version 1 (no flag): the locations are bound too, as they always were.
        let v1 = keys.seal(secret: [], clear: block, type: .indirect, compression: .none, key: 0, keybits: 18, physicalBytes: 4096).check
        parent.check = v1
        XCTAssertNoThrow(try keys.verifyIndirect(block, bref: parent))
        XCTAssertThrowsError(try keys.verifyIndirect(edited { $0.mirrorTID = 5 }, bref: parent))

        // An inode's blockset in clear: the same.
        var inode = [UInt8](repeating: 0, count: 1024)
        for i in 0..<0x200 { inode[i] = UInt8(truncatingIfNeeded: i * 3) }
        inode[0x51] = 0
        inode.replaceSubrange(0x200..<0x400, with: block[0..<512])
        let (sealed, check) = keys.sealInode(inode, hasBlockset: true, inum: 1025)
        var ibref = Blockref(type: .inode, methods: Blockref.methods(check: .xaes256gcm, compression: .none), key: 1025, tid: 1)
        ibref.check = check
        var placed = sealed
        placed.replaceSubrange(0x200..<0x400, with: edited { $0.dataOffset = Blockref.dataOffset(0x4444_0000, radix: 12) }[0..<512])
        XCTAssertEqual(Array(try keys.openInode(placed, bref: ibref)[0..<0x200]), Array(inode[0..<0x200]))
        placed.replaceSubrange(0x200..<0x400, with: edited { $0.key ^= 0x10000 }[0..<512])
        XCTAssertThrowsError(try keys.openInode(placed, bref: ibref))
    }

    /// Snapshot roots are signed location-free: another label and placed children verify;
    /// other roots keep their label under the MAC; the mark itself is under it.
    func testLocationFreeRootMAC() throws {
        let keys = PFSKeys(master: [UInt8](repeating: 6, count: 32), domain: [UInt8](repeating: 3, count: 16))
        var raw = [UInt8](repeating: 0, count: 1024)
        raw[0x50] = ObjectType.directory.rawValue
        raw[0x51] = InodeMeta.opFlagPFSRoot
        raw[0x54] = 0xED; raw[0x55] = 0x01
        var root = try InodeData(decoding: raw)
        root.filename = Array("origin".utf8)
        root.meta.nameLength = 6
        root.meta.nameKey = 0x1234_8000
        var child = Blockref(type: .inode, methods: Blockref.methods(check: .xaes256gcm, compression: .none), key: 1024, tid: 3)
        child.dataOffset = Blockref.dataOffset(0x10_0000, radix: 10)
        root.content = .blockset([child, .empty, .empty, .empty])
        func relabeled(_ inode: InodeData) -> InodeData {
            var copy = inode
            copy.filename = Array("a-received-copy".utf8)
            copy.meta.nameLength = 15
            copy.meta.nameKey = 0x9876_8000
            var moved = child
            moved.dataOffset = Blockref.dataOffset(0x77_0000, radix: 10)
            moved.mirrorTID = 99
            copy.content = .blockset([moved, .empty, .empty, .empty])
            return copy
        }
        root.meta.pfsSubtype = PFSSubtype.snapshot
        let snapshot = keys.signRoot(root, generation: 10)
        XCTAssertTrue(PFSKeys.isLocationFree(snapshot))
        XCTAssertTrue(keys.rootIsAuthentic(snapshot))
        XCTAssertTrue(keys.rootIsAuthentic(relabeled(snapshot)), "placed elsewhere under another label")
        var changed = snapshot; changed.meta.mode ^= 0o002
        XCTAssertFalse(keys.rootIsAuthentic(changed))
        changed = snapshot; changed.meta.opFlags &= ~InodeMeta.opFlagLocationFreeRoot
        XCTAssertFalse(keys.rootIsAuthentic(changed), "the mark is under the MAC")
        changed = snapshot; changed.meta.rootGeneration += 1
        XCTAssertFalse(keys.rootIsAuthentic(changed), "the generation is under the MAC")
        // Generations only go up, also from a root signed on another volume.
        XCTAssertEqual(keys.signRoot(snapshot, generation: 4).meta.rootGeneration, 11)

        root.meta.pfsSubtype = PFSSubtype.none
        let master = keys.signRoot(root, generation: 10)
        XCTAssertFalse(PFSKeys.isLocationFree(master))
        XCTAssertTrue(keys.rootIsAuthentic(master))
        XCTAssertFalse(keys.rootIsAuthentic(relabeled(master)), "a PFS's own root keeps its label and locations bound")
    }
}
