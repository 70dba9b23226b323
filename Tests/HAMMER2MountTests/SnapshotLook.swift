// What the send/receive tests compare: a snapshot's tree, mounted read-only, less the root
// directory's own mtime (a snapshot's root is made fresh, as on DragonFly), and the
// extended attributes of every entry.

import CXattr
import Glibc
import HAMMER2TestSupport

func lookAtSnapshot(_ spec: String, options: [String] = ["-o", "ro"]) throws -> (TreeSnapshot, [String: [String: [UInt8]]]) {
    let mount = try MountedImage(spec, options: options)
    defer { try? mount.unmount() }
    var tree = try TreeSnapshot.take(mount.mountpoint.path)
    tree.entries["/"]?.mtime = 0
    var attributes: [String: [String: [UInt8]]] = [:]
    for path in tree.entries.keys where tree.entries[path]?.type != S_IFLNK {
        let full = mount.mountpoint.path + (path == "/" ? "" : "/" + path)
        var names = [CChar](repeating: 0, count: 4096)
        let length = listxattr(full, &names, names.count)
        guard length > 0 else { continue }
        for name in String(decoding: names.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: "\0") {
            var value = [UInt8](repeating: 0, count: 65_536)
            let got = getxattr(full, String(name), &value, value.count)
            attributes[path, default: [:]][String(name)] = got >= 0 ? Array(value.prefix(got)) : []
        }
    }
    return (tree, attributes)
}
