// The keys of the encrypted PFSes a process has unlocked, by key id (every sealed block
// names its key id). Readers look keys up here; nothing else holds them. Removing a key
// wipes its master key (unmount).

import HAMMER2Encryption
import HAMMER2Format
import Synchronization
import HAMMER2Trace

public final class Keyring: Sendable {
    private let keys = Mutex<[UInt32: PFSKeys]>([:])

    public init() {}

    public func add(_ pfsKeys: PFSKeys) {
        keys.withLock { $0[pfsKeys.keyID] = pfsKeys }
        Trace.record(.keyUnlocked, UInt64(pfsKeys.keyID))  // its id only, never key material
    }

    public func keys(for keyID: UInt32) -> PFSKeys? { keys.withLock { $0[keyID] } }

    /// Every key held of encryption root `domain` (after a rekey: the current one and the
    /// older ones from its key history).
    public func keys(forDomain domain: [UInt8]) -> [PFSKeys] {
        keys.withLock { all in all.values.filter { $0.domain == domain }.sorted { $0.keyID < $1.keyID } }
    }

    /// Adds every key held here to `other` (the same keys, for another reader).
    public func copy(into other: Keyring) {
        for key in keys.withLock({ Array($0.values) }) { other.add(key) }
    }

    public func removeAll() {
        let count = keys.withLock { all in
            for key in all.values { key.wipe() }
            defer { all.removeAll() }
            return all.count
        }
        Trace.record(.keysWiped, UInt64(count))
    }

    /// The key id an encrypted PFS root names in decrypt_check, nil for a PFS in clear.
    public static func keyID(ofRoot meta: InodeMeta) -> UInt32? {
        guard meta.decryptCheck >> 32 == KeyRecord.decryptCheckMagic >> 32 else { return nil }
        return UInt32(truncatingIfNeeded: meta.decryptCheck)
    }
}
