// mount_unionfs (issue 27, docs/unionfs.md): every operation over every layering (a name only
// below, only above, in both, whited out, under an opaque directory), the upper layer in
// overlayfs's format both ways with the kernel's overlayfs, copy-up keeping everything,
// a crash in the middle of a copy-up, bad layers refused before mounting, a HAMMER2
// snapshot as the lower layer, and the POSIX suite on a union.

import Foundation
import CXattr
import Glibc
import HAMMER2TestSupport
import XCTest

/// The POSIX suite again, on a union whose lower layer holds files of its own.
final class UnionPosixTests: PosixTests {
    override class var readsMoveAtime: Bool { true }

    override func newVolume() throws -> ScratchVolume {
        try ScratchVolume(unionWithLower: { lower in
            try FileManager.default.createDirectory(atPath: lower + "/from-below/deeper", withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: lower + "/from-below/deeper/file", contents: Data("below".utf8))
        })
    }

    override func testFilesSparseWritesAppendsOverwritesAndTruncation() throws { try super.testFilesSparseWritesAppendsOverwritesAndTruncation() }
    override func testDirectoriesAndTheirErrors() throws { try super.testDirectoriesAndTheirErrors() }
    override func testRenameInAllItsForms() throws { try super.testRenameInAllItsForms() }
    override func testHardLinksSymlinksAndSpecialFiles() throws { try super.testHardLinksSymlinksAndSpecialFiles() }
    override func testAttributesAndTimes() throws { try super.testAttributesAndTimes() }
    override func testUnlinkedOpenFileStaysReadableUntilClosed() throws { try super.testUnlinkedOpenFileStaysReadableUntilClosed() }
    override func testFsyncStatfsAndExclusiveCreate() throws { try super.testFsyncStatfsAndExclusiveCreate() }
}

final class UnionTests: XCTestCase {
    var work = ""

    override func setUpWithError() throws {
        work = FileManager.default.temporaryDirectory.appendingPathComponent("unionfs-\(UUID().uuidString.prefix(8))").path
        for layer in ["lower", "lower2", "upper", "work"] {
            try FileManager.default.createDirectory(atPath: "\(work)/\(layer)", withIntermediateDirectories: true)
        }
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: work) }

    var options: String { "lowerdir=\(work)/lower:\(work)/lower2,upperdir=\(work)/upper,workdir=\(work)/work" }

    func mountUnion(_ extra: String = "") throws -> MountedImage {
        try MountedImage(program: "mount_unionfs", arguments: ["-o", options + extra], what: options)
    }

    func write(_ path: String, _ text: String) {
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)), path)
    }

    func contents(_ path: String) -> String? {
        FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
    }

    func listing(_ path: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }

    func isWhiteout(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFCHR && st.st_rdev == 0
    }

    func isOpaque(_ path: String) -> Bool {
        var value = [UInt8](repeating: 0, count: 4)
        return lgetxattr(path, "trusted.overlay.opaque", &value, value.count) == 1 && value[0] == UInt8(ascii: "y")
    }

    /// The layering every operation is tried over.
    func populate() throws {
        let fm = FileManager.default
        write("\(work)/lower/below", "below")
        write("\(work)/lower/both", "lower version")
        write("\(work)/upper/both", "upper version")
        write("\(work)/lower/whited", "deleted before")
        XCTAssertEqual(mknod("\(work)/upper/whited", S_IFCHR, 0), 0)
        try fm.createDirectory(atPath: "\(work)/lower/merged/sub", withIntermediateDirectories: true)
        write("\(work)/lower/merged/a", "a below")
        try fm.createDirectory(atPath: "\(work)/lower2/merged", withIntermediateDirectories: true)
        write("\(work)/lower2/merged/b", "b in the second layer")
        write("\(work)/lower2/merged/a", "shadowed by the first layer")
        try fm.createDirectory(atPath: "\(work)/upper/merged", withIntermediateDirectories: true)
        write("\(work)/upper/merged/c", "c above")
        try fm.createDirectory(atPath: "\(work)/lower/opaque", withIntermediateDirectories: true)
        write("\(work)/lower/opaque/hidden", "hidden by the opaque directory")
        try fm.createDirectory(atPath: "\(work)/upper/opaque", withIntermediateDirectories: true)
        XCTAssertEqual(lsetxattr("\(work)/upper/opaque", "trusted.overlay.opaque", "y", 1, 0), 0)
        write("\(work)/upper/opaque/visible", "visible")
        write("\(work)/upper/above", "above")
    }

    func testEveryOperationOverEveryLayering() throws {
        try populate()
        let union = try mountUnion()
        defer { try? union.unmount() }
        let m = union.mountpoint.path
        // What shows.
        XCTAssertEqual(listing(m), ["above", "below", "both", "merged", "opaque"])
        XCTAssertEqual(contents("\(m)/both"), "upper version")
        XCTAssertEqual(listing("\(m)/merged"), ["a", "b", "c", "sub"])
        XCTAssertEqual(contents("\(m)/merged/a"), "a below", "the first lower layer over the second")
        XCTAssertEqual(listing("\(m)/opaque"), ["visible"])
        XCTAssertNil(contents("\(m)/whited"))
        XCTAssertEqual(access("\(m)/whited", F_OK), -1)

        // Write: copied up, the lower file untouched.
        let append = open("\(m)/below", O_WRONLY | O_APPEND)
        XCTAssertEqual(Glibc.write(append, "+", 1), 1)
        close(append)
        XCTAssertEqual(contents("\(m)/below"), "below+")
        XCTAssertEqual(contents("\(work)/lower/below"), "below")
        XCTAssertEqual(contents("\(work)/upper/below"), "below+")
        // chmod of a lower file in a merged directory: the parent is copied up too, and
        // keeps its inode number (tar checks the directories it extracts into).
        var directoryBefore = stat(), directoryAfter = stat()
        XCTAssertEqual(stat("\(m)/merged", &directoryBefore), 0)
        XCTAssertEqual(chmod("\(m)/merged/b", 0o600), 0)
        XCTAssertEqual(stat("\(m)/merged", &directoryAfter), 0)
        XCTAssertEqual(directoryAfter.st_ino, directoryBefore.st_ino)
        var st = stat()
        XCTAssertEqual(lstat("\(work)/upper/merged/b", &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        XCTAssertEqual(lstat("\(work)/lower2/merged/b", &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o644)

        // Delete: only above goes; in both or below leaves a whiteout.
        XCTAssertEqual(unlink("\(m)/above"), 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(work)/upper/above"))
        XCTAssertEqual(unlink("\(m)/both"), 0)
        XCTAssertTrue(isWhiteout("\(work)/upper/both"))
        XCTAssertEqual(unlink("\(m)/merged/a"), 0)
        XCTAssertTrue(isWhiteout("\(work)/upper/merged/a"))
        XCTAssertEqual(listing("\(m)/merged"), ["b", "c", "sub"], "a is gone from both lower layers")
        XCTAssertEqual(rmdir("\(m)/merged"), -1)
        XCTAssertEqual(errno, ENOTEMPTY)

        // Create over a whiteout: the whiteout goes; a directory there is opaque.
        write("\(m)/whited", "new")
        XCTAssertEqual(contents("\(m)/whited"), "new")
        XCTAssertEqual(mkdir("\(m)/both", 0o755), 0)
        XCTAssertTrue(isOpaque("\(work)/upper/both"))
        XCTAssertEqual(listing("\(m)/both"), [])

        // rmdir of a merged directory emptied in the union, then mkdir again: opaque.
        for name in ["b", "c"] { XCTAssertEqual(unlink("\(m)/merged/\(name)"), 0) }
        XCTAssertEqual(rmdir("\(m)/merged/sub"), 0)
        XCTAssertEqual(rmdir("\(m)/merged"), 0)
        XCTAssertTrue(isWhiteout("\(work)/upper/merged"))
        XCTAssertEqual(mkdir("\(m)/merged", 0o700), 0)
        XCTAssertEqual(listing("\(m)/merged"), [], "the lower layers' merged stays hidden")
        XCTAssertTrue(isOpaque("\(work)/upper/merged"))

        // Rename: a lower file moves (whiteout behind); a directory with lower parts is EXDEV.
        XCTAssertEqual(rename("\(m)/below", "\(m)/opaque/moved"), 0)
        XCTAssertTrue(isWhiteout("\(work)/upper/below"))
        XCTAssertEqual(contents("\(m)/opaque/moved"), "below+")
        try FileManager.default.createDirectory(atPath: "\(work)/lower/lowerdir", withIntermediateDirectories: true)
        XCTAssertEqual(rename("\(m)/opaque", "\(m)/renamed"), 0, "an upper-only directory moves")
        XCTAssertEqual(listing("\(m)/renamed"), ["moved", "visible"])
        XCTAssertEqual(rename("\(m)/lowerdir", "\(m)/elsewhere"), -1)
        XCTAssertEqual(errno, EXDEV)
        // mv falls back to copying: the result is right all the same.
        let mv = try Binaries.runProgram("/bin/mv", ["\(m)/lowerdir", "\(m)/elsewhere"])
        XCTAssertEqual(mv.status, 0, mv.stderr)
        XCTAssertEqual(listing(m), ["both", "elsewhere", "merged", "renamed", "whited"])

        // Hard links: a new one to a lower file; both names are the same upper file.
        write("\(work)/lower/linked", "linked")
        XCTAssertEqual(link("\(m)/linked", "\(m)/second"), 0)
        let append2 = open("\(m)/second", O_WRONLY | O_APPEND)
        XCTAssertEqual(Glibc.write(append2, "!", 1), 1)
        close(append2)
        XCTAssertEqual(contents("\(m)/linked"), "linked!")
        // Xattrs: copied up; the union's own are neither shown nor settable.
        XCTAssertEqual(setxattr("\(m)/whited", "user.note", "v", 1, 0), 0)
        var names = [CChar](repeating: 0, count: 1024)
        let length = listxattr("\(m)/merged", &names, names.count)
        XCTAssertFalse(String(decoding: names.prefix(max(0, length)).map { UInt8(bitPattern: $0) }, as: UTF8.self).contains("overlay"))
        XCTAssertEqual(setxattr("\(m)/whited", "trusted.overlay.opaque", "y", 1, 0), -1)
        XCTAssertEqual(contents("\(work)/lower/whited"), "deleted before", "lower layers never change")
        // A whiteout cannot be made through the union (it would delete, not create).
        XCTAssertEqual(mknod("\(m)/device", S_IFCHR | 0o600, 0), -1)
        XCTAssertEqual(errno, EPERM)
        XCTAssertEqual(mknod("\(m)/fifo", S_IFIFO | 0o600, 0), 0)
    }

    /// Every operation over every layering a name can have, one fresh name per pair, checked
    /// against what the name shows (a model), what the lower layer keeps (never changed) and
    /// what the upper layer must hold afterwards (the object, a whiteout, or nothing).
    func testOperationMatrix() throws {
        enum Layering: String, CaseIterable { case below, above, both, whitedOut, underOpaque }
        enum Operation: String, CaseIterable {
            case stat, read, append, chmod, chown, utimes, truncate, setxattr, unlink, rename, link, create
        }
        let fm = FileManager.default
        try fm.createDirectory(atPath: "\(work)/lower/opaque", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(work)/upper/opaque", withIntermediateDirectories: true)
        XCTAssertEqual(lsetxattr("\(work)/upper/opaque", "trusted.overlay.opaque", "y", 1, 0), 0)
        func relative(_ layering: Layering, _ operation: Operation) -> String {
            (layering == .underOpaque ? "opaque/" : "") + "\(operation.rawValue)-\(layering.rawValue)"
        }
        for layering in Layering.allCases {
            for operation in Operation.allCases {
                let name = relative(layering, operation)
                switch layering {
                case .below, .underOpaque: write("\(work)/lower/\(name)", "lower")
                case .above: write("\(work)/upper/\(name)", "upper")
                case .both: write("\(work)/lower/\(name)", "lower"); write("\(work)/upper/\(name)", "upper")
                case .whitedOut: write("\(work)/lower/\(name)", "lower"); XCTAssertEqual(mknod("\(work)/upper/\(name)", S_IFCHR, 0), 0)
                }
            }
        }
        let union = try mountUnion()
        defer { try? union.unmount() }
        let m = union.mountpoint.path
        for layering in Layering.allCases {
            for operation in Operation.allCases {
                let name = relative(layering, operation), path = "\(m)/\(name)", what = "\(operation) of a name \(layering)"
                let visible = [.below, .above, .both].contains(layering)
                let shown = layering == .below ? "lower" : "upper"
                let lowerHas = layering != .above
                var st = stat()
                var result: Int32
                var expectedAfter: String? = visible ? shown : nil  // what the name holds afterwards
                switch operation {
                case .stat: result = lstat(path, &st)
                case .read: result = contents(path).map { $0 == shown ? 0 : -2 } ?? -1
                case .append:
                    let fd = open(path, O_WRONLY | O_APPEND)
                    result = fd < 0 ? -1 : Int32(Glibc.write(fd, "+", 1) == 1 ? 0 : -2)
                    if fd >= 0 { close(fd) }
                    if visible { expectedAfter = shown + "+" }
                case .chmod: result = chmod(path, 0o600)
                case .chown: result = chown(path, 4321, 4321)
                case .utimes:
                    var times = [timespec(tv_sec: 123, tv_nsec: 0), timespec(tv_sec: 456, tv_nsec: 0)]
                    result = utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
                case .truncate: result = truncate(path, 2); if visible { expectedAfter = String(shown.prefix(2)) }
                case .setxattr: result = setxattr(path, "user.matrix", "1", 1, 0)
                case .unlink: result = unlink(path); expectedAfter = nil
                case .rename: result = rename(path, path + ".moved"); expectedAfter = nil
                case .link: result = link(path, path + ".linked")
                case .create:
                    let fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0o644)
                    result = fd < 0 ? -1 : Int32(Glibc.write(fd, "new", 3) == 3 ? 0 : -2)
                    if fd >= 0 { close(fd) }
                    expectedAfter = visible ? shown : "new"
                }
                let error = errno
                if operation == .create {
                    // O_EXCL: refused exactly when the name shows.
                    XCTAssertEqual(result, visible ? -1 : 0, what)
                    if visible { XCTAssertEqual(error, EEXIST, what) }
                } else {
                    XCTAssertEqual(result, visible ? 0 : -1, "\(what): \(String(cString: strerror(error)))")
                    if !visible { XCTAssertEqual(error, ENOENT, what) }
                }
                XCTAssertEqual(contents(path), expectedAfter, "\(what): what the name holds afterwards")
                if operation == .rename && visible { XCTAssertEqual(contents(path + ".moved"), shown, what) }
                if operation == .link && visible {
                    XCTAssertEqual(contents(path + ".linked"), shown, what)
                    var a = stat(), b = stat()
                    XCTAssertEqual(stat(path, &a), 0); XCTAssertEqual(stat(path + ".linked", &b), 0)
                    XCTAssertEqual(a.st_ino, b.st_ino, "\(what): one file")
                }
                // The lower layer never changes.
                if lowerHas { XCTAssertEqual(contents("\(work)/lower/\(name)"), "lower", "\(what): the lower file") }
                // The upper layer: a whiteout where a lower name went, the object where it
                // changed, nothing new where nothing changed.
                let upper = "\(work)/upper/\(name)"
                let changes = visible && ![.stat, .read, .create].contains(operation)
                if (operation == .unlink || operation == .rename) && visible {
                    if lowerHas { XCTAssertTrue(isWhiteout(upper), "\(what): a whiteout") } else { XCTAssertFalse(fm.fileExists(atPath: upper), what) }
                } else if changes || layering == .above || layering == .both {
                    XCTAssertEqual(contents(upper), expectedAfter, "\(what): the upper copy")
                } else if layering == .whitedOut && operation != .create {
                    XCTAssertTrue(isWhiteout(upper), "\(what): the whiteout stays")
                } else if layering == .below || layering == .underOpaque {
                    // Nothing copied up; a name hidden by the opaque directory is created above.
                    XCTAssertEqual(contents(upper), operation == .create && !visible ? "new" : nil, "\(what): the upper layer")
                }
            }
        }
    }

    /// Our upper layer under the kernel's overlayfs, and the kernel's under ours: the same
    /// tree either way.
    func testKernelOverlayfsReadsOurUpperLayerAndTheOtherWayRound() throws {
        try populate()
        let kernel = "\(work)/kernel"
        try FileManager.default.createDirectory(atPath: kernel, withIntermediateDirectories: true)
        let probe = try Binaries.runProgram("/bin/mount", ["-t", "overlay", "overlay", "-o", options, kernel])
        guard probe.status == 0 else { throw XCTSkip("kernel overlayfs is not available here: \(probe.stderr)") }
        let kernelView = try TreeSnapshot.take(kernel)
        XCTAssertEqual(try Binaries.runProgram("/bin/umount", [kernel]).status, 0)
        var union = try mountUnion()
        XCTAssertEqual(try TreeSnapshot.take(union.mountpoint.path), kernelView, "the same layers read alike")
        // Changes through ours, then read by the kernel's.
        let m = union.mountpoint.path
        XCTAssertEqual(unlink("\(m)/below"), 0)
        XCTAssertEqual(rmdir("\(m)/opaque") == 0 || errno == ENOTEMPTY, true)
        try FileManager.default.removeItem(atPath: "\(m)/merged")
        try FileManager.default.createDirectory(atPath: "\(m)/merged/new", withIntermediateDirectories: true)
        write("\(m)/both", "rewritten")
        let ours = try TreeSnapshot.take(m)
        try union.unmount()
        XCTAssertEqual(try Binaries.runProgram("/bin/mount", ["-t", "overlay", "overlay", "-o", options, kernel]).status, 0)
        XCTAssertEqual(try TreeSnapshot.take(kernel), ours, "the kernel's overlayfs sees what ours wrote")
        // Changes through the kernel's, then read by ours.
        try FileManager.default.removeItem(atPath: "\(kernel)/merged")
        XCTAssertEqual(mkdir("\(kernel)/merged", 0o755), 0)
        write("\(kernel)/merged/k", "from the kernel")
        XCTAssertEqual(unlink("\(kernel)/above"), 0)
        let theirs = try TreeSnapshot.take(kernel)
        XCTAssertEqual(try Binaries.runProgram("/bin/umount", [kernel]).status, 0)
        union = try mountUnion()
        defer { try? union.unmount() }
        XCTAssertEqual(try TreeSnapshot.take(union.mountpoint.path), theirs, "ours sees what the kernel's wrote")
    }

    func testCopyUpKeepsDataModeOwnerTimesXattrsAndLinks() throws {
        let lower = "\(work)/lower"
        let sparse = open("\(lower)/sparse", O_CREAT | O_WRONLY, 0o640)
        XCTAssertEqual(pwrite(sparse, "start", 5, 0), 5)
        XCTAssertEqual(pwrite(sparse, "end", 3, 200 << 20), 3)
        close(sparse)
        XCTAssertEqual(chown("\(lower)/sparse", 1234, 5678), 0)
        XCTAssertEqual(lsetxattr("\(lower)/sparse", "user.kept", "yes", 3, 0), 0)
        var times = [timespec(tv_sec: 1_000_000_000, tv_nsec: 123), timespec(tv_sec: 1_100_000_000, tv_nsec: 456)]
        XCTAssertEqual(utimensat(AT_FDCWD, "\(lower)/sparse", &times, 0), 0)
        XCTAssertEqual(link("\(lower)/sparse", "\(lower)/other-name"), 0)
        XCTAssertEqual(symlink("sparse", "\(lower)/symlink"), 0)
        let union = try mountUnion()
        defer { try? union.unmount() }
        let m = union.mountpoint.path
        XCTAssertEqual(setxattr("\(m)/sparse", "user.added", "1", 1, 0), 0)  // copies it up
        var st = stat()
        XCTAssertEqual(lstat("\(work)/upper/sparse", &st), 0)
        XCTAssertEqual(st.st_size, (200 << 20) + 3)
        XCTAssertLessThan(st.st_blocks, 1024, "holes stay holes")
        XCTAssertEqual(st.st_mode & 0o7777, 0o640)
        XCTAssertEqual(st.st_uid, 1234)
        XCTAssertEqual(st.st_gid, 5678)
        XCTAssertEqual(st.st_mtim.tv_sec, 1_100_000_000)
        XCTAssertEqual(st.st_mtim.tv_nsec, 456)
        var value = [UInt8](repeating: 0, count: 8)
        XCTAssertEqual(lgetxattr("\(work)/upper/sparse", "user.kept", &value, value.count), 3)
        // The other name of the hard link is that upper file too.
        var other = stat(), mine = stat()
        XCTAssertEqual(stat("\(m)/other-name", &other), 0)
        XCTAssertEqual(stat("\(m)/sparse", &mine), 0)
        XCTAssertEqual(other.st_ino, mine.st_ino)
        XCTAssertEqual(getxattr("\(m)/other-name", "user.added", &value, value.count), 1)
        // A symlink copied up stays a symlink to the same target.
        XCTAssertEqual(lchown("\(m)/symlink", 42, 42), 0)
        var target = [CChar](repeating: 0, count: 64)
        XCTAssertEqual(readlink("\(work)/upper/symlink", &target, target.count), 6)
    }

    /// The daemon killed in the middle of copying a large file up: the lower version shows
    /// after the next mount, or the whole upper one, never a part; the next mount clears the
    /// work directory. Kills at several moments; at least one must land inside the copy.
    func testACrashDuringCopyUpLeavesTheLowerOrTheWholeUpperVersion() throws {
        var random = SplitMix64(seed: 27)
        let big = random.bytes(128 << 20)
        FileManager.default.createFile(atPath: "\(work)/lower/big", contents: Data(big))
        var interrupted = 0
        for delay in [1_000, 3_000, 8_000, 15_000, 30_000, 60_000] as [UInt32] {
            try? FileManager.default.removeItem(atPath: "\(work)/upper/big")
            let union = try mountUnion()
            let m = union.mountpoint.path
            let opener = Thread {
                let fd = open(m + "/big", O_WRONLY | O_APPEND)  // the copy-up
                if fd >= 0 { close(fd) }
            }
            opener.start()
            usleep(delay)
            union.kill()
            while !union.isStopped { usleep(5_000) }
            _ = try? union.unmount()
            if !listing("\(work)/work/work").isEmpty { interrupted += 1 }
            var st = stat()
            if lstat("\(work)/upper/big", &st) == 0 {
                XCTAssertEqual(Int(st.st_size), big.count, "after a kill \(delay) µs in: an upper copy is whole or absent")
            }
            let again = try mountUnion()
            XCTAssertEqual(FileManager.default.contents(atPath: again.mountpoint.path + "/big"), Data(big), "after a kill \(delay) µs in")
            XCTAssertEqual(listing("\(work)/work/work"), [], "leftovers cleared at mount")
            try again.unmount()
        }
        XCTAssertGreaterThan(interrupted, 0, "no kill landed inside a copy-up")
    }

    /// userxattr (overlayfs's, the default unprivileged): the union's xattrs are user.overlay.*.
    func testUserXattrUnionsWriteUserOverlayNames() throws {
        try FileManager.default.createDirectory(atPath: "\(work)/lower/gone/sub", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(work)/upper/hidden", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(work)/lower/hidden", withIntermediateDirectories: true)
        write("\(work)/lower/hidden/below", "x")
        XCTAssertEqual(lsetxattr("\(work)/upper/hidden", "user.overlay.opaque", "y", 1, 0), 0)
        let union = try mountUnion(",userxattr")
        defer { try? union.unmount() }
        let m = union.mountpoint.path
        XCTAssertEqual(listing("\(m)/hidden"), [], "user.overlay.opaque is read")
        XCTAssertEqual(rmdir("\(m)/gone/sub"), 0)
        XCTAssertEqual(rmdir("\(m)/gone"), 0)
        XCTAssertEqual(mkdir("\(m)/gone", 0o755), 0)
        var value = [UInt8](repeating: 0, count: 4)
        XCTAssertEqual(lgetxattr("\(work)/upper/gone", "user.overlay.opaque", &value, value.count), 1)
        XCTAssertEqual(lgetxattr("\(work)/upper/gone", "trusted.overlay.opaque", &value, value.count), -1)
        XCTAssertEqual(setxattr("\(m)/gone", "user.overlay.opaque", "n", 1, 0), -1, "the union's own names stay its own")
        XCTAssertEqual(listing("\(m)/gone"), [])
    }

    /// FUSE passthrough (kernel 6.9+, root): reads and writes of open files go to the layer
    /// file in the kernel, none through the daemon; `nopassthrough` keeps them in it.
    func testReadsAndWritesPassThroughToTheLayerFiles() throws {
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: name.release) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        let version = release.split(separator: ".").prefix(2).compactMap { Int($0) }
        guard geteuid() == 0, version.count == 2, version[0] * 100 + version[1] >= 609 else {
            throw XCTSkip("FUSE passthrough needs Linux 6.9 and root (here \(release))")
        }
        var random = SplitMix64(seed: 28)
        let data = random.bytes(3 << 20)
        FileManager.default.createFile(atPath: "\(work)/lower/data", contents: Data(data))
        for (extra, passes) in [("", true), (",nopassthrough", false)] {
            try? FileManager.default.removeItem(atPath: "\(work)/upper/data")
            let union = try mountUnion(extra)
            let m = union.mountpoint.path
            XCTAssertEqual(FileManager.default.contents(atPath: m + "/data"), Data(data))
            let fd = open(m + "/data", O_WRONLY | O_APPEND)  // copied up, then written
            XCTAssertEqual(Glibc.write(fd, "tail", 4), 4)
            close(fd)
            XCTAssertEqual(FileManager.default.contents(atPath: m + "/data"), Data(data + Array("tail".utf8)))
            XCTAssertTrue(FileManager.default.createFile(atPath: m + "/created", contents: Data(data)))  // create, then write
            XCTAssertEqual(FileManager.default.contents(atPath: "\(work)/upper/created"), Data(data))
            var st = stat()
            XCTAssertEqual(stat(m + "/data", &st), 0)
            XCTAssertEqual(Int(st.st_size), data.count + 4)
            try union.unmount()
            XCTAssertEqual(FileManager.default.contents(atPath: "\(work)/upper/data"), Data(data + Array("tail".utf8)))
            XCTAssertEqual(FileManager.default.contents(atPath: "\(work)/lower/data"), Data(data))
            let said = try XCTUnwrap(union.log.split(separator: "\n").last { $0.contains("passed through") }.map(String.init), union.log)
            if passes {
                XCTAssertTrue(said.contains(" 4 opens passed through") && said.contains(" 0 reads and 0 writes served"), said)
            } else {
                XCTAssertTrue(said.contains(" 0 opens passed through") && !said.contains(" 0 reads and 0 writes served"), said)
            }
            try? FileManager.default.removeItem(atPath: "\(work)/upper/created")
        }
    }

    func testBadLayersAreRefusedBeforeMounting() throws {
        let mountpoint = "\(work)/mnt"
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        write("\(work)/a-file", "x")
        try FileManager.default.createDirectory(atPath: "\(work)/lower/inner", withIntermediateDirectories: true)
        let cases: [(String, Int32, String)] = [
            ("lowerdir=\(work)/missing", 1, "No such file"),
            ("lowerdir=\(work)/a-file", 1, "not a directory"),
            ("lowerdir=\(work)/lower:\(work)/lower", 1, "given twice"),
            ("lowerdir=\(work)/lower,upperdir=\(work)/lower/inner,workdir=\(work)/work", 1, "inside"),
            ("lowerdir=\(work)/lower2,upperdir=\(work)/upper,workdir=\(work)/upper/w", 1, "No such file"),
            ("lowerdir=\(work)/lower2,upperdir=\(work)/upper,workdir=\(work)/upper", 1, "given twice"),
            ("upperdir=\(work)/upper,workdir=\(work)/work", 2, "lowerdir= is required"),
            ("lowerdir=\(work)/lower,upperdir=\(work)/upper", 2, "go together"),
            ("lowerdir=\(work)/lower,timeout=soon", 2, "timeout="),
        ]
        try FileManager.default.createDirectory(atPath: "\(work)/upper/w", withIntermediateDirectories: true)
        try FileManager.default.removeItem(atPath: "\(work)/upper/w")
        for (option, status, message) in cases {
            let result = try Binaries.run("mount_unionfs", ["-o", option, mountpoint])
            XCTAssertEqual(result.status, status, "\(option): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains(message), "\(option): \(result.stderr)")
            XCTAssertFalse(MountedImage.isListedMount(mountpoint), "\(option) mounted")
        }
        XCTAssertEqual(try Binaries.run("mount_unionfs", ["-o", "lowerdir=\(work)/lower"]).status, 2, "no mount point")
        XCTAssertEqual(try Binaries.run("mount_unionfs", ["-x", mountpoint]).status, 2)
        XCTAssertEqual(try Binaries.run("mount_unionfs", ["--help"]).status, 0)
        // Read-only without an upper layer.
        let readOnly = try MountedImage(program: "mount_unionfs", arguments: ["-o", "lowerdir=\(work)/lower"], what: "lower")
        defer { try? readOnly.unmount() }
        XCTAssertEqual(mkdir(readOnly.mountpoint.path + "/new", 0o755), -1)
        XCTAssertEqual(errno, EROFS)
    }

    /// A HAMMER2 snapshot as the lower layer: a writable root over it in an instant.
    func testAHammer2SnapshotAsTheLowerLayer() throws {
        let volume = try ScratchVolume(size: "512m")
        write(volume.path("etc-hosts"), "127.0.0.1 localhost\n")
        try FileManager.default.createDirectory(atPath: volume.path("usr/bin"), withIntermediateDirectories: true)
        write(volume.path("usr/bin/tool"), "#!/bin/sh\n")
        XCTAssertEqual(try Binaries.run("hammer2", ["snapshot", volume.root, "base"]).status, 0)
        let snapshot = try MountedImage("\(volume.image.path)@base", options: ["-o", "ro"])
        defer { try? snapshot.unmount() }
        let layers = "lowerdir=\(snapshot.mountpoint.path),upperdir=\(work)/upper,workdir=\(work)/work"
        let root = try MountedImage(program: "mount_unionfs", arguments: ["-o", layers], what: layers)
        defer { try? root.unmount() }
        write(root.mountpoint.path + "/etc-hosts", "10.0.0.1 container\n")
        XCTAssertEqual(unlink(root.mountpoint.path + "/usr/bin/tool"), 0)
        XCTAssertEqual(contents(snapshot.mountpoint.path + "/etc-hosts"), "127.0.0.1 localhost\n", "the snapshot stays")
        XCTAssertNotNil(contents(snapshot.mountpoint.path + "/usr/bin/tool"))
        XCTAssertEqual(contents("\(work)/upper/etc-hosts"), "10.0.0.1 container\n")
        XCTAssertTrue(isWhiteout("\(work)/upper/usr/bin/tool"))
    }
}
