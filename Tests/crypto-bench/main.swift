// crypto-bench: single-core throughput of the AEADs considered for encrypted PFSes, on
// 64 KiB and 4 KiB blocks (docs/encryption.md records the figures; scripts/bench runs it).

import Crypto
import Foundation
import _CryptoExtras
import HAMMER2Encryption

func measure(_ name: String, blockBytes: Int, _ body: ([UInt8]) -> Void) {
    let block = [UInt8](repeating: 0x5A, count: blockBytes)
    let total = 512 << 20
    let start = DispatchTime.now()
    for _ in 0..<(total / blockBytes) { body(block) }
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
    print(String(format: "%-22@ %6d B blocks  %7.0f MB/s", name as NSString, blockBytes, Double(total) / seconds / 1e6))
}

let key = SymmetricKey(size: .bits256)
let xaes = XAES256GCM(key: key)
let nonce = XAES256GCM.randomNonce()
for size in [65_536, 4096] {
    measure("XAES-256-GCM seal", blockBytes: size) { _ = xaes.seal($0, nonce: nonce, authenticating: [UInt8]()) }
    measure("AES-256-GCM seal", blockBytes: size) { _ = try! AES.GCM.seal($0, using: key) }
    measure("ChaCha20-Poly1305 seal", blockBytes: size) { _ = try! ChaChaPoly.seal($0, using: key) }
    let (ciphertext, tag) = xaes.seal([UInt8](repeating: 0x5A, count: size), nonce: nonce, authenticating: [UInt8]())
    measure("XAES-256-GCM open", blockBytes: size) { _ in _ = xaes.open(ciphertext, tag: tag, nonce: nonce, authenticating: [UInt8]()) }
}

// scrypt, which wraps passphrase-protected keys: seconds per unlock at each cost (the
// default must cost an attacker's guess about half a second here, docs/encryption.md).
for log2N in 15...20 {
    let start = DispatchTime.now()
    _ = try KDF.Scrypt.deriveKey(from: Array("correct horse".utf8), salt: [UInt8](repeating: 1, count: 16), outputByteCount: 32,
                                 rounds: 1 << log2N, blockSize: 8, parallelism: 1, maxMemory: 1 << 33)
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
    print(String(format: "scrypt N=2^%d r=8 p=1  %4d MiB  %6.2f s", log2N, (128 * 8 << log2N) >> 20, seconds))
}
