// Extended attributes as the tools print them (printinode, show): text values quoted,
// POSIX ACLs in getfacl's short form, anything else in hex.

import CXattr
import Glibc
import HAMMER2Format

enum AttributeText {
    static func describe(name: [UInt8], value: [UInt8]) -> String {
        let nameText = String(decoding: name, as: UTF8.self)
        return "\(nameText) = \(describe(value: value, isACL: nameText.hasPrefix("system.posix_acl_")))"
    }

    static func describe(value: [UInt8], isACL: Bool) -> String {
        if isACL, let acl = try? PosixACL(decoding: value) {
            return acl.entries.map { entry in
                let rwx = (entry.permissions & 4 != 0 ? "r" : "-") + (entry.permissions & 2 != 0 ? "w" : "-")
                    + (entry.permissions & 1 != 0 ? "x" : "-")
                switch entry.tag {
                case .userObject: return "user::" + rwx
                case .user: return "user:\(entry.id):" + rwx
                case .groupObject: return "group::" + rwx
                case .group: return "group:\(entry.id):" + rwx
                case .mask: return "mask::" + rwx
                case .other: return "other::" + rwx
                }
            }.joined(separator: ",")
        }
        let text = value.last == 0 ? value.dropLast() : value[...]
        if !text.isEmpty, text.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) {
            return "\"" + String(decoding: text, as: UTF8.self) + "\""
        }
        let shown = value.prefix(32).map { Text.hex(UInt64($0), width: 2) }.joined()
        return "0x\(shown)\(value.count > 32 ? "..." : "") (\(value.count) bytes)"
    }

    /// The attributes of a host path, not following a final symlink (llistxattr).
    static func hostAttributes(_ path: String) throws -> [(name: [UInt8], value: [UInt8])] {
        var size = llistxattr(path, nil, 0)
        guard size >= 0 else { throw ToolError.failed("\(path): listxattr: \(String(cString: strerror(errno)))") }
        var names = [CChar](repeating: 0, count: max(size, 1))
        size = llistxattr(path, &names, names.count)
        guard size >= 0 else { throw ToolError.failed("\(path): listxattr: \(String(cString: strerror(errno)))") }
        var result: [(name: [UInt8], value: [UInt8])] = []
        for name in names.prefix(size).split(separator: 0) {
            let cName = Array(name) + [0]
            let length = lgetxattr(path, cName, nil, 0)
            guard length >= 0 else { continue }  // removed meanwhile
            var value = [UInt8](repeating: 0, count: max(length, 1))
            let got = lgetxattr(path, cName, &value, value.count)
            guard got >= 0 else { continue }
            result.append((name.map { UInt8(bitPattern: $0) }, Array(value.prefix(got))))
        }
        return result
    }
}
