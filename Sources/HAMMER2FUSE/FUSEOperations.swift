// The low-level operation table. Each callback recovers its FUSEServer from the request's
// user data and replies exactly once on every path. FUSE inode numbers are HAMMER2 inode
// numbers (the PFS root is 1, FUSE's root).

import CFUSE3
import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format

enum FUSEOperations {
    static func server(_ request: fuse_req_t?) -> FUSEServer {
        Unmanaged<FUSEServer>.fromOpaque(fuse_req_userdata(request)!).takeUnretainedValue()
    }

    static func entry(_ server: FUSEServer, _ status: NodeStatus) -> fuse_entry_param {
        var entry = fuse_entry_param()
        entry.ino = fuse_ino_t(status.meta.inum)
        entry.generation = 0
        entry.attr = Attributes.stat(for: status)
        entry.attr_timeout = server.options.cacheTimeout
        entry.entry_timeout = server.options.cacheTimeout
        return entry
    }

    static func name(_ pointer: UnsafePointer<CChar>?) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: pointer, count: strlen(pointer!)))
    }

    static func caller(_ request: fuse_req_t?) -> Caller {
        let context = fuse_req_ctx(request)!.pointee
        // The umask comes with creates; the kernel has applied it already unless POSIX ACLs
        // made it leave that to us (applying it twice changes nothing).
        return Caller(uid: context.uid, gid: context.gid, umask: UInt32(context.umask))
    }

    static func replyEntry(_ request: fuse_req_t?, _ server: FUSEServer, _ status: NodeStatus) {
        var entry = FUSEOperations.entry(server, status)
        fuse_reply_entry(request, &entry)
    }

    static func table() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, connection in
            guard let connection, let userdata else { return }
            let server = Unmanaged<FUSEServer>.fromOpaque(userdata).takeUnretainedValue()
            let writeback = h2fuse_init_connection(connection, server.options.writebackCache && !server.pfs.isReadOnly ? 1 : 0,
                                                   server.options.posixACL ? 1 : 0)
            server.pfs.kernelOwnsFileTimes = writeback != 0
            server.opendirInKernel.store(h2fuse_want_no_opendir(connection) != 0, ordering: .releasing)
            server.pfs.allocationChanged = { [unowned server] inum in server.invalidateAttributes(inum) }
            server.filesystem.waitingForFlush = { delta in h2fuse_note_waiting(delta) }
        }
        ops.lookup = { request, parent, name in
            let trace = RequestTrace(.lookup, UInt64(parent))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            let nameBytes = FUSEOperations.name(name)
            do {
                let status = try server.pfs.lookup(UInt64(parent), nameBytes)
                server.lookedUp(in: UInt64(parent))
                FUSEOperations.replyEntry(request, server, status)
            } catch let error as EngineError where error.errno == ENOENT {
                // A negative entry: the kernel may remember the name is missing as long as it
                // keeps names. Every name of the PFS is made through this mount (a PFS mounts
                // once; what directives remove they invalidate), so the kernel knows when it
                // appears, and repeated lookups of a missing name stay in the kernel (sqlite
                // looks its journal up three times a transaction).
                server.replyMissing(request)
            } catch {
                server.fail(request, error, "lookup of \(server.loggable(nameBytes)) in inode \(parent)")
            }
        }
        ops.getattr = { request, ino, _ in
            let trace = RequestTrace(.getattr, UInt64(ino))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                var st = Attributes.stat(for: try server.pfs.attributes(UInt64(ino)))
                fuse_reply_attr(request, &st, server.options.cacheTimeout)
            } catch {
                server.fail(request, error, "getattr of inode \(ino)")
            }
        }
        ops.setattr = { request, ino, attr, toSet, _ in
            let trace = RequestTrace(.setattr, UInt64(ino))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                let st = attr!.pointee
                var changes = AttributeChanges()
                let set = Int32(toSet)
                let now = currentTimeMicroseconds()
                let micro = Attributes.microseconds
                if set & FUSE_SET_ATTR_MODE != 0 { changes.mode = UInt32(st.st_mode) }
                if set & FUSE_SET_ATTR_UID != 0 { changes.uid = st.st_uid }
                if set & FUSE_SET_ATTR_GID != 0 { changes.gid = st.st_gid }
                if set & FUSE_SET_ATTR_SIZE != 0 { changes.size = UInt64(max(st.st_size, 0)) }
                if set & FUSE_SET_ATTR_ATIME_NOW != 0 { changes.atime = now } else if set & FUSE_SET_ATTR_ATIME != 0 { changes.atime = micro(st.st_atim) }
                if set & FUSE_SET_ATTR_MTIME_NOW != 0 { changes.mtime = now } else if set & FUSE_SET_ATTR_MTIME != 0 { changes.mtime = micro(st.st_mtim) }
                // With the writeback cache the kernel sends a file's ctime with its mtime.
                if set & FUSE_SET_ATTR_CTIME != 0 { changes.ctime = micro(st.st_ctim) }
                var result = Attributes.stat(for: try server.pfs.setAttributes(UInt64(ino), changes))
                fuse_reply_attr(request, &result, server.options.cacheTimeout)
            } catch {
                server.fail(request, error, "setattr of inode \(ino)")
            }
        }
        ops.readlink = { request, ino in
            let trace = RequestTrace(.readlink, UInt64(ino))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                let target = try server.pfs.readLink(UInt64(ino))
                guard !target.contains(0) else { throw EngineError.corrupt("symlink target of inode \(ino) contains NUL") }
                let cString = target.map { CChar(bitPattern: $0) } + [0]
                fuse_reply_readlink(request, cString)
            } catch {
                server.fail(request, error, "readlink of inode \(ino)")
            }
        }
        ops.mknod = { request, parent, name, mode, rdev in
            let trace = RequestTrace(.mknod, UInt64(parent))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            let nameBytes = FUSEOperations.name(name)
            do {
                let type: ObjectType
                switch mode & S_IFMT {
                case S_IFREG: type = .regularFile
                case S_IFIFO: type = .fifo
                case S_IFSOCK: type = .socket
                case S_IFCHR: type = .characterDevice
                case S_IFBLK: type = .blockDevice
                default: throw EngineError.invalidArgument("mknod of an unsupported type")
                }
                let major = UInt32((rdev >> 8) & 0xFFF) | UInt32((rdev >> 32) & ~0xFFF)
                let minor = UInt32(rdev & 0xFF) | UInt32((rdev >> 12) & ~0xFF)
                FUSEOperations.replyEntry(request, server, try server.pfs.create(
                    in: UInt64(parent), name: nameBytes, type: type, mode: UInt32(mode), caller: FUSEOperations.caller(request),
                    device: (major, minor)))
            } catch {
                server.fail(request, error, "mknod of \(server.loggable(nameBytes)) in inode \(parent)")
            }
        }
        ops.mkdir = { request, parent, name, mode in
            let trace = RequestTrace(.mkdir, UInt64(parent))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                FUSEOperations.replyEntry(request, server, try server.pfs.create(
                    in: UInt64(parent), name: FUSEOperations.name(name), type: .directory, mode: UInt32(mode), caller: FUSEOperations.caller(request)))
            } catch {
                server.fail(request, error, "mkdir in inode \(parent)")
            }
        }
        ops.symlink = { request, target, parent, name in
            let trace = RequestTrace(.symlink, UInt64(parent))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                FUSEOperations.replyEntry(request, server, try server.pfs.create(
                    in: UInt64(parent), name: FUSEOperations.name(name), type: .softlink, mode: 0o777, caller: FUSEOperations.caller(request),
                    target: FUSEOperations.name(target)))
            } catch {
                server.fail(request, error, "symlink in inode \(parent)")
            }
        }
        ops.unlink = { request, parent, name in
            let trace = RequestTrace(.unlink, UInt64(parent))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                try server.pfs.unlink(in: UInt64(parent), name: FUSEOperations.name(name))
                fuse_reply_err(request, 0)
            } catch {
                server.fail(request, error, "unlink in inode \(parent)")
            }
        }
        ops.rmdir = { request, parent, name in
            let trace = RequestTrace(.rmdir, UInt64(parent))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                try server.pfs.removeDirectory(in: UInt64(parent), name: FUSEOperations.name(name))
                fuse_reply_err(request, 0)
            } catch {
                server.fail(request, error, "rmdir in inode \(parent)")
            }
        }
        ops.rename = { request, parent, name, newParent, newName, flags in
            let trace = RequestTrace(.rename, UInt64(parent))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                try server.pfs.rename(from: UInt64(parent), name: FUSEOperations.name(name), to: UInt64(newParent),
                                      newName: FUSEOperations.name(newName), flags: UInt32(flags),
                                      caller: FUSEOperations.caller(request))
                fuse_reply_err(request, 0)
            } catch {
                server.fail(request, error, "rename in inode \(parent)")
            }
        }
        ops.link = { request, ino, newParent, newName in
            let trace = RequestTrace(.link, UInt64(ino), UInt64(newParent))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                FUSEOperations.replyEntry(request, server, try server.pfs.link(UInt64(ino), into: UInt64(newParent), name: FUSEOperations.name(newName)))
            } catch {
                server.fail(request, error, "link of inode \(ino)")
            }
        }
        ops.create = { request, parent, name, mode, info in
            let trace = RequestTrace(.create, UInt64(parent))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                let status = try server.pfs.create(in: UInt64(parent), name: FUSEOperations.name(name), type: .regularFile,
                                                   mode: UInt32(mode), caller: FUSEOperations.caller(request))
                try server.pfs.open(status.meta.inum)
                if FUSEOperations.writes(info) { server.pfs.openForWriting(status.meta.inum, 1) }
                var entry = FUSEOperations.entry(server, status)
                fuse_reply_create(request, &entry, info)
            } catch {
                server.fail(request, error, "create in inode \(parent)")
            }
        }
        ops.open = { request, ino, info in
            let trace = RequestTrace(.open, UInt64(ino))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                let status = try server.pfs.attributes(UInt64(ino))
                guard status.meta.type != .directory else { throw EngineError.isDirectory }
                guard let info else { throw EngineError.invalidArgument("no file info") }
                if server.pfs.isReadOnly && (info.pointee.flags & O_ACCMODE != O_RDONLY || info.pointee.flags & O_TRUNC != 0) {
                    server.replyError(request, EROFS)
                    return
                }
                // libfuse asks for atomic O_TRUNC: the kernel passes O_TRUNC here instead of
                // sending a setattr, so the truncation is ours to do.
                if info.pointee.flags & O_TRUNC != 0 && info.pointee.flags & O_ACCMODE != O_RDONLY {
                    _ = try server.pfs.setAttributes(UInt64(ino), AttributeChanges(size: 0))
                }
                try server.pfs.open(UInt64(ino))
                if FUSEOperations.writes(info) { server.pfs.openForWriting(UInt64(ino), 1) }
                // Every change goes through this mount, so cached pages stay valid across opens.
                h2fuse_set_keep_cache(info)
                fuse_reply_open(request, info)
            } catch {
                server.fail(request, error, "open of inode \(ino)")
            }
        }
        ops.read = { request, ino, size, offset, _ in
            var trace = RequestTrace(.read, UInt64(ino), UInt64(max(offset, 0)), UInt64(size))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                // Served from an io_uring entry: the data goes straight into its reply buffer.
                var capacity = 0
                if let payload = h2fuse_uring_payload(&capacity), capacity >= size {
                    let count = try server.pfs.read(UInt64(ino), offset: UInt64(max(offset, 0)),
                                                    into: UnsafeMutableRawBufferPointer(start: payload, count: size))
                    trace.bytes = count
                    _ = fuse_reply_buf(request, payload, count)
                    return
                }
                let bytes = try server.pfs.read(UInt64(ino), offset: UInt64(max(offset, 0)), count: size)
                trace.bytes = bytes.count
                bytes.withUnsafeBytes { _ = fuse_reply_buf(request, $0.baseAddress, $0.count) }
            } catch {
                server.fail(request, error, "read of inode \(ino) at offset \(offset) (\(size) bytes)")
            }
        }
        ops.write = { request, ino, buffer, size, offset, _ in
            var trace = RequestTrace(.write, UInt64(ino), UInt64(max(offset, 0)), UInt64(size))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                let written = try server.pfs.write(UInt64(ino), offset: UInt64(max(offset, 0)),
                                                   UnsafeRawBufferPointer(start: buffer, count: size))
                trace.bytes = written
                fuse_reply_write(request, written)
            } catch {
                server.fail(request, error, "write of inode \(ino) at offset \(offset) (\(size) bytes)")
            }
        }
        ops.fsync = { request, ino, _, _ in
            let trace = RequestTrace(.fsync, UInt64(ino))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                try server.pfs.synchronize()
                fuse_reply_err(request, 0)
            } catch {
                server.fail(request, error, "fsync of inode \(ino)")
            }
        }
        ops.release = { request, ino, info in
            let trace = RequestTrace(.release, UInt64(ino))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            if FUSEOperations.writes(info) { server.pfs.openForWriting(UInt64(ino), -1) }
            server.pfs.release(UInt64(ino))
            fuse_reply_err(request, 0)
        }
        ops.opendir = { request, ino, info in
            let trace = RequestTrace(.opendir, UInt64(ino))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            // Directories need no open state here (readdir goes by inode and cookie): the
            // kernel opens them itself after this ENOSYS, sends no RELEASEDIR either, and
            // keeps their listings in its cache, which every change through the mount resets.
            if server.opendirInKernel.load(ordering: .acquiring) { return server.replyError(request, ENOSYS) }
            do {
                let status = try server.pfs.attributes(UInt64(ino))
                guard status.meta.type == .directory else { throw EngineError.notDirectory }
                fuse_reply_open(request, info)
            } catch {
                server.fail(request, error, "opendir of inode \(ino)")
            }
        }
        ops.readdir = { request, ino, size, offset, _ in
            let trace = RequestTrace(.readdir, UInt64(ino))
            defer { trace.end() }
            FUSEOperations.readDirectory(request, ino, size, offset, plus: false)
        }
        ops.readdirplus = { request, ino, size, offset, _ in
            let trace = RequestTrace(.readdirplus, UInt64(ino))
            defer { trace.end() }
            FUSEOperations.readDirectory(request, ino, size, offset, plus: true)
        }
        ops.releasedir = { request, ino, _ in
            let trace = RequestTrace(.releasedir, UInt64(ino))
            defer { trace.end() }
            fuse_reply_err(request, 0)
        }
        ops.fsyncdir = { request, ino, _, _ in
            let trace = RequestTrace(.fsyncdir, UInt64(ino))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                try server.pfs.synchronize()
                fuse_reply_err(request, 0)
            } catch {
                server.fail(request, error, "fsyncdir of inode \(ino)")
            }
        }
        ops.ioctl = { request, ino, command, _, _, flags, input, inputSize, outSize in
            let trace = RequestTrace(.ioctl, UInt64(ino), UInt64(command))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            let known = [ControlRequest.bulkfree, ControlRequest.pfsCreate, ControlRequest.pfsDelete, ControlRequest.pfsSnapshot,
                         ControlRequest.inodeGet, ControlRequest.inodeSet, ControlRequest.destroy, ControlRequest.debugDump, ControlRequest.scrub,
                         ControlRequest.growfs, ControlRequest.reencrypt, ControlRequest.flush]
            guard flags & UInt32(FUSE_IOCTL_COMPAT) == 0, known.contains(command) else {
                server.replyError(request, ENOTTY)
                return
            }
            // As DragonFly's hammer2_ioctl: reading an inode's settings is for anyone.
            guard command == ControlRequest.inodeGet || command == ControlRequest.flush || FUSEOperations.caller(request).uid == 0 else {
                server.replyError(request, EPERM)  // DragonFly's hammer2 ioctls require root too
                return
            }
            do {
                var reply: [UInt8]
                if command == ControlRequest.inodeGet || command == ControlRequest.inodeSet {
                    guard inputSize >= ControlRequest.inodeArgumentBytes, outSize >= ControlRequest.inodeArgumentBytes,
                          let input else { throw EngineError.invalidArgument("short ioctl buffer") }
                    let argument = ControlRequest.InodeArgument(
                        decoding: Array(UnsafeRawBufferPointer(start: input, count: ControlRequest.inodeArgumentBytes)))
                    if command == ControlRequest.inodeSet {
                        try server.pfs.setMethods(
                            UInt64(ino),
                            compAlgo: argument.flags & ControlRequest.InodeArgument.setCompression != 0 ? argument.compAlgo : nil,
                            checkAlgo: argument.flags & ControlRequest.InodeArgument.setCheck != 0 ? argument.checkAlgo : nil)
                        if argument.flags & ControlRequest.InodeArgument.setCopies != 0 {
                            try server.pfs.setCopies(UInt64(ino), Int(argument.ncopies))
                        }
                    }
                    reply = ControlRequest.InodeArgument(try server.pfs.inodeInfo(UInt64(ino))).encoded()
                } else if command == ControlRequest.flush {
                    try server.filesystem.flushReclaimingIfFull()
                    reply = [UInt8](repeating: 0, count: ControlRequest.argumentBytes)
                } else if command == ControlRequest.growfs {
                    let (changed, size) = try server.filesystem.grow()
                    reply = [UInt8](repeating: 0, count: ControlRequest.argumentBytes)
                    reply[0] = changed ? 1 : 0
                    for i in 0..<8 { reply[8 + i] = UInt8(truncatingIfNeeded: size >> UInt64(i * 8)) }
                } else if command == ControlRequest.debugDump {
                    let flags = input.map { UnsafeRawBufferPointer(start: $0, count: min(inputSize, 4)) }
                        .map { $0.count == 4 ? $0.le32(0) : 0 } ?? 0
                    for line in server.filesystem.debugDump(all: flags != 0) { server.logger("dumpchain: \(line)") }
                    reply = [0, 0, 0, 0]
                } else if command == ControlRequest.destroy {
                    guard inputSize >= ControlRequest.destroyArgumentBytes, let input else {
                        throw EngineError.invalidArgument("short ioctl buffer")
                    }
                    let bytes = Array(UnsafeRawBufferPointer(start: input, count: ControlRequest.destroyArgumentBytes))
                    let request = ControlRequest.decodeDestroy(bytes)
                    switch request.command {
                    case ControlRequest.destroyEntry:
                        try server.pfs.destroyEntry(in: UInt64(ino), name: request.name)
                        server.invalidateEntry(parent: UInt64(ino), name: request.name)
                        server.invalidateInode(UInt64(ino))  // the kernel's cached listing of the directory
                    case ControlRequest.destroyInode:
                        try server.pfs.destroyInode(request.inum)
                        server.invalidateInode(request.inum)
                    default: throw EngineError.invalidArgument("unknown destroy command \(request.command)")
                    }
                    reply = bytes
                } else if command == ControlRequest.scrub {
                    guard outSize >= ControlRequest.argumentBytes else { throw EngineError.invalidArgument("short ioctl buffer") }
                    let result = try server.filesystem.scrub()
                    for problem in result.problems { server.logger("scrub of \(server.options.fsname): \(problem)") }
                    reply = ControlRequest.encode(result)
                } else if command == ControlRequest.reencrypt {
                    guard outSize >= ControlRequest.argumentBytes else { throw EngineError.invalidArgument("short ioctl buffer") }
                    // In steps, each flushed: the mount keeps serving between them.
                    reply = ControlRequest.encode(try server.filesystem.reencrypt(server.pfs.label))
                } else if command == ControlRequest.bulkfree {
                    guard outSize >= ControlRequest.argumentBytes else { throw EngineError.invalidArgument("short ioctl buffer") }
                    reply = ControlRequest.encode(try server.filesystem.bulkfree())
                } else {
                    guard inputSize >= ControlRequest.pfsArgumentBytes, outSize >= ControlRequest.pfsArgumentBytes,
                          let input else { throw EngineError.invalidArgument("short ioctl buffer") }
                    var argument = ControlRequest.PFSArgument(
                        decoding: Array(UnsafeRawBufferPointer(start: input, count: ControlRequest.pfsArgumentBytes)))
                    switch command {
                    case ControlRequest.pfsCreate:
                        try server.filesystem.createPFS(label: argument.label, type: argument.type,
                                                        subtype: argument.subtype, clusterID: argument.clusterID,
                                                        copies: max(1, Int(argument.copies)))
                    case ControlRequest.pfsDelete:
                        try server.filesystem.deletePFS(label: argument.label)
                    default:
                        if argument.label.isEmpty { argument.label = MutableFilesystem.defaultSnapshotLabel(for: server.pfs.label) }
                        try server.filesystem.snapshot(of: server.pfs.label, label: argument.label)
                    }
                    reply = argument.encoded()
                }
                reply.withUnsafeBytes { _ = fuse_reply_ioctl(request, 0, $0.baseAddress, $0.count) }
            } catch {
                server.fail(request, error, "hammer2 ioctl via inode \(ino)")
            }
        }
        ops.statfs = { request, ino in
            let trace = RequestTrace(.statfs, UInt64(ino))
            defer { trace.end() }
            var st = FUSEOperations.server(request).statfs()
            fuse_reply_statfs(request, &st)
        }
        addFileSpaceOperations(&ops)
        addAttributeOperations(&ops)
        return ops
    }

    /// Readdir cookies: 1 and 2 follow "." and ".."; an entry's cookie is its directory
    /// hash key without bit 63, plus one. Hash keys do not move, so cookies stay valid
    /// however large the directory and however the listing is split across calls.
    static func readDirectory(_ request: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t, plus: Bool) {
        let server = FUSEOperations.server(request)
        var reply = DirentReply(request: request, server: server, size: size, plus: plus)
        defer { reply.deallocate() }
        do {
            let pfs = server.pfs
            var cookie = UInt64(max(offset, 0))
            if cookie == 0 {
                guard reply.add(Array(".".utf8), 1, inum: UInt64(ino), type: .directory) else { return reply.send() }
                cookie = 1
            }
            if cookie == 1 {
                let parent = try pfs.parent(of: UInt64(ino))
                guard reply.add(Array("..".utf8), 2, inum: parent, type: .directory) else { return reply.send() }
                cookie = 2
            }
            let from = cookie <= 2 ? 0 : cookie
            if plus {
                try pfs.readDirectory(UInt64(ino), from: from, withAttributes: true, boundedLoads: true) { entry, status in
                    guard let status else { return reply.add(entry.name, entry.nextCookie, inum: entry.inum, type: entry.type) }
                    return reply.add(entry.name, entry.nextCookie, status)
                }
            } else {
                try pfs.listDirectory(UInt64(ino), from: from) { entry in
                    reply.add(entry.name, entry.nextCookie, inum: entry.inum, type: entry.type)
                }
            }
            if !plus { server.listedNamesOnly(UInt64(ino)) }
            reply.send()
        } catch {
            server.fail(request, error, "readdir of inode \(ino)")
        }
    }
}

/// A READDIR(PLUS) reply being filled: raw memory and a NUL-terminated name scratch,
/// not arrays, so that adding one of a listing's thousands of entries allocates nothing.
private struct DirentReply {
    let request: fuse_req_t?
    let server: FUSEServer
    let size: Int
    let plus: Bool
    let buffer: UnsafeMutablePointer<CChar>
    let name: UnsafeMutablePointer<CChar>
    var used = 0

    init(request: fuse_req_t?, server: FUSEServer, size: Int, plus: Bool) {
        self.request = request
        self.server = server
        self.size = size
        self.plus = plus
        buffer = .allocate(capacity: max(size, 1))
        name = .allocate(capacity: HAMMER2.inodeMaxName + 1)
    }

    /// Appends an entry without attributes (a READDIR entry, or "." and ".." in either
    /// reply: the kernel takes their inode number and type only); false when full.
    mutating func add(_ entryName: [UInt8], _ next: UInt64, inum: UInt64, type: ObjectType) -> Bool {
        copyName(entryName)
        var st = Attributes.direntStat(inum: inum, type: type)
        let needed: Int
        if plus {
            var entry = fuse_entry_param()  // inode 0: no attributes, the kernel looks the name up if it needs them
            entry.attr = st
            needed = fuse_add_direntry_plus(request, buffer + used, size - used, name, &entry, off_t(next))
        } else {
            needed = fuse_add_direntry(request, buffer + used, size - used, name, &st, off_t(next))
        }
        return advance(needed)
    }

    /// Appends a READDIRPLUS entry with its attributes; false when full.
    mutating func add(_ entryName: [UInt8], _ next: UInt64, _ status: NodeStatus) -> Bool {
        copyName(entryName)
        var entry = FUSEOperations.entry(server, status)
        return advance(fuse_add_direntry_plus(request, buffer + used, size - used, name, &entry, off_t(next)))
    }

    private func copyName(_ entryName: [UInt8]) {
        let length = min(entryName.count, HAMMER2.inodeMaxName)
        entryName.withUnsafeBufferPointer { bytes in
            guard let start = bytes.baseAddress, length > 0 else { return }  // an empty name: a damaged inode entry
            UnsafeMutableRawPointer(name).copyMemory(from: start, byteCount: length)
        }
        name[length] = 0
    }

    private mutating func advance(_ needed: Int) -> Bool {
        if needed > size - used { return false }
        used += needed
        return true
    }

    func send() { _ = fuse_reply_buf(request, buffer, used) }

    func deallocate() {
        buffer.deallocate()
        name.deallocate()
    }
}
