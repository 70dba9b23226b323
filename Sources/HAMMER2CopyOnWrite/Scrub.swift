// hammer2 scrub (docs/copies.md): reads every copy of every block reachable from the volume
// header — the PFS trees with their snapshots, and the freemap — checks each against the
// blockref's check code (or tag, with the key loaded), rewrites bad copies from a good one,
// and reports blocks no copy of which is good. Unlike a read, which stops at the first good
// copy, scrub finds bad copies that nothing has read yet.

import Glibc
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format

public struct ScrubResult: Sendable, Equatable {
    /// Blocks with media visited, and copies of them read.
    public var blocks = 0
    public var copiesChecked = 0
    /// Copies that failed their check or could not be read.
    public var badCopies = 0
    /// Bad copies rewritten from a good one.
    public var repaired = 0
    /// Blocks of which no copy is good (their files read as EIO).
    public var lostBlocks = 0
    /// Encrypted blocks checked for structure only: their PFS's key is not loaded.
    public var notVerified = 0
    /// One line per block lost or copy not repaired.
    public var problems: [String] = []

    public init() {}
}

extension MutableFilesystem {
    /// Scrubs the last flushed state (flushing first); `progress` is called every 4096
    /// blocks with the running result.
    public func scrub(progress: ((ScrubResult) -> Void)? = nil) throws -> ScrubResult {
        try withLock {
            if !readOnly {
                do { try flushLocked() } catch let error as EngineError where error.errno == ENOSPC {}
            }
            var result = ScrubResult()
            var visited = Set<UInt64>()  // shared subtrees (snapshots) are scrubbed once
            func walk(_ refs: [Blockref], owner: String) {
                for bref in refs where bref.type != .empty && bref.physicalRadix != 0 {
                    let owner = bref.type == .inode ? "inode \(bref.key)" : owner
                    guard scrubBlock(bref, owner: owner, &result) else { continue }
                    if result.blocks % 4096 == 0 { progress?(result) }
                    do {
                        switch bref.type {
                        case .inode:
                            guard visited.insert(bref.dataOffset).inserted else { continue }
                            if let children = try reader.blocksetForWalk(bref) { walk(children, owner: owner) }
                        case .indirect, .freemapNode:
                            guard visited.insert(bref.dataOffset).inserted else { continue }
                            walk(try reader.childBlockrefs(bref), owner: owner)
                        default:
                            break
                        }
                    } catch {
                        result.problems.append("\(owner): \(describe(bref)) cannot be walked: \(error)")
                    }
                }
            }
            walk(header.superRootBlockset, owner: "super-root")
            walk(header.freemapBlockset, owner: "freemap")
            progress?(result)
            if result.repaired > 0 && !readOnly { try volumes.synchronize() }
            return result
        }
    }

    /// Checks every copy of one block and repairs the bad ones; false when no copy is good
    /// (the walk does not descend into it).
    private func scrubBlock(_ bref: Blockref, owner: String, _ result: inout ScrubResult) -> Bool {
        result.blocks += 1
        guard let bytes = try? reader.checkedPhysicalSize(bref), bytes > 0 else {
            result.lostBlocks += 1
            result.problems.append("\(owner): \(describe(bref)) has an impossible size")
            return false
        }
        var good: [UInt8]?
        var goodCopy = 0
        var bad: [(copy: Int, offset: UInt64, reason: String)] = []
        var unverified = false
        for copy in 0..<bref.copyCount {
            result.copiesChecked += 1
            let offset = bref.copyDataOffset(copy) & HAMMER2.offsetMask
            guard (offset & 0xFFFF) + UInt64(bytes) <= 0x10000 else {
                bad.append((copy, offset, "crosses a 64 KiB boundary"))
                continue
            }
            var raw = [UInt8](repeating: 0, count: bytes)
            do {
                try raw.withUnsafeMutableBytes { try volumes.read(into: $0, at: offset) }
            } catch {
                bad.append((copy, offset, "\(error)"))
                continue
            }
            switch CheckCode.verify(bref, raw) {
            case .valid, .unchecked:
                if good == nil { (good, goodCopy) = (raw, copy) }
            case .sealed:
                guard let keys = reader.keyring.keys(for: SealedCheck(bref.check).keyID) else {
                    unverified = true
                    if good == nil { (good, goodCopy) = (raw, copy) }
                    continue
                }
                do {
                    _ = try keys.open(raw, bref: bref)
                    if good == nil { (good, goodCopy) = (raw, copy) }
                } catch {
                    bad.append((copy, offset, "authentication failed: \(error)"))
                }
            case let .mismatch(expected, computed):
                bad.append((copy, offset, "check code mismatch: stored \(expected), computed \(computed)"))
            case let .unknownMethod(code):
                bad.append((copy, offset, "unknown check method \(code)"))
            }
        }
        if unverified { result.notVerified += 1 }
        result.badCopies += bad.count
        guard let good else {
            result.lostBlocks += 1
            result.problems.append("\(owner): no good copy of \(describe(bref)): "
                                   + bad.map { "copy \($0.copy) at 0x\(String($0.offset, radix: 16)): \($0.reason)" }.joined(separator: "; "))
            return false
        }
        for (copy, offset, reason) in bad {
            do {
                guard !readOnly else { throw EngineError.posix(EROFS, "read-only") }
                guard reader.mayRepair(at: offset, bytes: bytes, type: bref.type) else {
                    throw EngineError.corrupt("the copy's location is not one a block can have")
                }
                try good.withUnsafeBytes { try volumes.write($0, at: offset) }
                reader.cache.invalidateMedia(offset, count: bytes)
                result.repaired += 1
                reader.copyEvents.log("scrub repaired copy \(copy) at 0x\(String(offset, radix: 16)) of \(describe(bref)) "
                                      + "(\(owner)) from copy \(goodCopy): \(reason)")
            } catch {
                result.problems.append("\(owner): copy \(copy) at 0x\(String(offset, radix: 16)) of \(describe(bref)) "
                                       + "is bad (\(reason)) and was not rewritten: \(error)")
            }
        }
        return true
    }
}
