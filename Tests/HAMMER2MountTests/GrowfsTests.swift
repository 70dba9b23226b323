// hammer2 growfs: an enlarged image's new space becomes usable, on a mount and offline,
// and the header reaches the new zones.

import Foundation
import HAMMER2TestSupport
import XCTest

final class GrowfsTests: XCTestCase {
    func freeBytes(_ path: String) -> UInt64 {
        var st = statvfs()
        XCTAssertEqual(statvfs(path, &st), 0)
        return UInt64(st.f_bfree) * UInt64(st.f_frsize)
    }

    func testGrowfsOnlineAndOffline() throws {
        let volume = try ScratchVolume(size: "128m")
        var random = SplitMix64(seed: 71)
        let first = random.bytes(60 << 20)
        XCTAssertTrue(FileManager.default.createFile(atPath: volume.path("first"), contents: Data(first)))
        let unchanged = try Binaries.run("hammer2", ["growfs", volume.root])
        XCTAssertEqual(unchanged.stdout, "\(volume.root) no size change - \(128 << 20)\n", unchanged.stderr)

        // Online: the image grows under the mount.
        XCTAssertEqual(truncate(volume.image.path, 1200 << 20), 0)
        let online = try Binaries.run("hammer2", ["-s", volume.root, "growfs"])
        XCTAssertEqual(online.status, 0, online.stderr)
        XCTAssertEqual(online.stdout, "\(volume.root) grown to \(1200 << 20)\n")
        XCTAssertGreaterThan(freeBytes(volume.root), 1 << 30)
        let second = random.bytes(300 << 20)  // more than the old size, incompressible
        XCTAssertTrue(FileManager.default.createFile(atPath: volume.path("second"), contents: Data(second)))
        try volume.verifyAfterRemount()

        // Offline, past a 2 GiB zone boundary: a new header copy appears.
        try volume.unmount()
        XCTAssertEqual(truncate(volume.image.path, 2200 << 20), 0)
        let offline = try Binaries.run("hammer2", ["-f", volume.image.path, "growfs"])
        XCTAssertEqual(offline.status, 0, offline.stderr)
        XCTAssertEqual(offline.stdout, "\(volume.image.path) grown to \(2200 << 20 / (8 << 20) * (8 << 20))\n")
        XCTAssertEqual(try Binaries.run("hammer2", ["-f", volume.image.path, "growfs", "extra"]).status, 2)
        XCTAssertEqual(try Binaries.run("fsck_hammer2", [volume.image.path]).status, 0)
        let headers = try Binaries.run("hammer2", ["volhdr", volume.image.path])
        XCTAssertTrue(headers.stdout.contains("Volume 0 header 1"), "a header copy in the new 2 GiB zone")
        try volume.remount(readOnly: true)
        XCTAssertEqual(sha256Hex(try Data(contentsOf: URL(fileURLWithPath: volume.path("first")))), sha256Hex(first))
        XCTAssertEqual(sha256Hex(try Data(contentsOf: URL(fileURLWithPath: volume.path("second")))), sha256Hex(second))
    }
}
