// hammer2 destroy, destroy-inum, recover and cleanup (DragonFly's cmd_destroy.c,
// cmd_recover.c, cmd_cleanup.c), online through the mount's daemon or offline with -f.

import CXattr
import Foundation
import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Trace
import HAMMER2Format

enum RepairDirectives {
    /// destroy <path>...: "PATH<TAB>ok" or the error per path; exit 1 if any failed.
    static func destroy(_ operands: [String], image: String?) throws -> Int32 {
        guard !operands.isEmpty else { throw ToolError.usage("destroy: specify one or more paths to destroy") }
        let target = try InodeDirectives.target(image: image, writing: true)
        var status: Int32 = 0
        for path in operands {
            print("\(path)\t", terminator: "")
            fflush(nil)  // flush all streams (stdout is not concurrency-safe to name)
            let trimmed = path.hasSuffix("/") ? String(path.dropLast()) : path
            let slash = trimmed.lastIndex(of: "/")
            let parent = slash.map { String(trimmed[..<$0]) } ?? ""
            let name = Array((slash.map { String(trimmed[trimmed.index(after: $0)...]) } ?? trimmed).utf8)
            let done = outcome {
                switch target {
                case let .offline(_, pfs):
                    try pfs.destroyEntry(in: try pfs.resolve(parent), name: name)
                case .online:
                    _ = try send(ControlRequest.encodeDestroy(command: ControlRequest.destroyEntry, name: name),
                                 to: parent.isEmpty ? (path.hasPrefix("/") ? "/" : ".") : parent)
                }
            }
            if !done { status = 1 }
        }
        if case let .offline(fs, _) = target { try fs.flush() }
        return status
    }

    /// destroy-inum <inum>...: "deleting inodes on PATH" then "%16d ok" per inode.
    static func destroyInodes(_ operands: [String], image: String?, selected: String?) throws -> Int32 {
        guard !operands.isEmpty else { throw ToolError.usage("destroy-inum: specify one or more inode numbers to destroy") }
        let numbers = try operands.map { text -> UInt64 in
            let value = text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text)
            guard let value else { throw ToolError.usage("destroy-inum: bad inode number \"\(text)\"") }
            return value
        }
        let target = try InodeDirectives.target(image: image, writing: true)
        let place = image ?? selected ?? "."
        print("deleting inodes on \(place)")
        var status: Int32 = 0
        for inum in numbers {
            print(Text.pad(String(inum), 16, left: false) + " ", terminator: "")
            fflush(nil)  // flush all streams (stdout is not concurrency-safe to name)
            let done = outcome {
                switch target {
                case let .offline(_, pfs): try pfs.destroyInode(inum)
                case .online: _ = try send(ControlRequest.encodeDestroy(command: ControlRequest.destroyInode, inum: inum), to: place)
                }
            }
            if !done { status = 1 }
        }
        if case let .offline(fs, _) = target { try fs.flush() }
        return status
    }

    /// Runs one destroy and prints DragonFly's verdict: "ok" or the error.
    static func outcome(_ body: () throws -> Void) -> Bool {
        do {
            try body()
            print("ok")
            return true
        } catch {
            print(reason(error))
            return false
        }
    }

    static func reason(_ error: any Error) -> String {
        if let engine = error as? EngineError { return String(cString: strerror(engine.errno)) }
        if let tool = error as? ToolError { return tool.description }
        return "\(error)"
    }

    static func send(_ argument: [UInt8], to path: String) throws -> [UInt8] {
        guard mountedFilesystem(containing: path) != nil else {
            throw ToolError.failed("'\(path)' is not on a hammer2 mount (use -f IMAGE for an unmounted image)")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw EngineError.posix(errno, path) }
        defer { close(fd) }
        var buffer = argument
        guard buffer.withUnsafeMutableBytes({ ioctl(fd, UInt(ControlRequest.destroy), $0.baseAddress!) }) == 0 else {
            throw EngineError.posix(errno, path)
        }
        return buffer
    }

    /// recover <devpath[@label]> <path> <destdir>: copies a file or tree out of any PFS or
    /// snapshot of an image (read-only; every block verified, damaged files reported and
    /// skipped) into destdir. When the path is gone from the current state it is looked for
    /// in the older states the other volume header copies still point at (until bulkfree
    /// reuses their space), newest first.
    static func recover(_ operands: [String]) throws -> Int32 {
        guard operands.count == 3 else { throw ToolError.usage("recover device [/]path destdir") }
        let specifier = try VolumeSpecifier(operands[0])
        func find(_ pfs: PFS) throws -> (InodeData, String) {
            var inode = pfs.root
            var name = "/"
            for part in operands[1].split(separator: "/") where part != "." {
                inode = try pfs.inode(try pfs.lookup(in: inode, name: Array(part.utf8)).inum)
                name = String(part)
            }
            return (inode, name)
        }
        let current = try Filesystem(paths: specifier.devices).openPFS(specifier.labelOrDefault)
        if current.isEncrypted {
            throw ToolError.failed("PFS \(specifier.labelOrDefault) is encrypted: mount it with its key and copy the files out instead")
        }
        var found = try? find(current)
        var pfs = current
        if found == nil, specifier.devices.count == 1 {
            let copies = VolumeSet.readHeaderCopies(try FileBlockDevice(path: specifier.devices[0]))
                .compactMap { copy in copy.header.map { (copy.index, $0.mirrorTID) } }
                .sorted { $0.1 > $1.1 }
            for (index, tid) in copies.dropFirst() {
                guard let older = try? Filesystem(volumes: VolumeSet(paths: specifier.devices, headerIndex: index))
                    .openPFS(specifier.labelOrDefault), let hit = try? find(older) else { continue }
                print("recover: \(operands[1]) found in the state of volume header \(index) (mirror_tid 0x\(String(tid, radix: 16)))")
                found = hit
                pfs = older
                break
            }
        }
        guard let (inode, name) = found else {
            throw ToolError.failed("recover: \(operands[1]) not found in \(operands[0]) (current or older states)")
        }
        try FileManager.default.createDirectory(atPath: operands[2], withIntermediateDirectories: true)
        var failures = 0, files = 0
        var attributeWarnings: Set<String> = []
        /// Extended attributes and ACLs go along where the destination takes them; one it
        /// refuses (trusted.* when not root, a filesystem without them) is a warning, once.
        func copyAttributes(_ inode: InodeData, to destination: String) {
            let table: AttributeTable
            do {
                table = try pfs.attributeTable(of: inode)
            } catch {
                printError("hammer2", "recover: \(destination): extended attributes lost: \(error)")
                failures += 1
                return
            }
            for (key, value) in table.entries.sorted(by: { $0.key < $1.key }) {
                let name = String(decoding: key.fullName, as: UTF8.self)
                if value.withUnsafeBytes({ lsetxattr(destination, name, $0.baseAddress, $0.count, 0) }) != 0 {
                    let why = "\(key.namespace.prefix)*: \(String(cString: strerror(errno)))"
                    if attributeWarnings.insert(why).inserted {
                        printError("hammer2", "recover: \(destination): cannot set \(name) (\(why)); not repeated for others")
                    }
                }
            }
        }
        func copy(_ inode: InodeData, to destination: String) {
            do {
                let meta = inode.meta
                switch meta.type {
                case .directory:
                    if mkdir(destination, 0o700) != 0 && errno != EEXIST { throw EngineError.posix(errno, destination) }
                    try pfs.readDirectory(inode, from: 0) { entry in
                        let child = destination + "/" + String(decoding: entry.name, as: UTF8.self)
                        do { copy(try pfs.inode(entry.inum), to: child) } catch {
                            printError("hammer2", "recover: \(child): \(error)")
                            failures += 1
                        }
                        return true
                    }
                case .regularFile:
                    let data = try pfs.read(inode, offset: 0, count: Int(meta.size))
                    guard FileManager.default.createFile(atPath: destination, contents: Data(data)) else {
                        throw EngineError.posix(errno, destination)
                    }
                    files += 1
                case .softlink:
                    let target = String(decoding: try pfs.readLink(inode), as: UTF8.self)
                    if symlink(target, destination) != 0 { throw EngineError.posix(errno, destination) }
                    copyAttributes(inode, to: destination)
                    return
                default:
                    return  // devices, fifos and sockets are not recovered
                }
                chmod(destination, mode_t(meta.mode & 0o7777))
                copyAttributes(inode, to: destination)  // after chmod: an access ACL sets the mode's group bits
                var times = [timespec(tv_sec: Int(meta.mtime / 1_000_000), tv_nsec: Int(meta.mtime % 1_000_000) * 1000),
                             timespec(tv_sec: Int(meta.mtime / 1_000_000), tv_nsec: Int(meta.mtime % 1_000_000) * 1000)]
                utimensat(AT_FDCWD, destination, &times, 0)
            } catch {
                printError("hammer2", "recover: \(destination): \(error)")
                failures += 1
            }
        }
        copy(inode, to: operands[2] + "/" + (name == "/" ? specifier.labelOrDefault : name))
        print("recover: \(files) files recovered into \(operands[2])" + (failures > 0 ? ", \(failures) failed" : ""))
        return failures > 0 ? 1 : 0
    }

    /// dumpchain [path [flags]]: the daemon writes its in-memory state to its log (stderr
    /// with mount_hammer2 -f, else syslog), as DragonFly's goes to the console.
    static func dumpchain(_ operands: [String], selected: String?) throws -> Int32 {
        guard operands.count <= 2 else { throw ToolError.usage("dumpchain: [<path> [<chnflags>]]") }
        let path = operands.first ?? selected ?? "."
        var flags: UInt32 = 0
        if operands.count == 2 {
            guard let value = operands[1].hasPrefix("0x") ? UInt32(operands[1].dropFirst(2), radix: 16) : UInt32(operands[1]) else {
                throw ToolError.usage("dumpchain: bad flags \"\(operands[1])\"")
            }
            flags = value
        }
        guard mountedFilesystem(containing: path) != nil else { throw ToolError.failed("unable to open \(path)") }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ToolError.failed("unable to open \(path)") }
        defer { close(fd) }
        var argument = flags
        guard ioctl(fd, UInt(ControlRequest.debugDump), &argument) == 0 else {
            throw ToolError.failed("\(path): \(String(cString: strerror(errno)))")
        }
        return 0
    }

    /// growfs [path...]: "PATH grown to SIZE" or "PATH no size change - SIZE", on mounts
    /// (the daemon takes in its enlarged image or partition) or offline with -f IMAGE.
    static func growfs(_ operands: [String], image: String?, selected: String?) throws -> Int32 {
        if let image {
            guard operands.isEmpty else { throw ToolError.usage("growfs: with -f, no paths") }
            let devices = image.split(separator: ":").map(String.init)
            if let mount = devices.lazy.compactMap({ mountedFilesystem(source: $0) }).first {
                throw ToolError.failed("\(image) is mounted on \(mount); run hammer2 -s \(mount) growfs")
            }
            let (changed, size) = try MutableFilesystem(paths: devices, writable: true).grow()
            print(changed ? "\(image) grown to \(size)" : "\(image) no size change - \(size)")
            return 0
        }
        var status: Int32 = 0
        for path in operands.isEmpty ? [selected ?? "."] : operands {
            do {
                guard mountedFilesystem(containing: path) != nil else { throw ToolError.failed("'\(path)' is not on a hammer2 mount") }
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw ToolError.failed(String(cString: strerror(errno))) }
                defer { close(fd) }
                var buffer = [UInt8](repeating: 0, count: ControlRequest.argumentBytes)
                guard buffer.withUnsafeMutableBytes({ ioctl(fd, UInt(ControlRequest.growfs), $0.baseAddress!) }) == 0 else {
                    throw ToolError.failed(String(cString: strerror(errno)))
                }
                let size = buffer.withUnsafeBytes { $0.le64(8) }
                print(buffer[0] != 0 ? "\(path) grown to \(size)" : "\(path) no size change - \(size)")
            } catch {
                printError("hammer2", "grow \(path) failed: \(reason(error))")
                status = 1
            }
        }
        return status
    }

    /// cleanup [path]: DragonFly's cleanup runs bulkfree on the given hammer2 mount, or on
    /// every mounted one. Ours also removes the caller's trace segments of daemons that
    /// died, but the newest one of each image (a crash's post-mortem stays readable).
    static func cleanup(_ operands: [String]) throws -> Int32 {
        guard operands.count <= 1 else { throw ToolError.usage("cleanup: at most one path") }
        let mounts = operands.isEmpty ? allMountPoints() : operands
        var status: Int32 = 0
        for removed in TraceFiles.pruneDeadSegments(perImage: 1) {
            print("hammer2 cleanup: removed the dead daemon's trace segment \(removed)")
        }
        for mount in mounts {
            print("hammer2 cleanup \"\(mount)\"")
            do {
                try BulkfreeDirective.run([mount], image: nil, selected: nil, quiet: true)
            } catch {
                printError("hammer2", "cleanup \(mount): \(error)")
                status = 1
            }
        }
        return status
    }

    static func allMountPoints() -> [String] {
        guard let info = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
        return info.split(separator: "\n").compactMap { line in
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2, halves[1].hasPrefix("fuse.hammer2 ") else { return nil }
            let left = halves[0].split(separator: " ")
            return left.count >= 5 ? unescapeMountinfo(String(left[4])) : nil
        }
    }
}
