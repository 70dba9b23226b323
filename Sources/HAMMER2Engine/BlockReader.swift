// Logical block I/O (the read half of hammer2_strategy.c and hammer2_chain_testcheck):
// fetch a block's physical bytes through the volume set, verify its check code, and for
// data blocks decompress it. Nothing leaves this file unverified: a block whose check code
// fails, whose methods are unknown, or that does not decompress is an error, never bytes.

import Foundation
import HAMMER2Codecs
import HAMMER2Encryption
import HAMMER2Format
import HAMMER2Trace
import Synchronization

public final class BlockReader: Sendable {
    public let volumes: VolumeSet
    public let cache: BlockCache
    /// Keys of the encrypted PFSes unlocked in this process.
    public let keyring = Keyring()
    /// Bad copies found, repaired, and blocks lost (every copy bad).
    public let copyEvents = CopyEvents()

    /// 64 KiB buffers that indirect blocks are read into before being decoded, kept for
    /// the next read instead of a new array per block (which the cache then kept too).
    private let scratchBuffers = Mutex<[UInt]>([])  // addresses: raw pointers are not Sendable
    private static let scratchBuffersKept = 16

    public init(volumes: VolumeSet, cacheBytes: Int = 64 << 20) {
        self.volumes = volumes
        self.cache = BlockCache(budgetBytes: cacheBytes)
    }

    deinit {
        scratchBuffers.withLock { buffers in buffers.forEach { UnsafeMutableRawPointer(bitPattern: $0)?.deallocate() } }
    }

    /// The verified physical bytes of the block `bref` points to; for a block of an
    /// encrypted PFS, its plaintext after its tag verified (an inode with its blockset).
    /// A copy that fails is skipped and repaired from the first good one (CopyRepair).
    public func physical(_ bref: Blockref) throws -> [UInt8] {
        guard bref.checkMethod == .xaes256gcm else { return try rawPhysical(bref) }
        let bytes = try checkedPhysicalSize(bref)
        guard bytes > 0 else { return [] }
        let keys = try sealingKeys(bref)
        var failures: [(copy: Int, error: any Error)] = []
        for copy in 0..<bref.copyCount {
            func open(_ raw: [UInt8]) throws -> [UInt8] {
                do {
                    return try keys.open(raw, bref: bref)
                } catch let error as SealError {
                    traceCheckFailure(bref, copy: copy, at: try? copyMediaOffset(bref, copy))
                    throw EngineError.authenticationFailed(bref: bref, reason: error.description)
                }
            }
            do {
                var raw = try readCopy(bref, copy, count: bytes, buffered: copy == 0 && bytes < HAMMER2.physicalBufferSize)
                let opened: [UInt8]
                do {
                    opened = try open(raw)
                } catch EngineError.authenticationFailed where copy == 0 && bytes < HAMMER2.physicalBufferSize {
                    // A 64 KiB media buffer may predate the block (see readVerified): read it alone.
                    cache.invalidateMedia(bref.mediaOffset, count: raw.count)
                    raw = try readCopy(bref, copy, count: bytes, buffered: false)
                    opened = try open(raw)
                }
                if !failures.isEmpty { raw.withUnsafeBytes { repair(bref, failures: failures, goodCopy: copy, stored: $0) } }
                return opened
            } catch where Self.isCopyFailure(error) {
                failures.append((copy, error))
            }
        }
        throw allCopiesFailed(bref, failures)
    }

    /// A sealed DATA block's plaintext, written into `buffer` (its physical size): what
    /// `physical` returns for it, without the intermediate arrays (large encrypted reads).
    public func openSealedData(_ bref: Blockref, into buffer: UnsafeMutableRawBufferPointer) throws {
        let bytes = try checkedPhysicalSize(bref)
        precondition(bref.type == .data && bref.checkMethod == .xaes256gcm && buffer.count == bytes, "a sealed data block")
        let keys = try sealingKeys(bref)
        var failures: [(copy: Int, error: any Error)] = []
        // The ciphertext is read between the room swift-crypto's combined layout wants for
        // the nonce and the tag, so it is not copied again before decryption.
        let prefix = XAES256GCM.combinedPrefixBytes
        var combined = Data(count: prefix + bytes + XAES256GCM.combinedSuffixBytes)
        for copy in 0..<bref.copyCount {
            do {
                try combined.withUnsafeMutableBytes { whole in
                    try readCopyVerified(bref, copy, into: UnsafeMutableRawBufferPointer(rebasing: whole[prefix..<(prefix + bytes)]),
                                         buffered: false)
                }
                do {
                    try keys.openData(combined: &combined, bref: bref, into: buffer)
                } catch let error as SealError {
                    traceCheckFailure(bref, copy: copy, at: try? copyMediaOffset(bref, copy))
                    throw EngineError.authenticationFailed(bref: bref, reason: error.description)
                }
                if !failures.isEmpty {
                    combined.withUnsafeBytes { whole in
                        repair(bref, failures: failures, goodCopy: copy, stored: UnsafeRawBufferPointer(rebasing: whole[prefix..<(prefix + bytes)]))
                    }
                }
                return
            } catch where Self.isCopyFailure(error) {
                failures.append((copy, error))
            }
        }
        throw allCopiesFailed(bref, failures)
    }

    /// The stored bytes of copy `copy` (sealed blocks are not opened here).
    private func readCopy(_ bref: Blockref, _ copy: Int, count: Int, buffered: Bool) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            try readCopyVerified(bref, copy, into: UnsafeMutableRawBufferPointer(buffer), buffered: buffered)
            initialized = count
        }
    }

    /// The key a sealed block names, or `.locked`.
    func sealingKeys(_ bref: Blockref) throws -> PFSKeys {
        let keyID = SealedCheck(bref.check).keyID
        guard let keys = keyring.keys(for: keyID) else { throw EngineError.locked(keyID: keyID, what: describe(bref)) }
        return keys
    }

    /// The block's bytes as stored, check code verified unless it is sealed (then only its
    /// size is checked: opening it verifies the tag).
    public func rawPhysical(_ bref: Blockref) throws -> [UInt8] {
        let bytes = try checkedPhysicalSize(bref)
        guard bytes > 0 else { return [] }
        return try [UInt8](unsafeUninitializedCapacity: bytes) { buffer, count in
            try readVerified(bref, into: UnsafeMutableRawBufferPointer(buffer), buffered: bytes < HAMMER2.physicalBufferSize)
            count = bytes
        }
    }

    /// Reads the block `bref` points to into `buffer` (exactly its physical size) and
    /// verifies it there, so uncompressed file data can land in a reply without a copy.
    /// On a check failure the buffer holds unverified bytes: callers must discard it.
    /// With extra copies, the first good copy is used and the bad ones before it repaired.
    ///
    /// `buffered` reads small blocks through whole 64 KiB media buffers, as hammer2_io does:
    /// inodes, names and small indirect blocks sit side by side, so one read serves many
    /// (listing a 2000-entry directory reads 2000 inodes). The buffers hold raw bytes; every
    /// block taken from one is still verified against its own blockref.
    public func readVerified(_ bref: Blockref, into buffer: UnsafeMutableRawBufferPointer, buffered: Bool = false) throws {
        precondition(buffer.count == bref.physicalBytes, "buffer must be the block's physical size")
        guard bref.extraCopyCount > 0 else { return try readCopyVerified(bref, 0, into: buffer, buffered: buffered) }
        var failures: [(copy: Int, error: any Error)] = []
        for copy in 0..<bref.copyCount {
            do {
                try readCopyVerified(bref, copy, into: buffer, buffered: buffered && copy == 0)
                if !failures.isEmpty { repair(bref, failures: failures, goodCopy: copy, stored: UnsafeRawBufferPointer(buffer)) }
                return
            } catch where Self.isCopyFailure(error) {
                failures.append((copy, error))
            }
        }
        throw allCopiesFailed(bref, failures)
    }

    /// Reads copy `copy` of `bref`'s block into `buffer` and verifies its check code.
    private func readCopyVerified(_ bref: Blockref, _ copy: Int, into buffer: UnsafeMutableRawBufferPointer, buffered: Bool) throws {
        let offset = try copyMediaOffset(bref, copy)
        if buffered, let media = mediaBuffer(at: offset & ~0xFFFF) {
            let start = Int(offset & 0xFFFF)
            media.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[start..<(start + buffer.count)])) }
            if case .mismatch = CheckCode.verify(bref, UnsafeRawBufferPointer(buffer)) {
                // The buffer may predate a block written since into its 64 KiB (a read-write
                // mount writes while others read): drop it and read the block itself.
                cache.invalidateMedia(offset, count: buffer.count)
                try volumes.read(into: buffer, at: offset)
            }
        } else {
            try volumes.read(into: buffer, at: offset)
        }
        Trace.withSession { $0.blockRead() }
        switch CheckCode.verify(bref, UnsafeRawBufferPointer(buffer)) {
        case .valid, .unchecked, .sealed:
            return
        case let .mismatch(expected, computed):
            traceCheckFailure(bref, copy: copy, at: offset)
            throw EngineError.checkFailed(bref: bref, expected: expected, computed: computed)
        case let .unknownMethod(code):
            throw EngineError.unknownMethod(bref: bref, what: "check method \(code)")
        }
    }

    /// A copy that failed its check code or tag: an event, and the counters of the PFS and
    /// of the volume holding it.
    func traceCheckFailure(_ bref: Blockref, copy: Int, at offset: UInt64?) {
        Trace.record(.checkFailed, offset ?? 0, UInt64(bref.physicalBytes), UInt64(bref.checkMethod.rawValue), UInt64(copy),
                     UInt64(bref.type.rawValue))
        let volume = offset.flatMap { volumes.volumeIndex(containing: $0) }
        Trace.withSession { $0.checkFailure(volume: volume) }
    }

    /// The raw 64 KiB media buffer at `base`, from the cache or the device; nil when it
    /// cannot be read whole (the end of a volume), so the caller reads just its block.
    private func mediaBuffer(at base: UInt64) -> [UInt8]? {
        if case let .physical(hit) = cache.lookup(BlockCacheKey(mediaBufferAt: base)) { return hit }
        let size = HAMMER2.physicalBufferSize
        let writes = cache.mediaWrites(at: base)
        guard let media = try? [UInt8](unsafeUninitializedCapacity: size, initializingWith: { buffer, count in
            try volumes.read(into: UnsafeMutableRawBufferPointer(buffer), at: base)
            count = size
        }) else { return nil }
        cache.insertMedia(at: base, media, ifWritesAre: writes)
        return media
    }


    /// The physical size of `bref`'s block after checking it is one HAMMER2 can have:
    /// 1 KiB to 64 KiB, inside one 64 KiB physical buffer (hammer2_io's unit); 0 for none.
    public func checkedPhysicalSize(_ bref: Blockref) throws -> Int {
        guard bref.physicalRadix == 0 || (HAMMER2.allocationMinRadix...HAMMER2.allocationMaxRadix).contains(bref.physicalRadix) else {
            throw EngineError.corrupt("size radix \(bref.physicalRadix) out of range in \(describe(bref))")
        }
        let bytes = bref.physicalBytes
        guard (bref.mediaOffset & 0xFFFF) + UInt64(bytes) <= 0x10000 else {
            throw EngineError.corrupt("block crosses a 64 KiB boundary in \(describe(bref))")
        }
        return bytes
    }

    /// Physical bytes through the cache (metadata: inodes, indirect blocks, names, freemap).
    public func cachedPhysical(_ bref: Blockref) throws -> [UInt8] {
        let key = BlockCacheKey(bref, .physical)
        if case let .physical(hit) = cache.lookup(key) { return hit }
        let data = try physical(bref)
        cache.insert(key, .physical(data))
        return data
    }

    /// The logical content of a DATA block: decompressed if it was compressed. The result
    /// may be shorter than the logical block; the remainder reads as zeros. Used for reads
    /// that cover part of a block (whole blocks are read in place, PFS.read), so the block
    /// is cached, as DragonFly's buffer cache keeps the 64 KiB buffer: the next 4 KiB read
    /// of it (random reads, read-modify-write) costs no media read, verification,
    /// decompression or decryption.
    public func logicalData(_ bref: Blockref) throws -> [UInt8] {
        let key = BlockCacheKey(bref, .logicalData)
        if case let .logicalData(hit) = cache.lookup(key) { return hit }
        let raw = try physical(bref)
        let data: [UInt8]
        do {
            switch bref.compression {
            case .none, .autozero:
                data = raw
            case .lz4:
                data = try raw.withUnsafeBytes { try Decompressor.lz4($0) }
            case .zlib:
                data = try raw.withUnsafeBytes { try Decompressor.zlib($0) }
            default:
                throw EngineError.unknownMethod(bref: bref, what: "compression method \(bref.compression.rawValue)")
            }
        } catch let error as DecompressionError {
            throw EngineError.decompressionFailed(bref: bref, reason: error.description)
        }
        cache.insert(key, .logicalData(data))
        return data
    }

    /// The blockrefs inside an INDIRECT or FREEMAP_NODE block.
    public func childBlockrefs(_ bref: Blockref) throws -> [Blockref] {
        let key = BlockCacheKey(bref, .blockrefs)
        if case let .blockrefs(hit) = cache.lookup(key) { return hit }
        // Indirect blocks of an encrypted PFS are stored in clear: without the key they can
        // still be walked (fsck, bulkfree), only not authenticated.
        let locked = bref.checkMethod == .xaes256gcm && keyring.keys(for: SealedCheck(bref.check).keyID) == nil
        let raw = try locked ? rawPhysical(bref) : physical(bref)
        guard raw.count >= HAMMER2.blockrefBytes, raw.count % HAMMER2.blockrefBytes == 0 else {
            throw EngineError.corrupt("indirect block of \(raw.count) bytes in \(describe(bref))")
        }
        let refs = try decodeBlockrefs(raw)
        cache.insert(key, .blockrefs(refs))
        return refs
    }

    /// Asks the devices to start reading the indirect blocks among `brefs` that are not
    /// in the cache, so that a walk over many of them (a large directory listed cold, fsck,
    /// bulkfree) does not wait for each read in turn.
    public func prefetch(_ brefs: ArraySlice<Blockref>) {
        for bref in brefs where bref.type == .indirect || bref.type == .freemapNode {
            if case .blockrefs = cache.lookup(BlockCacheKey(bref, .orderedBlockrefs)) { continue }
            if case .blockrefs = cache.lookup(BlockCacheKey(bref, .blockrefs)) { continue }  // a block a flush wrote
            guard let offset = try? copyMediaOffset(bref, 0) else { continue }
            volumes.willNeed(bref.physicalBytes, at: offset)
        }
    }

    /// Asks the devices to start reading the 64 KiB media buffers holding the inodes among
    /// `brefs` that are not decoded in the cache (READDIRPLUS of a cold directory loads
    /// hundreds of inodes: their reads then overlap instead of following each other).
    public func prefetchInodes(_ brefs: [Blockref]) {
        var bases = Set<UInt64>()
        for bref in brefs where bref.type == .inode {
            if case .inode = cache.lookup(BlockCacheKey(bref, .inode)) { continue }
            guard let offset = try? copyMediaOffset(bref, 0) else { continue }
            let base = offset & ~UInt64(HAMMER2.physicalBufferSize - 1)
            if bases.insert(base).inserted { volumes.willNeed(HAMMER2.physicalBufferSize, at: base) }
        }
    }

    /// The non-empty children of an INDIRECT or FREEMAP_NODE block in key order, checked
    /// against the tree invariants (BlockTree.orderedChildren) once and then cached, so
    /// lookups that pass through a hot indirect block do not sort and check it again.
    public func orderedChildBlockrefs(_ bref: Blockref) throws -> [Blockref] {
        let key = BlockCacheKey(bref, .orderedBlockrefs)
        if case let .blockrefs(hit) = cache.lookup(key) { return hit }
        let children: [Blockref]
        if case let .blockrefs(written) = cache.lookup(BlockCacheKey(bref, .blockrefs)) {
            children = written  // a block a flush wrote, decoded already
        } else if bref.checkMethod == .xaes256gcm {
            children = try childBlockrefs(bref)
        } else {
            children = try withVerifiedBlock(bref) { raw in
                guard raw.count >= HAMMER2.blockrefBytes, raw.count % HAMMER2.blockrefBytes == 0 else {
                    throw EngineError.corrupt("indirect block of \(raw.count) bytes in \(describe(bref))")
                }
                return try decodeNonEmptyBlockrefs(raw, count: raw.count / HAMMER2.blockrefBytes)
            }
        }
        let ordered = try BlockTree.orderedChildren(children, parentRange: bref.key...bref.keyEnd, insideIndirect: true)
        cache.insert(key, .blockrefs(ordered))
        return ordered
    }

    /// `body` over `bref`'s verified physical bytes in a buffer that lives only for the
    /// call: a cold walk decodes hundreds of 64 KiB indirect blocks, and only their decoded
    /// form is kept.
    private func withVerifiedBlock<T>(_ bref: Blockref, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        let bytes = try checkedPhysicalSize(bref)
        guard bytes > 0 else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        let memory = scratchBuffers.withLock { $0.popLast() }.flatMap { UnsafeMutableRawPointer(bitPattern: $0) }
            ?? UnsafeMutableRawPointer.allocate(byteCount: HAMMER2.physicalBufferSize, alignment: 64)
        defer {
            let kept = scratchBuffers.withLock { buffers in
                guard buffers.count < Self.scratchBuffersKept else { return false }
                buffers.append(UInt(bitPattern: memory))
                return true
            }
            if !kept { memory.deallocate() }
        }
        let buffer = UnsafeMutableRawBufferPointer(start: memory, count: bytes)
        try readVerified(bref, into: buffer, buffered: bytes < HAMMER2.physicalBufferSize)
        return try body(UnsafeRawBufferPointer(buffer))
    }

    /// A metadata block just written (by a flush), as reads will want it: its decoded form
    /// goes into the cache, so the first operation to need the new indirect block or inode
    /// does not read it back from a device that a stream's data may keep busy for tens of
    /// milliseconds. `plaintext`: the block before sealing.
    public func cacheWritten(_ bref: Blockref, plaintext: [UInt8]) {
        switch bref.type {
        case .indirect:
            guard plaintext.count % HAMMER2.blockrefBytes == 0, let refs = try? decodeBlockrefs(plaintext) else { return }
            cache.insert(BlockCacheKey(bref, .blockrefs), .blockrefs(refs))
        case .inode:
            guard plaintext.count == HAMMER2.inodeBytes, let inode = try? InodeData(decoding: plaintext) else { return }
            cache.insert(BlockCacheKey(bref, .inode), .inode(inode))
        default:
            return
        }
    }

    /// A data block just written, by its logical content (cut to its physical size), for
    /// a read-modify-write of it after the flush: no read back, check or decompression.
    public func cacheWrittenData(_ bref: Blockref, logical: [UInt8]) {
        guard bref.type == .data else { return }
        cache.insert(BlockCacheKey(bref, .logicalData), .logicalData(logical))
    }

    /// The inode an INODE blockref points to.
    public func inode(_ bref: Blockref) throws -> InodeData {
        guard bref.type == .inode else { throw EngineError.corrupt("expected an inode, found \(describe(bref))") }
        let key = BlockCacheKey(bref, .inode)
        if case let .inode(hit) = cache.lookup(key) { return hit }
        let raw = try physical(bref)
        guard raw.count == HAMMER2.inodeBytes else {
            throw EngineError.corrupt("inode block of \(raw.count) bytes in \(describe(bref))")
        }
        let inode = try InodeData(decoding: raw)
        cache.insert(key, .inode(inode))
        return inode
    }

    /// The blockset under an inode for walks that need no file contents (bulkfree, fsck
    /// without keys): a sealed inode's blockset is stored in clear. Nil for embedded data.
    public func blocksetForWalk(_ bref: Blockref) throws -> [Blockref]? {
        if bref.checkMethod == .xaes256gcm, keyring.keys(for: SealedCheck(bref.check).keyID) == nil {
            let raw = try rawPhysical(bref)
            guard raw.count == HAMMER2.inodeBytes else { throw EngineError.corrupt("inode block of \(raw.count) bytes in \(describe(bref))") }
            guard let clear = clearBlockset(ofSealedInode: raw, bref: bref) else { return nil }
            return try decodeBlockrefs(clear)
        }
        let inode = try inode(bref)
        return inode.meta.hasDirectData ? nil : inode.blockset
    }

    /// Reads the root volume's super-root inode.
    public func superRoot() throws -> (Blockref, InodeData) {
        let bref = volumes.header.superRootBlockset[0]
        guard bref.type == .inode else {
            throw EngineError.corrupt("volume header's super-root blockref is \(bref.type), not an inode")
        }
        return (bref, try inode(bref))
    }
}
