// A bounded cache of verified, decoded blocks, shared by all reader threads.
//
// Two generations instead of a full LRU: lookups hit `young` or `old` (and move an old hit
// to young); when young holds half the budget, old is dropped and young becomes old. That
// keeps recently used blocks, evicts in O(1), and bounds memory to the budget.

import HAMMER2Format
import Synchronization

struct BlockCacheKey: Hashable, Sendable {
    var dataOffset: UInt64
    var checkWord: UInt64
    var methods: UInt8
    var type: UInt8

    init(_ bref: Blockref) {
        dataOffset = bref.dataOffset
        checkWord = bref.check.words.0
        methods = bref.methods
        type = bref.type.rawValue
    }
}

public final class BlockCache: Sendable {
    struct Generations {
        var young: [BlockCacheKey: [UInt8]] = [:]
        var youngBytes = 0
        var old: [BlockCacheKey: [UInt8]] = [:]
        var hits = 0
        var misses = 0
    }

    public let budgetBytes: Int
    private let state = Mutex(Generations())

    public init(budgetBytes: Int) {
        self.budgetBytes = budgetBytes
    }

    func lookup(_ key: BlockCacheKey) -> [UInt8]? {
        state.withLock { s in
            if let bytes = s.young[key] { s.hits += 1; return bytes }
            if let bytes = s.old.removeValue(forKey: key) {
                s.hits += 1
                insertLocked(&s, key, bytes)
                return bytes
            }
            s.misses += 1
            return nil
        }
    }

    func insert(_ key: BlockCacheKey, _ bytes: [UInt8]) {
        guard bytes.count <= budgetBytes / 2 else { return }
        state.withLock { insertLocked(&$0, key, bytes) }
    }

    private func insertLocked(_ s: inout Generations, _ key: BlockCacheKey, _ bytes: [UInt8]) {
        if s.young.updateValue(bytes, forKey: key) == nil { s.youngBytes += bytes.count }
        if s.youngBytes >= budgetBytes / 2 {
            s.old = s.young
            s.young = [:]
            s.youngBytes = 0
        }
    }

    public var statistics: (hits: Int, misses: Int) { state.withLock { ($0.hits, $0.misses) } }
}
