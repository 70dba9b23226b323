// Compression decisions: the parallel encoder must store exactly what DragonFly's
// one-block-at-a-time write path with its comp_heuristic would.

@testable import HAMMER2CopyOnWrite
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class BlockEncodingTests: XCTestCase {
    func testParallelEncodingEqualsSequentialEncodingWithTheHeuristic() {
        var random = SplitMix64(seed: 51)
        let text = Array((0..<10_000).map { "line \($0) of text\n" }.joined().utf8)
        // Runs of incompressible blocks long enough to trip the heuristic, then text again.
        var blocks: [ArraySlice<UInt8>] = []
        for i in 0..<64 {
            switch i % 16 {
            case 0..<3: blocks.append(text[0..<65_536])
            case 3: blocks.append([UInt8](repeating: 0, count: 65_536)[...])
            case 15: blocks.append(text[0..<4096])
            default: blocks.append(random.bytes(65_536)[...])
            }
        }
        for (compAlgo, check) in [(InodeMeta.compAlgo(.lz4), CheckMethod.xxhash64),
                                  (InodeMeta.compAlgo(.zlib, level: 9), .sha192), (InodeMeta.compAlgo(.lz4), .none)] {
            var sequentialHeuristic = 0
            let sequential = blocks.map { block in
                block.withUnsafeBytes {
                    DataBlockEncoding.encode($0, compAlgo: compAlgo, check: check, heuristic: &sequentialHeuristic)
                }
            }
            var parallelHeuristic = 0
            let parallel = DataBlockEncoding.encodeAll(blocks, compAlgo: compAlgo, check: check, heuristic: &parallelHeuristic)
            XCTAssertEqual(parallelHeuristic, sequentialHeuristic)
            XCTAssertEqual(parallel.count, sequential.count)
            for (i, (a, b)) in zip(parallel, sequential).enumerated() {
                XCTAssertEqual(a?.methods, b?.methods, "block \(i)")
                XCTAssertTrue(a?.bytes == b?.bytes, "block \(i) bytes")
            }
            // The heuristic did stop trying: some random blocks were not even attempted.
            XCTAssertTrue(sequential.contains { $0?.methods == Blockref.methods(check: check, compression: .none) })
        }
    }

    /// hammer2_compress_and_write counts every block stored raw, skipped ones too: after a
    /// run of incompressible blocks it tries again every 8th block, so compressible data
    /// after it (a tar of text after a tar of binaries) is compressed again. Issue 19: ours
    /// stopped counting when it skipped, and never tried again for that file. Ours also
    /// probes a sample of each block DragonFly would skip, so it resumes at the first
    /// compressible block.
    func testCompressionResumesAfterARunOfIncompressibleBlocks() {
        var random = SplitMix64(seed: 19)
        let text = Array((0..<10_000).map { "line \($0) of text\n" }.joined().utf8)
        let blocks = (0..<20).map { _ in random.bytes(65_536)[...] } + (0..<40).map { _ in text[0..<65_536] }
        let raw = Blockref.methods(check: .xxhash64, compression: .none)
        for compAlgo in [InodeMeta.compAlgo(.lz4), InodeMeta.compAlgo(.zlib, level: 6)] {
            var heuristic = 0
            let stored = DataBlockEncoding.encodeAll(blocks, compAlgo: compAlgo, check: .xxhash64, heuristic: &heuristic)
            // Tried: 0-7 (fail), 8 and 16 (fail); 9-15 and 17-19 skipped after their sample
            // did not compress (DragonFly would try block 24 next); block 20, text, is
            // probed, tried, compresses, and resets the count.
            XCTAssertTrue(stored[..<20].allSatisfy { $0?.methods == raw })
            let firstCompressed = stored.firstIndex { $0?.methods != raw }
            XCTAssertEqual(firstCompressed, 20)
            XCTAssertTrue(stored[20...].allSatisfy { $0?.methods == Blockref.methods(check: .xxhash64, compression: CompressionMethod(rawValue: compAlgo & 0x0F)) })
            XCTAssertEqual(heuristic, 0)
        }
        // A long incompressible run: the count wraps from 128 back to 8 and never stops
        // trying (a sample of every block is probed besides), so text after 400 random
        // blocks compresses.
        var heuristic = 0
        let lz4 = InodeMeta.compAlgo(.lz4)
        for _ in 0..<400 {
            _ = random.bytes(4096).withUnsafeBytes {
                DataBlockEncoding.encode($0, compAlgo: lz4, check: .xxhash64, heuristic: &heuristic)
            }
            XCTAssertTrue((1...128).contains(heuristic))
        }
        let after = (0..<8).map { _ in
            text[0..<4096].withUnsafeBytes { DataBlockEncoding.encode($0, compAlgo: lz4, check: .xxhash64, heuristic: &heuristic) }
        }
        XCTAssertEqual(after.first??.methods, Blockref.methods(check: .xxhash64, compression: .lz4))
    }
}
