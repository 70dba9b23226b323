// POSIX ACLs in Linux's xattr form: validation as posix_acl_valid does it, and the mode
// arithmetic of posix_acl_chmod and posix_acl_create.

import HAMMER2Format
import XCTest

final class PosixACLTests: XCTestCase {
    typealias Entry = PosixACL.Entry

    let named = PosixACL(entries: [Entry(.userObject, 6), Entry(.user, 7, id: 65534), Entry(.groupObject, 4),
                                   Entry(.group, 5, id: 1), Entry(.mask, 7), Entry(.other, 0)])

    func testRoundTripAndTheBytesLinuxUses() throws {
        // setfacl -m u:nobody:r on a 0644 file, as the kernel passed it to the daemon.
        let bytes: [UInt8] = [2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 2, 0, 4, 0, 0xFE, 0xFF, 0, 0,
                              4, 0, 4, 0, 255, 255, 255, 255, 0x10, 0, 4, 0, 255, 255, 255, 255, 0x20, 0, 4, 0, 255, 255, 255, 255]
        let acl = try PosixACL(decoding: bytes)
        XCTAssertEqual(acl.entries.count, 5)
        XCTAssertEqual(acl.entries[1], Entry(.user, 4, id: 65534))
        XCTAssertEqual(acl.encoded(), bytes)
        XCTAssertEqual(acl.modePermissions, 0o644)
        XCTAssertFalse(acl.isMinimal)
        XCTAssertTrue(PosixACL(mode: 0o750).isMinimal)
        XCTAssertEqual(PosixACL(mode: 0o750).modePermissions, 0o750)
        XCTAssertEqual(try PosixACL(decoding: named.encoded()), named)
    }

    func testInvalidACLsAreRefused() {
        func refused(_ bytes: [UInt8], _ why: String) {
            XCTAssertThrowsError(try PosixACL(decoding: bytes), why)
        }
        var bytes = named.encoded()
        refused([], "empty")
        refused([2, 0, 0, 0], "no entries")
        refused(Array(bytes.dropLast()), "a partial entry")
        bytes[0] = 1
        refused(bytes, "version 1")
        refused(PosixACL(entries: [Entry(.userObject, 6), Entry(.other, 0)]).encoded(), "no group entry")
        refused(PosixACL(entries: [Entry(.userObject, 6), Entry(.user, 7, id: 5), Entry(.groupObject, 4), Entry(.other, 0)]).encoded(),
                "a named user without a mask")
        refused(PosixACL(entries: [Entry(.groupObject, 4), Entry(.userObject, 6), Entry(.other, 0)]).encoded(), "out of order")
        refused(PosixACL(entries: [Entry(.userObject, 6), Entry(.user, 7, id: 5), Entry(.user, 7, id: 5), Entry(.groupObject, 4),
                                   Entry(.mask, 7), Entry(.other, 0)]).encoded(), "a repeated user")
        var badTag = PosixACL(mode: 0o644).encoded()
        badTag[4] = 0x40
        refused(badTag, "an unknown tag")
        var badPermissions = PosixACL(mode: 0o644).encoded()
        badPermissions[6] = 8
        refused(badPermissions, "permission bits beyond rwx")
    }

    func testChmodSetsTheMaskNotTheOwningGroup() {
        var acl = named
        acl.applyMode(0o604)
        XCTAssertEqual(acl.entries, [Entry(.userObject, 6), Entry(.user, 7, id: 65534), Entry(.groupObject, 4),
                                     Entry(.group, 5, id: 1), Entry(.mask, 0), Entry(.other, 4)])
        XCTAssertEqual(acl.modePermissions, 0o604)
        var minimal = PosixACL(mode: 0o777)
        minimal.applyMode(0o640)
        XCTAssertEqual(minimal, PosixACL(mode: 0o640))
    }

    func testCreationIntersectsTheDefaultACLWithTheCreateMode() {
        var acl = named
        var mode: UInt32 = 0o100644
        acl.restrictForCreation(mode: &mode)
        XCTAssertEqual(mode, 0o100640, "other: the default ACL gives none")
        XCTAssertEqual(acl.entries, [Entry(.userObject, 6), Entry(.user, 7, id: 65534), Entry(.groupObject, 4),
                                     Entry(.group, 5, id: 1), Entry(.mask, 4), Entry(.other, 0)])
        var dir = PosixACL(entries: [Entry(.userObject, 7), Entry(.groupObject, 5), Entry(.other, 5)])
        var dirMode: UInt32 = 0o2777
        dir.restrictForCreation(mode: &dirMode)
        XCTAssertEqual(dirMode, 0o2755, "set-id bits are kept, permissions intersected")
    }
}
