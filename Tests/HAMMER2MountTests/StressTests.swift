// Concurrency stress on one mount: writers that verify what they wrote, metadata churn in a
// shared directory, readers, fsyncs and bulkfree at the same time, for a bounded time. No
// deadlock (a watchdog), no wrong bytes, and fsck clean afterwards.

import Foundation
import HAMMER2TestSupport
import XCTest

/// What the workers report, from any thread.
final class StressLog: @unchecked Sendable {
    private let lock = NSLock()
    private var failures: [String] = []
    private var done = 0

    func fail(_ message: String) { lock.lock(); failures.append(message); lock.unlock() }
    func count() { lock.lock(); done += 1; lock.unlock() }
    var errors: [String] { lock.lock(); defer { lock.unlock() }; return failures }
    var operations: Int { lock.lock(); defer { lock.unlock() }; return done }
}

final class StressTests: XCTestCase {
    func testConcurrentWritersMetadataReadersFlushesAndBulkfree() throws {
        let volume = try ScratchVolume()
        let root = volume.root
        XCTAssertEqual(mkdir(root + "/shared", 0o777), 0)
        let seconds = Double(ProcessInfo.processInfo.environment["HAMMER2_STRESS_SECONDS"] ?? "") ?? 8
        let deadline = Date().addingTimeInterval(seconds)
        let log = StressLog()
        let fail: @Sendable (String) -> Void = { log.fail($0) }
        var threads: [Thread] = []
        let done = DispatchGroup()
        for worker in 0..<4 {
            done.enter()
            let thread = Thread {
                defer { done.leave() }
                var random = SplitMix64(seed: UInt64(100 + worker))
                var mine: [String: [UInt8]] = [:]
                while Date() < deadline {
                    let name = "\(root)/shared/w\(worker)-\(random.next() % 40)"
                    switch random.next() % 8 {
                    case 0, 1, 2:  // write and read back
                        let bytes = random.bytes(Int(random.next() % 150_000))
                        guard FileManager.default.createFile(atPath: name, contents: Data(bytes)) else {
                            fail("create \(name): \(String(cString: strerror(errno)))"); continue
                        }
                        mine[name] = bytes
                        if FileManager.default.contents(atPath: name).map({ [UInt8]($0) }) != bytes { fail("read-back \(name)") }
                    case 3:  // verify an older file of mine
                        if let (path, bytes) = mine.randomElement(using: &random),
                           FileManager.default.contents(atPath: path).map({ [UInt8]($0) }) != bytes {
                            fail("verify \(path)")
                        }
                    case 4:
                        if mine[name] != nil { if unlink(name) == 0 { mine[name] = nil } else { fail("unlink \(name)") } }
                    case 5:
                        let target = "\(root)/shared/w\(worker)-\(random.next() % 40)"
                        if let bytes = mine[name], target != name {
                            if rename(name, target) == 0 { mine[name] = nil; mine[target] = bytes } else { fail("rename \(name)") }
                        }
                    case 6:  // others' names: any outcome but a crash is fine
                        _ = try? FileManager.default.contentsOfDirectory(atPath: "\(root)/shared")
                        var st = stat()
                        _ = stat("\(root)/shared/w\((worker + 1) % 4)-\(random.next() % 40)", &st)
                    default:
                        let fd = open(root, O_RDONLY | O_DIRECTORY)
                        if fsync(fd) != 0 { fail("fsync: \(String(cString: strerror(errno)))") }
                        close(fd)
                    }
                    log.count()
                }
                for (path, bytes) in mine where FileManager.default.contents(atPath: path).map({ [UInt8]($0) }) != bytes {
                    fail("final verify \(path)")
                }
            }
            threads.append(thread)
            thread.start()
        }
        // bulkfree while all that runs.
        var bulkfrees = 0
        while Date() < deadline {
            let run = try Binaries.run("hammer2", ["-s", root, "bulkfree"])
            if run.status != 0 { fail("bulkfree: \(run.stderr)") }
            bulkfrees += 1
            Thread.sleep(forTimeInterval: 0.5)
        }
        if done.wait(timeout: .now() + 60) == .timedOut {
            XCTFail("workers did not finish: deadlock?")
            return
        }
        XCTAssertEqual(log.errors, [])
        XCTAssertGreaterThan(log.operations, 100)
        XCTAssertGreaterThan(bulkfrees, 2)
        print("stress: \(log.operations) operations and \(bulkfrees) bulkfrees in \(seconds) s")
        try volume.verifyAfterRemount()
    }
}
