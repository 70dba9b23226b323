// hammer2 setcomp, setcheck and stat: per-inode settings read and changed through the
// mount's daemon (ioctls on the path, DragonFly's HAMMER2IOC_INODE_GET/_SET), or offline on
// an image with -f IMAGE[@LABEL] and paths inside the PFS. Output and exit codes follow
// DragonFly's cmd_setcomp.c / cmd_setcheck.c / cmd_stat.c: "PATH<TAB>comp_algo=0x22",
// exit 3 when a path fails.

import Foundation
import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format

enum InodeDirectives {
    static let compressionNames = ["none", "autozero", "lz4", "zlib"]  // HAMMER2_COMP_STRINGS
    static let checkNames = ["none", "disabled", "crc32", "xxhash64", "sha192"]  // HAMMER2_CHECK_STRINGS

    /// "lz4", "zlib:9", "2", "default", "disabled" -> comp_algo (level << 4 | algorithm).
    static func parseCompression(_ text: String) throws -> UInt8 {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard (1...2).contains(parts.count) else { throw ToolError.failed("Unknown compression type: \(text)") }
        var algorithm: Int
        if let number = Int(parts[0]) {
            algorithm = number
        } else if let index = compressionNames.firstIndex(where: { $0.caseInsensitiveCompare(parts[0]) == .orderedSame }) {
            algorithm = index
        } else if parts[0].lowercased() == "default" {
            algorithm = 2
        } else if parts[0].lowercased() == "disabled" {
            algorithm = 1
        } else {
            throw ToolError.failed("Unknown compression type: \(parts[0])")
        }
        guard (0..<compressionNames.count).contains(algorithm) else { throw ToolError.failed("Unknown compression type: \(parts[0])") }
        var level = 0
        if parts.count == 2, parts[1].lowercased() != "default" {
            guard let value = Int(parts[1]) else { throw ToolError.failed("Unknown compression level: \(parts[1])") }
            level = value
        }
        if level != 0 && (algorithm != 3 || !(6...9).contains(level)) {
            throw ToolError.failed("Unsupported comp_level \(level) for \(parts[0])")
        }
        return UInt8(level << 4 | algorithm)
    }

    static func parseCheck(_ text: String) throws -> UInt8 {
        if let number = Int(text), (0..<checkNames.count).contains(number) { return UInt8(number) }
        if let index = checkNames.firstIndex(where: { $0.caseInsensitiveCompare(text) == .orderedSame }) { return UInt8(index) }
        switch text.lowercased() {
        case "default": return CheckMethod.xxhash64.rawValue
        case "iscsi32": return CheckMethod.iscsi32.rawValue
        default: throw ToolError.failed("Unknown check code type: \(text)")
        }
    }

    /// Where a directive's paths live: the mount's daemon, or an image opened offline.
    enum Target {
        case online
        case offline(MutableFilesystem, PFSHandle)
    }

    static func target(image: String?, writing: Bool) throws -> Target {
        guard let image else { return .online }
        let specifier = try VolumeSpecifier(image)
        if writing, let mount = specifier.devices.lazy.compactMap({ mountedFilesystem(source: $0) }).first {
            throw ToolError.failed("\(specifier.devices.joined(separator: ":")) is mounted on \(mount); use the mount")
        }
        let fs = try MutableFilesystem(paths: specifier.devices, writable: writing)
        return .offline(fs, try fs.openPFS(specifier.labelOrDefault))
    }

    /// Reads (and with `set` changes) the inode behind `path`.
    static func inode(_ target: Target, _ path: String, set: ControlRequest.InodeArgument? = nil) throws -> ControlRequest.InodeArgument {
        switch target {
        case let .offline(_, pfs):
            let inum = try pfs.resolve(path)
            if let set {
                try pfs.setMethods(inum, compAlgo: set.flags & ControlRequest.InodeArgument.setCompression != 0 ? set.compAlgo : nil,
                                   checkAlgo: set.flags & ControlRequest.InodeArgument.setCheck != 0 ? set.checkAlgo : nil)
                if set.flags & ControlRequest.InodeArgument.setCopies != 0 { try pfs.setCopies(inum, Int(set.ncopies)) }
            }
            return ControlRequest.InodeArgument(try pfs.inodeInfo(inum))
        case .online:
            guard mountedFilesystem(containing: path) != nil else {
                throw ToolError.failed("\(path): not on a hammer2 mount (use -f IMAGE for an unmounted image)")
            }
            let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
            guard fd >= 0 else { throw ToolError.failed("\(path): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var buffer = (set ?? ControlRequest.InodeArgument()).encoded()
            let command = set == nil ? ControlRequest.inodeGet : ControlRequest.inodeSet
            let name = set == nil ? "HAMMER2IOC_INODE_GET" : "HAMMER2IOC_INODE_SET"
            guard buffer.withUnsafeMutableBytes({ ioctl(fd, UInt(command), $0.baseAddress!) }) == 0 else {
                throw ToolError.failed("\(path): \(name): error \(String(cString: strerror(errno)))")
            }
            return ControlRequest.InodeArgument(decoding: buffer)
        }
    }

    /// The regular files and directories in directory `path`, for -r. Symlinks are not
    /// followed and, like fifos and device nodes (which an open would block on or reach
    /// through to a device), skipped: only files and directories hold data to set methods for.
    static func children(_ target: Target, _ path: String) throws -> [String] {
        let prefix = path.hasSuffix("/") ? path : path + "/"
        switch target {
        case let .offline(_, pfs):
            var names: [String] = []
            try pfs.readDirectory(try pfs.resolve(path), from: 0, withAttributes: false) { entry, _ in
                if entry.type == .regularFile || entry.type == .directory {
                    names.append(String(decoding: entry.name, as: UTF8.self))
                }
                return true
            }
            return names.map { prefix + $0 }
        case .online:
            return try FileManager.default.contentsOfDirectory(atPath: path).sorted().map { prefix + $0 }.filter { child in
                var st = Glibc.stat()
                guard lstat(child, &st) == 0 else { return true }  // let the open report why
                return st.st_mode & S_IFMT == S_IFREG || st.st_mode & S_IFMT == S_IFDIR
            }
        }
    }

    /// setcomp / setcheck <method> <path>...; returns DragonFly's exit code (0, or 3).
    static func set(_ directive: String, _ operands: [String], image: String?, recurse: Bool) throws -> Int32 {
        guard operands.count >= 2 else {
            throw ToolError.usage(directive == "setcomp" ? "setcomp: requires compression method and directory/file path"
                                  : directive == "setcopies" ? "setcopies: requires number of copies and directory/file path"
                                                             : "setcheck: requires check code method and directory/file path")
        }
        var argument = ControlRequest.InodeArgument()
        if directive == "setcomp" {
            argument.compAlgo = try parseCompression(operands[0])
            argument.flags = ControlRequest.InodeArgument.setCompression
        } else if directive == "setcopies" {
            guard let copies = UInt8(operands[0]), (1...UInt8(HAMMER2.maximumCopies)).contains(copies) else {
                throw ToolError.usage("setcopies: number of copies must be 1 to \(HAMMER2.maximumCopies), not \(operands[0])")
            }
            argument.ncopies = copies
            argument.flags = ControlRequest.InodeArgument.setCopies
        } else {
            argument.checkAlgo = try parseCheck(operands[0])
            argument.flags = ControlRequest.InodeArgument.setCheck
        }
        let target = try target(image: image, writing: true)
        var status: Int32 = 0
        func apply(_ path: String) {
            do {
                let current = try inode(target, path)
                _ = try inode(target, path, set: argument)
                // DragonFly prints before its ioctl; we print what was set, only once it was.
                print(directive == "setcomp" ? "\(path)\tcomp_algo=0x\(Text.hex(UInt64(argument.compAlgo), width: 2))"
                      : directive == "setcopies" ? "\(path)\tncopies=\(argument.ncopies)"
                                                 : "\(path)\tcheck_algo=0x\(Text.hex(UInt64(argument.checkAlgo), width: 2))")
                if recurse && ObjectType(rawValue: current.type) == .directory {
                    for child in try children(target, path) { apply(child) }
                }
            } catch {
                printError("hammer2", "\(error)")
                status = 3
            }
        }
        for path in operands.dropFirst() { apply(path) }
        if case let .offline(fs, _) = target { try fs.flush() }
        return status
    }

    /// stat [path...]: PATH ncp data-use inode-use comp check quota.
    static func stat(_ operands: [String], image: String?) throws -> Int32 {
        let paths = operands.isEmpty ? [image == nil ? "." : "/"] : operands
        let width = max(16, paths.map(\.count).max() ?? 0)
        let target = try target(image: image, writing: false)
        print(Text.pad("PATH", width) + " ncp  data-use inode-use comp               check        quota")
        var status: Int32 = 0
        for path in paths {
            do {
                let info = try inode(target, path)
                var line = Text.pad(String(path.prefix(width)), width) + " "
                line += Text.pad(String(info.ncopies), 3, left: false) + " "
                line += Text.pad(Text.size(info.dataCount), 9, left: false) + " "
                line += Text.pad(countString(info.inodeCount), 9, left: false) + " "
                line += Text.pad(Text.compressionMode(info.compAlgo), 18) + " "
                line += Text.pad(Text.checkMode(info.checkAlgo), 12) + " "
                if info.dataQuota != 0 || info.inodeQuota != 0 {
                    line += Text.size(info.dataQuota) + "/" + Text.pad(countString(info.inodeQuota), 12)
                }
                print(line)
            } catch {
                printError("hammer2", "\(path): \(error)")
                status = 1
            }
        }
        return status
    }

    /// printinode <path>: every field of the inode's metadata, as DragonFly's print_inode.
    static func printInode(_ operands: [String], image: String?, verbose: Int) throws {
        guard operands.count == 1 else { throw ToolError.usage("printinode: requires directory/file path") }
        let target = try target(image: image, writing: false)
        let meta = try inode(target, operands[0]).meta
        if verbose > 0 {
            var raw = [UInt8](repeating: 0, count: 256)
            raw.withUnsafeMutableBytes { meta.encode(into: $0) }
            for row in stride(from: 0, to: raw.count, by: 16) {
                print(raw[row..<row + 16].map { Text.hex(UInt64($0), width: 2).uppercased() }.joined(separator: " "))
            }
        }
        let lines = [
            "version = \(meta.version)",
            "pfs_subtype = \(meta.pfsSubtype) (\(PFSSubtype.name(meta.pfsSubtype)))",
            "uflags = 0x\(String(meta.uflags, radix: 16))",
            "rmajor = \(meta.rmajor)", "rminor = \(meta.rminor)",
            "ctime = \(Text.time64(meta.ctime))", "mtime = \(Text.time64(meta.mtime))",
            "atime = \(Text.time64(meta.atime))", "btime = \(Text.time64(meta.btime))",
            "uid = \(meta.uid)", "gid = \(meta.gid)",
            "type = \(meta.type.rawValue) (\(Text.objectType(meta.type)))",
            "op_flags = 0x\(String(meta.opFlags, radix: 16))", "cap_flags = 0x\(String(meta.capFlags, radix: 16))",
            "mode = 0\(String(meta.mode, radix: 8))", "inum = 0x\(String(meta.inum, radix: 16))",
            "size = \(meta.size)", "nlinks = \(meta.nlinks)", "iparent = 0x\(String(meta.iparent, radix: 16))",
            "name_key = 0x\(String(meta.nameKey, radix: 16))", "name_len = \(meta.nameLength)",
            "ncopies = \(meta.ncopies)", "comp_algo = \(meta.compAlgo)", "target_type = 0",
            "check_algo = \(meta.checkAlgo)", "pfs_nmasters = \(meta.pfsNMasters)",
            "pfs_type = \(meta.pfsType.rawValue) (\(meta.pfsType))", "pfs_inum = 0x\(String(meta.pfsInum, radix: 16))",
            "pfs_clid = \(meta.pfsClusterID)", "pfs_fsid = \(meta.pfsFilesystemID)",
            "data_quota = 0x\(String(meta.dataQuota, radix: 16))", "inode_quota = 0x\(String(meta.inodeQuota, radix: 16))",
            "pfs_lsnap_tid = 0x\(String(meta.pfsLastSnapshotTID, radix: 16))",
            "decrypt_check = 0x\(String(meta.decryptCheck, radix: 16))",
        ]
        for line in lines { print(line) }
        // Extended attributes (ours: DragonFly has none), as the mount shows them.
        let attributes: [(name: [UInt8], value: [UInt8])]
        switch target {
        case let .offline(_, pfs):
            let inum = try pfs.resolve(operands[0])
            attributes = try pfs.attributeNames(inum).map { ($0, try pfs.attribute(inum, name: $0)) }
        case .online:
            attributes = try AttributeText.hostAttributes(operands[0])
        }
        print("xattrs = \(attributes.count)")
        for (name, value) in attributes { print("    " + AttributeText.describe(name: name, value: value)) }
    }

    /// counttostr
    static func countString(_ count: UInt64) -> String {
        if count < 512 * 1024 { return String(count) }
        let units: [(Double, String)] = [(1_048_576, "M"), (1_073_741_824, "G"), (1_099_511_627_776, "T")]
        let bound: [UInt64] = [512 << 20, 512 << 30, .max]
        for (i, (unit, name)) in units.enumerated() where count < bound[i] {
            return String(format: "%6.2f%@", Double(count) / unit, name)
        }
        return String(count)
    }
}
