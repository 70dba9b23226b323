// fuzz-seeds OUTDIR [IMAGE...]: writes the seed corpus of every fuzz target into
// OUTDIR/<target>/, cut from the given images (the decompressed fixtures) and from an image
// this implementation generates. Files are named by a hash of their content, so running it
// again adds nothing twice. scripts/fuzz --seed uses it; the result is committed in Fuzz/corpus.

import Foundation
import HAMMER2Fuzzing

let arguments = CommandLine.arguments.dropFirst()
guard let output = arguments.first else {
    FileHandle.standardError.write(Data("usage: fuzz-seeds OUTDIR [IMAGE...]\n".utf8))
    exit(2)
}

func name(_ bytes: [UInt8]) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    return String(hash, radix: 16)
}

do {
    var images = [try FuzzSeeds.generatedImage()]
    for path in arguments.dropFirst() { images.append(try SparseImage.load(path: path)) }
    var written = 0
    for image in images {
        var seeds = FuzzSeeds.extract(from: image)
        if image.name == "generated" {
            seeds[.image] = FuzzSeeds.imageSeeds()
            seeds[.keyRecord] = try FuzzSeeds.keyRecordSeeds()
            seeds[.traceSegment] = try FuzzSeeds.traceSegmentSeeds()
            seeds[.keyHistory] = FuzzSeeds.keyHistorySeeds()
            seeds[.attributeTable] = FuzzSeeds.attributeTableSeeds()
            seeds[.intentLog] = FuzzSeeds.intentLogSeeds()
            seeds[.sendStream] = FuzzSeeds.sendStreamSeeds()
        }
        for (target, inputs) in seeds {
            let folder = URL(fileURLWithPath: output).appendingPathComponent(target.rawValue)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for input in inputs {
                let file = folder.appendingPathComponent(name(input))
                if !FileManager.default.fileExists(atPath: file.path) {
                    try Data(input).write(to: file)
                    written += 1
                }
            }
        }
    }
    print("fuzz-seeds: \(written) new inputs in \(output) from \(images.count) images")
} catch {
    FileHandle.standardError.write(Data("fuzz-seeds: \(error)\n".utf8))
    exit(1)
}
