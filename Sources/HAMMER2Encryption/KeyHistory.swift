// The older master keys of an encryption root after `hammer2 rekey` (issue 18, item 2),
// and the cursor of a re-encryption in progress. Kept as the content of the PFS's hidden
// inode 2 (below DragonFly's first inode number, 1024, and in no directory), which is
// sealed like any file under the current key: whoever unwraps the current key reads the
// older ones, so blocks written before a rekey stay readable; nobody else learns them.
//
//   0x00 magic "H2KH"   0x04 version (1)   0x05 count   0x06 reserved (2)
//   0x08 re-encryption cursor: next inode number (LE64; 0 = not started)
//   0x10 re-encryption cursor: next byte offset in that inode (LE64)
//   0x18 count x 48-byte entries: key id (LE32), reserved (4), the transaction that
//        retired it (LE64), master key (32)

import Foundation

public struct KeyHistory: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var keyID: UInt32
        /// The transaction of the rekey that made it an older key.
        public var retiredAt: UInt64
        public var master: [UInt8]

        public init(keyID: UInt32, retiredAt: UInt64, master: [UInt8]) {
            self.keyID = keyID; self.retiredAt = retiredAt; self.master = master
        }
    }

    /// The hidden inode that holds the history in every encrypted PFS that was rekeyed.
    public static let inodeNumber: UInt64 = 2
    public static let headerBytes = 0x18, entryBytes = 48, maximumEntries = 255
    static let magic: [UInt8] = Array("H2KH".utf8)

    /// Older keys, oldest first.
    public var entries: [Entry] = []
    /// Where a re-encryption goes on: the next inode number (0: none in progress) and byte
    /// offset in it.
    public var cursorInode: UInt64 = 0
    public var cursorOffset: UInt64 = 0

    public init(entries: [Entry] = [], cursorInode: UInt64 = 0, cursorOffset: UInt64 = 0) {
        self.entries = entries; self.cursorInode = cursorInode; self.cursorOffset = cursorOffset
    }

    public func encoded() -> [UInt8] {
        var out = Self.magic + [1, UInt8(entries.count), 0, 0]
        out += withUnsafeBytes(of: cursorInode.littleEndian) { Array($0) }
        out += withUnsafeBytes(of: cursorOffset.littleEndian) { Array($0) }
        for entry in entries {
            out += withUnsafeBytes(of: entry.keyID.littleEndian) { Array($0) } + [0, 0, 0, 0]
            out += withUnsafeBytes(of: entry.retiredAt.littleEndian) { Array($0) }
            out += entry.master
        }
        return out
    }

    public init(decoding bytes: [UInt8]) throws {
        guard bytes.count >= Self.headerBytes, Array(bytes[0..<4]) == Self.magic else {
            throw KeyError.badRecord("key history: no H2KH magic")
        }
        guard bytes[4] == 1 else { throw KeyError.badRecord("key history: version \(bytes[4]) unknown") }
        let count = Int(bytes[5])
        guard bytes.count >= Self.headerBytes + count * Self.entryBytes else {
            throw KeyError.badRecord("key history: \(count) entries in \(bytes.count) bytes")
        }
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << UInt64(8 * $1) } }
        cursorInode = u64(0x08)
        cursorOffset = u64(0x10)
        for i in 0..<count {
            let at = Self.headerBytes + i * Self.entryBytes
            let keyID = (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << UInt32(8 * $1) }
            entries.append(Entry(keyID: keyID, retiredAt: u64(at + 8), master: Array(bytes[(at + 16)..<(at + 48)])))
        }
    }

    /// The keys of every older generation, derived as the current one is.
    public func keys(domain: [UInt8], scheme: UInt8) -> [PFSKeys] {
        entries.map { PFSKeys(master: $0.master, domain: domain, scheme: scheme) }
    }
}
