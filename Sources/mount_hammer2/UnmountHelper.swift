// umount(8)'s helper for fuse.hammer2 mounts (installed as umount.fuse.hammer2, run by
// umount as root): unmounts, then waits until the daemon has written everything and
// exited, so that `umount /mnt` returns only then, as it does for a kernel filesystem
// (the kernel does not wait for a FUSE daemon: without the helper, umount returns while
// the daemon still flushes).

import Foundation
import Glibc
import HAMMER2Engine
import HAMMER2Tools

/// `umount.fuse.hammer2 DIR [-dflnrv] [-N namespace] [-t type]`
func unmountHelper(_ arguments: [String]) -> Int32 {
    var directory: String?
    var flags: Int32 = 0
    var verbose = false
    var rest = ArraySlice(arguments)
    while let argument = rest.popFirst() {
        if argument == "-t" || argument == "-N" {
            guard rest.popFirst() != nil else { return usageError("umount.fuse.hammer2", "option requires an argument -- \(argument.dropFirst())", usage: unmountUsage) }
        } else if argument.hasPrefix("-") && argument.count > 1 {
            for letter in argument.dropFirst() {
                switch letter {
                case "l": flags |= Int32(MNT_DETACH)
                case "f": flags |= Int32(MNT_FORCE)
                case "v": verbose = true
                case "n", "r", "d", "i": break
                default: return usageError("umount.fuse.hammer2", "unknown option -- \(letter)", usage: unmountUsage)
                }
            }
        } else if directory == nil {
            directory = argument
        } else {
            return usageError("umount.fuse.hammer2", "unexpected argument \(argument)", usage: unmountUsage)
        }
    }
    guard let directory else { return usageError("umount.fuse.hammer2", "missing mount point", usage: unmountUsage) }
    let resolved = URL(fileURLWithPath: directory).resolvingSymlinksInPath().path
    guard let mount = mountedFilesystem(containing: resolved), mount.mountpoint == resolved,
          let specifier = try? VolumeSpecifier(mount.source) else {
        printError("umount.fuse.hammer2", "\(directory): not a hammer2 mount")
        return ExitCode.failure.rawValue
    }
    // The daemon holds its first volume locked until it exits (after its final flush),
    // unless other mounts of the same volume keep it serving.
    let image = specifier.devices[0]
    let lock = open(image, O_RDONLY | O_CLOEXEC)
    defer { if lock >= 0 { close(lock) } }
    guard umount2(resolved, flags) == 0 else {
        printError("umount.fuse.hammer2", "\(directory): \(String(cString: strerror(errno)))")
        return ExitCode.failure.rawValue
    }
    if verbose { print("\(directory) unmounted") }
    guard lock >= 0, mountedFilesystem(source: image) == nil else { return ExitCode.success.rawValue }
    let started = Date()
    var told = false
    while flock(lock, LOCK_SH | LOCK_NB) != 0 {
        guard errno == EWOULDBLOCK || errno == EINTR else { break }
        if !told && Date().timeIntervalSince(started) > 2 && isatty(STDERR_FILENO) != 0 {
            printError("umount.fuse.hammer2", "waiting for mount_hammer2 to finish writing \(image)")
            told = true
        }
        usleep(10_000)
    }
    return ExitCode.success.rawValue
}

let unmountUsage = """
usage: umount.fuse.hammer2 node [-flnrv] [-t type]

umount(8)'s helper for hammer2 mounts: unmounts <node> and returns once the
daemon has written everything and exited. -l detaches lazily, -f forces.
"""
