// Sealing blocks of an encrypted PFS. The blockref's check method is HAMMER2_CHECK_XAES
// (CheckMethod.xaes256gcm) and its 64-byte check area holds:
//   0x00 nonce (24 bytes, random)   0x18 tag (16)   0x28 key id (4, LE)   0x2C flags (1)
// The tag is the block's check code. The associated data binds the block to its encryption
// root (domain), its blockref type, compression method, key and key range and physical
// size; parents hold their children's tags, so the tree authenticates itself from the PFS
// root down, and a block moved, swapped or replayed from an older tree fails its parent.
//
// Blockrefs kept in clear (indirect blocks, inodes' blocksets) are authenticated in their
// location-free form (flag 0x02, sealing version 2), so a raw receive can place the tree.
//
// What is encrypted: data blocks (after compression), inodes' meta, filename and embedded
// data, and long-name blocks. Indirect blocks and inodes' blocksets stay readable, only
// authenticated, so fsck and bulkfree can walk the tree without the key.

import Foundation
import HAMMER2Format

public struct SealedCheck: Sendable, Equatable {
    public var nonce: [UInt8]
    public var tag: [UInt8]
    public var keyID: UInt32
    public var flags: UInt8

    /// An inode whose bytes 0x200-0x3FF are a blockset in clear (not embedded data).
    public static let flagClearBlockset: UInt8 = 0x01
    /// Sealing version 2: the blockrefs in clear (an indirect block, an inode's blockset)
    /// are authenticated in location-free form (LocationFree.swift), so the tree can be
    /// written elsewhere without the key (raw send/receive). Every block sealed now has it;
    /// version 1 blocks (without) are read as they are.
    public static let flagLocationFree: UInt8 = 0x02

    /// Version 1 sealing, as before version 2 existed: only for tests, which make such
    /// PFSes to check that reencrypt brings them up to date (HAMMER2_TEST_SEALING_V1=1).
    public static let writesVersion1 = ProcessInfo.processInfo.environment["HAMMER2_TEST_SEALING_V1"] == "1"
    static var locationFreeFlag: UInt8 { writesVersion1 ? 0 : flagLocationFree }

    public init(nonce: [UInt8], tag: [UInt8], keyID: UInt32, flags: UInt8) {
        self.nonce = nonce
        self.tag = tag
        self.keyID = keyID
        self.flags = flags
    }

    public init(_ area: CheckArea) {
        let bytes = area.bytes
        nonce = Array(bytes[0..<24])
        tag = Array(bytes[24..<40])
        keyID = UInt32(bytes[40]) | UInt32(bytes[41]) << 8 | UInt32(bytes[42]) << 16 | UInt32(bytes[43]) << 24
        flags = bytes[44]
    }

    public var area: CheckArea {
        CheckArea(bytes: nonce + tag + withUnsafeBytes(of: keyID.littleEndian) { Array($0) } + [flags])
    }
}

public enum SealError: Error, Equatable, CustomStringConvertible {
    case noKey(keyID: UInt32)
    case wrongKey(expected: UInt32, found: UInt32)
    case authenticationFailed
    case badLayout(String)

    public var description: String {
        switch self {
        case let .noKey(id): return String(format: "block is encrypted with key %08x, which is not loaded", id)
        case let .wrongKey(expected, found): return String(format: "block names key %08x, the PFS key is %08x", found, expected)
        case .authenticationFailed: return "authentication tag mismatch (tampered, misplaced or stale block)"
        case let .badLayout(what): return "encrypted block layout: \(what)"
        }
    }
}

extension PFSKeys {
    /// The associated data of a block: what the tag binds it to besides its bytes.
    func associatedData(type: BlockrefType, compression: CompressionMethod, key: UInt64, keybits: UInt8,
                        physicalBytes: Int, clear: [UInt8]) -> [UInt8] {
        var ad = Array("HAMMER2 XAES v1".utf8) + domain
        ad += [type.rawValue, compression.rawValue, keybits]
        ad += withUnsafeBytes(of: key.littleEndian) { Array($0) }
        ad += withUnsafeBytes(of: UInt32(physicalBytes).littleEndian) { Array($0) }
        return ad + clear
    }

    /// Seals a block whose `secret` bytes are encrypted and `clear` bytes only authenticated.
    /// Returns the ciphertext (as long as `secret`) and the blockref's check area.
    public func seal(secret: [UInt8], clear: [UInt8], type: BlockrefType, compression: CompressionMethod,
                     key: UInt64, keybits: UInt8, physicalBytes: Int, flags: UInt8 = 0) -> (ciphertext: [UInt8], check: CheckArea) {
        let nonce = XAES256GCM.randomNonce()
        let ad = associatedData(type: type, compression: compression, key: key, keybits: keybits,
                                physicalBytes: physicalBytes, clear: clear)
        let (ciphertext, tag) = blocks.seal(secret, nonce: nonce, authenticating: ad)
        return (ciphertext, SealedCheck(nonce: nonce, tag: tag, keyID: keyID, flags: flags).area)
    }

    /// Opens a block sealed by `seal`; throws when it does not authenticate.
    public func open(ciphertext: [UInt8], clear: [UInt8], bref: Blockref, physicalBytes: Int) throws -> [UInt8] {
        let check = SealedCheck(bref.check)
        guard check.keyID == keyID else { throw SealError.wrongKey(expected: keyID, found: check.keyID) }
        let ad = associatedData(type: bref.type, compression: bref.compression, key: bref.key, keybits: bref.keybits,
                                physicalBytes: physicalBytes, clear: clear)
        guard let plaintext = blocks.open(ciphertext, tag: check.tag, nonce: check.nonce, authenticating: ad) else {
            throw SealError.authenticationFailed
        }
        return plaintext
    }

    // MARK: The three layouts

    /// A data or long-name block: all of it encrypted.
    public func sealData(_ block: [UInt8], type: BlockrefType, compression: CompressionMethod, key: UInt64,
                         keybits: UInt8 = 0) -> (block: [UInt8], check: CheckArea) {
        let (ciphertext, check) = seal(secret: block, clear: [], type: type, compression: compression, key: key,
                                       keybits: keybits, physicalBytes: block.count)
        return (ciphertext, check)
    }

    public func openData(_ block: [UInt8], bref: Blockref) throws -> [UInt8] {
        try open(ciphertext: block, clear: [], bref: bref, physicalBytes: block.count)
    }

    /// `openData` of a block read into the middle of `combined` (XAES256GCM's combined
    /// layout; this fills in the nonce and tag from the blockref), the plaintext written into
    /// `destination` (the block's size): nothing is written unless the tag verifies.
    public func openData(combined: inout Data, bref: Blockref, into destination: UnsafeMutableRawBufferPointer) throws {
        let check = SealedCheck(bref.check)
        guard check.keyID == keyID else { throw SealError.wrongKey(expected: keyID, found: check.keyID) }
        let prefix = XAES256GCM.combinedPrefixBytes
        combined.replaceSubrange(0..<prefix, with: check.nonce[prefix...])
        combined.replaceSubrange((combined.count - XAES256GCM.tagBytes)..<combined.count, with: check.tag)
        let ad = associatedData(type: bref.type, compression: bref.compression, key: bref.key, keybits: bref.keybits,
                                physicalBytes: destination.count, clear: [])
        guard blocks.open(combined: combined, nonce: check.nonce, authenticating: ad, into: destination) else {
            throw SealError.authenticationFailed
        }
    }

    /// Opens any sealed block by its type: an inode's plaintext (with its blockset), an
    /// indirect or freemap node as stored once its tag verifies, data or a long name's
    /// plaintext. What reads, fsck and scrub all do with a sealed block.
    public func open(_ block: [UInt8], bref: Blockref) throws -> [UInt8] {
        switch bref.type {
        case .inode: return try openInode(block, bref: bref)
        case .indirect, .freemapNode:
            try verifyIndirect(block, bref: bref)
            return block
        default: return try openData(block, bref: bref)
        }
    }

    /// An indirect block: authenticated, not encrypted (a tag over its blockrefs).
    public func sealIndirect(_ block: [UInt8], type: BlockrefType, key: UInt64, keybits: UInt8) -> CheckArea {
        let flags = SealedCheck.locationFreeFlag
        return seal(secret: [], clear: flags != 0 ? locationFreeBlockrefs(block) : block, type: type, compression: .none,
                    key: key, keybits: keybits, physicalBytes: block.count, flags: flags).check
    }

    public func verifyIndirect(_ block: [UInt8], bref: Blockref) throws {
        _ = try open(ciphertext: [], clear: Self.authenticatedBlockrefs(block, bref: bref), bref: bref, physicalBytes: block.count)
    }

    /// What a sealed block's tag covers of the blockrefs it holds in clear.
    static func authenticatedBlockrefs(_ clear: [UInt8], bref: Blockref) -> [UInt8] {
        SealedCheck(bref.check).flags & SealedCheck.flagLocationFree != 0 ? locationFreeBlockrefs(clear) : clear
    }

    /// An inode (1 KiB): meta and filename encrypted, and the embedded data too; a blockset
    /// stays in clear (authenticated) so the tree below can be walked without the key.
    /// `compression` is the inode blockref's (its comp_algo, which the blockref carries).
    public func sealInode(_ inode: [UInt8], hasBlockset: Bool, inum: UInt64,
                          compression: CompressionMethod = .none) -> (block: [UInt8], check: CheckArea) {
        precondition(inode.count == HAMMER2.inodeBytes, "an inode is 1 KiB")
        let secret = hasBlockset ? Array(inode[0..<0x200]) : inode
        let clear = hasBlockset ? Array(inode[0x200..<0x400]) : []
        let flags = (hasBlockset ? SealedCheck.flagClearBlockset : 0) | SealedCheck.locationFreeFlag
        let (ciphertext, check) = seal(secret: secret, clear: flags & SealedCheck.flagLocationFree != 0 ? locationFreeBlockrefs(clear) : clear,
                                       type: .inode, compression: compression, key: inum, keybits: 0,
                                       physicalBytes: inode.count, flags: flags)
        return (ciphertext + clear, check)
    }

    public func openInode(_ block: [UInt8], bref: Blockref) throws -> [UInt8] {
        guard block.count == HAMMER2.inodeBytes else { throw SealError.badLayout("inode of \(block.count) bytes") }
        let hasBlockset = SealedCheck(bref.check).flags & SealedCheck.flagClearBlockset != 0
        let clear = hasBlockset ? Array(block[0x200..<0x400]) : []
        let secret = hasBlockset ? Array(block[0..<0x200]) : block
        return try open(ciphertext: secret, clear: Self.authenticatedBlockrefs(clear, bref: bref), bref: bref,
                        physicalBytes: block.count) + clear
    }
}

/// The blockset of a sealed inode without its key (fsck and bulkfree walk the tree), or
/// nil when the inode embeds its data instead.
public func clearBlockset(ofSealedInode block: [UInt8], bref: Blockref) -> [UInt8]? {
    guard block.count == HAMMER2.inodeBytes,
          SealedCheck(bref.check).flags & SealedCheck.flagClearBlockset != 0 else { return nil }
    return Array(block[0x200..<0x400])
}
