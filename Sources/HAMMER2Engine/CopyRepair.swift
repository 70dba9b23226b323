// Self-healing reads (docs/copies.md): a block with extra copies is read from the first
// copy that passes its check code; the copies that failed before it are rewritten in place
// with the good bytes. That is the one in-place write HAMMER2 does here, and a safe one:
// the blockref already names exactly these bytes, so a crash mid-repair leaves either the
// old (still detected as bad) or the good bytes.

import Glibc
import Synchronization
import HAMMER2Format
import HAMMER2Trace

/// Counters of copy failures and repairs, and where their log lines go.
public final class CopyEvents: Sendable {
    /// Copies that failed their check (or could not be read) while another copy was good.
    public var badCopies: Int { counters.withLock { $0.bad } }
    /// Bad copies rewritten with good bytes.
    public var repaired: Int { counters.withLock { $0.repaired } }
    /// Bad copies that could not be rewritten (read-only or missing device, write error).
    public var notRepaired: Int { counters.withLock { $0.notRepaired } }
    /// Blocks with extra copies of which every copy failed (the read is EIO).
    public var lostBlocks: Int { counters.withLock { $0.lost } }

    private struct Counters { var bad = 0, repaired = 0, notRepaired = 0, lost = 0 }
    private let counters = Mutex(Counters())
    private let handler = Mutex<(@Sendable (String) -> Void)?>(nil)

    public init() {}

    /// Where repair and loss messages go (the mount's log); stderr when unset.
    public func setLogger(_ logger: (@Sendable (String) -> Void)?) { handler.withLock { $0 = logger } }

    public func log(_ message: String) {
        if let logger = handler.withLock({ $0 }) {
            logger(message)
        } else {
            let line = Array("hammer2: \(message)\n".utf8)
            _ = line.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
        }
    }

    func record(bad: Int = 0, repaired: Int = 0, notRepaired: Int = 0, lost: Int = 0) {
        counters.withLock {
            $0.bad += bad
            $0.repaired += repaired
            $0.notRepaired += notRepaired
            $0.lost += lost
        }
    }
}

extension BlockReader {
    /// Errors that belong to one copy (another copy may be good); the rest (an unknown
    /// method, a missing key) are the same for every copy.
    static func isCopyFailure(_ error: any Error) -> Bool {
        guard let error = error as? EngineError else { return true }
        switch error {
        case .unknownMethod, .locked, .invalidArgument, .pfsNotFound, .notFound: return false
        default: return true
        }
    }

    /// The media offset of copy `index`, checked to be a place such a block can be.
    func copyMediaOffset(_ bref: Blockref, _ index: Int) throws -> UInt64 {
        let offset = bref.copyDataOffset(index) & HAMMER2.offsetMask
        guard (offset & 0xFFFF) + UInt64(bref.physicalBytes) <= 0x10000 else {
            throw EngineError.corrupt("copy \(index) crosses a 64 KiB boundary in \(describe(bref))")
        }
        return offset
    }

    /// Whether a repair may write `bytes` at `offset` for a block of `type`: never below
    /// allocator_beg (volume headers, boot and aux areas, newfs's inodes), never into the
    /// reserved first 4 MiB of a GiB except by a freemap block (never into buffer 0, the
    /// volume header's), never past the volume set. A damaged or crafted blockref can then not make a repair
    /// overwrite a volume header.
    public func mayRepair(at offset: UInt64, bytes: Int, type: BlockrefType) -> Bool {
        let inReserved = offset % (1 << 30) < (4 << 20)
        let freemap = type == .freemapLeaf || type == .freemapNode
        guard offset + UInt64(bytes) <= volumes.totalSize else { return false }
        if freemap { return inReserved && offset % (4 << 20) >= 1 << 16 }
        return !inReserved && offset >= volumes.header.allocatorBegin
    }

    /// Rewrites the copies in `failures` with `stored`, the good copy's bytes as stored.
    func repair(_ bref: Blockref, failures: [(copy: Int, error: any Error)], goodCopy: Int, stored: UnsafeRawBufferPointer) {
        for (copy, error) in failures {
            guard let offset = try? copyMediaOffset(bref, copy),
                  mayRepair(at: offset, bytes: stored.count, type: bref.type) else {
                copyEvents.record(bad: 1, notRepaired: 1)
                copyEvents.log("copy \(copy) of \(describe(bref)) has an impossible location; served from copy \(goodCopy)")
                continue
            }
            do {
                try volumes.write(stored, at: offset)
                cache.invalidateMedia(offset, count: stored.count)
                copyEvents.record(bad: 1, repaired: 1)
                Trace.record(.copyRepaired, offset, UInt64(stored.count), UInt64(copy), UInt64(goodCopy))
                Trace.withSession { $0.checkFailure(volume: volumes.volumeIndex(containing: offset), repaired: true) }
                copyEvents.log("repaired copy \(copy) at 0x\(String(offset, radix: 16)) of \(describe(bref)) "
                               + "from copy \(goodCopy) (\(error))")
            } catch let writeError {
                copyEvents.record(bad: 1, notRepaired: 1)
                copyEvents.log("copy \(copy) at 0x\(String(offset, radix: 16)) of \(describe(bref)) is bad (\(error)); "
                               + "served from copy \(goodCopy), not rewritten: \(writeError)")
            }
        }
    }

    /// Every copy failed: logs each copy's failure once and returns the error to throw.
    func allCopiesFailed(_ bref: Blockref, _ failures: [(copy: Int, error: any Error)]) -> any Error {
        if failures.count > 1 {
            copyEvents.record(lost: 1)
            Trace.record(.copyLost, bref.dataOffset & HAMMER2.offsetMask, UInt64(bref.physicalBytes), UInt64(failures.count))
            Trace.withSession { $0.blockLost() }
            copyEvents.log("all \(failures.count) copies of \(describe(bref)) are bad: "
                           + failures.map { "copy \($0.copy): \($0.error)" }.joined(separator: "; "))
        }
        return failures[0].error
    }
}
