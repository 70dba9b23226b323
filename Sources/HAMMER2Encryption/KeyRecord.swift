// The wrapped master key of an encrypted PFS, kept in its root inode (which stays in clear:
// pfs-list, mount-by-label and bulkfree need it) in the last 128 bytes of the filename
// area (0x180-0x1FF; labels of encrypted PFSes are at most 127 bytes). The root inode's
// decrypt_check (0x00E0) holds "H2EN" and the key id: DragonFly's reserved field, nonzero
// only on encrypted PFS roots.
//
//   0x00 magic "H2EK"      0x04 version (1, or 2: the naming scheme of PFSKeys.scheme)
//   0x05 cipher (1 = XAES-256-GCM)
//   0x06 wrapping (1 = passphrase, scrypt; 2 = key file, HKDF)
//   0x07 scrypt log2(N)    0x08 scrypt r         0x09 scrypt p        0x0A reserved (2)
//   0x0C key id (LE)       0x10 domain (16)      0x20 salt (16)       0x30 wrap nonce (24)
//   0x48 wrapped master key (32)                 0x68 wrap tag (16)
//   0x78 xxhash64 of bytes 0x00-0x77 (LE; 0 in records written before it existed): tells a
//        damaged record from a wrong passphrase, which the wrap tag alone cannot

import Crypto
import HAMMER2Format
import Foundation
import _CryptoExtras

public enum KeySource: Sendable {
    case passphrase([UInt8])
    /// The contents of a key file: at least 32 bytes of secret material.
    case keyFile([UInt8])
}

public enum KeyError: Error, Equatable, CustomStringConvertible {
    case wrongKey
    case badRecord(String)
    case keyFileTooShort(Int)
    case emptyPassphrase
    /// A key file given for a passphrase-wrapped key, or the other way round.
    case wrongKind(String)

    public var description: String {
        switch self {
        case .wrongKey: return "wrong passphrase or key file (the PFS key does not unwrap)"
        case let .badRecord(why): return "damaged key record: \(why)"
        case let .wrongKind(why): return why
        case let .keyFileTooShort(n): return "key file holds \(n) bytes; at least 32 are needed"
        case .emptyPassphrase: return "empty passphrase"
        }
    }
}

public struct KeyRecord: Sendable, Equatable {
    public static let bytes = 128
    public static let offsetInInode = 0x180
    public static let decryptCheckMagic: UInt64 = 0x4832_454E << 32  // "H2EN"
    static let magic: [UInt8] = Array("H2EK".utf8)

    public enum Wrapping: UInt8, Sendable { case passphrase = 1, keyFile = 2 }

    public var wrapping: Wrapping
    /// The record's version, which is also the PFS's naming scheme (PFSKeys.scheme).
    public var version: UInt8 = PFSKeys.currentScheme
    public var scryptLog2N: UInt8
    public var scryptR: UInt8
    public var scryptP: UInt8
    public var keyID: UInt32
    public var domain: [UInt8]
    public var salt: [UInt8]
    public var nonce: [UInt8]
    public var wrappedKey: [UInt8]
    public var tag: [UInt8]

    /// scrypt's cost for new records: N = 2^18, r = 8, p = 1 (256 MiB; about 0.7 s on the
    /// 2-core machine of docs/benchmarks.md), stored in the record so it can grow later
    /// (`-w` of newfs_hammer2, pfs-create and key-change). Reading accepts 2^10 to 2^22.
    public static let defaultLog2N: UInt8 = 18
    /// The costs a new record may be given: below 2^14 guessing is cheap, above 2^21 one
    /// unlock needs 2 GiB of memory or more.
    public static let creatableLog2N: ClosedRange<UInt8> = 14...21

    /// A new master key and domain, wrapped by `source`.
    public static func create(source: KeySource, log2N: UInt8 = defaultLog2N,
                              scheme: UInt8 = PFSKeys.currentScheme) throws -> (KeyRecord, PFSKeys) {
        let master = randomBytes(32)
        let keys = PFSKeys(master: master, domain: randomBytes(16), scheme: scheme)
        return (try wrap(keys, source: source, log2N: log2N), keys)
    }

    /// Wraps `keys`' master key by `source` (new salt and nonce): pfs-create and key-change.
    public static func wrap(_ keys: PFSKeys, source: KeySource, log2N: UInt8 = defaultLog2N) throws -> KeyRecord {
        var record = KeyRecord(wrapping: .passphrase, scryptLog2N: log2N, scryptR: 8, scryptP: 1, keyID: keys.keyID,
                               domain: keys.domain, salt: randomBytes(16), nonce: XAES256GCM.randomNonce(),
                               wrappedKey: [], tag: [])
        record.version = keys.scheme
        if case .keyFile = source { record.wrapping = .keyFile }
        let wrapper = try record.wrappingKey(source)
        (record.wrappedKey, record.tag) = XAES256GCM(key: wrapper).seal(keys.masterKey, nonce: record.nonce,
                                                                       authenticating: record.header)
        return record
    }

    /// Unwraps the master key; KeyError.wrongKey when `source` is not the one it was wrapped by.
    public func unwrap(_ source: KeySource) throws -> PFSKeys {
        let wrapper = try wrappingKey(source)
        guard let master = XAES256GCM(key: wrapper).open(wrappedKey, tag: tag, nonce: nonce, authenticating: header) else {
            throw KeyError.wrongKey
        }
        let keys = PFSKeys(master: master, domain: domain, scheme: version)
        guard keys.keyID == keyID else { throw KeyError.badRecord("key id does not match the unwrapped key") }
        return keys
    }

    func wrappingKey(_ source: KeySource) throws -> SymmetricKey {
        switch (wrapping, source) {
        case let (.passphrase, .passphrase(passphrase)):
            guard !passphrase.isEmpty else { throw KeyError.emptyPassphrase }
            return try KDF.Scrypt.deriveKey(from: passphrase, salt: salt, outputByteCount: 32,
                                            rounds: 1 << Int(scryptLog2N), blockSize: Int(scryptR),
                                            parallelism: Int(scryptP), maxMemory: 1 << 33)
        case let (.keyFile, .keyFile(material)):
            guard material.count >= 32 else { throw KeyError.keyFileTooShort(material.count) }
            return HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: material), salt: salt,
                                          info: Data("hammer2 key file".utf8), outputByteCount: 32)
        case (.passphrase, .keyFile):
            throw KeyError.wrongKind("this PFS is unlocked by a passphrase, not a key file")
        case (.keyFile, .passphrase):
            throw KeyError.wrongKind("this PFS is unlocked by a key file (-o keyfile=), not a passphrase")
        }
    }

    /// Bytes 0x00-0x2F: authenticated with the wrapped key, so no parameter can be changed.
    var header: [UInt8] { Array(encoded()[0..<0x30]) }

    public func encoded() -> [UInt8] {
        var out = Self.magic + [version, 1, wrapping.rawValue, scryptLog2N, scryptR, scryptP, 0, 0]
        out += withUnsafeBytes(of: keyID.littleEndian) { Array($0) }
        out += domain + salt + nonce + wrappedKey + tag
        out += [UInt8](repeating: 0, count: Self.checksumOffset - out.count)
        let sum = Self.checksum(out)
        return out + withUnsafeBytes(of: sum.littleEndian) { Array($0) }
    }

    static let checksumOffset = 0x78

    /// `raw` (a record's 128 bytes) with its checksum set to match its contents: for
    /// tools that build or mutate records (the fuzzer).
    public static func checksummed(_ raw: [UInt8]) -> [UInt8] {
        guard raw.count >= bytes else { return raw }
        var out = raw
        let sum = checksum(out)
        for i in 0..<8 { out[checksumOffset + i] = UInt8(truncatingIfNeeded: sum >> UInt64(8 * i)) }
        return out
    }

    static func checksum(_ bytes: [UInt8]) -> UInt64 {
        let sum = bytes.withUnsafeBytes { CheckCode.xxhash64(UnsafeRawBufferPointer(rebasing: $0[0..<checksumOffset])) }
        return sum == 0 ? 1 : sum  // 0 means "no checksum" (older records)
    }

    public init(decoding bytes: [UInt8]) throws {
        guard bytes.count >= Self.bytes else { throw KeyError.badRecord("\(bytes.count) bytes") }
        guard Array(bytes[0..<4]) == Self.magic else { throw KeyError.badRecord("no H2EK magic") }
        let stored = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[Self.checksumOffset + $1]) << UInt64(8 * $1) }
        guard stored == 0 || stored == Self.checksum(Array(bytes[0..<Self.bytes])) else {
            throw KeyError.badRecord("its checksum does not match (the record was changed on the media)")
        }
        guard (1...PFSKeys.currentScheme).contains(bytes[4]), bytes[5] == 1 else {
            throw KeyError.badRecord("version \(bytes[4]) cipher \(bytes[5]) unknown")
        }
        guard let wrapping = Wrapping(rawValue: bytes[6]) else { throw KeyError.badRecord("wrapping \(bytes[6]) unknown") }
        guard (10...22).contains(bytes[7]), (1...32).contains(bytes[8]), (1...16).contains(bytes[9]) else {
            throw KeyError.badRecord("scrypt parameters out of range")
        }
        self.init(wrapping: wrapping, scryptLog2N: bytes[7], scryptR: bytes[8], scryptP: bytes[9],
                  keyID: UInt32(bytes[12]) | UInt32(bytes[13]) << 8 | UInt32(bytes[14]) << 16 | UInt32(bytes[15]) << 24,
                  domain: Array(bytes[0x10..<0x20]), salt: Array(bytes[0x20..<0x30]), nonce: Array(bytes[0x30..<0x48]),
                  wrappedKey: Array(bytes[0x48..<0x68]), tag: Array(bytes[0x68..<0x78]))
        version = bytes[4]
    }

    init(wrapping: Wrapping, scryptLog2N: UInt8, scryptR: UInt8, scryptP: UInt8, keyID: UInt32, domain: [UInt8],
         salt: [UInt8], nonce: [UInt8], wrappedKey: [UInt8], tag: [UInt8]) {
        self.wrapping = wrapping
        self.scryptLog2N = scryptLog2N
        self.scryptR = scryptR
        self.scryptP = scryptP
        self.keyID = keyID
        self.domain = domain
        self.salt = salt
        self.nonce = nonce
        self.wrappedKey = wrappedKey
        self.tag = tag
    }
}

func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    var out = [UInt8]()
    while out.count < count { withUnsafeBytes(of: generator.next()) { out += $0 } }
    return Array(out.prefix(count))
}
