// Erasing stale key material (issue 18, item 9). An encrypted PFS root carries its wrapped
// master key (KeyRecord, 0x180-0x1FF of the root inode, in clear), and copy-on-write leaves
// every earlier version of the root where it was: after key-change the old passphrase's
// wrapping, after pfs-delete the deleted PFS's, stay on the media until the space is reused.
// Whoever learns the old passphrase (or keeps it) could unwrap them.
//
// After such a change every header copy is pointed at the new state (so no older super-root
// reaches the old roots), the media are scanned for 1 KiB slots holding a root inode of the
// encryption root (the "H2EN" decrypt_check and an "H2EK" record of its domain), the live
// tree is walked, and every such slot no live block covers gets its record zeroed. The scan
// runs without the filesystem lock (a mount keeps serving); each slot is checked again
// under the lock before it is written. What zeroing cannot reach (an SSD's remapped
// sectors, backups, older copies of the image) is said in docs/encryption.md.

import Glibc
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format
import HAMMER2Trace

public struct KeyErasureResult: Sendable, Equatable {
    public var scannedBytes: UInt64 = 0
    /// Stale records zeroed.
    public var erased = 0
    /// Records of live roots left in place.
    public var live = 0
}

extension MutableFilesystem {
    static let recordSlotBytes = UInt64(HAMMER2.inodeBytes)

    /// Whether the 1 KiB slot at `slot` in `buffer` holds an encrypted PFS root of `domain`.
    static func holdsKeyRecord(_ buffer: UnsafeRawBufferPointer, at slot: Int, domain: [UInt8]) -> Bool {
        let record = slot + KeyRecord.offsetInInode
        guard buffer[record] == 0x48, buffer[record + 1] == 0x32, buffer[record + 2] == 0x45, buffer[record + 3] == 0x4B,  // "H2EK"
              buffer.loadUnaligned(fromByteOffset: slot + 0xE0, as: UInt64.self).littleEndian >> 32 == KeyRecord.decryptCheckMagic >> 32
        else { return false }
        for i in 0..<16 where buffer[record + 0x10 + i] != domain[i] { return false }
        return true
    }

    /// The erasure that ends a key operation whose own change (`done`) is already durable:
    /// its failure must not read as the operation's, so the error says both.
    func eraseStaleKeyRecords(domain: [UInt8], after done: String,
                              progress: ((UInt64, UInt64) -> Void)?) throws -> KeyErasureResult {
        do {
            return try eraseStaleKeyRecords(domain: domain, progress: progress)
        } catch {
            throw EngineError.posix((error as? EngineError)?.errno ?? EIO,
                                    "\(done), but erasing the stale copies of its old key records failed (\(error)); "
                                    + "they stay on the media until their space is reused")
        }
    }

    /// Zeroes every key record of encryption root `domain` that no live block holds.
    /// `progress(scanned, total)` is called as the scan goes.
    public func eraseStaleKeyRecords(domain: [UInt8], progress: ((UInt64, UInt64) -> Void)? = nil) throws -> KeyErasureResult {
        guard !readOnly else { throw EngineError.posix(EROFS, "filesystem is read-only") }
        guard domain.count == 16 else { throw EngineError.invalidArgument("a domain id is 16 bytes") }
        // No header copy may keep an older super-root, which reaches the older roots.
        try withLock { try flushLocked(allHeaderCopies: true) }
        var result = KeyErasureResult()
        var candidates: [UInt64] = []
        let total = volumes.volumes.reduce(UInt64(0)) { $0 + $1.size }
        let chunk = 4 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        for volume in volumes.volumes where !volumes.missingVolumes.contains(volume.id) {
            var offset: UInt64 = 0
            while offset < volume.size {
                let count = Int(min(UInt64(chunk), volume.size - offset)) & ~(Int(Self.recordSlotBytes) - 1)
                guard count > 0 else { break }
                let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                try volume.device.read(into: part, at: offset)
                for slot in stride(from: 0, to: count, by: Int(Self.recordSlotBytes))
                where Self.holdsKeyRecord(UnsafeRawBufferPointer(part), at: slot, domain: domain) {
                    candidates.append(volume.logicalOffset + offset + UInt64(slot))
                }
                offset += UInt64(count)
                result.scannedBytes += UInt64(count)
                progress?(result.scannedBytes, total)
            }
        }
        guard !candidates.isEmpty else { return result }
        try withLock {
            // Slots some live block covers stay (the live roots, and any file's data that
            // happens to hold such bytes: a copy of an image stored in the filesystem).
            var live = Set<UInt64>()
            let sorted = candidates.sorted()
            try forEachReferencedBlock { _, offset, bytes in
                var low = 0, high = sorted.count
                while low < high {
                    let middle = (low + high) / 2
                    if sorted[middle] + Self.recordSlotBytes <= offset { low = middle + 1 } else { high = middle }
                }
                while low < sorted.count && sorted[low] < offset + bytes {
                    live.insert(sorted[low])
                    low += 1
                }
            }
            result.live = live.count
            let zeros = [UInt8](repeating: 0, count: KeyRecord.bytes)
            var slot = [UInt8](repeating: 0, count: Int(Self.recordSlotBytes))
            for offset in sorted where !live.contains(offset) {
                try slot.withUnsafeMutableBytes { try volumes.read(into: $0, at: offset) }
                guard slot.withUnsafeBytes({ Self.holdsKeyRecord($0, at: 0, domain: domain) }) else { continue }
                try zeros.withUnsafeBytes { try volumes.write($0, at: offset + UInt64(KeyRecord.offsetInInode)) }
                result.erased += 1
            }
            if result.erased > 0 {
                try volumes.synchronize()
                reader.cache.removeAll()
            }
            Trace.record(.keysErased, UInt64(result.erased), UInt64(result.live))
        }
        return result
    }

    /// The domains of every encryption root a live PFS root (or one waiting to be flushed)
    /// still carries.
    func liveKeyDomains() throws -> Set<[UInt8]> {
        var domains = Set<[UInt8]>()
        for pending in pendingRoots {
            if let bytes = pending.inode.keyRecord, let record = try? KeyRecord(decoding: bytes) { domains.insert(record.domain) }
        }
        for (_, bref) in try pfsRootBrefs() where !pendingRootRemovals.contains(bref.key) {
            if let bytes = try reader.inode(bref).keyRecord, let record = try? KeyRecord(decoding: bytes) { domains.insert(record.domain) }
        }
        return domains
    }
}
