// The parts of the trace the daemon relies on beyond the raw segment: the catalog readers
// name events with, rings given back by exited threads, statistics updated by many
// threads at once, and mask parsing for ktrmask and -o ktrmask=.

import Foundation
import Glibc
import HAMMER2Trace
import Synchronization
import XCTest

final class TraceSessionTests: TraceFileTestCase {
    func testTheCatalogNamesEveryEventAndItsArguments() throws {
        let session = try TraceSession(path: path, volumes: 2, pfsLabel: "DATA",
                                       mount: [("mountpoint", "/mnt/x"), ("source", "/img@DATA")], rings: 4, recordsPerRing: 64)
        session.segment.record(TraceEvent.deviceRead.rawValue, subsystem: TraceSubsystem.io.bit, 1, 0x10000, 65536, 1500)
        let reader = try TraceReader(path: path)
        let catalog = reader.catalog()
        XCTAssertEqual(catalog.events.count, TraceEvent.catalog.count)
        for event in TraceEvent.catalog {
            let read = try XCTUnwrap(catalog.events[event.id], event.name)
            XCTAssertEqual(read.name, event.name)
            XCTAssertEqual(read.arguments.map(\.name), event.arguments.map(\.name))
            XCTAssertEqual(read.arguments.map(\.format.rawValue), event.arguments.map(\.format.rawValue))
            XCTAssertNotNil(catalog.subsystems[event.subsystem], "subsystem of \(event.name)")
        }
        XCTAssertEqual(Set(catalog.subsystems.values), Set(TraceSubsystem.allCases.map(\.name)))
        XCTAssertEqual(catalog.events[TraceEvent.fuseReply(.lookup).rawValue]?.name, "fuse.lookup.done")
        XCTAssertEqual(reader.text("mount"), ["mountpoint": "/mnt/x", "source": "/img@DATA", "pfs": "DATA"])
        let record = try XCTUnwrap(reader.events().first)
        XCTAssertEqual(catalog.events[record.event]?.name, "io.read")
        XCTAssertEqual(record.arguments[0...3], [1, 0x10000, 65536, 1500])
        XCTAssertEqual(record.thread, UInt32(getpid()), "recorded by the main thread, whose id is the pid")
        XCTAssertEqual(Set(reader.objects().map(\.name)),
                       ["mount", "catalog", "events", "volume.0", "volume.1", "pfs.DATA", "fuse", "daemon"])
    }

    /// Threads that exit give their rings back: with two rings, ten threads one after the
    /// other all record, and a ring is reused only after the other one (round robin).
    func testRingsOfExitedThreadsAreReused() throws {
        let segment = try TraceSegment(path: path)
        try segment.addRings(count: 2, records: 1024)
        for t in 0..<10 {
            let done = DispatchSemaphore(value: 0)
            Thread {
                for i in 0..<10 { segment.record(5, subsystem: 1, UInt64(t), UInt64(i)) }
                done.signal()
            }.start()
            done.wait()
            usleep(20_000)  // the ring goes back in the thread's TLS destructor, as it exits
        }
        let records = try TraceReader(path: path).events()
        XCTAssertEqual(records.count, 100, "every thread found a ring")
        let ringOf = Dictionary(grouping: records) { $0.arguments[0] }.mapValues { Set($0.map(\.ring)) }
        XCTAssertTrue(ringOf.values.allSatisfy { $0.count == 1 })
        XCTAssertEqual((0..<10).map { ringOf[UInt64($0)]!.first! }, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1], "round robin")
    }

    /// Four threads add to one object at once; the sequence word keeps them apart, so no
    /// addition is lost and no reader sees `b` other than twice `a`.
    func testConcurrentWritersOfOneObjectLoseNothing() throws {
        let segment = try TraceSegment(path: path)
        let stats = try segment.addStatistics(name: "x", version: 1, fields: [TraceField("a"), TraceField("b")])
        let a = stats.field("a"), b = stats.field("b")
        let reader = try TraceReader(path: path)
        let perThread = 50_000
        let running = Atomic<Int>(4)
        for _ in 0..<4 {
            Thread {
                for _ in 0..<perThread { stats.update { w in w.add(a); w.add(b, 2) } }
                running.subtract(1, ordering: .releasing)
            }.start()
        }
        var bad = 0, reads = 0
        while running.load(ordering: .acquiring) > 0 {
            if let values = reader.statistics("x") {
                reads += 1
                if values["b"] != 2 * (values["a"] ?? 0) { bad += 1 }
            }
        }
        XCTAssertEqual(bad, 0, "torn among \(reads) reads")
        XCTAssertEqual(reader.statistics("x"), ["a": UInt64(4 * perThread), "b": UInt64(8 * perThread)])
    }

    func testMasksParse() {
        XCTAssertEqual(TraceSubsystem.parseMask("io,flush"), TraceSubsystem.io.bit | TraceSubsystem.flush.bit)
        XCTAssertEqual(TraceSubsystem.parseMask("io:flush"), TraceSubsystem.io.bit | TraceSubsystem.flush.bit)
        XCTAssertEqual(TraceSubsystem.parseMask("0x3"), 3)
        XCTAssertEqual(TraceSubsystem.parseMask("12"), 12)
        XCTAssertEqual(TraceSubsystem.parseMask("all"), TraceSubsystem.all)
        XCTAssertEqual(TraceSubsystem.parseMask("none"), 0)
        XCTAssertEqual(TraceSubsystem.parseMask("-fuse", base: TraceSubsystem.all), TraceSubsystem.all & ~TraceSubsystem.fuse.bit)
        XCTAssertEqual(TraceSubsystem.parseMask("+keys", base: TraceSubsystem.io.bit), TraceSubsystem.io.bit | TraceSubsystem.keys.bit)
        XCTAssertNil(TraceSubsystem.parseMask("io,bogus"))
        XCTAssertNil(TraceSubsystem.parseMask(""))
    }
}
