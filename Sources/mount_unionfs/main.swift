// mount_unionfs: a union of directories through FUSE (docs/unionfs.md).
//
//   mount_unionfs [-f] [-d] -o lowerdir=A[:B...][,upperdir=U,workdir=W][,...] node

import CFUSE3
import Foundation
import Glibc
import HAMMER2Release
import UnionFS

let usageText = """
usage: mount_unionfs [-f] [-d] -o lowerdir=A[:B...][,upperdir=U,workdir=W][,options] node

Shows directories A over B (read-only lower layers, the leftmost on top) with the
writable U on top of them, merged at <node> (read-only without upperdir). The upper
directory is in kernel overlayfs's format: whiteouts are 0/0 character devices,
opaque directories carry the overlay.opaque xattr (trusted.overlay.* as root,
user.overlay.* otherwise or with userxattr). Unmount with: fusermount3 -u <node>

  -f            stay in the foreground (log to stderr)
  -d            FUSE debug output (implies -f)
  -o options    comma-separated: lowerdir=, upperdir=, workdir= (on the same
                filesystem as upperdir; W/work and W/index are the union's),
                userxattr, timeout=<seconds> (kernel caching of names and
                attributes, default 1), volatile (copy-ups not synced),
                allow_other and other FUSE options
  -h, --help    this text

Exit status: 0 mounted, 1 a layer or the mount failed, 2 bad arguments.
"""

func fail(_ message: String, _ status: Int32) -> Never {
    FileHandle.standardError.write(Data("mount_unionfs: \(message)\n".utf8))
    exit(status)
}

var foreground = false, debug = false
var optionText: [String] = []
var operands: [String] = []
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
    switch argument {
    case "-h", "--help": print(usageText); exit(0)
    case "--version": print(Release.versionLine("mount_unionfs")); exit(0)
    case "-f": foreground = true
    case "-d": debug = true; foreground = true
    case "-o":
        guard let value = arguments.next() else { fail("-o needs options\n\(usageText)", 2) }
        optionText.append(value)
    default:
        if argument.hasPrefix("-o") && argument.count > 2 { optionText.append(String(argument.dropFirst(2))); continue }
        if argument.hasPrefix("-") { fail("unknown option \(argument)\n\(usageText)", 2) }
        operands.append(argument)
    }
}
guard operands.count == 1 else { fail("one mount point is needed\n\(usageText)", 2) }

var fuseOptions: [String] = []
let configuration: UnionConfiguration
do {
    let options = optionText.flatMap { $0.split(separator: ",", omittingEmptySubsequences: true).map(String.init) }
    configuration = try UnionConfiguration.parse(options, others: &fuseOptions).validated()
} catch let error as UnionConfiguration.ConfigurationError {
    if case .usage = error { fail("\(error)\n\(usageText)", 2) }
    fail("\(error)", 1)
} catch {
    fail("\(error)", 1)
}

let logger: @Sendable (String) -> Void = { message in
    FileHandle.standardError.write(Data("mount_unionfs: \(message)\n".utf8))
}

let server: UnionServer
do {
    let filesystem = try UnionFilesystem(configuration: configuration)
    server = UnionServer(filesystem: filesystem, mountpoint: operands[0], fuseOptions: fuseOptions, debug: debug, logger: logger)
    try server.mount()
} catch {
    fail("\(operands[0]): \(error)", 1)
}
guard fuse_daemonize(foreground ? 1 : 0) == 0 else {
    server.stop()
    server.run()
    fail("cannot detach into the background", 1)
}

exit(server.serveOnNewThread() ? 0 : 1)
