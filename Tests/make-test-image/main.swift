// make-test-image: builds HAMMER2 images for benchmarks and manual testing with the test
// support ImageBuilder (no DragonFly tools needed).
//
//   make-test-image --out FILE [--size 4G] --bench-set [--file-size 512M] ...

import Foundation
import HAMMER2TestSupport

let usageText = """
usage: make-test-image --out FILE --bench-set [options]

Builds a sparse single-volume HAMMER2 image with PFS "DATA" (and the empty "LOCAL"):
  /raw.bin     incompressible (random) data, comp none, xxhash64
  /lz4.bin     compressible text, lz4, xxhash64
  /zlib.bin    compressible text, zlib level 6, xxhash64
  /dir2000/    --dir-files small files (200-2000 bytes each), lz4
Contents are generated from --seed, so a rerun gives identical files.

options:
  --out FILE          image to write (created or truncated)
  --size SIZE         image size, a multiple of 8M (default 4G)
  --bench-set         build the benchmark set above (currently the only set)
  --file-size SIZE    size of each of raw.bin, lz4.bin, zlib.bin (default 512M)
  --raw-size SIZE, --lz4-size SIZE, --zlib-size SIZE
                      override one file's size
  --dir-files N       files in /dir2000 (default 2000)
  --seed N            content and UUID seed (default 1)
  --write-tree DIR    also write the same files as plain files under DIR
                      (to put identical data on another filesystem)
  -h, --help          this text
SIZE takes a K, M, G or T suffix (powers of 1024).
"""

struct Options {
    var out: String?
    var size: UInt64 = 4 << 30
    var benchSet = false
    var rawSize: UInt64 = 512 << 20
    var lz4Size: UInt64 = 512 << 20
    var zlibSize: UInt64 = 512 << 20
    var dirFiles = 2000
    var seed: UInt64 = 1
    var writeTree: String?
}

enum UsageError: Error, CustomStringConvertible {
    case message(String)
    var description: String { if case let .message(m) = self { return m }; return "" }
}

func parseSize(_ text: String) throws -> UInt64 {
    let suffixes: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    var digits = text.uppercased()
    var scale: UInt64 = 1
    if let last = digits.last, let factor = suffixes[last] {
        scale = factor
        digits.removeLast()
    }
    guard let value = UInt64(digits), value.multipliedReportingOverflow(by: scale).overflow == false else {
        throw UsageError.message("bad size \"\(text)\"")
    }
    return value * scale
}

func parse(_ arguments: [String]) throws -> Options? {
    var options = Options()
    var i = 0
    func value(_ flag: String) throws -> String {
        i += 1
        guard i < arguments.count else { throw UsageError.message("\(flag) needs a value") }
        return arguments[i]
    }
    while i < arguments.count {
        let argument = arguments[i]
        switch argument {
        case "-h", "--help": return nil
        case "--out": options.out = try value(argument)
        case "--size": options.size = try parseSize(try value(argument))
        case "--bench-set": options.benchSet = true
        case "--file-size":
            let size = try parseSize(try value(argument))
            (options.rawSize, options.lz4Size, options.zlibSize) = (size, size, size)
        case "--raw-size": options.rawSize = try parseSize(try value(argument))
        case "--lz4-size": options.lz4Size = try parseSize(try value(argument))
        case "--zlib-size": options.zlibSize = try parseSize(try value(argument))
        case "--dir-files":
            guard let n = Int(try value(argument)), n >= 0, n <= 1_000_000 else {
                throw UsageError.message("--dir-files wants a number from 0 to 1000000")
            }
            options.dirFiles = n
        case "--seed":
            guard let n = UInt64(try value(argument)) else { throw UsageError.message("--seed wants a number") }
            options.seed = n
        case "--write-tree": options.writeTree = try value(argument)
        default: throw UsageError.message("unknown argument \"\(argument)\"")
        }
        i += 1
    }
    guard options.out != nil else { throw UsageError.message("--out FILE is required") }
    guard options.benchSet else { throw UsageError.message("nothing to build: give --bench-set") }
    return options
}

/// The benchmark files: name, size, compression and the generator of their bytes.
struct BenchFile {
    var name: String
    var size: UInt64
    var compression: BlockCompression
    var fill: (UInt64, UnsafeMutableRawBufferPointer) -> Void
}

func benchFiles(_ options: Options) -> [BenchFile] {
    let seed = options.seed
    return [
        BenchFile(name: "raw.bin", size: options.rawSize, compression: .none) { offset, buffer in
            ContentGenerator.random(seed: seed &+ 0x7261_7700, offset: offset, into: buffer)
        },
        BenchFile(name: "lz4.bin", size: options.lz4Size, compression: .lz4) { offset, buffer in
            ContentGenerator.text(seed: seed &+ 0x6C7A_3400, offset: offset, into: buffer)
        },
        BenchFile(name: "zlib.bin", size: options.zlibSize, compression: .zlib(level: 6)) { offset, buffer in
            ContentGenerator.text(seed: seed &+ 0x7A6C_6900, offset: offset, into: buffer)
        },
    ]
}

/// The small files of /dir2000: deterministic sizes and text.
func smallFiles(_ options: Options) -> [(name: String, bytes: [UInt8])] {
    (0..<options.dirFiles).map { i in
        let size = 200 + Int(ContentGenerator.mix(options.seed &+ UInt64(i)) % 1801)
        var bytes = [UInt8](repeating: 0, count: size)
        bytes.withUnsafeMutableBytes { ContentGenerator.text(seed: options.seed &+ 0x736D_0000 &+ UInt64(i), offset: 0, into: $0) }
        return (String(format: "file-%05d.txt", i), bytes)
    }
}

func buildImage(_ options: Options) throws {
    let files = benchFiles(options)
    let entries: [EntrySpec] = files.map { file in
        EntrySpec.file(file.name, size: file.size, compression: file.compression, check: .xxhash64, fill: file.fill)
    } + [.directory("dir2000", smallFiles(options).map { EntrySpec.file($0.name, $0.bytes) })]
    let spec = ImageSpec(size: options.size, pfs: [PFSSpec(label: "DATA", compression: .lz4, check: .xxhash64,
                                                            entries: entries)], seed: options.seed)
    let started = Date()
    let image = try ImageBuilder.build(spec, at: options.out!)
    let seconds = Date().timeIntervalSince(started)
    print(String(format: "%@: %llu bytes, %llu allocated, built in %.1f s", image.path, image.size,
                 image.allocatedBytes, seconds))
}

/// Writes the same files as plain files under `root` (for ext4/zfs comparisons).
func writeTree(_ options: Options, root: String) throws {
    let manager = FileManager.default
    try manager.createDirectory(atPath: root + "/dir2000", withIntermediateDirectories: true)
    var block = [UInt8](repeating: 0, count: 1 << 20)
    for file in benchFiles(options) {
        let path = root + "/" + file.name
        guard manager.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw UsageError.message("cannot write \(path)")
        }
        var offset: UInt64 = 0
        while offset < file.size {
            let count = Int(min(UInt64(block.count), file.size - offset))
            // The generator is called per 64 KiB block, as the image builder calls it.
            block.withUnsafeMutableBytes { raw in
                var done = 0
                while done < count {
                    let piece = min(65_536, count - done)
                    file.fill(offset + UInt64(done), UnsafeMutableRawBufferPointer(rebasing: raw[done..<(done + piece)]))
                    done += piece
                }
            }
            try handle.write(contentsOf: block[0..<count])
            offset += UInt64(count)
        }
        try handle.close()
    }
    for (name, bytes) in smallFiles(options) {
        guard manager.createFile(atPath: root + "/dir2000/" + name, contents: Data(bytes)) else {
            throw UsageError.message("cannot write \(root)/dir2000/\(name)")
        }
    }
}

do {
    guard let options = try parse(Array(CommandLine.arguments.dropFirst())) else {
        print(usageText)
        exit(0)
    }
    try buildImage(options)
    if let root = options.writeTree { try writeTree(options, root: root) }
} catch let error as UsageError {
    FileHandle.standardError.write(Data("make-test-image: \(error)\n\n\(usageText)\n".utf8))
    exit(2)
} catch {
    FileHandle.standardError.write(Data("make-test-image: \(error)\n".utf8))
    exit(1)
}
