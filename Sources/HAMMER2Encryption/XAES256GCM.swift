// XAES-256-GCM (C2SP): AES-256-GCM with 192-bit nonces. The first 12 nonce bytes derive a
// per-message key (NIST SP 800-108 counter KDF with AES-256 CMAC as the PRF); the last 12
// are the GCM nonce. Random nonces are then safe for far more messages than plain GCM's
// 2^32: a copy-on-write filesystem writes every block under a fresh nonce, forever.

import Crypto
import Foundation
import _CryptoExtras

public struct XAES256GCM: @unchecked Sendable {  // SymmetricKey is immutable
    public static let nonceBytes = 24, tagBytes = 16

    private let key: SymmetricKey
    /// K1 of the CMAC subkey derivation: AES_K(0^128) doubled in GF(2^128).
    private let k1: [UInt8]

    public init(key: SymmetricKey) {
        precondition(key.bitCount == 256, "XAES-256-GCM takes a 256-bit key")
        self.key = key
        var l = [UInt8](repeating: 0, count: 16)
        try! AES.permute(&l, key: key)
        var k1 = [UInt8](repeating: 0, count: 16)
        for i in 0..<16 { k1[i] = l[i] << 1 | (i < 15 ? l[i + 1] >> 7 : 0) }
        if l[0] & 0x80 != 0 { k1[15] ^= 0x87 }
        self.k1 = k1
    }

    /// The per-message key for the first 12 bytes of `nonce`.
    func derivedKey(_ nonce: some RandomAccessCollection<UInt8>) -> SymmetricKey {
        var out = [UInt8]()
        out.reserveCapacity(32)
        for counter in [UInt8(1), 2] {
            var block: [UInt8] = [0, counter, 0x58, 0] + nonce.prefix(12)
            for i in 0..<16 { block[i] ^= k1[i] }
            try! AES.permute(&block, key: key)
            out += block
        }
        return SymmetricKey(data: out)
    }

    /// Encrypts `plaintext` and returns the ciphertext (same length) and the 16-byte tag.
    public func seal(_ plaintext: [UInt8], nonce: [UInt8], authenticating ad: [UInt8]) -> (ciphertext: [UInt8], tag: [UInt8]) {
        precondition(nonce.count == Self.nonceBytes, "XAES-256-GCM nonces are 24 bytes")
        let box = try! AES.GCM.seal(plaintext, using: derivedKey(nonce), nonce: try! AES.GCM.Nonce(data: nonce[12...]),
                                    authenticating: ad)
        // Copied through raw buffers: Array(Data) walks byte by byte.
        return (box.ciphertext.withUnsafeBytes { Array($0) }, box.tag.withUnsafeBytes { Array($0) })
    }

    /// Decrypts and verifies; nil when the tag does not match (wrong key, or any bit of the
    /// ciphertext, tag, nonce or associated data changed).
    public func open(_ ciphertext: [UInt8], tag: [UInt8], nonce: [UInt8], authenticating ad: [UInt8]) -> [UInt8]? {
        guard nonce.count == Self.nonceBytes, tag.count == Self.tagBytes,
              let gcmNonce = try? AES.GCM.Nonce(data: nonce[12...]),
              let box = try? AES.GCM.SealedBox(nonce: gcmNonce, ciphertext: ciphertext, tag: tag),
              let plaintext = try? AES.GCM.open(box, using: derivedKey(nonce), authenticating: ad) else { return nil }
        return plaintext.withUnsafeBytes { Array($0) }
    }

    /// Bytes before and after the ciphertext in a `combined` buffer: the GCM nonce (the last
    /// 12 bytes of the XAES nonce) and the tag, AES.GCM.SealedBox's combined layout.
    public static let combinedPrefixBytes = 12, combinedSuffixBytes = tagBytes

    /// `open` of a buffer laid out as GCM nonce | ciphertext | tag (which a caller reads the
    /// ciphertext into, between the two), handed to swift-crypto without copying it again.
    public func open(combined: Data, nonce: [UInt8], authenticating ad: [UInt8],
                     into destination: UnsafeMutableRawBufferPointer) -> Bool {
        guard nonce.count == Self.nonceBytes,
              combined.count == Self.combinedPrefixBytes + destination.count + Self.combinedSuffixBytes,
              let box = try? AES.GCM.SealedBox(combined: combined),
              let plaintext = try? AES.GCM.open(box, using: derivedKey(nonce), authenticating: ad),
              plaintext.count == destination.count else { return false }
        plaintext.withUnsafeBytes { destination.copyMemory(from: $0) }
        return true
    }

    /// 24 bytes from the system's CSPRNG.
    public static func randomNonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var nonce = [UInt8]()
        nonce.reserveCapacity(nonceBytes)
        for _ in 0..<(nonceBytes / 8) { withUnsafeBytes(of: generator.next()) { nonce += $0 } }
        return nonce
    }
}
