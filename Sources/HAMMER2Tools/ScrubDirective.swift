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
            let filesystem = try ScanRequest.offlineFilesystem(image, directive: "scrub")
            let progress = ScanRequest.ProgressLine(quiet: quiet)
            result = try filesystem.scrub { progress.show("scrub: \($0.blocks) blocks, \($0.copiesChecked) copies checked, \($0.badCopies) bad") }
            progress.end()
            for problem in result.problems { printError("hammer2", "scrub: \(problem)") }
        } else {
            let reply = try ScanRequest.send(ControlRequest.scrub, path: operands.first ?? selected ?? ".", directive: "scrub", quiet: quiet)
            result = ControlRequest.decodeScrub(reply)
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
