// fsck on a volume whose PFS root inode is damaged: the damaged root is named and the
// other PFSes are still checked.

import Foundation
import HAMMER2Engine
import HAMMER2TestSupport
import XCTest

final class FsckPFSRootTests: XCTestCase {
    func testADamagedPFSRootIsNamedAndTheOthersAreStillChecked() throws {
        let image = FileManager.default.temporaryDirectory.appendingPathComponent("h2-fsck-root-\(getpid()).img").path
        defer { try? FileManager.default.removeItem(atPath: image) }
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "256m", "-L", "DATA", "-L", "EXTRA", image]).status, 0)
        let entries = try Filesystem(paths: [image]).pfsEntries()
        let data = try XCTUnwrap(entries.first { $0.name == "DATA" })
        // Flip a byte inside the DATA root inode's mode field.
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: image))
        try handle.seek(toOffset: data.bref.mediaOffset + 0x54)
        let byte = try XCTUnwrap(handle.readData(ofLength: 1).first)
        try handle.seek(toOffset: data.bref.mediaOffset + 0x54)
        handle.write(Data([byte ^ 0x40]))
        try handle.close()
        let fsck = try Binaries.run("fsck_hammer2", ["-q", image])
        XCTAssertEqual(fsck.status, 1)
        XCTAssertTrue(fsck.stderr.contains("PFS root inode"), fsck.stderr)
        XCTAssertTrue(fsck.stdout.contains("EXTRA: 1 directories") && fsck.stdout.contains("LOCAL: 1 directories"), fsck.stdout)
    }
}
