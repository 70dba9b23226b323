// Check codes (hammer2_chain_testcheck): computed over the physical (possibly compressed)
// bytes of a block and compared with the blockref's check area.

import CXXHash
import Crypto

public enum CheckCode {
    /// XXH64 with XXH_HAMMER2_SEED (or another seed, for test vectors).
    public static func xxhash64(_ data: UnsafeRawBufferPointer, seed: UInt64 = HAMMER2.xxhashSeed) -> UInt64 {
        XXH64(data.baseAddress, data.count, seed)
    }

    /// sha192: SHA-256 with its fourth 64-bit word XORed into the third, first 24 bytes kept.
    public static func sha192(_ data: UnsafeRawBufferPointer) -> [UInt8] {
        var digest = Array(SHA256.hash(data: data))
        for i in 0..<8 { digest[16 + i] ^= digest[24 + i] }
        return Array(digest[0..<24])
    }

    /// The outcome of verifying one block.
    public enum Verdict: Equatable, Sendable {
        case valid
        /// CHECK_NONE or CHECK_DISABLED: nothing to verify.
        case unchecked
        case mismatch(expected: String, computed: String)
        /// A method code this implementation does not know: never trust the bytes.
        case unknownMethod(UInt8)
        /// An encrypted block (CHECK_XAES): its tag is verified when it is opened with its key.
        case sealed
    }

    /// Verifies `data` (exactly the block's physical bytes) against `bref`.
    public static func verify(_ bref: Blockref, _ data: UnsafeRawBufferPointer) -> Verdict {
        switch bref.checkMethod {
        case .none, .disabled:
            return .unchecked
        case .xaes256gcm:
            return .sealed
        case .iscsi32:
            let computed = CRC32C.checksum(data)
            return computed == bref.check.iscsi32
                ? .valid : .mismatch(expected: hex32(bref.check.iscsi32), computed: hex32(computed))
        case .xxhash64:
            let computed = xxhash64(data)
            return computed == bref.check.xxhash64
                ? .valid : .mismatch(expected: hex64(bref.check.xxhash64), computed: hex64(computed))
        case .sha192:
            let computed = sha192(data)
            let stored = bref.check.prefix(24)
            return computed == stored
                ? .valid : .mismatch(expected: hexBytes(stored), computed: hexBytes(computed))
        case .freemap:
            let computed = CRC32C.checksum(data)
            return computed == bref.check.freemapCRC
                ? .valid : .mismatch(expected: hex32(bref.check.freemapCRC), computed: hex32(computed))
        default:
            return .unknownMethod(bref.checkMethod.rawValue)
        }
    }

    public static func verify(_ bref: Blockref, _ bytes: [UInt8]) -> Verdict {
        bytes.withUnsafeBytes { verify(bref, $0) }
    }

    static func hex32(_ v: UInt32) -> String { hexDigits(UInt64(v), 8) }
    static func hex64(_ v: UInt64) -> String { hexDigits(v, 16) }
    static func hexBytes(_ b: [UInt8]) -> String { b.map { hexDigits(UInt64($0), 2) }.joined() }
}

func hexDigits(_ value: UInt64, _ width: Int) -> String {
    let s = String(value, radix: 16)
    return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
}
