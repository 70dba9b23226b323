// Device nodes, sockets and FIFOs (which DragonFly's makefs does not write, so the
// fixtures have no devices or sockets) through a real mount, on an image from the
// test-support builder; also ownership other than root.

import Foundation
import Glibc
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class SpecialFileTests: XCTestCase {
    func testDevicesSocketsFifosAndOwnersThroughTheMount() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("hammer2-special-\(getpid()).img").path
        defer { unlink(path) }
        let owner = NodeAttributes(mode: 0o640, uid: 1001, gid: 2002)
        let spec = ImageSpec(pfs: [PFSSpec(label: "DATA", entries: [
            .device("tty", major: 4, minor: 65, attributes: owner),
            .device("disk", block: true, major: 8, minor: 300),
            .socket("sock"),
            .fifo("pipe"),
            .file("owned", Array("x".utf8), attributes: owner),
        ])])
        _ = try ImageBuilder.build(spec, at: path)
        let mount = try MountedImage(path + "@DATA")
        func lstatOf(_ name: String) throws -> stat {
            var st = stat()
            guard lstat(mount.mountpoint.path + "/" + name, &st) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
            return st
        }
        let tty = try lstatOf("tty")
        XCTAssertEqual(tty.st_mode & S_IFMT, S_IFCHR)
        XCTAssertEqual(major(tty.st_rdev), 4)
        XCTAssertEqual(minor(tty.st_rdev), 65)
        XCTAssertEqual(tty.st_uid, 1001)
        XCTAssertEqual(tty.st_gid, 2002)
        XCTAssertEqual(tty.st_mode & 0o7777, 0o640)
        let disk = try lstatOf("disk")
        XCTAssertEqual(disk.st_mode & S_IFMT, S_IFBLK)
        XCTAssertEqual(major(disk.st_rdev), 8)
        XCTAssertEqual(minor(disk.st_rdev), 300)
        XCTAssertEqual(try lstatOf("sock").st_mode & S_IFMT, S_IFSOCK)
        XCTAssertEqual(try lstatOf("pipe").st_mode & S_IFMT, S_IFIFO)
        XCTAssertEqual(try lstatOf("owned").st_uid, 1001)

        // readdir reports the types too (d_type).
        guard let dir = opendir(mount.mountpoint.path) else { return XCTFail("opendir") }
        var types: [String: Int32] = [:]
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            types[name] = Int32(entry.pointee.d_type)
        }
        closedir(dir)
        XCTAssertEqual(types["tty"], Int32(DT_CHR))
        XCTAssertEqual(types["disk"], Int32(DT_BLK))
        XCTAssertEqual(types["sock"], Int32(DT_SOCK))
        XCTAssertEqual(types["pipe"], Int32(DT_FIFO))
        XCTAssertEqual(types["owned"], Int32(DT_REG))
        try mount.unmount()
    }
}

/// Linux's major()/minor() (macros in glibc).
private func major(_ device: dev_t) -> UInt64 { ((UInt64(device) >> 8) & 0xFFF) | ((UInt64(device) >> 32) & ~0xFFF) }
private func minor(_ device: dev_t) -> UInt64 { (UInt64(device) & 0xFF) | ((UInt64(device) >> 12) & ~0xFF) }
