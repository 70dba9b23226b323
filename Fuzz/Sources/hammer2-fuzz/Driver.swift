// libFuzzer entry points. HAMMER2_FUZZ_TARGET names the target (see FuzzTarget);
// for `image`, HAMMER2_FUZZ_IMAGES lists the decompressed fixture images of
// ImageFuzzer.fixtureBases, colon-separated, in that order.

import Foundation
import HAMMER2Fuzzing

nonisolated(unsafe) var selectedTarget: FuzzTarget = .blockref
nonisolated(unsafe) var imageFuzzer: ImageFuzzer?

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    let environment = ProcessInfo.processInfo.environment
    guard let name = environment["HAMMER2_FUZZ_TARGET"], let target = FuzzTarget(rawValue: name) else {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
        FileHandle.standardError.write(Data("hammer2-fuzz: set HAMMER2_FUZZ_TARGET to one of: \(names)\n".utf8))
        exit(2)
    }
    selectedTarget = target
    if target == .image {
        let paths = (environment["HAMMER2_FUZZ_IMAGES"] ?? "").split(separator: ":").map(String.init)
        guard paths.count == ImageFuzzer.fixtureBases.count else {
            FileHandle.standardError.write(Data("hammer2-fuzz: HAMMER2_FUZZ_IMAGES needs the images of \(ImageFuzzer.fixtureBases)\n".utf8))
            exit(2)
        }
        do {
            let fuzzer = ImageFuzzer(bases: try ImageFuzzer.standardBases { paths[ImageFuzzer.fixtureBases.firstIndex(of: $0)!] })
            FileHandle.standardError.write(Data("hammer2-fuzz: image bases map \(fuzzer.mappedBlockCounts) blocks\n".utf8))
            imageFuzzer = fuzzer
        } catch {
            FileHandle.standardError.write(Data("hammer2-fuzz: cannot load base images: \(error)\n".utf8))
            exit(2)
        }
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    if let imageFuzzer { imageFuzzer.run(input) } else { selectedTarget.run(input) }
    return 0
}

// SwiftPM links an executable's entry point as `<module>_main`; libFuzzer's own main is
// then not used, so this one hands control to libFuzzer's driver.
@_silgen_name("LLVMFuzzerRunDriver")
func runDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

@_cdecl("hammer2_fuzz_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var count = argc
    var arguments = argv
    return runDriver(&count, &arguments) { data, size in testOneInput(data, size) }
}
