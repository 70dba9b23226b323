// hammer2 bulkfree: online through the mount's daemon (an ioctl on the mount point, as
// DragonFly's HAMMER2IOC_BULKFREE_SCAN), or offline on an unmounted image with -f.

import Foundation
import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Engine

enum BulkfreeDirective {
    static func run(_ operands: [String], image: String?, selected: String?, quiet: Bool) throws {
        guard operands.count <= (image == nil ? 1 : 0) else {
            throw ToolError.usage(image == nil ? "bulkfree: at most one path" : "bulkfree: no path with -f")
        }
        let result: BulkfreeResult
        if let image, operands.isEmpty {
            let filesystem = try ScanRequest.offlineFilesystem(image, directive: "bulkfree")
            let progress = ScanRequest.ProgressLine(quiet: quiet)
            result = try filesystem.bulkfree { scanned in progress.show("bulkfree: \(scanned) blockrefs scanned") }
            progress.end()
        } else {
            let reply = try ScanRequest.send(ControlRequest.bulkfree, path: operands.first ?? selected ?? ".", directive: "bulkfree", quiet: quiet)
            result = ControlRequest.decodeBulkfree(reply)
        }
        print("bulkfree: \(result.blockrefsScanned) blockrefs scanned, \(formatBytes(result.referencedBytes)) in use, "
              + "\(formatBytes(result.freedBytes)) freed")
        if result.repairedBlocks > 0 {
            print("bulkfree: \(result.repairedBlocks) blocks in use were marked free; now marked allocated")
        }
    }

    static func formatBytes(_ bytes: UInt64) -> String {
        String(format: "%.2fMB", Double(bytes) / 1_048_576)
    }
}

/// What bulkfree and scrub share: offline, the image opened for writing (refused while it
/// is mounted) with a progress line on a terminal; online, one ioctl to the mount's daemon,
/// which answers when done, with a ticker on a terminal meanwhile.
enum ScanRequest {
    static func offlineFilesystem(_ image: String, directive: String) throws -> MutableFilesystem {
        let devices = image.split(separator: ":").map(String.init)
        if let mount = devices.lazy.compactMap({ path in mountedFilesystem(source: path) }).first {
            throw ToolError.failed("\(image) is mounted on \(mount); run \(directive) on the mount (hammer2 -s \(mount) \(directive))")
        }
        return try MutableFilesystem(paths: devices, writable: true)
    }

    /// Sends `command` (a 64-byte request) to the daemon of the mount holding `path`.
    static func send(_ command: UInt32, path: String, directive: String, quiet: Bool) throws -> [UInt8] {
        guard mountedFilesystem(containing: path) != nil else {
            throw ToolError.failed("'\(path)' is not on a hammer2 mount (use -f IMAGE for an unmounted image)")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ToolError.failed("\(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: ControlRequest.argumentBytes)
        let ticker = !quiet && isatty(STDERR_FILENO) != 0 ? ProgressTicker(label: directive) : nil
        let status = buffer.withUnsafeMutableBytes { ioctl(fd, UInt(command), $0.baseAddress!) }
        ticker?.stop()
        guard status == 0 else { throw ToolError.failed("\(directive) on \(path): \(String(cString: strerror(errno)))") }
        return buffer
    }

    /// A progress line rewritten in place on stderr when it is a terminal.
    struct ProgressLine {
        let enabled: Bool
        init(quiet: Bool) { enabled = !quiet && isatty(STDERR_FILENO) != 0 }
        func show(_ text: String) { if enabled { FileHandle.standardError.write(Data("\r\(text)".utf8)) } }
        func end() { if enabled { FileHandle.standardError.write(Data("\n".utf8)) } }
    }

    /// Runs a key operation with a progress line for its scan of the media for stale key
    /// records (KeyErasure), ended before the operation's result or error is printed.
    static func withErasureProgress<T>(_ body: (@escaping (UInt64, UInt64) -> Void) throws -> T) rethrows -> T {
        let line = ProgressLine(quiet: false)
        var shown = false
        defer { if shown { line.end() } }
        return try body { done, total in
            shown = true
            line.show("erasing stale key records: \(done * 100 / max(total, 1))% of the media scanned")
        }
    }
}

/// "label: running, N s" on stderr once a second until stopped (for requests that report
/// only when they end).
final class ProgressTicker: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    init(label: String) {
        let start = Date()
        Thread.detachNewThread { [done, finished] in
            while done.wait(timeout: .now() + 1) == .timedOut {
                FileHandle.standardError.write(Data("\r\(label): running, \(Int(Date().timeIntervalSince(start))) s".utf8))
            }
            finished.signal()
        }
    }

    func stop() {
        done.signal()
        finished.wait()
        FileHandle.standardError.write(Data("\r".utf8))
    }
}
