// The in-memory description an image is built from: PFSes, and per PFS a tree of
// directories, files, symlinks, FIFOs and hard links, each with optional compression and
// check-method overrides that its children inherit (as DragonFly's setcomp/setcheck do).
//
//   let spec = ImageSpec(pfs: [PFSSpec(label: "DATA", entries: [
//       .file("hello", Array("hi\n".utf8)),
//       .directory("docs", [.file("big", size: 1 << 20, compression: .zlib(level: 9)) { offset, buffer in ... }]),
//       .symlink("link", target: "docs/big"),
//       .hardLink("hello2", to: "/hello"),
//   ])])
//   let image = try ImageBuilder.build(spec, at: "/tmp/x.img")

import Foundation
import HAMMER2Format

/// How file data blocks are compressed (an inode's comp_algo).
public enum BlockCompression: Sendable, Equatable, CustomStringConvertible {
    case none
    case autozero
    case lz4
    /// zlib at `level` (DragonFly uses 6...9; 0 means its default, 6).
    case zlib(level: Int)

    public var method: CompressionMethod {
        switch self {
        case .none: return .none
        case .autozero: return .autozero
        case .lz4: return .lz4
        case .zlib: return .zlib
        }
    }

    /// The inode's comp_algo byte: level << 4 | algorithm.
    public var compAlgo: UInt8 {
        if case let .zlib(level) = self { return InodeMeta.compAlgo(.zlib, level: level) }
        return InodeMeta.compAlgo(method)
    }

    public var description: String {
        if case let .zlib(level) = self { return "zlib:\(level)" }
        return method.description
    }
}

/// Ownership, permissions and times of one inode. Nil times mean the image's timestamp.
public struct NodeAttributes: Sendable {
    /// Permission bits including setuid/setgid/sticky; nil means the type's default
    /// (0755 directories, 0644 files and FIFOs, 0777 symlinks).
    public var mode: UInt32?
    public var uid: UInt32
    public var gid: UInt32
    /// Microseconds since the epoch (the on-disk unit).
    public var mtime: UInt64?
    public var ctime: UInt64?

    public init(mode: UInt32? = nil, uid: UInt32 = 0, gid: UInt32 = 0, mtime: UInt64? = nil, ctime: UInt64? = nil) {
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.ctime = ctime
    }
}

/// A file's contents: bytes in memory, or a generator for files too large to hold.
public enum FileContent {
    case bytes([UInt8])
    /// `fill(offset, buffer)` writes the file's bytes [offset, offset + buffer.count) into
    /// `buffer`. It is called once per 64 KiB logical block, in offset order.
    case generated(size: UInt64, fill: (UInt64, UnsafeMutableRawBufferPointer) -> Void)

    public var size: UInt64 {
        switch self {
        case let .bytes(bytes): return UInt64(bytes.count)
        case let .generated(size, _): return size
        }
    }

    /// Copies the bytes [offset, offset + buffer.count) into `buffer`.
    func fill(_ offset: UInt64, _ buffer: UnsafeMutableRawBufferPointer) {
        switch self {
        case let .bytes(bytes):
            bytes.withUnsafeBytes { src in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[Int(offset)..<(Int(offset) + buffer.count)]))
            }
        case let .generated(_, fill):
            fill(offset, buffer)
        }
    }
}

/// One name in a directory and what it names.
public struct EntrySpec {
    public var name: [UInt8]
    public var node: NodeSpec

    public init(name: [UInt8], node: NodeSpec) {
        self.name = name
        self.node = node
    }

    public static func file(_ name: String, _ bytes: [UInt8], compression: BlockCompression? = nil,
                            check: CheckMethod? = nil, attributes: NodeAttributes = NodeAttributes()) -> EntrySpec {
        EntrySpec(name: Array(name.utf8), node: .file(FileSpec(
            content: .bytes(bytes), attributes: attributes, compression: compression, check: check)))
    }

    public static func file(_ name: String, size: UInt64, compression: BlockCompression? = nil,
                            check: CheckMethod? = nil, attributes: NodeAttributes = NodeAttributes(),
                            fill: @escaping (UInt64, UnsafeMutableRawBufferPointer) -> Void) -> EntrySpec {
        EntrySpec(name: Array(name.utf8), node: .file(FileSpec(
            content: .generated(size: size, fill: fill), attributes: attributes, compression: compression, check: check)))
    }

    public static func directory(_ name: String, _ entries: [EntrySpec], compression: BlockCompression? = nil,
                                 check: CheckMethod? = nil, attributes: NodeAttributes = NodeAttributes()) -> EntrySpec {
        EntrySpec(name: Array(name.utf8), node: .directory(DirectorySpec(
            entries: entries, attributes: attributes, compression: compression, check: check)))
    }

    public static func symlink(_ name: String, target: String, compression: BlockCompression? = nil,
                               check: CheckMethod? = nil, attributes: NodeAttributes = NodeAttributes()) -> EntrySpec {
        EntrySpec(name: Array(name.utf8), node: .symlink(SymlinkSpec(
            target: Array(target.utf8), attributes: attributes, compression: compression, check: check)))
    }

    public static func fifo(_ name: String, attributes: NodeAttributes = NodeAttributes()) -> EntrySpec {
        EntrySpec(name: Array(name.utf8), node: .fifo(attributes))
    }

    /// A character (or block) device node with DragonFly's rmajor/rminor.
    public static func device(_ name: String, block: Bool = false, major: UInt32, minor: UInt32,
                              attributes: NodeAttributes = NodeAttributes()) -> EntrySpec {
        EntrySpec(name: Array(name.utf8), node: .special(block ? .blockDevice : .characterDevice, attributes, major: major, minor: minor))
    }

    public static func socket(_ name: String, attributes: NodeAttributes = NodeAttributes()) -> EntrySpec {
        EntrySpec(name: Array(name.utf8), node: .special(.socket, attributes, major: 0, minor: 0))
    }

    /// Another name for the non-directory at absolute path `path` of the same PFS.
    public static func hardLink(_ name: String, to path: String) -> EntrySpec {
        EntrySpec(name: Array(name.utf8), node: .hardLink(to: Array(path.utf8)))
    }
}

public indirect enum NodeSpec {
    case directory(DirectorySpec)
    case file(FileSpec)
    case symlink(SymlinkSpec)
    case fifo(NodeAttributes)
    /// A device node or socket: no data, only an inode.
    case special(ObjectType, NodeAttributes, major: UInt32, minor: UInt32)
    /// A hard link to the non-directory at this absolute path (bytes) in the same PFS.
    case hardLink(to: [UInt8])
}

public struct DirectorySpec {
    public var entries: [EntrySpec]
    public var attributes: NodeAttributes
    public var compression: BlockCompression?
    public var check: CheckMethod?

    public init(entries: [EntrySpec], attributes: NodeAttributes = NodeAttributes(),
                compression: BlockCompression? = nil, check: CheckMethod? = nil) {
        self.entries = entries
        self.attributes = attributes
        self.compression = compression
        self.check = check
    }
}

public struct FileSpec {
    public var content: FileContent
    public var attributes: NodeAttributes
    public var compression: BlockCompression?
    public var check: CheckMethod?

    public init(content: FileContent, attributes: NodeAttributes = NodeAttributes(),
                compression: BlockCompression? = nil, check: CheckMethod? = nil) {
        self.content = content
        self.attributes = attributes
        self.compression = compression
        self.check = check
    }
}

public struct SymlinkSpec {
    public var target: [UInt8]
    public var attributes: NodeAttributes
    public var compression: BlockCompression?
    public var check: CheckMethod?

    public init(target: [UInt8], attributes: NodeAttributes = NodeAttributes(),
                compression: BlockCompression? = nil, check: CheckMethod? = nil) {
        self.target = target
        self.attributes = attributes
        self.compression = compression
        self.check = check
    }
}

/// One PFS: its label, its default methods (the PFS root inode's comp_algo/check_algo,
/// inherited by everything below that does not override them) and its root directory.
public struct PFSSpec {
    public var label: String
    public var compression: BlockCompression
    public var check: CheckMethod
    public var root: DirectorySpec

    public init(label: String, compression: BlockCompression = .lz4, check: CheckMethod = .xxhash64,
                entries: [EntrySpec] = [], rootAttributes: NodeAttributes = NodeAttributes()) {
        self.label = label
        self.compression = compression
        self.check = check
        self.root = DirectorySpec(entries: entries, attributes: rootAttributes)
    }
}

/// The whole image.
public struct ImageSpec {
    /// Image (and volume) size in bytes: a multiple of 8 MiB (HAMMER2_VOLUME_ALIGN).
    public var size: UInt64
    /// The PFSes to create. LOCAL (empty) is always added unless one of these is LOCAL,
    /// as newfs_hammer2 does.
    public var pfs: [PFSSpec]
    /// "Now" for every time not given explicitly, microseconds since the epoch.
    public var timestamp: UInt64
    /// Seed for the random UUIDs (volume fsid, PFS clid/fsid); nil draws them from the
    /// system generator, a value makes the image reproducible byte for byte.
    public var seed: UInt64?

    public init(size: UInt64 = 1 << 30, pfs: [PFSSpec], timestamp: UInt64? = nil, seed: UInt64? = nil) {
        self.size = size
        self.pfs = pfs
        self.timestamp = timestamp ?? currentMicroseconds()
        self.seed = seed
    }
}

/// What was built, for tests to compare against.
public struct BuiltImage: Sendable {
    public struct PFS: Sendable {
        public var label: String
        /// Inode number of every path (bytes, absolute, "/" for the root).
        public var inodeNumbers: [[UInt8]: UInt64]
        /// The highest inode number used (1 when the PFS is empty).
        public var highestInodeNumber: UInt64
    }

    public var path: String
    public var size: UInt64
    public var pfs: [PFS]
    /// Bytes of media handed out by the allocator (data, inodes, indirect blocks, names).
    public var allocatedBytes: UInt64
    /// Whether the volume header carries a freemap.
    public var hasFreemap: Bool
}

func currentMicroseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec / 1000)
}
