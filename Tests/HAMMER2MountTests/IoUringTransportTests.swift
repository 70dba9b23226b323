// FUSE over io_uring (docs/architecture.md, "FUSE over io_uring"): the rings really serve
// when the kernel offers them, /dev/fuse serves when it does not or the mount says
// nouring, and the POSIX and Linux-call tests give the same results through the rings.
// The kernel's offer is the fuse module's enable_uring parameter, which these tests turn
// on (root) and restore.

import CXattr
import Foundation
import Glibc
import HAMMER2TestSupport
import XCTest

enum KernelRing {
    static let parameter = "/sys/module/fuse/parameters/enable_uring"

    static var settable: Bool { FileManager.default.isWritableFile(atPath: parameter) }

    /// Sets the parameter; returns the value it had.
    @discardableResult
    static func enable(_ on: Bool) throws -> Bool {
        let before = (try String(contentsOfFile: parameter, encoding: .utf8)).hasPrefix("Y")
        try Data((on ? "Y\n" : "N\n").utf8).write(to: URL(fileURLWithPath: parameter))
        return before
    }

    /// Turns the offer on for a test and puts the parameter back after it.
    final class Switch {
        private var before: Bool?

        func turnOn() throws {
            guard KernelRing.settable else { throw XCTSkip("no fuse enable_uring parameter (kernel before 6.14, or not root)") }
            before = try KernelRing.enable(true)
        }

        func restore() {
            if let before { try? KernelRing.enable(before) }
            before = nil
        }
    }

    /// The io_uring instances a process holds (each ring thread owns one).
    static func rings(of pid: pid_t) -> Int {
        let directory = "/proc/\(pid)/fd"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: directory + "/" + $0)) == "anon_inode:[io_uring]" }.count
    }
}


final class IoUringTransportTests: MountTestCase {
    private let ring = KernelRing.Switch()
    override func setUpWithError() throws { try ring.turnOn() }
    override func tearDown() { ring.restore(); super.tearDown() }

    /// Requests of every kind through the rings, checked against what was done; the tree
    /// is the same after fsck and a remount.
    func exercise(_ volume: ScratchVolume) throws {
        var random = SplitMix64(seed: 24)
        let big = random.bytes(3 << 20 + 12345)
        write(volume.path("big"), big)
        XCTAssertEqual(read(volume.path("big")), big, "3 MiB written and read back in 1 MiB requests")
        XCTAssertEqual(mkdir(volume.path("dir"), 0o755), 0)
        for i in 0..<3000 { write(volume.path("dir/entry-\(i)"), Array("file \(i)".utf8)) }
        let names = try FileManager.default.contentsOfDirectory(atPath: volume.path("dir"))
        XCTAssertEqual(names.count, 3000)
        XCTAssertEqual(read(volume.path("dir/entry-2999")), Array("file 2999".utf8))
        XCTAssertEqual(rename(volume.path("dir/entry-0"), volume.path("moved")), 0)
        XCTAssertEqual(link(volume.path("moved"), volume.path("linked")), 0)
        var st = stat()
        XCTAssertEqual(stat(volume.path("moved"), &st), 0)
        XCTAssertEqual(st.st_nlink, 2)
        XCTAssertEqual(unlink(volume.path("dir/entry-1")), 0)
        XCTAssertEqual(truncate(volume.path("big"), 1 << 20), 0)
        XCTAssertEqual(read(volume.path("big")), Array(big.prefix(1 << 20)))
        XCTAssertEqual(symlink("moved", volume.path("symlink")), 0)
        var target = [CChar](repeating: 0, count: 64)
        XCTAssertEqual(readlink(volume.path("symlink"), &target, 63), 5)
        XCTAssertEqual(setxattr(volume.path("moved"), "user.ring", "value", 5, 0), 0)
        var value = [UInt8](repeating: 0, count: 16)
        XCTAssertEqual(getxattr(volume.path("moved"), "user.ring", &value, 16), 5)
        // O_TMPFILE is answered by our loop, not libfuse: through a ring too.
        let fd = open(volume.root, GNUCalls.tmpfile | O_RDWR, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0, "O_TMPFILE: \(String(cString: strerror(errno)))")
        XCTAssertEqual(Glibc.write(fd, "tmp", 3), 3)
        XCTAssertEqual(linkat(AT_FDCWD, "/proc/self/fd/\(fd)", AT_FDCWD, volume.path("published"), AT_SYMLINK_FOLLOW), 0)
        close(fd)
        XCTAssertEqual(read(volume.path("published")), Array("tmp".utf8))
        expectError(ENOENT, unlink(volume.path("missing")), "unlink of a missing name")
        try volume.verifyAfterRemount()
    }

    func testRingsServeRequestsWhenTheKernelOffersThem() throws {
        let volume = try newVolume()
        XCTAssertEqual(access(volume.root, F_OK), 0)
        let cpus = Int(sysconf(Int32(_SC_NPROCESSORS_CONF)))
        let mount = try XCTUnwrap(volume.mount)
        XCTAssertEqual(KernelRing.rings(of: mount.daemonPID), 2 * cpus, "two ring threads per CPU (the default)")
        // The daemon says which transport serves, a second after the mount.
        for _ in 0..<30 where !mount.log.contains("requests through FUSE over io_uring") { usleep(100_000) }
        XCTAssertTrue(mount.log.contains("requests through FUSE over io_uring"), mount.log)
        try exercise(volume)
        // The remount (read-only) uses the rings too.
        XCTAssertEqual(KernelRing.rings(of: try XCTUnwrap(volume.mount).daemonPID), 2 * cpus)
    }

    /// The kernel holds every request once INIT says io_uring until the rings are ready: a
    /// ring that cannot start must make it serve through /dev/fuse, not hang the mount (without
    /// the fallback this test hangs in the mount, before any assertion).
    func testAFailedRingStartFallsBackToDevFuse() throws {
        setenv("HAMMER2_FAULT_URING_START", "1", 1)
        defer { unsetenv("HAMMER2_FAULT_URING_START") }
        let volume = try newVolume()
        let mount = try XCTUnwrap(volume.mount)
        let listing = Process()
        listing.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        listing.arguments = ["20", "ls", "-la", volume.root]
        listing.standardOutput = FileHandle.nullDevice
        try listing.run()
        listing.waitUntilExit()
        XCTAssertEqual(listing.terminationStatus, 0, "the mount answers (124: it hung)")
        XCTAssertEqual(KernelRing.rings(of: mount.daemonPID), 0)
        try exercise(volume)
    }

    func testDevFuseServesWhenTheKernelOffersNoRingOrTheMountSaysNouring() throws {
        try KernelRing.enable(false)
        let plain = try newVolume()
        XCTAssertEqual(access(plain.root, F_OK), 0)
        XCTAssertEqual(KernelRing.rings(of: try XCTUnwrap(plain.mount).daemonPID), 0)
        sleep(1)
        let plainLog = try XCTUnwrap(plain.mount).log
        XCTAssertFalse(plainLog.contains("io_uring"), plainLog)
        try exercise(plain)
        try KernelRing.enable(true)
        let refused = try ScratchVolume(options: ["nouring"])
        XCTAssertEqual(access(refused.root, F_OK), 0)
        XCTAssertEqual(KernelRing.rings(of: try XCTUnwrap(refused.mount).daemonPID), 0)
        let threePerCPU = try ScratchVolume(options: ["uring=3"])
        XCTAssertEqual(access(threePerCPU.root, F_OK), 0)
        XCTAssertEqual(KernelRing.rings(of: try XCTUnwrap(threePerCPU.mount).daemonPID), 3 * Int(sysconf(Int32(_SC_NPROCESSORS_CONF))))
    }
}

/// The POSIX tests with requests through the rings.
final class IoUringPosixTests: PosixTests {
    private let ring = KernelRing.Switch()
    override func setUpWithError() throws { try ring.turnOn() }
    override func tearDown() { ring.restore(); super.tearDown() }

    // XCTest on Linux discovers only the methods a class declares: each test again.
    override func testFilesSparseWritesAppendsOverwritesAndTruncation() throws { try super.testFilesSparseWritesAppendsOverwritesAndTruncation() }
    override func testDirectoriesAndTheirErrors() throws { try super.testDirectoriesAndTheirErrors() }
    override func testRenameInAllItsForms() throws { try super.testRenameInAllItsForms() }
    override func testHardLinksSymlinksAndSpecialFiles() throws { try super.testHardLinksSymlinksAndSpecialFiles() }
    override func testAttributesAndTimes() throws { try super.testAttributesAndTimes() }
    override func testUnlinkedOpenFileStaysReadableUntilClosed() throws { try super.testUnlinkedOpenFileStaysReadableUntilClosed() }
    override func testFsyncStatfsAndExclusiveCreate() throws { try super.testFsyncStatfsAndExclusiveCreate() }
}

/// The Linux-call tests (renameat2, fallocate, SEEK_DATA, O_TMPFILE, times) through the rings.
final class IoUringLinuxCallTests: LinuxCallTests {
    private let ring = KernelRing.Switch()
    override func setUpWithError() throws { try ring.turnOn() }
    override func tearDown() { ring.restore(); super.tearDown() }

    override func testEveryCallTakingANameReportsItsErrors() throws { try super.testEveryCallTakingANameReportsItsErrors() }
    override func testEntryChangesUpdateTheParentsTimes() throws { try super.testEntryChangesUpdateTheParentsTimes() }
    override func testTimesDoNotMoveAcrossARemount() throws { try super.testTimesDoNotMoveAcrossARemount() }
    override func testTimesBefore1970AndFarInTheFutureRoundTrip() throws { try super.testTimesBefore1970AndFarInTheFutureRoundTrip() }
    override func testSeekDataAndSeekHole() throws { try super.testSeekDataAndSeekHole() }
    override func testBlocksCountWrittenDataAfterFsync() throws { try super.testBlocksCountWrittenDataAfterFsync() }
    override func testFallocatePunchZeroRangeAndPreallocation() throws { try super.testFallocatePunchZeroRangeAndPreallocation() }
    override func testRenameExchangeNoReplaceAndWhiteout() throws { try super.testRenameExchangeNoReplaceAndWhiteout() }
    override func testTmpfileIsPublishedByLinkat() throws { try super.testTmpfileIsPublishedByLinkat() }
    override func testUnlinkedOrReplacedOpenFileHasNoLinks() throws { try super.testUnlinkedOrReplacedOpenFileHasNoLinks() }
    override func testRecursiveSetcompSkipsSymlinksAndSpecialFiles() throws { try super.testRecursiveSetcompSkipsSymlinksAndSpecialFiles() }
}
