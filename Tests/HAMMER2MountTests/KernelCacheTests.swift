// What the kernel answers by itself (issue 24), and that its answers stay right.
// Negative entries: the kernel remembers that a name is missing, so repeated lookups of it
// never reach the daemon, and a name made through the mount in any way (create, mkdir,
// symlink, link, rename, O_TMPFILE + linkat) is seen at once; a name removed is missing at
// once, and stays so across a remount. Directories: the kernel opens them itself (no
// OPENDIR or RELEASEDIR after the first ENOSYS) and lists an unchanged directory from its
// cache, and every change — through the mount, or by hammer2 destroy — shows in the next
// listing, after rewinddir too, with telldir/seekdir positions that hold. A walk that stats
// every name of a listing the kernel cached with names only (ls -l after ls) gets most
// attributes by READDIRPLUS, not by a LOOKUP per name; a file or two opened after ls keeps
// that listing cached.

import Foundation
import Glibc
import HAMMER2TestSupport
import HAMMER2Trace
import XCTest

final class KernelCacheTests: XCTestCase {
    /// The daemon's request counter for `op` (its trace statistics).
    private func requests(_ op: String, _ volume: ScratchVolume) throws -> UInt64 {
        let reader = try TraceReader(path: TraceFiles.defaultPath(pid: try XCTUnwrap(volume.mount).daemonPID))
        return reader.statistics("fuse")?["\(op).requests"] ?? 0
    }

    private func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    private func missing(_ path: String, _ line: UInt = #line) {
        var st = stat()
        XCTAssertEqual(lstat(path, &st), -1, "\(path) is there", line: line)
        XCTAssertEqual(errno, ENOENT, line: line)
    }

    func testMissingNamesStayInTheKernelAndNamesMadeThroughTheMountAreSeenAtOnce() throws {
        let volume = try ScratchVolume()
        let root = volume.root
        func lookups() throws -> UInt64 { try requests("lookup", volume) }

        // Twenty lookups of a missing name: the daemon answers the first.
        var before = try lookups()
        for _ in 0..<20 { missing("\(root)/journal") }
        XCTAssertLessThanOrEqual(try lookups() - before, 2, "repeated lookups of a missing name reached the daemon")

        // Every way of making a name, each over a name the kernel holds as missing.
        let fd = open("\(root)/journal", O_CREAT | O_WRONLY | O_EXCL, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(write(fd, "data", 4), 4)
        close(fd)
        XCTAssertEqual(try String(contentsOfFile: "\(root)/journal", encoding: .utf8), "data")
        missing("\(root)/dir")
        XCTAssertEqual(mkdir("\(root)/dir", 0o755), 0)
        XCTAssertTrue(exists("\(root)/dir"))
        missing("\(root)/dir/link")
        XCTAssertEqual(symlink("../journal", "\(root)/dir/link"), 0)
        XCTAssertEqual(try String(contentsOfFile: "\(root)/dir/link", encoding: .utf8), "data")
        missing("\(root)/hard")
        XCTAssertEqual(link("\(root)/journal", "\(root)/hard"), 0)
        XCTAssertTrue(exists("\(root)/hard"))
        missing("\(root)/moved")
        XCTAssertEqual(rename("\(root)/hard", "\(root)/moved"), 0)
        XCTAssertTrue(exists("\(root)/moved"))
        missing("\(root)/hard")
        missing("\(root)/published")
        let temporary = open(root, GNUCalls.tmpfile | O_WRONLY, 0o600)
        XCTAssertGreaterThanOrEqual(temporary, 0)
        XCTAssertEqual(linkat(AT_FDCWD, "/proc/self/fd/\(temporary)", AT_FDCWD, "\(root)/published", AT_SYMLINK_FOLLOW), 0)
        close(temporary)
        XCTAssertTrue(exists("\(root)/published"))

        // Removed names are missing at once, also for the lookups the kernel answers itself,
        // and made again they are there.
        XCTAssertEqual(unlink("\(root)/journal"), 0)
        before = try lookups()
        for _ in 0..<20 { missing("\(root)/journal") }
        XCTAssertLessThanOrEqual(try lookups() - before, 2)
        let again = open("\(root)/journal", O_CREAT | O_WRONLY | O_EXCL, 0o644)
        XCTAssertGreaterThanOrEqual(again, 0)
        close(again)
        XCTAssertTrue(exists("\(root)/journal"))
        XCTAssertEqual(unlink("\(root)/dir/link"), 0)
        XCTAssertEqual(rmdir("\(root)/dir"), 0)
        missing("\(root)/dir")

        // The same names after a remount (and fsck): what the kernel was told is on disk.
        try volume.remount()
        for name in ["journal", "moved", "published"] { XCTAssertTrue(exists(volume.path(name)), name) }
        for name in ["dir", "hard"] { missing(volume.path(name)) }
    }

    /// The names readdir gives for `path` (without "." and ".."), sorted, through one DIR*.
    private func listing(_ path: String) -> [String] {
        guard let dir = opendir(path) else { XCTFail("opendir \(path): \(String(cString: strerror(errno)))"); return [] }
        defer { closedir(dir) }
        return names(dir)
    }

    private func names(_ dir: OpaquePointer) -> [String] {
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    func testTheKernelListsUnchangedDirectoriesItselfAndEveryChangeShowsInTheNextListing() throws {
        let volume = try ScratchVolume()
        let root = volume.root
        func count(_ op: String) throws -> UInt64 { try requests(op, volume) }
        func listings() throws -> UInt64 { try count("readdir") + count("readdirplus") }

        let dir = "\(root)/dir"
        XCTAssertEqual(mkdir(dir, 0o755), 0)
        var model = Set<String>()
        for i in 0..<3000 {
            let name = String(format: "f%04d", i)
            let fd = open("\(dir)/\(name)", O_CREAT | O_WRONLY | O_EXCL, 0o644)
            XCTAssertGreaterThanOrEqual(fd, 0)
            close(fd)
            model.insert(name)
        }
        var before = try listings()
        XCTAssertEqual(listing(dir), model.sorted())
        let uncached = try listings() - before
        XCTAssertGreaterThan(uncached, 0)
        // Five more listings of the unchanged directory: fewer requests than one listing took.
        before = try listings()
        for _ in 0..<5 { XCTAssertEqual(listing(dir), model.sorted()) }
        XCTAssertLessThan(try listings() - before, uncached, "an unchanged directory was listed by the daemon again")

        // Each change through the mount shows in the next listing.
        func changed(_ what: String, _ line: UInt = #line) { XCTAssertEqual(listing(dir), model.sorted(), what, line: line) }
        XCTAssertEqual(unlink("\(dir)/f0001"), 0); model.remove("f0001"); changed("unlink")
        let fd = open("\(dir)/new", O_CREAT | O_WRONLY, 0o644); close(fd); model.insert("new"); changed("create")
        XCTAssertEqual(rename("\(dir)/f0002", "\(dir)/renamed"), 0); model.remove("f0002"); model.insert("renamed"); changed("rename")
        XCTAssertEqual(mkdir("\(dir)/sub", 0o755), 0); model.insert("sub"); changed("mkdir")
        XCTAssertEqual(symlink("new", "\(dir)/sym"), 0); model.insert("sym"); changed("symlink")
        XCTAssertEqual(link("\(dir)/new", "\(dir)/hard"), 0); model.insert("hard"); changed("link")
        XCTAssertEqual(rmdir("\(dir)/sub"), 0); model.remove("sub"); changed("rmdir")
        XCTAssertEqual(rename("\(dir)/f0003", "\(root)/away"), 0); model.remove("f0003"); changed("rename out")
        XCTAssertEqual(listing(root), ["away", "dir"])

        // An open directory: rewinddir shows what changed since; telldir positions hold.
        let open = try XCTUnwrap(opendir(dir))
        XCTAssertEqual(names(open), model.sorted())
        let late = Glibc.open("\(dir)/late", O_CREAT | O_WRONLY, 0o644); close(late); model.insert("late")
        rewinddir(open)
        XCTAssertEqual(names(open), model.sorted())
        rewinddir(open)
        for _ in 0..<100 { XCTAssertNotNil(readdir(open)) }
        let mark = telldir(open)
        var next: [String] = []
        for _ in 0..<10 { next.append(String(cString: withUnsafeBytes(of: readdir(open)!.pointee.d_name) { Array($0.bindMemory(to: CChar.self)) })) }
        seekdir(open, mark)
        var again: [String] = []
        for _ in 0..<10 { again.append(String(cString: withUnsafeBytes(of: readdir(open)!.pointee.d_name) { Array($0.bindMemory(to: CChar.self)) })) }
        XCTAssertEqual(again, next)
        closedir(open)

        // A name removed behind the kernel (hammer2 destroy) is gone from the next listing.
        XCTAssertEqual(listing(dir), model.sorted())
        XCTAssertEqual(try Binaries.run("hammer2", ["destroy", "\(dir)/f0004"]).status, 0)
        model.remove("f0004")
        XCTAssertEqual(listing(dir), model.sorted(), "a destroyed name still listed")

        // The kernel opened the directories itself: one OPENDIR (answered ENOSYS), no RELEASEDIR.
        XCTAssertLessThanOrEqual(try count("opendir"), 1)
        XCTAssertEqual(try count("releasedir"), 0)

        try volume.remount()
        XCTAssertEqual(listing(volume.path("dir")), model.sorted())
    }

    func testStatingEveryNameOfACachedNamesOnlyListingGetsAttributesByReaddirplus() throws {
        let volume = try ScratchVolume()
        let made = "\(volume.root)/many"
        XCTAssertEqual(mkdir(made, 0o755), 0)
        var sizes: [String: Int] = [:]
        for i in 0..<5000 {
            let name = String(format: "f%04d", i)
            let fd = open("\(made)/\(name)", O_CREAT | O_WRONLY | O_EXCL, 0o644)
            XCTAssertGreaterThanOrEqual(fd, 0)
            XCTAssertEqual(write(fd, name, i % 5), i % 5)
            close(fd)
            sizes[name] = i % 5
        }
        // A remount: the kernel knows none of the names; then `ls` (names only, cached).
        try volume.remount()
        let dir = volume.path("many")
        XCTAssertEqual(listing(dir), sizes.keys.sorted())
        // Opening a file or two after `ls` keeps the cached listing.
        var st = stat()
        XCTAssertEqual(lstat("\(dir)/f3000", &st), 0)
        XCTAssertEqual(lstat("\(dir)/f4000", &st), 0)
        let listingsBefore = try requests("readdir", volume) + requests("readdirplus", volume)
        XCTAssertEqual(listing(dir), sizes.keys.sorted())
        XCTAssertEqual(try requests("readdir", volume) + requests("readdirplus", volume), listingsBefore,
                       "two lookups dropped the cached listing")
        // `ls -l`: each name of the cached listing stated in turn.
        let lookupsBefore = try requests("lookup", volume)
        let plusBefore = try requests("readdirplus", volume)
        let open = try XCTUnwrap(opendir(dir))
        var seen = 0
        while let entry = readdir(open) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name == "." || name == ".." { continue }
            var st = stat()
            XCTAssertEqual(lstat("\(dir)/\(name)", &st), 0, name)
            XCTAssertEqual(st.st_ino, entry.pointee.d_ino, name)
            XCTAssertEqual(Int(st.st_size), sizes[name], name)
            XCTAssertEqual(st.st_mode & S_IFMT, S_IFREG, name)
            seen += 1
        }
        closedir(open)
        XCTAssertEqual(seen, sizes.count)
        // The names of the first getdents buffer are looked up (about 1,400 here); the rest
        // came with their attributes.
        XCTAssertLessThan(try requests("lookup", volume) - lookupsBefore, 2_500, "a LOOKUP per name")
        XCTAssertGreaterThan(try requests("readdirplus", volume) - plusBefore, 0)
        // Listings stay whole and current.
        XCTAssertEqual(listing(dir), sizes.keys.sorted())
        let fd = Glibc.open("\(dir)/late", O_CREAT | O_WRONLY, 0o644); close(fd)
        XCTAssertEqual(listing(dir), (Array(sizes.keys) + ["late"]).sorted())
    }
}
