// Names inside dirent blockrefs. A dirent's 64-byte check area holds a 16-byte synthetic
// IV (HMAC of the directory's inode number and the name) and up to 48 bytes of the name
// encrypted with AES-256-CTR under that IV. The IV is deterministic, so a name is never
// encrypted twice under one IV with different contents; decryption recomputes it, so a
// changed byte is caught even before the parent's tag is checked. Longer names go to a
// name block sealed like any other block.
//
// Scheme 2 (key record version 2, new PFSes) hides lengths and types too: the plaintext is
// the entry's type byte, the name and zeros up to a length class (16, 32 or 48 bytes
// inline; a name of 48 bytes or more goes to the 1 KiB name block), the dirent's length
// field holds the class (16, 32, 48, or 255 for a name block) and its type field "unknown".
// Names hold no NUL byte, so the first zero ends the name.

import Crypto
import Foundation
import HAMMER2Format
import _CryptoExtras

/// What a dirent stores for an entry of an encrypted PFS.
public struct SealedDirentName: Sendable, Equatable {
    /// The dirent's name length field (the exact length in scheme 1, a class in scheme 2).
    public var lengthField: Int
    /// The dirent's type field (the real type in scheme 1, "unknown" in scheme 2).
    public var typeField: ObjectType
    /// The 64-byte check area of an inline name, or nil.
    public var area: [UInt8]?
    /// The 1 KiB plaintext of the name block (to be sealed as a block), or nil.
    public var block: [UInt8]?
}

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

    /// Length field of a scheme-2 name block.
    public static let nameBlockLengthField = 255

    /// Names this long or shorter sit in the dirent itself.
    public var inlineNameCapacity: Int { scheme >= 2 ? Self.inlineNameBytes - 1 : Self.inlineNameBytes }

    /// The dirent fields and sealed name of entry `name` (of `type`) in `directory`.
    public func sealDirentName(_ name: [UInt8], type: ObjectType, directory: UInt64) -> SealedDirentName {
        precondition(!name.isEmpty && name.count <= HAMMER2.inodeMaxName && !name.contains(0), "a name is 1-255 bytes without NUL")
        guard scheme >= 2 else {
            if name.count <= Self.inlineNameBytes {
                return SealedDirentName(lengthField: name.count, typeField: type, area: sealInlineName(name, directory: directory))
            }
            return SealedDirentName(lengthField: name.count, typeField: type,
                                    block: name + [UInt8](repeating: 0, count: HAMMER2.inodeBytes - name.count))
        }
        let plain = [type.rawValue] + name
        if plain.count <= Self.inlineNameBytes {
            let lengthClass = (plain.count + 15) / 16 * 16
            let padded = plain + [UInt8](repeating: 0, count: lengthClass - plain.count)
            return SealedDirentName(lengthField: lengthClass, typeField: .unknown, area: sealInlineName(padded, directory: directory))
        }
        return SealedDirentName(lengthField: Self.nameBlockLengthField, typeField: .unknown,
                                block: plain + [UInt8](repeating: 0, count: HAMMER2.inodeBytes - plain.count))
    }

    /// Whether a dirent with this length field keeps its name in a (sealed) name block.
    public func nameIsInBlock(lengthField: Int) -> Bool { lengthField > Self.inlineNameBytes }

    /// The name and type of a dirent: from its check area (`area`), or from its opened name
    /// block (`block`) when `nameIsInBlock`. Nil when it does not authenticate or parse.
    public func openDirentName(lengthField: Int, typeField: ObjectType, area: [UInt8], block: [UInt8]?,
                               directory: UInt64) -> (name: [UInt8], type: ObjectType)? {
        guard scheme >= 2 else {
            if !nameIsInBlock(lengthField: lengthField) {
                return openInlineName(area, length: lengthField, directory: directory).map { ($0, typeField) }
            }
            guard let block, block.count >= lengthField, lengthField <= HAMMER2.inodeMaxName else { return nil }
            return (Array(block[0..<lengthField]), typeField)
        }
        let plain: [UInt8]
        if !nameIsInBlock(lengthField: lengthField) {
            guard [16, 32, 48].contains(lengthField), let opened = openInlineName(area, length: lengthField, directory: directory) else {
                return nil
            }
            plain = opened
        } else {
            guard lengthField == Self.nameBlockLengthField, let block, block.count >= HAMMER2.inodeMaxName + 1 else { return nil }
            plain = Array(block[0..<(HAMMER2.inodeMaxName + 1)])
        }
        guard plain.count >= 2 else { return nil }
        let body = plain[1...]
        let end = body.firstIndex(of: 0) ?? body.endIndex
        let name = Array(body[body.startIndex..<end])
        guard !name.isEmpty, body[end...].allSatisfy({ $0 == 0 }) else { return nil }
        return (name, ObjectType(rawValue: plain[0]))
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
