// swift-tools-version:6.0
import PackageDescription

// The targets mirror the architecture (docs/architecture.md):
//   C libraries (CLZ4, CZlib, CXXHash, CFUSE3, CMalloc, CAtomicMemory, CXattr) -> HAMMER2Format (structures, check codes, no I/O)
//   and HAMMER2Trace (the trace segment: events and statistics in shared memory, docs/ktr.md)
//   -> HAMMER2Codecs (compression) -> HAMMER2Engine (devices, volumes, block reads, trees, namespace)
//   -> HAMMER2CopyOnWrite (freemap allocation, in-memory changes, flush, newfs, bulkfree)
//   -> HAMMER2FUSE (the FUSE adapter) and HAMMER2Tools (directive implementations) -> executables.
let package = Package(
    name: "hammer2-linux",
    products: [
        .executable(name: "hammer2", targets: ["hammer2"]),
        .executable(name: "mount_hammer2", targets: ["mount_hammer2"]),
        .executable(name: "mount_unionfs", targets: ["mount_unionfs"]),
        .executable(name: "fsck_hammer2", targets: ["fsck_hammer2"]),
        .executable(name: "newfs_hammer2", targets: ["newfs_hammer2"]),
        // For the libFuzzer build in Fuzz/ (a separate package, built with -sanitize=fuzzer).
        .library(name: "HAMMER2Fuzzing", targets: ["HAMMER2Fuzzing"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
    ],
    targets: [
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CXXHash", pkgConfig: "libxxhash", providers: [.apt(["libxxhash-dev"])]),
        .target(name: "CFUSE3", linkerSettings: [.linkedLibrary("fuse3"), .linkedLibrary("uring")]),
        .target(name: "CMalloc"),
        .target(name: "CAtomicMemory"),
        .target(name: "CXattr"),
        .target(
            name: "HAMMER2Format",
            dependencies: ["CXXHash", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .target(name: "HAMMER2Codecs", dependencies: ["CLZ4", "CZlib"]),
        .target(
            name: "HAMMER2Encryption",
            dependencies: ["HAMMER2Format", .product(name: "Crypto", package: "swift-crypto"),
                           .product(name: "_CryptoExtras", package: "swift-crypto")]
        ),
        .target(name: "HAMMER2Engine", dependencies: ["HAMMER2Format", "HAMMER2Codecs", "HAMMER2Encryption", "HAMMER2Trace"]),
        .target(name: "HAMMER2CopyOnWrite", dependencies: ["HAMMER2Engine", "HAMMER2Codecs", "HAMMER2Format", "HAMMER2Encryption", "HAMMER2Trace"]),
        .target(name: "FUSEServing", dependencies: ["CFUSE3"]),
        .target(name: "HAMMER2FUSE", dependencies: ["HAMMER2CopyOnWrite", "HAMMER2Trace", "CAtomicMemory", "CFUSE3", "FUSEServing", "CMalloc"]),
        .target(name: "HAMMER2Trace", dependencies: ["CAtomicMemory"]),
        // The release every tool reports (--version), HAMMER2's and the union's.
        .target(name: "HAMMER2Release"),
        .target(name: "HAMMER2Tools", dependencies: ["HAMMER2Release", "HAMMER2Engine", "HAMMER2CopyOnWrite", "HAMMER2Encryption", "HAMMER2Trace", "HAMMER2FUSE", "CXattr"]),
        .target(name: "HAMMER2Fuzzing", dependencies: ["HAMMER2Engine", "HAMMER2CopyOnWrite", "HAMMER2Codecs", "HAMMER2Format", "HAMMER2Trace"]),
        .executableTarget(name: "hammer2", dependencies: ["HAMMER2Tools"]),
        .executableTarget(name: "mount_hammer2", dependencies: ["HAMMER2Tools", "HAMMER2FUSE"]),
        // The union of directories (docs/unionfs.md): the FUSE request loop, none of HAMMER2.
        .target(name: "CLinuxCalls"),
        .target(name: "UnionFS", dependencies: ["CFUSE3", "FUSEServing", "CXattr", "CLinuxCalls"]),
        .executableTarget(name: "mount_unionfs", dependencies: ["UnionFS", "CFUSE3", "HAMMER2Release"]),
        .executableTarget(name: "fsck_hammer2", dependencies: ["HAMMER2Tools"]),
        .executableTarget(name: "newfs_hammer2", dependencies: ["HAMMER2Tools"]),
        .target(
            name: "HAMMER2TestSupport",
            dependencies: ["HAMMER2Engine", "HAMMER2CopyOnWrite", .product(name: "Crypto", package: "swift-crypto")],
            path: "Tests/HAMMER2TestSupport"
        ),
        .testTarget(name: "HAMMER2FormatTests", dependencies: ["HAMMER2Format", "HAMMER2Codecs", "HAMMER2TestSupport"]),
        .testTarget(name: "HAMMER2EngineTests", dependencies: ["HAMMER2Engine", "HAMMER2CopyOnWrite", "HAMMER2TestSupport"]),
        .testTarget(name: "HAMMER2CopyOnWriteTests", dependencies: ["HAMMER2CopyOnWrite", "HAMMER2Encryption", "HAMMER2TestSupport"]),
        .executableTarget(name: "crypto-bench", dependencies: ["HAMMER2Encryption", .product(name: "Crypto", package: "swift-crypto"), .product(name: "_CryptoExtras", package: "swift-crypto")], path: "Tests/crypto-bench"),
        .executableTarget(name: "trace-bench", dependencies: ["HAMMER2Trace"], path: "Tests/trace-bench"),
        .executableTarget(name: "fuzz-seeds", dependencies: ["HAMMER2Fuzzing"], path: "Tests/fuzz-seeds"),
        .testTarget(name: "HAMMER2EncryptionTests", dependencies: ["HAMMER2Encryption", "HAMMER2Format", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "HAMMER2TraceTests", dependencies: ["HAMMER2Trace"]),
        .testTarget(name: "HAMMER2FuzzingTests", dependencies: ["HAMMER2Fuzzing", "HAMMER2TestSupport"]),
        .testTarget(name: "HAMMER2ToolsTests", dependencies: ["HAMMER2Tools", "HAMMER2TestSupport"]),
        .testTarget(
            name: "HAMMER2MountTests",
            dependencies: ["HAMMER2Engine", "HAMMER2CopyOnWrite", "HAMMER2Encryption", "HAMMER2Trace", "HAMMER2TestSupport", "CXattr",
                           .product(name: "Crypto", package: "swift-crypto")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
