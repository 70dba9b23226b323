// hammer2 scrub: reads every copy of every block and repairs bad copies from good ones
// (docs/copies.md). Online through the mount's daemon (an ioctl on the mount point, like
// bulkfree), or offline on an unmounted image with -f (a degraded set with -f and
// missing volumes is scrubbed read-only: nothing can be rewritten there).

import Foundation
import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Engine

enum ScrubDirective {
    /// Exit status: 0 nothing bad or everything repaired, 1 some block has no good copy
    /// or a bad copy could not be rewritten (the directive ran; see its report).
    static func run(_ operands: [String], image: String?, selected: String?, quiet: Bool) throws -> Int32 {
        guard operands.count <= (image == nil ? 1 : 0) else {
            throw ToolError.usage(image == nil ? "scrub: at most one path" : "scrub: no path with -f")
        }
        let result: ScrubResult
        if let image {
            let devices = image.split(separator: ":").map(String.init)
            if let mount = devices.lazy.compactMap({ path in mountedFilesystem(source: path) }).first {
                throw ToolError.failed("\(image) is mounted on \(mount); scrub the mount (hammer2 -s \(mount) scrub)")
            }
            let filesystem = try MutableFilesystem(paths: devices, writable: true)
            let showProgress = !quiet && isatty(STDERR_FILENO) != 0
            result = try filesystem.scrub { progress in
                if showProgress {
                    FileHandle.standardError.write(Data("\rscrub: \(progress.blocks) blocks, \(progress.copiesChecked) copies checked, \(progress.badCopies) bad".utf8))
                }
            }
            if showProgress { FileHandle.standardError.write(Data("\n".utf8)) }
            for problem in result.problems { printError("hammer2", "scrub: \(problem)") }
        } else {
            let path = operands.first ?? selected ?? "."
            guard mountedFilesystem(containing: path) != nil else {
                throw ToolError.failed("'\(path)' is not on a hammer2 mount (use -f IMAGE for an unmounted image)")
            }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw ToolError.failed("\(path): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: ControlRequest.argumentBytes)
            let ticker = !quiet && isatty(STDERR_FILENO) != 0 ? ProgressTicker(label: "scrub") : nil
            let status = buffer.withUnsafeMutableBytes { ioctl(fd, UInt(ControlRequest.scrub), $0.baseAddress!) }
            ticker?.stop()
            guard status == 0 else { throw ToolError.failed("scrub on \(path): \(String(cString: strerror(errno)))") }
            result = ControlRequest.decodeScrub(buffer)
        }
        print("scrub: \(result.blocks) blocks, \(result.copiesChecked) copies checked, \(result.badCopies) bad, "
              + "\(result.repaired) repaired, \(result.lostBlocks) without a good copy")
        if result.notVerified > 0 {
            print("scrub: \(result.notVerified) encrypted blocks checked for structure only (key not loaded)")
        }
        if result.lostBlocks > 0 || result.repaired < result.badCopies {
            if image == nil { print("scrub: the mount's log names each block") }
            return ExitCode.failure.rawValue
        }
        return ExitCode.success.rawValue
    }
}
