// hammer2 send / receive (docs/send-receive.md): a snapshot as a stream on standard output,
// and a stream from standard input made a snapshot of an unmounted volume. Progress goes to
// a terminal on standard error.

import Foundation
import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2FUSE
import HAMMER2Format

enum SendReceiveDirectives {
    /// `send [-i BASE] SNAPSHOT`: of the mount selected (-s, the current directory) or of
    /// `-f IMAGE`.
    static func send(_ operands: [String], context: Hammer2Command.Context) throws -> Int32 {
        let parsed = try GetOpt(operands, spec: "i:nt:")
        var base = parsed.options.first { $0.0 == "i" }?.1
        let dryRun = parsed.options.contains { $0.0 == "n" }
        var resume: SendResumeToken?
        if let text = parsed.options.first(where: { $0.0 == "t" })?.1 {
            guard let token = SendResumeToken(text) else { throw ToolError.usage("send: \"\(text)\" is not a resume token") }
            resume = token
        }
        guard parsed.operands.count == 1 || (resume != nil && parsed.operands.isEmpty) else {
            throw ToolError.usage("send: requires [-n] [-i base] <snapshot>, or -t token")
        }
        guard dryRun || isatty(STDOUT_FILENO) == 0 else {
            throw ToolError.usage("send: standard output is a terminal; send it to a file or a pipe (hammer2 send SNAP | ...)")
        }
        let target = try Hammer2Command.targetsFor([], context)[0]
        let filesystem = try Filesystem(paths: target.devices)
        var snapshot = parsed.operands.first ?? ""
        if let resume {
            // The token names the snapshot and its base by filesystem id.
            let entries = try filesystem.pfsEntries()
            func label(_ id: HAMMER2UUID, _ what: String) throws -> String {
                guard let entry = entries.first(where: { $0.inode.meta.pfsFilesystemID == id }) else {
                    throw ToolError.failed("send: the token's \(what) (\(id)) is not on \(target.display)")
                }
                return entry.name
            }
            snapshot = try label(resume.snapshotFilesystemID, "snapshot")
            base = resume.baseFilesystemID == .zero ? nil : try label(resume.baseFilesystemID, "base snapshot")
        }
        // The size first (no data read) for -n, for a terminal's ETA and the receiving
        // side's (it goes into the stream's begin record); a resumed stream does without.
        var estimate: SendSummary?
        if resume == nil {
            estimate = try SendStream.send(from: filesystem, snapshot: snapshot, base: base, estimate: true) { _ in }
        }
        if dryRun, let estimate {
            print("would send \(estimate.inodes) inodes in about \(estimate.streamBytes) bytes (\(Text.size(estimate.streamBytes).trimmingCharacters(in: .whitespaces)))")
            return 0
        }
        var progress = Progress(verb: "sent", total: estimate?.streamBytes)
        let summary = try SendStream.send(from: filesystem, snapshot: snapshot, base: base, resume: resume,
                                          expectedBytes: estimate?.streamBytes) { bytes in
            try writeAll(STDOUT_FILENO, bytes)
            progress.add(bytes.count)
        }
        progress.finish()
        if isatty(STDERR_FILENO) != 0 || context.verbose > 0 {
            printError("hammer2", "send: \(summary.inodes) inodes, \(summary.dataBytes) data bytes, \(progress.bytes) stream bytes")
        }
        return 0
    }

    /// `-f IMAGE receive [-F] [-c comp] LABEL`.
    static func receive(_ operands: [String], context: Hammer2Command.Context) throws -> Int32 {
        let parsed = try GetOpt(operands, spec: "FTAc:")
        let replace = parsed.options.contains { $0.0 == "F" }
        let compression = try parsed.options.first { $0.0 == "c" }?.1.map { try InodeDirectives.parseCompression($0) }
        let list = parsed.options.contains { $0.0 == "T" }, abandon = parsed.options.contains { $0.0 == "A" }
        guard let image = context.image else {
            guard !list && !abandon else { throw ToolError.usage("receive: -T and -A work on an unmounted volume (-f IMAGE)") }
            return try receiveThroughDaemon(parsed.operands, replace: replace, compression: compression, context: context)
        }
        if list || abandon {
            // Receives kept after an interruption: their tokens (-T), or gone (-A).
            guard parsed.operands.isEmpty, compression == nil, !replace else { throw ToolError.usage("receive: -T and -A take no label or other option") }
            for (label, token) in try PFSDirectives.offline(image).interruptedReceives(abandon: abandon) {
                print(abandon ? "\(label)\tdropped" : "\(token?.text ?? "-")\t\(label)")
            }
            return 0
        }
        guard parsed.operands.count == 1, !parsed.operands[0].isEmpty else { throw ToolError.usage("receive: requires [-F] [-c comp] <label>") }
        let filesystem = try PFSDirectives.offline(image)
        var progress = Progress(verb: "received")
        let summary: ReceiveSummary
        do {
            summary = try filesystem.receive(label: parsed.operands[0], replace: replace, compression: compression) { count in
                var buffer = [UInt8](repeating: 0, count: min(count, 1 << 20))
                let got = buffer.withUnsafeMutableBytes { Glibc.read(STDIN_FILENO, $0.baseAddress, $0.count) }
                guard got >= 0 else { throw ToolError.failed("reading standard input: \(String(cString: strerror(errno)))") }
                let bytes = Array(buffer.prefix(got))
                progress.take(bytes)
                return bytes
            }
        } catch let error as ReceiveError {
            progress.finish()
            if case .interrupted = error { throw ToolError.failed("receive: \(error) — \(parsed.operands[0]) was not made") }
            throw ToolError.failed("receive: \(error) — nothing was changed")
        }
        progress.finish()
        print("received \(summary.incremental ? "incremental" : "full") stream as \(summary.label): "
              + "\(summary.inodes) inodes, \(summary.dataBytes) data bytes")
        return 0
    }

    /// `receive [-F] LABEL` on a mount (-s, or the current directory): the stream goes to
    /// the volume's daemon, which receives it beside the mounts it serves.
    private static func receiveThroughDaemon(_ operands: [String], replace: Bool, compression: UInt8?,
                                             context: Hammer2Command.Context) throws -> Int32 {
        guard operands.count == 1, !operands[0].isEmpty else { throw ToolError.usage("receive: requires [-F] [-c comp] <label>") }
        let path = context.selectedPath ?? FileManager.default.currentDirectoryPath
        guard let mount = mountedFilesystem(containing: path) else {
            throw ToolError.usage("receive: give the volume with -f IMAGE, or run it on a hammer2 mount (-s MOUNTPOINT)")
        }
        let device = try VolumeSpecifier(mount.source).devices[0]
        guard let socket = VolumeDaemon.socketPath(forDevice: device, create: false) else {
            throw ToolError.failed("receive: no control socket for \(mount.mountpoint)'s daemon (it belongs to another user?)")
        }
        var progress = Progress(verb: "received")
        let request = ReceiveRequest(receiveLabel: operands[0], replace: replace, compression: compression)
        let reply = try VolumeDaemon.requestReceive(request, socketPath: socket) {
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            let got = buffer.withUnsafeMutableBytes { Glibc.read(STDIN_FILENO, $0.baseAddress, $0.count) }
            guard got >= 0 else { throw ToolError.failed("reading standard input: \(String(cString: strerror(errno)))") }
            let bytes = Array(buffer.prefix(got))
            progress.take(bytes)
            return bytes
        }
        progress.finish()
        guard let reply else { throw ToolError.failed("receive: the daemon of \(mount.mountpoint) does not answer") }
        guard reply.received else {
            throw ToolError.failed("receive: \(reply.message) — " + (reply.kept ? "\(operands[0]) was not made" : "nothing was changed"))
        }
        print(reply.message)
        return 0
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw ToolError.failed("writing the stream: \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    /// Bytes and rate on a terminal (standard error), twice a second.
    struct Progress {
        let verb: String
        /// The estimated stream size, for the share done and the time left.
        var total: UInt64?
        /// The first bytes of a stream being received, until its begin record (which says
        /// the size the sender expects) is whole.
        var head: [UInt8]? = []
        var bytes = 0
        let started = Date()
        var shown = Date.distantPast
        let terminal = isatty(STDERR_FILENO) != 0

        init(verb: String, total: UInt64? = nil) {
            self.verb = verb
            self.total = total
        }

        mutating func add(_ count: Int) {
            bytes += count
            guard terminal, Date().timeIntervalSince(shown) >= 0.5 else { return }
            shown = Date()
            let seconds = max(0.001, shown.timeIntervalSince(started))
            let rate = Double(bytes) / seconds
            var line = String(format: "\r%@ %.1f MB", verb, Double(bytes) / 1e6)
            if let total, total > 0 {
                let left = max(0, Double(total) - Double(bytes))
                line += String(format: " of ~%.1f MB (%.0f%%), ETA %.0f s", Double(total) / 1e6,
                               min(100, 100 * Double(bytes) / Double(total)), rate > 0 ? left / rate : 0)
            }
            line += String(format: ", %.1f MB/s  ", rate / 1e6)
            FileHandle.standardError.write(Data(line.utf8))
        }

        /// Received bytes: counted, and the stream's expected size read from its begin record.
        mutating func take(_ bytes: [UInt8]) {
            if var first = head {
                first += bytes
                head = first
                if let header = try? first.withUnsafeBytes({ try SendStreamRecordHeader(decoding: $0) }),
                   header.type == .begin || header.type == .rawBegin {
                    let end = SendStreamRecordHeader.bytes + Int(header.payloadBytes)
                    if first.count >= end {
                        head = nil
                        if header.sequence == 0,
                           let begin = try? first[SendStreamRecordHeader.bytes..<end].withUnsafeBytes({ try SendStreamBegin(decoding: $0) }) {
                            total = begin.expectedBytes
                            if total != nil { shown = .distantPast }  // shown with its ETA at once
                        }
                    }
                } else if first.count >= SendStreamRecordHeader.bytes {
                    head = nil  // not a stream: the receiver says so
                }
            }
            add(bytes.count)
        }

        func finish() {
            if terminal && shown != .distantPast { FileHandle.standardError.write(Data("\n".utf8)) }
        }
    }
}
