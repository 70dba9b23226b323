// The fast part of fuzzing, in the suite: every committed corpus input and every past
// finding replays through its target, then a short seeded mutation run per target (the
// long libFuzzer runs are scripts/fuzz). A trap anywhere fails the suite. The image
// fuzzer's own machinery (block map, resealing) is checked so it cannot silently fuzz
// nothing.

import Foundation
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest
@testable import HAMMER2Fuzzing

final class FuzzTargetTests: XCTestCase {
    static let fuzzFolder = Fixtures.packageRoot.appendingPathComponent("Fuzz")

    nonisolated(unsafe) static var cachedFuzzer: ImageFuzzer?

    static func imageFuzzer() throws -> ImageFuzzer {
        if let cachedFuzzer { return cachedFuzzer }
        let fuzzer = ImageFuzzer(bases: try ImageFuzzer.standardBases { try Fixtures.image($0).path })
        cachedFuzzer = fuzzer
        return fuzzer
    }

    /// Inputs committed under Fuzz/<folder>/<target>/.
    static func inputs(_ folder: String, _ target: FuzzTarget) throws -> [(String, [UInt8])] {
        let directory = fuzzFolder.appendingPathComponent(folder).appendingPathComponent(target.rawValue)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else { return [] }
        return try names.sorted().map { ($0, Array(try Data(contentsOf: directory.appendingPathComponent($0)))) }
    }

    func run(_ target: FuzzTarget, _ input: [UInt8]) throws {
        if target == .image { try Self.imageFuzzer().run(input) } else { target.run(input) }
    }

    func testCommittedCorpusAndFindingsReplay() throws {
        for target in FuzzTarget.allCases {
            let corpus = try Self.inputs("corpus", target)
            XCTAssertGreaterThanOrEqual(corpus.count, 5, "Fuzz/corpus/\(target.rawValue) is missing or nearly empty")
            for (_, input) in corpus + (try Self.inputs("regressions", target)) { try run(target, input) }
        }
    }

    /// A few thousand mutations of the corpus per decoder target and a few hundred images.
    func testShortMutationRuns() throws {
        let seed = UInt64(ProcessInfo.processInfo.environment["HAMMER2_FUZZ_SEED"] ?? "") ?? 20261129
        var random = SplitMix64(seed: seed)
        for target in FuzzTarget.allCases {
            let corpus = try Self.inputs("corpus", target).map(\.1)
            guard !corpus.isEmpty else { return XCTFail("no corpus for \(target.rawValue)") }
            let rounds = target == .image ? 150 : 2_000
            for _ in 0..<rounds {
                var input = corpus[Int(random.next() % UInt64(corpus.count))]
                Self.mutate(&input, &random)
                // Kept on disk so the input of a crash can be turned into a regression file.
                try Data(input).write(to: Self.currentInput(target))
                try run(target, input)
            }
        }
    }

    static func currentInput(_ target: FuzzTarget) -> URL {
        URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("hammer2-fuzz-current-\(target.rawValue)")
    }

    /// libFuzzer-like mutations: bit flips, byte sets, interesting values, insertions,
    /// erasures, truncation.
    static func mutate(_ input: inout [UInt8], _ random: inout SplitMix64) {
        for _ in 0..<(1 + random.next() % 4) {
            let position = input.isEmpty ? 0 : Int(random.next() % UInt64(input.count))
            switch random.next() % 7 {
            case 0 where !input.isEmpty: input[position] ^= 1 << UInt8(random.next() % 8)
            case 1 where !input.isEmpty: input[position] = random.byte()
            case 2 where input.count >= position + 8:
                let values: [UInt64] = [0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, .max, 1 << 63, 64, 1024, 65_536]
                let value = values[Int(random.next() % UInt64(values.count))]
                for i in 0..<8 { input[position + i] = UInt8(truncatingIfNeeded: value >> UInt64(8 * i)) }
            case 3: input.insert(contentsOf: random.bytes(Int(random.next() % 16) + 1), at: position)
            case 4 where !input.isEmpty: input.removeSubrange(position..<min(input.count, position + Int(random.next() % 16) + 1))
            case 5 where !input.isEmpty: input.removeLast(Int(random.next() % UInt64(input.count)))
            default: if !input.isEmpty { input[position] = input[position] &+ 1 }
            }
        }
    }

    /// The map reaches every kind of metadata the image fuzzer is meant to mutate.
    func testImageMapReachesEveryKindOfMetadata() throws {
        let fuzzer = try Self.imageFuzzer()
        let generated = fuzzer.bases[0].blocks
        func count(_ type: BlockrefType, _ compression: CompressionMethod? = nil) -> Int {
            generated.filter { $0.bref?.type == type && (compression == nil || $0.bref?.compression == compression) }.count
        }
        XCTAssertGreaterThan(count(.inode), 120, "inodes")
        XCTAssertGreaterThan(count(.indirect), 0, "indirect blocks")
        XCTAssertGreaterThan(count(.freemapNode) + count(.freemapLeaf), 0, "freemap blocks")
        XCTAssertGreaterThan(count(.data, .lz4), 0, "lz4 blocks")
        XCTAssertGreaterThan(count(.data, .zlib), 0, "zlib blocks")
        XCTAssertGreaterThan(count(.dirent), 0, "long-name dirent blocks")
        XCTAssertGreaterThan(generated.filter { $0.bref?.checkMethod == .xaes256gcm }.count, 40, "an encrypted PFS's sealed blocks")
        for (index, base) in fuzzer.bases.enumerated().dropFirst() {
            XCTAssertGreaterThan(base.blocks.count, 20, "fixture base \(index) maps too few blocks")
        }
    }

    /// A resealed patch passes every check code (so it reaches the decoders); the same
    /// patch without resealing is caught by the check of the block it hit.
    func testResealingMakesPatchesPassTheirChecks() throws {
        let fuzzer = try Self.imageFuzzer()
        let base = fuzzer.bases[0]
        let inode = try XCTUnwrap(base.blocks.lastIndex { $0.bref?.type == .inode && $0.bref?.checkMethod != .none })
        // Patch the inode's mtime (hammer2_inode_meta 0x10).
        let patch: [UInt8] = [UInt8(inode & 0xFF), UInt8(inode >> 8), 0x10, 0x00, 0x07] + [UInt8](repeating: 0xA5, count: 8)
        for reseal in [true, false] {
            let device = OverlayDevice(base: base.image)
            let touched = fuzzer.applyPatches(patch, blocks: base.blocks, device: device)
            XCTAssertEqual(touched, [inode])
            if reseal { fuzzer.reseal(inode, blocks: base.blocks, device: device) }
            let volumes = try VolumeSet(devices: [device])
            let (_, problems) = Verifier(volumes: volumes).verifyTree(.topology, header: volumes.header)
            let failures = problems.filter { $0.message.lowercased().contains("check") }
            if reseal {
                XCTAssertEqual(failures.map(\.description), [], "resealed image has check failures")
            } else {
                XCTAssertEqual(failures.count, 1, "\(problems.map(\.description))")
                XCTAssertEqual(failures.first?.bref?.mediaOffset, base.blocks[inode].offset)
            }
        }
    }
}
