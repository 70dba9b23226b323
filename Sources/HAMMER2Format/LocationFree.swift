// The location-free form of blockrefs (docs/encryption.md, "Sealing version 2"): what a
// sealed parent authenticates of its children, so that a copy of the tree written at other
// offsets, with other transaction ids (a raw receive, docs/send-receive.md) still verifies.
// Zeroed: mirror_tid (0x10), modify_tid (0x18), update_tid (0x28), data_off's offset bits
// (0x20; the size radix stays) and the extra copies' offsets after the check code (their
// radix stays too). Type, methods, copyid, keys, statistics and the check code stay: a child
// swapped, moved to another key or replaced by an older version still fails its parent.

extension Blockref {
    /// This blockref with its locations and transaction ids zeroed.
    public var locationFree: Blockref {
        var free = self
        free.mirrorTID = 0
        free.modifyTID = 0
        free.updateTID = 0
        let radixMask = ~HAMMER2.offsetMask
        free.dataOffset &= radixMask
        if extraCopyCount > 0, let start = Self.extraCopiesStart(checkMethod) {
            for i in 0..<extraCopyCount { free.check.setWord(start / 8 + i, check.word(start / 8 + i) & radixMask) }
        }
        return free
    }

    /// This blockref placed like `located` (the same block written elsewhere): its
    /// data_off, the extra copies' offsets and transaction ids.
    public func placed(like located: Blockref) -> Blockref {
        var result = self
        result.mirrorTID = located.mirrorTID
        result.modifyTID = located.modifyTID
        result.updateTID = located.updateTID
        result.dataOffset = located.dataOffset
        if extraCopyCount > 0, let start = Self.extraCopiesStart(checkMethod) {
            for i in 0..<extraCopyCount { result.check.setWord(start / 8 + i, located.check.word(start / 8 + i)) }
        }
        return result
    }
}

/// `bytes` (whole blockrefs: an indirect block, a blockset) in location-free form.
public func locationFreeBlockrefs(_ bytes: [UInt8]) -> [UInt8] {
    precondition(bytes.count % HAMMER2.blockrefBytes == 0, "whole blockrefs")
    var out = bytes
    out.withUnsafeMutableBytes { raw in
        for start in stride(from: 0, to: raw.count, by: HAMMER2.blockrefBytes) {
            let slot = UnsafeMutableRawBufferPointer(rebasing: raw[start..<(start + HAMMER2.blockrefBytes)])
            guard slot[0] != 0, let bref = try? Blockref(decoding: UnsafeRawBufferPointer(slot)) else { continue }
            bref.locationFree.encode(into: slot)
        }
    }
    return out
}
