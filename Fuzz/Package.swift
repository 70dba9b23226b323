// swift-tools-version:6.0
// The libFuzzer build: one executable whose target is chosen by HAMMER2_FUZZ_TARGET. It is
// a separate package because it must be compiled with -sanitize=fuzzer and
// -parse-as-library (libFuzzer supplies main); scripts/fuzz builds and runs it.
import PackageDescription

let package = Package(
    name: "hammer2-fuzz",
    dependencies: [.package(name: "hammer2-linux", path: "..")],
    targets: [
        .executableTarget(
            name: "hammer2-fuzz",
            dependencies: [.product(name: "HAMMER2Fuzzing", package: "hammer2-linux")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
