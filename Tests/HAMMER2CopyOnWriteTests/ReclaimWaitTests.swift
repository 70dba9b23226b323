// A writer that finds the volume full waits for the reclaimer. Two writers meet a full
// volume at once: the pass the first one starts frees the space, and may end before the
// second one asks. The second must then retry, not say ENOSPC (seen as a failed fsync of
// a file written right after rm on a full volume, on a loaded machine).

@testable import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class ReclaimWaitTests: XCTestCase {
    var image = ""
    let caller = Caller(uid: 0, gid: 0)

    override func setUpWithError() throws {
        image = FileManager.default.temporaryDirectory.appendingPathComponent("h2-reclaim-\(UUID().uuidString.prefix(8)).img").path
        FileManager.default.createFile(atPath: image, contents: nil)
        XCTAssertEqual(truncate(image, 128 << 20), 0)
        _ = try Formatter.format(device: FileBlockDevice(path: image, writable: true), options: FormatOptions(labels: ["DATA"]))
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: image) }

    func testPassThatEndedBeforeTheWriterAskedCounts() throws {
        let fs = try MutableFilesystem(paths: [image], writable: true)
        var policy = ReclaimPolicy()
        policy.garbageFraction = 2  // no pass of its own: the test runs them
        fs.startReclaimer(policy)
        defer { fs.stopReclaimer() }
        let data = try fs.openPFS("DATA")
        var random = SplitMix64(seed: 71)
        for i in 0..<8 {
            let inum = try data.create(in: 1, name: Array("f\(i)".utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
            _ = try random.bytes(4 << 20).withUnsafeBytes { try data.write(inum, offset: 0, $0) }
        }
        try fs.flush()
        for i in 0..<8 { try data.unlink(in: 1, name: Array("f\(i)".utf8)) }
        try fs.flush()

        // The writer's mark is taken, then another writer's pass frees the files' space...
        let mark = fs.reclaimedBytesMark
        let pass = try fs.bulkfree()
        XCTAssertGreaterThanOrEqual(pass.freedBytes, 32 << 20)
        // ...and now nothing has been allocated since that pass began: asking for a new
        // pass would look pointless. What the pass freed since the mark counts.
        XCTAssertEqual(fs.withLock { fs.allocator.bytesAllocatedSinceReclaim }, 0)
        let started = Date()
        XCTAssertEqual(fs.waitForReclaim(since: mark), fs.reclaimedBytesMark - mark, "retry: the pass freed space")
        XCTAssertGreaterThanOrEqual(fs.reclaimedBytesMark - mark, pass.freedBytes)
        // A writer that failed after that pass, with nothing left to free: ENOSPC at once.
        XCTAssertNil(fs.waitForReclaim(since: fs.reclaimedBytesMark))
        XCTAssertLessThan(Date().timeIntervalSince(started), 5, "no wait for a pass that cannot help")
    }
}
