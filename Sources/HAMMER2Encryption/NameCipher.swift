// Names inside dirent blockrefs. A dirent's 64-byte check area holds a 16-byte synthetic
// IV (HMAC of the directory's inode number and the name) and up to 48 bytes of the name
// encrypted with AES-256-CTR under that IV. The IV is deterministic, so a name is never
// encrypted twice under one IV with different contents; decryption recomputes it, so a
// changed byte is caught even before the parent's tag is checked. Longer names go to a
// name block sealed like any other block.

import Crypto
import Foundation
import _CryptoExtras

extension PFSKeys {
    public static let inlineNameBytes = 48

    func nameIV(directory: UInt64, name: [UInt8]) -> [UInt8] {
        var message = withUnsafeBytes(of: directory.littleEndian) { Array($0) }
        message += name
        return Array(HMAC<SHA256>.authenticationCode(for: message, using: siv)).prefix(16).map { $0 }
    }

    /// The 64-byte check area of a dirent holding `name` (at most 48 bytes).
    public func sealInlineName(_ name: [UInt8], directory: UInt64) -> [UInt8] {
        precondition(!name.isEmpty && name.count <= Self.inlineNameBytes, "inline names are 1-48 bytes")
        let iv = nameIV(directory: directory, name: name)
        let ciphertext = try! AES._CTR.encrypt(name, using: names, nonce: try! AES._CTR.Nonce(nonceBytes: iv))
        return iv + ciphertext + [UInt8](repeating: 0, count: 64 - 16 - ciphertext.count)
    }

    /// The name in a dirent check area, or nil if it does not authenticate.
    public func openInlineName(_ area: [UInt8], length: Int, directory: UInt64) -> [UInt8]? {
        guard area.count == 64, length >= 1, length <= Self.inlineNameBytes else { return nil }
        let iv = Array(area[0..<16])
        guard let nonce = try? AES._CTR.Nonce(nonceBytes: iv),
              let name = try? AES._CTR.decrypt(area[16..<(16 + length)], using: names, nonce: nonce) else { return nil }
        let plain = Array(name)
        return nameIV(directory: directory, name: plain) == iv ? plain : nil
    }
}
