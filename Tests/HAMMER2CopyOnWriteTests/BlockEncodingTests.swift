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
}
