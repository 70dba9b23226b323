// hammer2_dirhash: the 64-bit key under which a directory entry (or a PFS under the
// super-root) is stored. Bit 63 is always set (visible entries); bits 32-62 are the sum of
// CRCs of the name's parts split at '.', '-', '_' and '~'; bits 16-31 come from the CRC of
// the whole name; bit 15 is set so readdir cookies 0x0000-0x7FFF stay free for '.' and '..'.
// Colliding names take the next free keys up to hash + HAMMER2_DIRHASH_LOMASK.

public enum DirectoryHash {
    public static func key(for name: [UInt8]) -> UInt64 {
        name.withUnsafeBytes { key(for: $0) }
    }

    public static func key(for name: String) -> UInt64 { key(for: Array(name.utf8)) }

    public static func key(for name: UnsafeRawBufferPointer) -> UInt64 {
        var crcx: UInt32 = 0
        var start = 0
        for i in 0..<name.count {
            let c = name[i]
            if c == UInt8(ascii: ".") || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: "~") {
                if i != start { crcx &+= CRC32C.checksum(name.slice(start, i - start)) }
                start = i + 1
            }
        }
        if name.count != start { crcx &+= CRC32C.checksum(name.slice(start, name.count - start)) }
        crcx |= 0x8000_0000
        var key = UInt64(crcx) << 32

        var whole = CRC32C.checksum(name)
        whole = whole ^ (whole << 16)
        key |= UInt64(whole & 0xFFFF_0000)
        key |= 0x8000
        return key
    }
}
