// hammer2 setcomp / setcheck / stat on a mount and offline: new data follows the settings,
// -r reaches everything below, and bad arguments change nothing.

import Foundation
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class InodeDirectiveTests: XCTestCase {
    func statLine(_ arguments: [String], _ path: String) throws -> String {
        let run = try Binaries.run("hammer2", arguments + ["stat", path])
        XCTAssertEqual(run.status, 0, run.stderr)
        return run.stdout.split(separator: "\n").map(String.init).first { $0.hasPrefix(path) } ?? ""
    }

    func testSetcompSetcheckAndStatOnlineAndOffline() throws {
        let volume = try ScratchVolume()
        XCTAssertEqual(mkdir(volume.path("z"), 0o755), 0)
        XCTAssertEqual(mkdir(volume.path("z/sub"), 0o755), 0)
        let set = try Binaries.run("hammer2", ["setcomp", "zlib:9", volume.path("z")])
        XCTAssertEqual(set.status, 0, set.stderr)
        XCTAssertEqual(set.stdout, "\(volume.path("z"))\tcomp_algo=0x93\n")
        let recursive = try Binaries.run("hammer2", ["-r", "setcheck", "sha192", volume.path("z")])
        XCTAssertEqual(recursive.status, 0, recursive.stderr)
        XCTAssertTrue(recursive.stdout.contains("z/sub\tcheck_algo=0x04"), recursive.stdout)
        XCTAssertTrue(try statLine([], volume.path("z")).contains("zlib:9"))
        XCTAssertTrue(try statLine([], volume.path("z/sub")).contains("sha192"))
        XCTAssertTrue(try statLine([], volume.root).contains("lz4:default"))
        let inode = try Binaries.run("hammer2", ["printinode", volume.path("z")])
        XCTAssertEqual(inode.status, 0, inode.stderr)
        XCTAssertTrue(inode.stdout.contains("type = 1 (DIR)") && inode.stdout.contains("comp_algo = 147")
                      && inode.stdout.contains("check_algo = 4"), inode.stdout)
        XCTAssertEqual(try Binaries.run("hammer2", ["printinode"]).status, 2)
        // Bad arguments: a clear error, a non-zero exit, nothing changed.
        XCTAssertEqual(try Binaries.run("hammer2", ["setcomp", "zlib:3", volume.path("z")]).status, 1)
        XCTAssertEqual(try Binaries.run("hammer2", ["setcomp", "bogus", volume.path("z")]).status, 1)
        XCTAssertEqual(try Binaries.run("hammer2", ["setcomp", "lz4"]).status, 2)
        XCTAssertEqual(try Binaries.run("hammer2", ["setcheck", "sha192", volume.path("missing")]).status, 3)
        XCTAssertTrue(try statLine([], volume.path("z")).contains("zlib:9"))
        // New files inherit the directory's methods (existing blocks keep theirs).
        let text = Data((0..<20_000).map { "line \($0) of compressible text\n" }.joined().utf8)
        XCTAssertTrue(FileManager.default.createFile(atPath: volume.path("z/sub/t"), contents: text))
        XCTAssertTrue(FileManager.default.createFile(atPath: volume.path("z/t"), contents: text))
        try volume.unmount()
        let pfs = try Filesystem(paths: [volume.image.path]).openPFS("DATA")
        for path in ["z/t", "z/sub/t"] {
            var inode = pfs.root
            for part in path.split(separator: "/") { inode = try pfs.inode(try pfs.lookup(in: inode, name: Array(part.utf8)).inum) }
            var methods = Set<UInt8>()
            try BlockTree(reader: pfs.reader).forEachLeaf(in: inode.blockset, from: 0, through: .max) {
                methods.insert($0.methods)
                return true
            }
            // z/t: zlib + sha192 (set recursively); z/sub/t: sub kept its lz4 but took sha192.
            let expected = path == "z/t" ? Blockref.methods(check: .sha192, compression: .zlib)
                                         : Blockref.methods(check: .sha192, compression: .lz4)
            XCTAssertEqual(methods, [expected], path)
        }
        // Offline, with IMAGE@LABEL and paths inside the PFS.
        let offline = try Binaries.run("hammer2", ["-f", "\(volume.image.path)@DATA", "setcomp", "autozero", "/z"])
        XCTAssertEqual(offline.status, 0, offline.stderr)
        XCTAssertTrue(try statLine(["-f", volume.image.path], "/z").contains("autozero:default"))
        XCTAssertEqual(try Binaries.run("fsck_hammer2", [volume.image.path]).status, 0)
    }
}
