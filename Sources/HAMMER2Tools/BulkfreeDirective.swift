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
            let devices = image.split(separator: ":").map(String.init)
            if let mount = devices.lazy.compactMap({ path in mountedFilesystem(source: path) }).first {
                throw ToolError.failed("\(image) is mounted on \(mount); run bulkfree on the mount (hammer2 -s \(mount) bulkfree)")
            }
            let filesystem = try MutableFilesystem(paths: devices, writable: true)
            let showProgress = !quiet && isatty(STDERR_FILENO) != 0
            result = try filesystem.bulkfree { scanned in
                if showProgress { FileHandle.standardError.write(Data("\rbulkfree: \(scanned) blockrefs scanned".utf8)) }
            }
            if showProgress { FileHandle.standardError.write(Data("\n".utf8)) }
        } else {
            let path = operands.first ?? selected ?? "."
            guard mountedFilesystem(containing: path) != nil else {
                throw ToolError.failed("'\(path)' is not on a hammer2 mount (use -f IMAGE for an unmounted image)")
            }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw ToolError.failed("\(path): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: ControlRequest.argumentBytes)
            // The daemon answers when done; on a terminal, show that it is running.
            let ticker = !quiet && isatty(STDERR_FILENO) != 0 ? ProgressTicker(label: "bulkfree") : nil
            let status = buffer.withUnsafeMutableBytes { ioctl(fd, UInt(ControlRequest.bulkfree), $0.baseAddress!) }
            ticker?.stop()
            guard status == 0 else { throw ToolError.failed("bulkfree on \(path): \(String(cString: strerror(errno)))") }
            result = ControlRequest.decodeBulkfree(buffer)
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
