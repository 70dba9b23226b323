// Every DragonFly-made fixture, read through the engine in-process, must match its
// manifest field by field.

import Foundation
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class FixtureReadTests: XCTestCase {
    func testFixturesFolderIsPresent() throws {
        let names = try Fixtures.names()
        XCTAssertGreaterThanOrEqual(names.count, 10, "expected the ten reference images, found \(names)")
    }

    func testEveryFixtureMatchesItsManifest() throws {
        for name in try Fixtures.names() {
            try checkFixture(name)
        }
    }

    func checkFixture(_ name: String) throws {
        let manifest = try Fixtures.manifest(name)
        let image = try Fixtures.image(name)
        let fs = try Filesystem(paths: [image.path])
        let pfsNames = try fs.pfsEntries().map(\.name).sorted()
        XCTAssertEqual(pfsNames, manifest.pfs.map(\.name).sorted(), "\(name): PFS list")
        for expectedPFS in manifest.pfs {
            let pfs = try fs.openPFS(expectedPFS.name)
            let context = "\(name)@\(expectedPFS.name)"
            XCTAssertEqual(pfs.root.meta.pfsType.description, expectedPFS.pfs_type, "\(context): pfs_type")
            XCTAssertEqual(PFSSubtype.name(pfs.root.meta.pfsSubtype), expectedPFS.pfs_subtype, "\(context): pfs_subtype")

            let walked = try TreeWalk.walk(pfs)
            let byPath = Dictionary(walked.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a })
            XCTAssertEqual(walked.count, byPath.count, "\(context): duplicate paths")
            XCTAssertEqual(Set(walked.map(\.path)), Set(expectedPFS.entries.map(\.pathBytes)), "\(context): set of paths")
            for expected in expectedPFS.entries {
                let path = expected.path ?? expected.path_hex ?? "?"
                guard let got = byPath[expected.pathBytes] else { continue }
                let meta = got.inode.meta
                let where_ = "\(context):\(path)"
                XCTAssertEqual(manifestTypeName(meta.type), expected.type, "\(where_) type")
                if let direntType = got.direntType {
                    XCTAssertEqual(direntType, meta.type, "\(where_) dirent type vs inode type")
                }
                XCTAssertEqual(meta.mode & 0o7777, expected.mode, "\(where_) mode")
                XCTAssertEqual(meta.uid.unixID, expected.uid, "\(where_) uid")
                XCTAssertEqual(meta.gid.unixID, expected.gid, "\(where_) gid")
                XCTAssertEqual(meta.size, expected.size, "\(where_) size")
                XCTAssertEqual(meta.mtime, expected.mtime_us, "\(where_) mtime")
                XCTAssertEqual(meta.nlinks, expected.nlink, "\(where_) nlink")
                XCTAssertEqual(meta.inum, expected.inum, "\(where_) inum")
                if let sha = expected.sha256 { XCTAssertEqual(got.sha256, sha, "\(where_) sha256") }
                if let target = expected.targetBytes { XCTAssertEqual(got.target, target, "\(where_) target") }
            }

            let indexed = try TreeWalk.indexedInodeNumbers(pfs)
            XCTAssertEqual(indexed.count + 1, expectedPFS.inode_count, "\(context): inode_count")
            let reachable = Set(walked.map { $0.inode.meta.inum })
            let orphans = indexed.filter { !reachable.contains($0) }.sorted()
            XCTAssertEqual(orphans, expectedPFS.orphan_inums.sorted(), "\(context): orphan inodes")
        }
    }
}
