// mount_hammer2's -o string through libfuse's option parser (fuse_opt_parse, in
// h2fuse_classify_mount_options): split and unescaped by libfuse, each option sorted into
// ours, libfuse's, options for mount(8)/systemd passed over, refused, and unknown.

import CFUSE3
import Glibc

public struct MountOptionClasses: Sendable {
    /// What mount_hammer2 interprets (values unchecked).
    public var ours: [String] = []
    /// libfuse's mount options, handed to it.
    public var fuse: [String] = []
    /// fstab's and systemd's (auto, noauto, nofail, _netdev, x-*, ...): passed over.
    public var ignored: [String] = []
    /// fsname=, subtype=: hammer2 finds its mounts by them.
    public var refused: [String] = []
    public var unknown: [String] = []

    /// Nil when libfuse's parser fails (a bad escape, no memory).
    public init?(_ options: String) {
        var a: UnsafeMutablePointer<CChar>?, b: UnsafeMutablePointer<CChar>?, c: UnsafeMutablePointer<CChar>?
        var d: UnsafeMutablePointer<CChar>?, e: UnsafeMutablePointer<CChar>?
        let status = h2fuse_classify_mount_options(options, &a, &b, &c, &d, &e)
        let split = [a, b, c, d, e].map { pointer -> [String] in
            defer { free(pointer) }
            guard let pointer else { return [] }
            return String(cString: pointer).split(separator: "\n").map(String.init)
        }
        guard status == 0 else { return nil }
        (ours, fuse, ignored, refused, unknown) = (split[0], split[1], split[2], split[3], split[4])
    }
}
