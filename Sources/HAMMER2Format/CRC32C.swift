// CRC-32C (Castagnoli), DragonFly's iscsi_crc32: initial value ~0, result inverted.
// Used for volume headers, iscsi32 check codes, freemap checks and the directory hash.
// No Debian library ships it, so it is a table-driven slicing-by-8 implementation.

public enum CRC32C {
    static let polynomial: UInt32 = 0x82F6_3B78  // reflected 0x1EDC6F41

    /// tables[k][b]: CRC of byte b followed by k zero bytes.
    static let tables: [[UInt32]] = {
        var tables = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for b in 0..<256 {
            var crc = UInt32(b)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ polynomial : crc >> 1 }
            tables[0][b] = crc
        }
        for b in 0..<256 {
            for k in 1..<8 {
                let prev = tables[k - 1][b]
                tables[k][b] = (prev >> 8) ^ tables[0][Int(prev & 0xFF)]
            }
        }
        return tables
    }()

    /// iscsi_crc32(buf, size)
    public static func checksum(_ data: UnsafeRawBufferPointer) -> UInt32 {
        ~update(0xFFFF_FFFF, data)
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }

    /// Runs the register over `data` (no pre- or post-inversion).
    static func update(_ start: UInt32, _ data: UnsafeRawBufferPointer) -> UInt32 {
        var crc = start
        var i = 0
        let n = data.count
        tables.withUnsafeBufferPointer { t in
            let t0 = t[0], t1 = t[1], t2 = t[2], t3 = t[3], t4 = t[4], t5 = t[5], t6 = t[6], t7 = t[7]
            while n - i >= 8 {
                let word = UInt64(littleEndian: data.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                let lo = UInt32(truncatingIfNeeded: word) ^ crc
                let hi = UInt32(truncatingIfNeeded: word >> 32)
                crc = t7[Int(lo & 0xFF)] ^ t6[Int((lo >> 8) & 0xFF)] ^ t5[Int((lo >> 16) & 0xFF)]
                    ^ t4[Int(lo >> 24)] ^ t3[Int(hi & 0xFF)] ^ t2[Int((hi >> 8) & 0xFF)]
                    ^ t1[Int((hi >> 16) & 0xFF)] ^ t0[Int(hi >> 24)]
                i += 8
            }
            while i < n {
                crc = (crc >> 8) ^ t0[Int((crc ^ UInt32(data[i])) & 0xFF)]
                i += 1
            }
        }
        return crc
    }
}
