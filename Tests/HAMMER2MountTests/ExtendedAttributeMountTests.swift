// Extended attributes, POSIX ACLs and file capabilities through the mount (issue 21), as
// the attr, acl and libcap tools and the kernel use them. The same tests run again on an
// encrypted PFS.

import Foundation
import CXattr
import Glibc
import HAMMER2TestSupport
import XCTest

class ExtendedAttributeMountTests: MountTestCase {
    func getAttribute(_ path: String, _ name: String) -> [UInt8]? {
        let size = getxattr(path, name, nil, 0)
        guard size >= 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: max(size, 1))
        let got = getxattr(path, name, &buffer, buffer.count)
        return got >= 0 ? Array(buffer.prefix(got)) : nil
    }

    func setAttribute(_ path: String, _ name: String, _ value: [UInt8], _ flags: Int32 = 0) -> Int32 {
        value.withUnsafeBytes { setxattr(path, name, $0.baseAddress, $0.count, flags) }
    }

    func names(_ path: String) -> [String] {
        let size = listxattr(path, nil, 0)
        guard size > 0 else { return [] }
        var buffer = [CChar](repeating: 0, count: size)
        XCTAssertEqual(listxattr(path, &buffer, size), size)
        return buffer.split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }.sorted()
    }

    /// Runs a program; its status and output.
    @discardableResult
    func run(_ program: String, _ arguments: [String], asNobody: Bool = false) throws -> (status: Int32, output: String) {
        let process = Process()
        if asNobody {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", program] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: program)
            process.arguments = arguments
        }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    func requireTools(_ tools: [String], root: Bool = false) throws {
        if root, getuid() != 0 { throw XCTSkip("needs root") }
        for tool in tools where !FileManager.default.isExecutableFile(atPath: tool) {
            throw XCTSkip("\(tool) not installed (scripts/setup installs attr, acl and libcap2-bin)")
        }
    }

    func testCallsSizesAndErrorsAsLinuxDefinesThem() throws {
        let volume = try newVolume()
        var file: String { volume.path("f") }  // the mount point changes with each remount
        write(file, Array("data".utf8))
        XCTAssertEqual(mkdir(volume.path("d"), 0o755), 0)
        XCTAssertEqual(symlink("f", volume.path("l")), 0)

        expectError(ENODATA, Int32(getxattr(file, "user.none", nil, 0)), "getxattr of a missing attribute")
        XCTAssertEqual(setAttribute(file, "user.greeting", Array("hello".utf8)), 0)
        XCTAssertEqual(getxattr(file, "user.greeting", nil, 0), 5, "size 0 asks for the length")
        var small = [UInt8](repeating: 0, count: 3)
        expectError(ERANGE, Int32(getxattr(file, "user.greeting", &small, 3)), "getxattr into a short buffer")
        XCTAssertEqual(getAttribute(file, "user.greeting"), Array("hello".utf8))
        // XATTR_CREATE and XATTR_REPLACE.
        expectError(EEXIST, setAttribute(file, "user.greeting", [1], Int32(XATTR_CREATE)), "XATTR_CREATE of an existing attribute")
        expectError(ENODATA, setAttribute(file, "user.other", [1], Int32(XATTR_REPLACE)), "XATTR_REPLACE of a missing attribute")
        XCTAssertEqual(setAttribute(file, "user.greeting", Array("bye".utf8), Int32(XATTR_REPLACE)), 0)
        XCTAssertEqual(setAttribute(file, "user.empty", [], Int32(XATTR_CREATE)), 0)
        XCTAssertEqual(getAttribute(file, "user.empty"), [])
        // Values up to 64 KiB (the kernel's XATTR_SIZE_MAX); larger ones are E2BIG.
        var random = SplitMix64(seed: 21)
        let big = random.bytes(65_536)
        XCTAssertEqual(setAttribute(file, "user.big", big), 0)
        XCTAssertEqual(getAttribute(file, "user.big").map { sha256Hex($0) }, sha256Hex(big))
        expectError(E2BIG, setAttribute(file, "user.huge", random.bytes(65_537)), "a value over 64 KiB")
        // Namespaces: unknown ones are not supported; user.* is for files and directories.
        expectError(EOPNOTSUPP, setAttribute(file, "bogus.name", [1]), "an unknown namespace")
        XCTAssertEqual(setAttribute(volume.path("d"), "user.dir", [7]), 0)
        expectError(EPERM, Int32(lsetxattr(volume.path("l"), "user.link", [1], 1, 0)), "user.* on a symlink")
        XCTAssertEqual(setAttribute(file, "trusted.root", [9]), 0)
        XCTAssertEqual(setAttribute(file, "security.label", Array("x".utf8)), 0)
        // A name of 255 bytes after the namespace is the limit.
        let longest = "user." + String(repeating: "n", count: 250)
        XCTAssertEqual(setAttribute(file, longest, [1]), 0)
        expectError(ERANGE, setAttribute(file, longest + "nnnnnn", [1]), "a name over 255 bytes")
        XCTAssertEqual(names(file), [longest, "security.label", "trusted.root", "user.big", "user.empty", "user.greeting"].sorted())
        var names = [CChar](repeating: 0, count: 4)
        expectError(ERANGE, Int32(listxattr(file, &names, 4)), "listxattr into a short buffer")
        expectError(ENODATA, removexattr(file, "user.none"), "removexattr of a missing attribute")
        XCTAssertEqual(removexattr(file, "user.empty"), 0)
        XCTAssertNil(getAttribute(file, "user.empty"))
        // Many attributes on one inode, then all of them survive a remount (after fsck).
        for i in 0..<300 { XCTAssertEqual(setAttribute(file, "user.n\(i)", Array("value \(i)".utf8)), 0) }
        try volume.remount()
        XCTAssertEqual(getAttribute(file, "user.greeting"), Array("bye".utf8))
        XCTAssertEqual(getAttribute(file, "user.big").map { sha256Hex($0) }, sha256Hex(big))
        XCTAssertEqual(getAttribute(file, "user.n299"), Array("value 299".utf8))
        XCTAssertEqual(getAttribute(volume.path("d"), "user.dir"), [7])
        XCTAssertEqual(getAttribute(file, "trusted.root"), [9])
        XCTAssertEqual(self.names(file).count, 305)
        XCTAssertEqual(read(file), Array("data".utf8))
        // Removing the last attribute removes the hidden inode; the file stays as it was.
        for name in self.names(file) { XCTAssertEqual(removexattr(file, name), 0, name) }
        XCTAssertEqual(self.names(file), [])
        try volume.remount()
        XCTAssertEqual(self.names(file), [])
        XCTAssertEqual(read(file), Array("data".utf8))
    }

    func testAttributesFollowTheirFileThroughRenameLinkUnlinkAndSnapshot() throws {
        let volume = try newVolume()
        write(volume.path("a"), [1, 2, 3])
        XCTAssertEqual(setAttribute(volume.path("a"), "user.k", Array("before".utf8)), 0)
        XCTAssertEqual(rename(volume.path("a"), volume.path("b")), 0)
        XCTAssertEqual(link(volume.path("b"), volume.path("c")), 0)
        XCTAssertEqual(getAttribute(volume.path("c"), "user.k"), Array("before".utf8))
        flush(volume)
        let snapshot = try Binaries.run("hammer2", ["snapshot", volume.root, "snap"])
        XCTAssertEqual(snapshot.status, 0, snapshot.stderr)
        XCTAssertEqual(setAttribute(volume.path("b"), "user.k", Array("after".utf8)), 0)
        XCTAssertEqual(unlink(volume.path("b")), 0)
        XCTAssertEqual(getAttribute(volume.path("c"), "user.k"), Array("after".utf8))
        // A removed file takes its attributes along; a new file of any name starts without.
        XCTAssertEqual(unlink(volume.path("c")), 0)
        write(volume.path("c"), [4])
        XCTAssertEqual(names(volume.path("c")), [])
        try volume.remount()
        XCTAssertEqual(names(volume.path("c")), [])
        try volume.unmount()
        let snap = try MountedImage("\(volume.image.path)@snap", options: ["-o", (["ro"] + (volume.keyFile.map { ["keyfile=\($0)"] } ?? [])).joined(separator: ",")])
        defer { _ = try? snap.unmount() }
        XCTAssertEqual(getAttribute(snap.mountpoint.path + "/b", "user.k"), Array("before".utf8), "the snapshot keeps what was flushed")
    }

    func testAttributesSetBeforeFsyncSurviveKill() throws {
        let volume = try newVolume()
        write(volume.path("f"), Array("content".utf8))
        XCTAssertEqual(setAttribute(volume.path("f"), "user.durable", Array("yes".utf8)), 0)
        let fd = open(volume.path("f"), O_RDONLY)
        XCTAssertEqual(fsync(fd), 0)
        close(fd)
        XCTAssertEqual(Glibc.kill(volume.mount!.daemonPID, SIGKILL), 0)
        while !volume.mount!.isStopped { usleep(10_000) }
        try volume.unmount()
        let fsck = try Binaries.run("fsck_hammer2", (volume.keyFile.map { ["-k", $0] } ?? []) + [volume.image.path])
        XCTAssertEqual(fsck.status, 0, fsck.stdout + fsck.stderr)
        try volume.remountWithoutFsck()
        XCTAssertEqual(getAttribute(volume.path("f"), "user.durable"), Array("yes".utf8))
    }

    func testToolsRoundTripAttributesAndACLs() throws {
        try requireTools(["/usr/bin/setfattr", "/usr/bin/getfattr", "/usr/bin/setfacl", "/usr/bin/getfacl"])
        let volume = try newVolume()
        write(volume.path("f"), Array("x".utf8))
        XCTAssertEqual(chmod(volume.path("f"), 0o640), 0)
        XCTAssertEqual(try run("/usr/bin/setfattr", ["-n", "user.mime_type", "-v", "text/plain", volume.path("f")]).status, 0)
        let dump = try run("/usr/bin/getfattr", ["-d", "--absolute-names", volume.path("f")])
        XCTAssertTrue(dump.output.contains("user.mime_type=\"text/plain\""), dump.output)
        // An ACL with a named user: the mode's group bits become the mask.
        XCTAssertEqual(try run("/usr/bin/setfacl", ["-m", "u:nobody:rw,g:daemon:r", volume.path("f")]).status, 0)
        var acl = try run("/usr/bin/getfacl", ["-c", "--absolute-names", volume.path("f")]).output
        XCTAssertEqual(acl.split(separator: "\n"), ["user::rw-", "user:nobody:rw-", "group::r--", "group:daemon:r--", "mask::rw-", "other::---"])
        var st = stat()
        XCTAssertEqual(stat(volume.path("f"), &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o660, "the mask shows as the group bits")
        // chmod changes the mask, not the owning group's entry.
        XCTAssertEqual(chmod(volume.path("f"), 0o604), 0)
        acl = try run("/usr/bin/getfacl", ["-c", "--absolute-names", volume.path("f")]).output
        XCTAssertEqual(acl.split(separator: "\n"), ["user::rw-", "user:nobody:rw-\t#effective:---", "group::r--\t#effective:---",
                                                    "group:daemon:r--\t#effective:---", "mask::---", "other::r--"])
        // A default ACL on a directory: new files and directories inherit it, the umask
        // does not apply, and the create mode limits the result.
        XCTAssertEqual(mkdir(volume.path("shared"), 0o755), 0)
        XCTAssertEqual(try run("/usr/bin/setfacl", ["-d", "-m", "u:nobody:rwx,g::rwx,o::r-x", volume.path("shared")]).status, 0)
        let oldMask = umask(0o077)
        close(open(volume.path("shared/new"), O_CREAT | O_WRONLY, 0o666))
        XCTAssertEqual(mkdir(volume.path("shared/sub"), 0o777), 0)
        umask(oldMask)
        acl = try run("/usr/bin/getfacl", ["-c", "--absolute-names", volume.path("shared/new")]).output
        XCTAssertEqual(acl.split(separator: "\n"), ["user::rw-", "user:nobody:rwx\t#effective:rw-", "group::rwx\t#effective:rw-", "mask::rw-", "other::r--"])
        XCTAssertEqual(stat(volume.path("shared/new"), &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o664)
        acl = try run("/usr/bin/getfacl", ["-c", "--absolute-names", volume.path("shared/sub")]).output
        XCTAssertTrue(acl.contains("default:user:nobody:rwx"), acl)
        XCTAssertTrue(acl.contains("user:nobody:rwx\n"), acl)
        XCTAssertEqual(stat(volume.path("shared/sub"), &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o775)
        // Without a default ACL the umask applies as usual.
        let previous = umask(0o027)
        write(volume.path("plain"), [1])
        umask(previous)
        XCTAssertEqual(stat(volume.path("plain"), &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o640)
        // An ACL the mode says all of is not kept (ls shows no "+"); setfacl -b removes one.
        XCTAssertEqual(try run("/usr/bin/setfacl", ["-m", "u::rwx,g::r-x,o::---", volume.path("plain")]).status, 0)
        XCTAssertNil(getAttribute(volume.path("plain"), "system.posix_acl_access"))
        XCTAssertEqual(stat(volume.path("plain"), &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o750)
        XCTAssertEqual(try run("/usr/bin/setfacl", ["-b", volume.path("f")]).status, 0)
        XCTAssertNil(getAttribute(volume.path("f"), "system.posix_acl_access"))
        try volume.remount()
        acl = try run("/usr/bin/getfacl", ["-c", "--absolute-names", volume.path("shared/new")]).output
        XCTAssertTrue(acl.contains("user:nobody:rwx\t#effective:rw-"), acl)
        XCTAssertTrue(try run("/usr/bin/getfacl", ["-c", "--absolute-names", volume.path("shared")]).output.contains("default:user:nobody:rwx"))
    }

    func testKernelEnforcesACLs() throws {
        try requireTools(["/usr/bin/setfacl", "/usr/bin/setpriv"], root: true)
        let volume = try ScratchVolume(options: ["allow_other"], encrypted: Self.encrypted)
        XCTAssertEqual(chmod(volume.root, 0o755), 0)
        write(volume.path("secret"), Array("for nobody only".utf8))
        XCTAssertEqual(chmod(volume.path("secret"), 0o600), 0)
        XCTAssertNotEqual(try run("/bin/cat", [volume.path("secret")], asNobody: true).status, 0, "mode 0600 keeps nobody out")
        XCTAssertEqual(try run("/usr/bin/setfacl", ["-m", "u:nobody:r", volume.path("secret")]).status, 0)
        let read = try run("/bin/cat", [volume.path("secret")], asNobody: true)
        XCTAssertEqual(read.status, 0, read.output)
        XCTAssertEqual(read.output, "for nobody only")
        XCTAssertNotEqual(try run("/usr/bin/touch", [volume.path("secret")], asNobody: true).status, 0, "read, not write")
        // chmod g-r lowers the mask, and with it nobody's effective rights.
        XCTAssertEqual(chmod(volume.path("secret"), 0o600), 0)
        XCTAssertNotEqual(try run("/bin/cat", [volume.path("secret")], asNobody: true).status, 0, "the mask limits named users")
        // Inherited: a directory whose default ACL lets nobody write.
        XCTAssertEqual(mkdir(volume.path("drop"), 0o700), 0)
        XCTAssertEqual(try run("/usr/bin/setfacl", ["-m", "u:nobody:rwx", "-d", "-m", "u:nobody:rwx", volume.path("drop")]).status, 0)
        XCTAssertEqual(try run("/usr/bin/touch", [volume.path("drop/from-nobody")], asNobody: true).status, 0)
        var st = stat()
        XCTAssertEqual(stat(volume.path("drop/from-nobody"), &st), 0)
        XCTAssertEqual(st.st_uid, 65534)
        // Namespaces as the kernel guards them: trusted.* is root's, even on one's own file;
        // user.* needs write permission; reading user.* needs read permission.
        let trusted = try run("/usr/bin/setfattr", ["-n", "trusted.mine", "-v", "x", volume.path("drop/from-nobody")], asNobody: true)
        XCTAssertNotEqual(trusted.status, 0)
        XCTAssertTrue(trusted.output.contains("Operation not permitted"), trusted.output)
        XCTAssertEqual(try run("/usr/bin/setfattr", ["-n", "user.mine", "-v", "x", volume.path("drop/from-nobody")], asNobody: true).status, 0)
        let foreign = try run("/usr/bin/setfattr", ["-n", "user.theirs", "-v", "x", volume.path("secret")], asNobody: true)
        XCTAssertTrue(foreign.output.contains("Permission denied"), foreign.output)
        XCTAssertEqual(setAttribute(volume.path("drop/from-nobody"), "trusted.by-root", [1]), 0)
        let hidden = try run("/usr/bin/getfattr", ["-d", "-m", "-", volume.path("drop/from-nobody")], asNobody: true)
        XCTAssertFalse(hidden.output.contains("trusted.by-root"), "trusted.* is not listed for others: \(hidden.output)")
        XCTAssertTrue(hidden.output.contains("user.mine"), hidden.output)
    }

    /// Writes by a user without CAP_FSETID clear setuid, setgid (when group-executable)
    /// and file capabilities; chown does too; a write by root keeps setuid.
    func testWritesAndChownClearSetuidSetgidAndCapabilities() throws {
        try requireTools(["/usr/sbin/setcap", "/usr/sbin/getcap", "/usr/bin/setpriv"], root: true)
        let volume = try ScratchVolume(options: ["allow_other"], encrypted: Self.encrypted)
        XCTAssertEqual(chmod(volume.root, 0o777), 0)
        func mode(_ path: String) -> mode_t {
            var st = stat()
            XCTAssertEqual(stat(path, &st), 0)
            return st.st_mode & 0o7777
        }
        write(volume.path("suid"), [1])
        XCTAssertEqual(chmod(volume.path("suid"), 0o6777), 0)
        XCTAssertEqual(try run("/bin/sh", ["-c", "echo more >> \(volume.path("suid"))"], asNobody: true).status, 0)
        XCTAssertEqual(mode(volume.path("suid")), 0o777, "setuid and setgid (group-executable) cleared")
        write(volume.path("sgid-noexec"), [1])
        XCTAssertEqual(chmod(volume.path("sgid-noexec"), 0o2666), 0)
        XCTAssertEqual(try run("/usr/bin/truncate", ["-s", "0", volume.path("sgid-noexec")], asNobody: true).status, 0)
        XCTAssertEqual(mode(volume.path("sgid-noexec")), 0o2666, "setgid without group execute is kept")
        write(volume.path("root-suid"), [1])
        XCTAssertEqual(chmod(volume.path("root-suid"), 0o4755), 0)
        write(volume.path("root-suid"), [2], flags: O_WRONLY | O_APPEND)
        XCTAssertEqual(mode(volume.path("root-suid")), 0o4755, "root (CAP_FSETID) keeps setuid")
        // File capabilities go with any write (the kernel) and with a chown.
        write(volume.path("capable"), [1])
        XCTAssertEqual(chmod(volume.path("capable"), 0o777), 0)
        XCTAssertEqual(try run("/usr/sbin/setcap", ["cap_net_raw+ep", volume.path("capable")]).status, 0)
        XCTAssertNotNil(getAttribute(volume.path("capable"), "security.capability"))
        XCTAssertEqual(try run("/bin/sh", ["-c", "echo x >> \(volume.path("capable"))"], asNobody: true).status, 0)
        XCTAssertNil(getAttribute(volume.path("capable"), "security.capability"), "a write clears capabilities")
        XCTAssertEqual(try run("/usr/sbin/setcap", ["cap_net_raw+ep", volume.path("capable")]).status, 0)
        XCTAssertEqual(chmod(volume.path("capable"), 0o4755), 0)
        XCTAssertEqual(chown(volume.path("capable"), 65534, 65534), 0)
        XCTAssertNil(getAttribute(volume.path("capable"), "security.capability"), "chown clears capabilities")
        XCTAssertEqual(mode(volume.path("capable")), 0o755, "chown clears setuid")
    }

    /// A copied binary with a file capability does what the capability allows when run by
    /// an unprivileged user (the mount needs -o suid, root only, as for setuid programs).
    func testFileCapabilitiesAreHonouredOnExec() throws {
        try requireTools(["/usr/sbin/setcap", "/usr/bin/setpriv"], root: true)
        let volume = try ScratchVolume(options: ["allow_other,suid"], encrypted: Self.encrypted)
        XCTAssertEqual(chmod(volume.root, 0o755), 0)
        write(volume.path("root-only"), Array("not for nobody".utf8))
        XCTAssertEqual(chmod(volume.path("root-only"), 0o600), 0)
        write(volume.path("cat"), try XCTUnwrap(read("/bin/cat")))
        XCTAssertEqual(chmod(volume.path("cat"), 0o755), 0)
        XCTAssertNotEqual(try run(volume.path("cat"), [volume.path("root-only")], asNobody: true).status, 0)
        XCTAssertEqual(try run("/usr/sbin/setcap", ["cap_dac_read_search+ep", volume.path("cat")]).status, 0)
        let read = try run(volume.path("cat"), [volume.path("root-only")], asNobody: true)
        XCTAssertEqual(read.status, 0, read.output)
        XCTAssertEqual(read.output, "not for nobody")
        // The issue's example: a copied ping needs cap_net_raw for its raw socket.
        if let ping = ["/bin/ping", "/usr/bin/ping"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) {
            write(volume.path("ping"), try XCTUnwrap(self.read(ping)))
            XCTAssertEqual(chmod(volume.path("ping"), 0o755), 0)
            let without = try run(volume.path("ping"), ["-c", "1", "-W", "2", "127.0.0.1"], asNobody: true)
            XCTAssertNotEqual(without.status, 0, "a copy without the capability: \(without.output)")
            XCTAssertEqual(try run("/usr/sbin/setcap", ["cap_net_raw+ep", volume.path("ping")]).status, 0)
            let with = try run(volume.path("ping"), ["-c", "1", "-W", "2", "127.0.0.1"], asNobody: true)
            XCTAssertEqual(with.status, 0, with.output)
        }
        try volume.remount()
        XCTAssertNotNil(getAttribute(volume.path("cat"), "security.capability"), "kept across a remount")
    }

    /// printinode (online and offline), show and fsck list them; recover copies them out.
    func testToolsListCheckAndRecoverAttributes() throws {
        guard !Self.encrypted else { throw XCTSkip("recover reads unencrypted PFSes (an encrypted one is copied through its mount)") }
        let volume = try newVolume()
        XCTAssertEqual(mkdir(volume.path("d"), 0o755), 0)
        write(volume.path("d/f"), Array("file".utf8))
        XCTAssertEqual(setAttribute(volume.path("d/f"), "user.mime_type", Array("text/plain".utf8)), 0)
        XCTAssertEqual(setAttribute(volume.path("d"), "user.binary", [0, 0xFF, 7]), 0)
        let online = try Binaries.run("hammer2", ["printinode", volume.path("d/f")])
        XCTAssertEqual(online.status, 0, online.stderr)
        XCTAssertTrue(online.stdout.contains("xattrs = 1\n    user.mime_type = \"text/plain\""), online.stdout)
        try volume.unmount()
        let offline = try Binaries.run("hammer2", ["-f", volume.image.path + "@DATA", "printinode", "/d"])
        XCTAssertTrue(offline.stdout.contains("xattrs = 1\n    user.binary = 0x00ff07 (3 bytes)"), offline.stdout + offline.stderr)
        let show = try Binaries.run("hammer2", ["show", volume.image.path])
        XCTAssertTrue(show.stdout.contains("user.mime_type = \"text/plain\""), show.stdout)
        let fsck = try Binaries.run("fsck_hammer2", [volume.image.path])
        XCTAssertEqual(fsck.status, 0, fsck.stdout + fsck.stderr)
        XCTAssertTrue(fsck.stdout.contains("2 extended attributes on 2 inodes"), fsck.stdout)
        XCTAssertFalse(fsck.stdout.contains("orphans"), fsck.stdout)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("recover-\(getpid())-\(UUID().uuidString.prefix(6))").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let recover = try Binaries.run("hammer2", ["recover", volume.image.path + "@DATA", "/d", out])
        XCTAssertEqual(recover.status, 0, recover.stdout + recover.stderr)
        XCTAssertEqual(getAttribute(out + "/d/f", "user.mime_type"), Array("text/plain".utf8))
        XCTAssertEqual(getAttribute(out + "/d", "user.binary"), [0, 0xFF, 7])
    }

    /// A damaged attribute table is an I/O error for the attribute calls, never wrong
    /// bytes; the file's data stays readable, and fsck fails.
    func testDamagedAttributesAreEIO() throws {
        guard !Self.encrypted else { throw XCTSkip("the table is found by its magic in the clear") }
        let volume = try newVolume()
        write(volume.path("f"), Array("data".utf8))
        XCTAssertEqual(setAttribute(volume.path("f"), "user.k", Array("precious value".utf8)), 0)
        try volume.unmount()
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: volume.image.path))
        let image = try XCTUnwrap(FileManager.default.contents(atPath: volume.image.path))
        let at = try XCTUnwrap(image.range(of: Data("precious value".utf8)), "the table in the image")
        try handle.seek(toOffset: UInt64(at.lowerBound))
        handle.write(Data("PRECIOUS".utf8))
        try handle.close()
        let fsck = try Binaries.run("fsck_hammer2", [volume.image.path])
        XCTAssertNotEqual(fsck.status, 0, fsck.stdout)
        try volume.remountWithoutFsck()
        expectError(EIO, Int32(getxattr(volume.path("f"), "user.k", nil, 0)), "getxattr of a damaged table")
        expectError(EIO, Int32(listxattr(volume.path("f"), nil, 0)), "listxattr of a damaged table")
        XCTAssertEqual(read(volume.path("f")), Array("data".utf8))
    }

    /// On an encrypted PFS no attribute name or value reaches the disk in the clear.
    func testEncryptedPFSHidesAttributeNamesAndValues() throws {
        guard Self.encrypted else { throw XCTSkip("for an encrypted PFS") }
        let volume = try newVolume()
        write(volume.path("f"), [1])
        let name = "user.conspicuous-attribute-name-7f3a"
        let value = Array("a conspicuous attribute value 9c1e".utf8)
        XCTAssertEqual(setAttribute(volume.path("f"), name, value), 0)
        XCTAssertEqual(setAttribute(volume.path("f"), "user.long", [UInt8](repeating: UInt8(ascii: "Q"), count: 8192)), 0)
        try volume.unmount()
        let image = try XCTUnwrap(FileManager.default.contents(atPath: volume.image.path))
        for needle in [Array("conspicuous-attribute-name".utf8), Array(value.prefix(24)), [UInt8](repeating: UInt8(ascii: "Q"), count: 64)] {
            XCTAssertNil(image.range(of: Data(needle)), "\(String(decoding: needle.prefix(30), as: UTF8.self)) is on disk in the clear")
        }
        try volume.remountWithoutFsck()
        XCTAssertEqual(getAttribute(volume.path("f"), name), value)
    }

    /// The kernel asks for security.capability before a write only while it does not know
    /// the file has none (FUSE_HANDLE_KILLPRIV_V2 lets it remember).
    func testWritesDoNotAskForCapabilitiesEachTime() throws {
        let volume = try newVolume()
        XCTAssertEqual(setAttribute(volume.root, "user.mark", [1]), 0)
        func getxattrRequests() throws -> Int {
            let stat = try Binaries.run("hammer2", ["stat", "-w", "-n", "1", "-a", volume.root])
            let line = stat.stdout.split(separator: "\n").first { $0.contains("getxattr.requests") }
            return Int(line?.split(separator: " ").last ?? "") ?? -1
        }
        let before = try getxattrRequests()
        let fd = open(volume.path("w"), O_CREAT | O_WRONLY, 0o644)
        for _ in 0..<200 { XCTAssertEqual(Glibc.write(fd, [UInt8](repeating: 7, count: 4096), 4096), 4096) }
        close(fd)
        let after = try getxattrRequests()
        XCTAssertGreaterThanOrEqual(before, 0)
        XCTAssertLessThanOrEqual(after - before, 4, "getxattr requests for 200 writes")
    }
}

final class EncryptedExtendedAttributeMountTests: ExtendedAttributeMountTests {
    override class var encrypted: Bool { true }

    // XCTest on Linux discovers only the methods a class declares: each test again.
    override func testCallsSizesAndErrorsAsLinuxDefinesThem() throws { try super.testCallsSizesAndErrorsAsLinuxDefinesThem() }
    override func testAttributesFollowTheirFileThroughRenameLinkUnlinkAndSnapshot() throws { try super.testAttributesFollowTheirFileThroughRenameLinkUnlinkAndSnapshot() }
    override func testAttributesSetBeforeFsyncSurviveKill() throws { try super.testAttributesSetBeforeFsyncSurviveKill() }
    override func testToolsRoundTripAttributesAndACLs() throws { try super.testToolsRoundTripAttributesAndACLs() }
    override func testKernelEnforcesACLs() throws { try super.testKernelEnforcesACLs() }
    override func testWritesAndChownClearSetuidSetgidAndCapabilities() throws { try super.testWritesAndChownClearSetuidSetgidAndCapabilities() }
    override func testFileCapabilitiesAreHonouredOnExec() throws { try super.testFileCapabilitiesAreHonouredOnExec() }
    override func testWritesDoNotAskForCapabilitiesEachTime() throws { try super.testWritesDoNotAskForCapabilitiesEachTime() }
    override func testEncryptedPFSHidesAttributeNamesAndValues() throws { try super.testEncryptedPFSHidesAttributeNamesAndValues() }
    override func testToolsListCheckAndRecoverAttributes() throws { try super.testToolsListCheckAndRecoverAttributes() }
    override func testDamagedAttributesAreEIO() throws { try super.testDamagedAttributesAreEIO() }
}
