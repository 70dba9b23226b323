// A FUSE request's trace: an event as it comes in, one as it is answered (error, latency,
// bytes), and the request's count and latency in the segment's "fuse" statistics. Without
// an installed trace segment it costs a few loads and branches.

import CAtomicMemory
import HAMMER2Trace

struct RequestTrace {
    let op: FUSEOpcode
    let started: UInt64
    /// Bytes the reply carries (reads) or the request brought (writes).
    var bytes = 0

    @inline(__always)
    init(_ op: FUSEOpcode, _ a0: UInt64 = 0, _ a1: UInt64 = 0, _ a2: UInt64 = 0) {
        self.op = op
        started = h2_trace_context() != nil ? Trace.now : 0
        h2_thread_error_set(0)
        Trace.record(.fuseRequest(op), a0, a1, a2)
    }

    /// After the reply: `FUSEServer.replyError` noted the error, if any.
    @inline(__always)
    func end() {
        guard started != 0 else { return }
        let latency = Trace.now &- started
        let error = h2_thread_error_get()
        Trace.record(.fuseReply(op), UInt64(error), latency, UInt64(bytes))
        Trace.withSession { session in
            session.request(op, nanoseconds: latency, failed: error != 0)
            if error == 0 && (op == .read || op == .write) { session.fileIO(write: op == .write, bytes: bytes) }
        }
    }
}
