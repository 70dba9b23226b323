// The statistics a parent blockref carries about its subtree (embed.stats data_count and
// inode_count, and leaf_count), summed from its children as hammer2_base_insert does.

/// embed.stats and leaf_count of a parent, accumulated from its children exactly as
/// hammer2_base_insert does.
public struct SubtreeStatistics {
    public var dataCount: UInt64 = 0
    public var inodeCount: UInt64 = 0
    public var leafCount = 0

    /// HAMMER2_BLOCKREF_LEAF_MAX: leaf_count saturates here.
    public static let leafCountMaximum = 65_535

    public init(children: [Blockref]) {
        for child in children { add(child) }
    }

    /// Sums wrap as hammer2_base_insert's uint64_t arithmetic does: a damaged child's
    /// statistics must not stop a flush.
    public mutating func add(_ child: Blockref) {
        dataCount &+= UInt64(child.physicalBytes)
        switch child.type {
        case .inode:
            inodeCount &+= 1 &+ child.statsInodeCount
            dataCount &+= child.statsDataCount
            leafCount += 1
        case .data, .dirent:
            leafCount += 1
        case .indirect:
            dataCount &+= child.statsDataCount
            inodeCount &+= child.statsInodeCount
            leafCount += Int(child.leafCount)
        default:
            break
        }
    }

    /// Stores the statistics into a parent blockref (INODE or INDIRECT).
    public func apply(to bref: inout Blockref) {
        bref.embed0 = dataCount
        bref.embed1 = inodeCount
        bref.leafCount = UInt16(min(leafCount, Self.leafCountMaximum))
    }
}
