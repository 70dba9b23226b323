// The trace segment (issue 9): events recorded under concurrency come out complete and in
// per-thread order, statistics are never read torn, a segment whose writer is gone is
// readable, and a reader picks up objects and fields it was not built for.

import Foundation
import Glibc
import HAMMER2Trace
import Synchronization
import XCTest

final class TraceSegmentTests: TraceFileTestCase {
    func testConcurrentEventsAreCompleteAndInPerThreadOrder() throws {
        let segment = try TraceSegment(path: path)
        try segment.addRings(count: 8, records: 4096)
        let threads = 4, perThread = 3000
        let done = DispatchGroup()
        for t in 0..<threads {  // threads of their own: each records into its own ring
            done.enter()
            Thread {
                for i in 0..<perThread {
                    segment.record(7, subsystem: 1, UInt64(t), UInt64(i), UInt64(i) * 3)
                }
                done.leave()
            }.start()
        }
        done.wait()
        let records = try TraceReader(path: path).events()
        XCTAssertEqual(records.count, threads * perThread)
        let byThread = Dictionary(grouping: records) { $0.arguments[0] }
        XCTAssertEqual(byThread.count, threads)
        for (thread, list) in byThread {
            let ordered = list.sorted { $0.position < $1.position }
            XCTAssertTrue(ordered.map { $0.arguments[1] } == (0..<UInt64(perThread)).map { $0 }, "thread \(thread): \(ordered.count) records in rings \(Set(ordered.map(\.ring)))")
            XCTAssertTrue(ordered.allSatisfy { $0.event == 7 && $0.arguments[2] == $0.arguments[1] * 3 })
            XCTAssertEqual(Set(ordered.map(\.ring)).count, 1, "one ring per thread")
            XCTAssertEqual(Set(ordered.map(\.thread)).count, 1, "one thread id per thread")
            XCTAssertTrue(zip(ordered, ordered.dropFirst()).allSatisfy { $0.timestamp <= $1.timestamp })
        }
    }

    func testAWrappedRingKeepsItsNewestRecordsAndAMaskedSubsystemRecordsNothing() throws {
        let segment = try TraceSegment(path: path)
        try segment.addRings(count: 2, records: 64)
        for i in 0..<1000 { segment.record(1, subsystem: 2, UInt64(i)) }
        segment.mask = ~UInt64(2)
        for i in 0..<100 { segment.record(1, subsystem: 2, 10_000 + UInt64(i)) }
        let reader = try TraceReader(path: path)
        XCTAssertEqual(reader.mask, ~UInt64(2))
        XCTAssertEqual(reader.events().map { $0.arguments[0] }, (936..<1000).map { UInt64($0) })
    }

    func testStatisticsAreNeverReadTorn() throws {
        let segment = try TraceSegment(path: path)
        let stats = try segment.addStatistics(name: "pfs.DATA", version: 1,
                                              fields: [TraceField("a"), TraceField("b"), TraceField("c", .gauge, unit: "bytes")])
        let reader = try TraceReader(path: path)
        let done = DispatchSemaphore(value: 0)
        let readsSoFar = Atomic<Int>(0)
        let written = Atomic<Int>(0)
        Thread {
            // At least 100,000 updates, and on until the reader has read 200 times, so the
            // two overlap however the threads are scheduled.
            var i = 0
            while i < 100_000 || readsSoFar.load(ordering: .relaxed) < 200 {
                i += 1
                stats.update { w in
                    w["a"] = UInt64(i)
                    w["b"] = UInt64(i) * 2
                    w["c"] = UInt64(i) * 3
                }
            }
            written.store(i, ordering: .releasing)
            done.signal()
        }.start()
        var torn = 0
        while done.wait(timeout: .now()) == .timedOut {
            guard let v = reader.statistics("pfs.DATA") else { continue }
            readsSoFar.add(1, ordering: .relaxed)
            if v["b"] != v["a"]! * 2 || v["c"] != v["a"]! * 3 { torn += 1 }
        }
        let reads = readsSoFar.load(ordering: .relaxed)
        XCTAssertGreaterThanOrEqual(reads, 200)
        XCTAssertEqual(torn, 0, "of \(reads) reads")
        let last = UInt64(written.load(ordering: .acquiring))
        XCTAssertEqual(reader.statistics("pfs.DATA"), ["a": last, "b": last * 2, "c": last * 3])
    }

    /// The writer's process is gone (here: its mapping and object are); the file still
    /// holds every committed record and the last statistics.
    func testASegmentOutlivesItsWriter() throws {
        do {
            let segment = try TraceSegment(path: path)
            try segment.addRings(count: 4, records: 256)
            let stats = try segment.addStatistics(name: "volume.0", version: 1, fields: [TraceField("reads")])
            stats.update { $0["reads"] = 42 }
            for i in 0..<100 { segment.record(3, subsystem: 1, UInt64(i)) }
        }
        let reader = try TraceReader(path: path)
        XCTAssertEqual(reader.events().count, 100)
        XCTAssertEqual(reader.statistics("volume.0")?["reads"], 42)
        XCTAssertEqual(reader.writerPID, getpid())
    }

    /// A reader built for version 1 of "pfs.DATA" (fields reads and writes) reads them from
    /// version 2, which adds a field and a histogram, and from a segment with an object it
    /// has never heard of.
    func testReadersPickUpNewFieldsAndObjects() throws {
        let segment = try TraceSegment(path: path)
        let stats = try segment.addStatistics(name: "pfs.DATA", version: 2, fields: [
            TraceField("check_failures"), TraceField("reads"), TraceField("latency_us", .histogram, count: 4, unit: "us"),
            TraceField("writes"),
        ])
        stats.update { w in
            w["reads"] = 10
            w["writes"] = 20
            w["latency_us", 3] = 5
        }
        let reader = try TraceReader(path: path)
        let v = try XCTUnwrap(reader.statistics("pfs.DATA"))
        XCTAssertEqual(v["reads"], 10)
        XCTAssertEqual(v["writes"], 20)
        XCTAssertEqual(v["latency_us[3]"], 5)
        XCTAssertEqual(reader.objects().first?.version, 2)
        _ = try segment.addStatistics(name: "cache", version: 1, fields: [TraceField("hits")])
        XCTAssertEqual(reader.objects().map(\.name), ["pfs.DATA", "cache"], "an object added later appears")
        XCTAssertEqual(reader.objects()[0].fields.first { $0.name == "latency_us" }?.unit, "us")
    }

    func testNotASegmentIsRefused() throws {
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(repeating: 7, count: 8192)))
        XCTAssertThrowsError(try TraceReader(path: path)) { XCTAssertEqual($0 as? TraceError, .notASegment(path)) }
    }

    /// A damaged segment (offsets, sizes and counts pointing past the file) is read as far
    /// as it is sound: the damaged objects are skipped, nothing is read out of bounds.
    func testADamagedSegmentIsReadAsFarAsItIsSound() throws {
        let session = try TraceSession(path: path, volumes: 1, pfsLabel: "DATA", rings: 2, recordsPerRing: 64)
        session.segment.record(TraceEvent.deviceRead.rawValue, subsystem: TraceSubsystem.io.bit, 0, 1, 2, 3)
        let objects = try TraceReader(path: path).objects()
        let fd = open(path, O_RDWR)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        func poke(_ offset: Int, _ value: UInt64) {
            XCTAssertEqual(withUnsafeBytes(of: value.littleEndian) { pwrite(fd, $0.baseAddress, 8, off_t(offset)) }, 8)
        }
        func entry(_ name: String) -> Int {
            TraceLayout.directoryOffset + objects.firstIndex { $0.name == name }! * TraceLayout.entryBytes
        }
        let rings = objects.first { $0.name == "events" }!, catalog = objects.first { $0.name == "catalog" }!
        poke(entry("volume.0") + TraceLayout.entryOffset, UInt64(1) << 40)     // data far past the end
        poke(entry("fuse") + TraceLayout.entrySchemaOffset, UInt64(1) << 40)   // schema far past the end
        poke(entry("daemon") + TraceLayout.entryBytesField, UInt64.max)          // a size past Int
        poke(rings.offset, UInt64(1) << 63 | UInt64(1) << 31)                  // 2^31 rings of 2^31 records
        poke(catalog.offset, UInt64(0x7FFF_FFFF) << 32 | 0x7FFF_FFFF)          // subsystem and event counts
        let reader = try TraceReader(path: path)
        XCTAssertEqual(Set(reader.objects().map(\.name)), Set(objects.map(\.name)).subtracting(["volume.0", "fuse", "daemon"]))
        XCTAssertNil(reader.statistics("volume.0"))
        XCTAssertNil(reader.statistics("fuse"))
        XCTAssertNotNil(reader.statistics("pfs.DATA"), "sound objects still read")
        XCTAssertEqual(reader.events(), [])
        XCTAssertTrue(reader.catalog().events.isEmpty)
        XCTAssertEqual(reader.text("mount")["pfs"], "DATA")
    }
}
