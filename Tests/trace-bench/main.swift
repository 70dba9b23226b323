// trace-bench: what a trace point costs in the daemon (scripts/bench-trace runs it, and
// docs/benchmarks.md, "Tracing", records the figures): an event with its subsystem masked
// off, an event recorded (one thread, and two at once into their own rings), a statistics
// update (one writer, two contending), and a FUSE request's whole trace (two events, two
// clock reads and its statistics). One JSON object per line, nanoseconds per operation,
// the best of five rounds.

import Foundation
import Glibc
import HAMMER2Trace

let path = "/tmp/trace-bench.\(getpid()).ktr"
let session = try TraceSession(path: path, volumes: 1, pfsLabel: "BENCH")
Trace.install(session)
defer { unlink(path) }

/// Nanoseconds per iteration of `loop`, which runs `count` iterations itself (so the trace
/// point inlines into it), on `threads` threads at once, the best of five rounds.
func measure(_ count: Int, threads: Int = 1, _ loop: @escaping @Sendable (Int) -> Void) -> Double {
    var best = Double.infinity
    for _ in 0..<5 {
        let start = Trace.now
        let group = DispatchGroup()
        for _ in 0..<threads {
            group.enter()
            Thread {
                loop(count)
                group.leave()
            }.start()
        }
        group.wait()
        best = min(best, Double(Trace.now - start) / Double(count))
    }
    return best
}

func report(_ name: String, _ nanoseconds: Double) {
    print("{\"name\": \"\(name)\", \"ns\": \(String(format: "%.2f", nanoseconds))}")
}

/// Keeps a value alive without the optimizer seeing through it.
@inline(never) func keep(_ value: Int) { if value == -1 { print(value) } }

@inline(__always) func tracedRequest(_ i: Int) {
    let started = Trace.now
    Trace.record(.fuseRequest(.read), UInt64(i), 0, 4096)
    let latency = Trace.now &- started
    Trace.record(.fuseReply(.read), 0, latency, 4096)
    Trace.withSession { $0.request(.read, nanoseconds: latency, failed: false) }
}

let events = 4_000_000
session.segment.mask = 0
report("empty loop", measure(50_000_000) { n in for i in 0..<n { keep(i) } })
report("event masked off", measure(50_000_000) { n in for i in 0..<n { Trace.record(.deviceRead, UInt64(i), 2, 3, 4) } })
report("event masked off + loop body", measure(50_000_000) { n in for i in 0..<n { Trace.record(.deviceRead, UInt64(i), 2, 3, 4); keep(i) } })
session.segment.mask = TraceSubsystem.all
report("event recorded", measure(events) { n in for i in 0..<n { Trace.record(.deviceRead, UInt64(i), 2, 3, 4) } })
report("event recorded, 2 threads", measure(events, threads: 2) { n in for i in 0..<n { Trace.record(.deviceRead, UInt64(i), 2, 3, 4) } })
report("clock read", measure(events) { n in for _ in 0..<n { keep(Int(truncatingIfNeeded: Trace.now)) } })
report("statistics update", measure(events) { n in for _ in 0..<n { session.fileIO(write: false, bytes: 4096) } })
report("statistics update, 2 threads", measure(events, threads: 2) { n in for _ in 0..<n { session.fileIO(write: false, bytes: 4096) } })
report("FUSE request traced", measure(events) { n in for i in 0..<n { tracedRequest(i) } })
session.segment.mask = 0
report("FUSE request, events masked off", measure(events) { n in for i in 0..<n { tracedRequest(i) } })
