// The keys of one encrypted PFS, all derived from its 256-bit master key with HKDF-SHA256
// so that one secret is stored (wrapped) and each use has its own key:
//   blocks  XAES-256-GCM for data blocks, inodes, long names, and the tags of indirect blocks
//   names   AES-256-CTR for names held inside a dirent blockref
//   siv     HMAC-SHA256 giving a name's synthetic IV (and checking it on the way back)
//   dirhash HMAC-SHA256 giving directory hash keys, so equal names do not show as equal keys
//   root    HMAC-SHA256 over the PFS root inode (which is stored in clear)
//   key id  32 bits stored with every block: a wrong or missing key is named, not guessed

import Crypto
import Foundation
import Glibc
import HAMMER2Format

public final class PFSKeys: @unchecked Sendable {
    /// The encryption root's id: shared by the PFS and its snapshots (which share blocks),
    /// bound into every block's associated data.
    public let domain: [UInt8]
    /// The naming scheme, the key record's version: 1 hashes a name alone and stores its
    /// exact length and type in clear; 2 (new PFSes) binds the directory into the hash and
    /// hides lengths and types (NameCipher, docs/encryption.md).
    public let scheme: UInt8
    public let keyID: UInt32
    public let blocks: XAES256GCM
    let names: SymmetricKey
    let siv: SymmetricKey
    let dirhash: SymmetricKey
    let root: SymmetricKey
    /// Kept only to wrap again (key-change); wiped by `wipe()`.
    private var master: [UInt8]

    public init(master: [UInt8], domain: [UInt8], scheme: UInt8 = PFSKeys.currentScheme) {
        precondition(master.count == 32 && domain.count == 16, "a master key is 32 bytes, a domain id 16")
        self.master = master
        self.domain = domain
        self.scheme = scheme
        let key = SymmetricKey(data: master)
        func derive(_ label: String) -> SymmetricKey {
            HKDF<SHA256>.deriveKey(inputKeyMaterial: key, salt: domain, info: Data("hammer2 \(label)".utf8), outputByteCount: 32)
        }
        blocks = XAES256GCM(key: derive("blocks"))
        names = derive("names")
        siv = derive("siv")
        dirhash = derive("dirhash")
        root = derive("root")
        keyID = derive("key id").withUnsafeBytes { $0.loadUnaligned(as: UInt32.self).littleEndian }
    }

    public var masterKey: [UInt8] { master }

    /// A new master key for the same encryption root (hammer2 rekey): same domain and
    /// naming scheme, another key id.
    public func nextGeneration() -> PFSKeys {
        PFSKeys(master: randomBytes(32), domain: domain, scheme: scheme)
    }

    /// The scheme new encryption roots get.
    public static let currentScheme: UInt8 = 2

    /// Overwrites the copy of the master key this object holds (unmount). The derived keys
    /// live in SymmetricKey storage, which swift-crypto zeroes when it is released.
    public func wipe() {
        master.withUnsafeMutableBytes { if let base = $0.baseAddress { explicit_bzero(base, $0.count) } }
    }

    /// DragonFly's directory hash layout (bit 63 visible, low 15 bits for collisions), keyed,
    /// and (scheme 2) bound to the directory's inode number, so that equal names in two
    /// directories do not show as equal keys.
    public func directoryKey(for name: [UInt8], in directory: UInt64) -> UInt64 {
        let message = scheme >= 2 ? withUnsafeBytes(of: directory.littleEndian) { Array($0) } + name : name
        let mac = HMAC<SHA256>.authenticationCode(for: message, using: dirhash)
        let value = mac.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian }
        return (value & ~UInt64(0xFFFF)) | HAMMER2.dirhashVisible | 0x8000
    }

    /// The MAC of an encrypted PFS root inode (stored in clear, it is the top of the
    /// PFS's authenticated tree): HMAC over its encoding with the MAC field zeroed.
    /// `locationFree` (version 2, snapshot roots): the label (name_key, name_len and the
    /// label bytes 0x100-0x17F) and the blockset's locations and transaction ids are left
    /// out, so a raw receive can place the tree and name the snapshot without the key
    /// (docs/encryption.md, "Sealing version 2").
    public func rootMAC(_ inode: InodeData, locationFree: Bool = false) -> (UInt64, UInt64) {
        var unsigned = inode
        unsigned.meta.rootMAC0 = 0
        unsigned.meta.rootMAC1 = 0
        var message: [UInt8] = []
        if locationFree {
            message = Array("hammer2 location-free root".utf8)
            unsigned.meta.nameKey = 0
            unsigned.meta.nameLength = 0
            unsigned.filename = []
            if case let .blockset(refs) = unsigned.content { unsigned.content = .blockset(refs.map(\.locationFree)) }
        }
        let mac = Array(HMAC<SHA256>.authenticationCode(for: message + unsigned.encoded(), using: root))
        let word = { (at: Int) in mac[at..<(at + 8)].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << UInt64(8 * $1.offset) } }
        return (word(0), word(8))
    }

    /// `inode` with its generation (the signing transaction, when given) and MAC set.
    /// Snapshot roots are signed location-free (they are what send carries) and marked so
    /// (op_flags 0x80, under the MAC); other roots keep their label and locations under it.
    public func signRoot(_ inode: InodeData, generation: UInt64? = nil) -> InodeData {
        var signed = inode
        // Strictly increasing along the PFS's life, also where it goes on from a root signed
        // on another volume (a raw receive), whose transaction ids are not this volume's.
        if let generation { signed.meta.rootGeneration = max(generation, inode.meta.rootGeneration &+ 1) }
        if signed.meta.pfsSubtype == PFSSubtype.snapshot && !SealedCheck.writesVersion1 {
            signed.meta.opFlags |= InodeMeta.opFlagLocationFreeRoot
        } else {
            signed.meta.opFlags &= ~InodeMeta.opFlagLocationFreeRoot
        }
        (signed.meta.rootMAC0, signed.meta.rootMAC1) = rootMAC(signed, locationFree: Self.isLocationFree(signed))
        return signed
    }

    public static func isLocationFree(_ inode: InodeData) -> Bool {
        inode.meta.opFlags & InodeMeta.opFlagLocationFreeRoot != 0
    }

    /// A name for the PFS with cluster id `clusterID` under this key in the host's
    /// rollback state (docs/encryption.md, "Rollback"): keyed, so the state file says
    /// nothing about which volumes or PFSes this machine has seen.
    public func rollbackIdentifier(clusterID: [UInt8]) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Array("hammer2 rollback id".utf8) + domain + clusterID, using: root)
        return mac.prefix(16).map { String(format: "%02x", $0) }.joined()
    }

    /// The form the root's op_flags name (the flag is under the MAC in both forms).
    public func rootIsAuthentic(_ inode: InodeData) -> Bool {
        let (a, b) = rootMAC(inode, locationFree: Self.isLocationFree(inode))
        return a == inode.meta.rootMAC0 && b == inode.meta.rootMAC1
    }
}

