// Deterministic file contents for tests and benchmarks. Every byte is a pure function of
// (seed, file offset), so a file can be generated block by block in any chunking and
// regenerated later to compare against what was read back.

public enum ContentGenerator {
    /// SplitMix64's finalizer: a well-mixed 64-bit value of `x`.
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Incompressible bytes: byte p is byte (p % 8) of mix(seed + p / 8).
    public static func random(seed: UInt64, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) {
        var position = offset
        var i = 0
        while i < buffer.count {
            let word = mix(seed &+ position / 8)
            if position % 8 == 0 && buffer.count - i >= 8 {
                buffer.storeBytes(of: word.littleEndian, toByteOffset: i, as: UInt64.self)
                i += 8
                position += 8
            } else {
                buffer[i] = UInt8(truncatingIfNeeded: word >> ((position % 8) * 8))
                i += 1
                position += 1
            }
        }
    }

    /// Compressible text in 64-byte records ("%08x" record number, then phrases from a small
    /// vocabulary, then a newline). LZ4 and zlib both shrink a 64 KiB block well below half.
    public static func text(seed: UInt64, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) {
        var record = [UInt8](repeating: 0, count: recordBytes)
        var i = 0
        var position = offset
        while i < buffer.count {
            let index = position / UInt64(recordBytes)
            let within = Int(position % UInt64(recordBytes))
            makeRecord(seed: seed, index: index, into: &record)
            let count = min(recordBytes - within, buffer.count - i)
            for k in 0..<count { buffer[i + k] = record[within + k] }
            i += count
            position += UInt64(count)
        }
    }

    static let recordBytes = 64
    static let vocabulary: [[UInt8]] = [
        "alpha bravo", "charlie delta", "echo foxtrot", "golf hotel india", "juliett kilo",
        "lima mike", "november oscar", "papa quebec romeo", "sierra tango", "uniform victor",
        "whiskey xray", "yankee zulu", "one two three", "four five six", "seven eight", "nine ten",
    ].map { Array($0.utf8) }
    static let hexDigits = Array("0123456789abcdef".utf8)

    static func makeRecord(seed: UInt64, index: UInt64, into record: inout [UInt8]) {
        for k in 0..<8 { record[k] = hexDigits[Int((index >> UInt64((7 - k) * 4)) & 0xF)] }
        record[8] = UInt8(ascii: " ")
        var bits = mix(seed &+ index)
        var at = 9
        while at < recordBytes - 1 {
            let word = vocabulary[Int(bits & 0xF)]
            bits = bits >> 4 | bits << 60
            for byte in word where at < recordBytes - 1 {
                record[at] = byte
                at += 1
            }
            if at < recordBytes - 1 {
                record[at] = UInt8(ascii: " ")
                at += 1
            }
        }
        record[recordBytes - 1] = UInt8(ascii: "\n")
    }
}
