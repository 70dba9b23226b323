// Extended attributes in the engine (issue 21, docs/format.md "Extended attributes"): set,
// get, list and remove with Linux's errors, kept across flushes and reopening, carried by
// snapshots, gone with their owner, and invisible to the namespace (fsck stays clean).

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class ExtendedAttributeTests: XCTestCase {
    var image = ""
    let caller = Caller(uid: 0, gid: 0)

    override func setUpWithError() throws {
        image = FileManager.default.temporaryDirectory.appendingPathComponent("h2-xattr-\(UUID().uuidString.prefix(8)).img").path
        FileManager.default.createFile(atPath: image, contents: nil)
        XCTAssertEqual(truncate(image, 1 << 30), 0)
        _ = try Formatter.format(device: FileBlockDevice(path: image, writable: true), options: FormatOptions(labels: ["DATA"]))
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: image) }

    func name(_ text: String) -> [UInt8] { Array(text.utf8) }

    func errno(of body: () throws -> Void) -> Int32? {
        do { try body() } catch let error as EngineError { return error.errno } catch { return -1 }
        return nil
    }

    func testSetGetListRemoveWithLinuxErrors() throws {
        let (file, dir) = try setAndCheck()
        // Across a reopen; nothing of it in the namespace, and the tree verifies.
        let reopened = try MutableFilesystem(paths: [image], writable: true)
        let again = try reopened.openPFS("DATA")
        XCTAssertEqual(try again.attribute(file, name: name("user.k")), name("v2"))
        XCTAssertEqual(try again.attribute(file, name: name("security.selinux")), name("label"))
        XCTAssertEqual(errno { _ = try again.attribute(file, name: self.name("user.max")) }, ENODATA)
        XCTAssertEqual(try again.attribute(dir, name: name("trusted.overlay.opaque")), name("y"))
        XCTAssertEqual(try again.attribute(1, name: name("user.root")), name("r"))
        var names: [String] = []
        try again.readDirectory(1, from: 0, withAttributes: false) { entry, _ in
            names.append(String(decoding: entry.name, as: UTF8.self))
            return true
        }
        XCTAssertEqual(names.sorted(), ["d", "f"])
        let volumes = try VolumeSet(paths: [image], writable: false)
        let verifier = Verifier(volumes: volumes)
        XCTAssertTrue(verifier.verifyTree(.topology, header: volumes.header).1.isEmpty)
        XCTAssertTrue(verifier.verifyNamespace(try Filesystem(volumes: volumes).openPFS("DATA")).problems.isEmpty)
    }

    /// Sets attributes with every error case, flushes, and closes the filesystem.
    func setAndCheck() throws -> (file: UInt64, dir: UInt64) {
        let fs = try MutableFilesystem(paths: [image], writable: true)
        let pfs = try fs.openPFS("DATA")
        let file = try pfs.create(in: 1, name: name("f"), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        XCTAssertEqual(try pfs.attributeNames(file), [])
        XCTAssertEqual(errno { _ = try pfs.attribute(file, name: self.name("user.k")) }, ENODATA)
        try pfs.setAttribute(file, name: name("user.k"), value: name("v1"))
        try pfs.setAttribute(file, name: name("security.selinux"), value: name("label"))
        // An access ACL: checked, and the mode follows it (the mask shows as group bits);
        // one the mode says all of is not kept.
        XCTAssertEqual(errno { try pfs.setAttribute(file, name: self.name("system.posix_acl_access"), value: [2, 0, 0, 0]) }, EINVAL)
        try pfs.setAttribute(file, name: name("system.posix_acl_access"), value: PosixACL(mode: 0o600).encoded())
        XCTAssertEqual(errno { _ = try pfs.attribute(file, name: self.name("system.posix_acl_access")) }, ENODATA)
        XCTAssertEqual(try pfs.attributes(file).meta.mode & 0o777, 0o600)
        let acl = PosixACL(entries: [.init(.userObject, 6), .init(.user, 4, id: 65534), .init(.groupObject, 4), .init(.mask, 6), .init(.other, 4)])
        try pfs.setAttribute(file, name: name("system.posix_acl_access"), value: acl.encoded())
        XCTAssertEqual(try pfs.attributes(file).meta.mode & 0o777, 0o664)
        XCTAssertEqual(errno { try pfs.setAttribute(file, name: self.name("system.posix_acl_default"), value: acl.encoded()) }, EACCES)
        XCTAssertEqual(try pfs.attribute(file, name: name("user.k")), name("v1"))
        XCTAssertEqual(errno { try pfs.setAttribute(file, name: self.name("user.k"), value: [], flags: PFSHandle.attributeCreate) }, EEXIST)
        XCTAssertEqual(errno { try pfs.setAttribute(file, name: self.name("user.none"), value: [], flags: PFSHandle.attributeReplace) }, ENODATA)
        try pfs.setAttribute(file, name: name("user.k"), value: name("v2"), flags: PFSHandle.attributeReplace)
        XCTAssertEqual(try pfs.attribute(file, name: name("user.k")), name("v2"))
        XCTAssertEqual(errno { try pfs.setAttribute(file, name: self.name("os2.x"), value: []) }, EOPNOTSUPP)
        XCTAssertEqual(errno { try pfs.setAttribute(file, name: self.name("user." + String(repeating: "n", count: 256)), value: []) }, ERANGE)
        XCTAssertEqual(errno { try pfs.setAttribute(file, name: self.name("user.big"), value: [UInt8](repeating: 1, count: 65_537)) }, E2BIG)
        try pfs.setAttribute(file, name: name("user.max"), value: [UInt8](repeating: 7, count: 65_536))
        XCTAssertEqual(try pfs.attributeNames(file).map { String(decoding: $0, as: UTF8.self) },
                       ["user.k", "user.max", "security.selinux", "system.posix_acl_access"])
        XCTAssertEqual(errno { try pfs.removeAttribute(file, name: self.name("user.none")) }, ENODATA)
        try pfs.removeAttribute(file, name: name("user.max"))
        // Directories and the PFS root take attributes too.
        let dir = try pfs.create(in: 1, name: name("d"), type: .directory, mode: 0o755, caller: caller).meta.inum
        try pfs.setAttribute(dir, name: name("trusted.overlay.opaque"), value: name("y"))
        try pfs.setAttribute(1, name: name("user.root"), value: name("r"))
        try fs.flush()
        return (file, dir)
    }

    func testAttributesGoWithTheirOwnerAndSnapshotsKeepThem() throws {
        let fs = try MutableFilesystem(paths: [image], writable: true)
        let pfs = try fs.openPFS("DATA")
        let file = try pfs.create(in: 1, name: name("f"), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        let value = [UInt8](repeating: 0x3C, count: 20_000)  // past the inode: a data block
        try pfs.setAttribute(file, name: name("user.big"), value: value)
        try fs.flush()
        try fs.snapshot(of: "DATA", label: "snap")
        try pfs.unlink(in: 1, name: name("f"))
        try fs.flush()
        // The attribute inode left the index with its owner...
        let volumes = try VolumeSet(paths: [image], writable: false)
        let data = try Filesystem(volumes: volumes).openPFS("DATA")
        XCTAssertThrowsError(try data.inode(file | (1 << 62)))
        // ...and the snapshot still has both.
        let snap = try fs.openPFS("snap")
        XCTAssertEqual(try snap.attribute(file, name: name("user.big")), value)
        // Emptying the table removes the attribute inode too.
        let other = try pfs.create(in: 1, name: name("g"), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        try pfs.setAttribute(other, name: name("user.a"), value: [1])
        try fs.flush()
        try pfs.removeAttribute(other, name: name("user.a"))
        try fs.flush()
        let after = try Filesystem(volumes: try VolumeSet(paths: [image], writable: false)).openPFS("DATA")
        XCTAssertThrowsError(try after.inode(other | (1 << 62)))
        XCTAssertEqual(try pfs.attributeNames(other), [])
    }

    /// The attribute inode takes its owner's compression, check code and copies, so a
    /// large table is compressed and kept in as many copies as the file's data.
    func testAttributeInodeTakesTheOwnersMethodsAndCopies() throws {
        let fs = try MutableFilesystem(paths: [image], writable: true)
        let pfs = try fs.openPFS("DATA")
        let dir = try pfs.create(in: 1, name: name("d"), type: .directory, mode: 0o755, caller: caller).meta.inum
        try pfs.setMethods(dir, compAlgo: 6 << 4 | 3, checkAlgo: 4)  // zlib:6, sha192
        try pfs.setCopies(dir, 2)
        let file = try pfs.create(in: dir, name: name("f"), type: .regularFile, mode: 0o644, caller: caller).meta.inum
        let text = [UInt8](String(repeating: "compressible attribute text ", count: 2000).utf8)
        try pfs.setAttribute(file, name: name("user.text"), value: text)
        try fs.flush()
        let data = try Filesystem(volumes: try VolumeSet(paths: [image], writable: false)).openPFS("DATA")
        let holder = try data.inode(file | (1 << 62))
        XCTAssertEqual(holder.meta.compAlgo, 6 << 4 | 3)
        XCTAssertEqual(holder.meta.checkAlgo, 4)
        XCTAssertEqual(holder.meta.ncopies, 2)
        guard case let .blockset(brefs) = holder.content else { return XCTFail("a 56 KB table is in data blocks") }
        let stored = brefs.filter { $0.type != .empty }
        XCTAssertFalse(stored.isEmpty)
        XCTAssertTrue(stored.allSatisfy { $0.compression == .zlib }, "\(stored.map(\.compression))")
        XCTAssertEqual(try data.attributeTable(of: try data.inode(file))[AttributeTable.Key(.user, name("text"))], text)
    }
}
