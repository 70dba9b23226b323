// hammer2 growfs: an enlarged image's new space becomes usable, and the header reaches
// the new zones.

import Foundation
import HAMMER2TestSupport
import XCTest

final class GrowfsTests: XCTestCase {
    func testGrowfsMakesTheEnlargedImageUsable() throws {
        let volume = try ScratchVolume(size: "128m")
        var random = SplitMix64(seed: 71)
        let first = random.bytes(60 << 20)
        XCTAssertTrue(FileManager.default.createFile(atPath: volume.path("first"), contents: Data(first)))
        XCTAssertEqual(try Binaries.run("hammer2", ["-s", volume.root, "growfs"]).status, 1, "growfs runs offline")
        try volume.unmount()
        XCTAssertEqual(try Binaries.run("hammer2", ["-f", volume.image.path, "growfs"]).stdout,
                       "\(volume.image.path) no size change - \(128 << 20)\n")
        XCTAssertEqual(truncate(volume.image.path, 2200 << 20), 0)
        let grown = try Binaries.run("hammer2", ["-f", volume.image.path, "growfs"])
        XCTAssertEqual(grown.status, 0, grown.stderr)
        XCTAssertEqual(grown.stdout, "\(volume.image.path) grown to \(2200 << 20 / (8 << 20) * (8 << 20))\n")
        try volume.remount()
        var st = statvfs()
        XCTAssertEqual(statvfs(volume.root, &st), 0)
        XCTAssertGreaterThan(UInt64(st.f_bfree) * UInt64(st.f_frsize), 2 << 30)
        // More than the old size in new, incompressible data.
        let second = random.bytes(300 << 20)
        XCTAssertTrue(FileManager.default.createFile(atPath: volume.path("second"), contents: Data(second)))
        try volume.verifyAfterRemount()
        XCTAssertEqual(sha256Hex(try Data(contentsOf: URL(fileURLWithPath: volume.path("first")))), sha256Hex(first))
        let headers = try Binaries.run("hammer2", ["volhdr", volume.image.path])
        XCTAssertTrue(headers.stdout.contains("Volume 0 header 1"), "a header copy in the new 2 GiB zone")
    }
}
