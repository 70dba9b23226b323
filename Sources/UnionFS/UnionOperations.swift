// The union's low-level operation table. Each callback finds its UnionServer in the
// request's user data and replies exactly once. File handles are the layer file's
// descriptor; directory handles hold the merged listing made at opendir.

import CFUSE3
import CLinuxCalls
import Glibc

/// An open merged directory: its entries as they were at opendir.
final class UnionDirectoryHandle {
    let entries: [(name: String, type: UInt8, inode: UInt64)]
    init(_ entries: [(name: String, type: UInt8, inode: UInt64)]) { self.entries = entries }
}

enum UnionOperations {
    static func server(_ request: fuse_req_t?) -> UnionServer {
        Unmanaged<UnionServer>.fromOpaque(fuse_req_userdata(request)!).takeUnretainedValue()
    }

    static func name(_ pointer: UnsafePointer<CChar>?) -> String { String(cString: pointer!) }

    /// readdir and readdirplus: the open directory's entries from cookie `offset` on, as
    /// many as `add` fits in `size` bytes (each entry's cookie is its index + 1). `add` gets
    /// the free space and returns the bytes the entry needs (0: the entry is left out; more
    /// than the room: it was not added, and the reply ends before it).
    static func replyListing(_ request: fuse_req_t?, _ info: UnsafeMutablePointer<fuse_file_info>?, _ size: Int, _ offset: off_t,
                             _ add: (UnsafeMutablePointer<CChar>, Int, (name: String, type: UInt8, inode: UInt64), off_t) -> Int) {
        let handle = Unmanaged<UnionDirectoryHandle>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(info!.pointee.fh))!).takeUnretainedValue()
        var buffer = [CChar](repeating: 0, count: size)
        var used = 0
        var index = max(0, Int(offset))
        while index < handle.entries.count {
            let needed = buffer.withUnsafeMutableBufferPointer { add($0.baseAddress! + used, size - used, handle.entries[index], off_t(index + 1)) }
            if needed > size - used { break }
            used += needed
            index += 1
        }
        buffer.withUnsafeBytes { _ = fuse_reply_buf(request, $0.baseAddress, used) }
    }

    /// Passthrough: the layer file `fd` registered as the kernel's backing file (its reads
    /// and writes then no longer come here), or nil when passthrough is off or refused.
    static func backing(_ server: UnionServer, _ fd: Int32) -> Int32? {
        guard let device = server.passthroughDevice else { return nil }
        let backing = h2fuse_backing_open(device, fd)
        guard backing > 0 else { return nil }
        server.passthroughOpens.add(1, ordering: .relaxed)
        return backing
    }

    /// An open file's handle: the layer file's descriptor, the backing id in the high half.
    static func handle(_ fd: Int32, _ backing: Int32 = 0) -> UInt64 {
        UInt64(UInt32(bitPattern: fd)) | UInt64(UInt32(bitPattern: backing)) << 32
    }

    static func caller(_ request: fuse_req_t?) -> UnionCaller {
        let context = fuse_req_ctx(request)!.pointee
        return UnionCaller(uid: context.uid, gid: context.gid)
    }

    /// Replies with the errno of `error` (EIO, logged, for anything else).
    static func fail(_ request: fuse_req_t?, _ error: any Error, _ what: @autoclosure () -> String) {
        if let error = error as? UnionError {
            fuse_reply_err(request, error.code)
        } else {
            server(request).logger("\(what()): \(error)")
            fuse_reply_err(request, EIO)
        }
    }

    static func replyEntry(_ request: fuse_req_t?, _ entry: UnionEntry) {
        let timeout = server(request).filesystem.configuration.timeout
        var parameters = fuse_entry_param()
        parameters.ino = fuse_ino_t(entry.node)
        parameters.attr = entry.status
        parameters.attr_timeout = timeout
        parameters.entry_timeout = timeout
        fuse_reply_entry(request, &parameters)
    }

    static func replyAttributes(_ request: fuse_req_t?, _ status: stat) {
        var st = status
        fuse_reply_attr(request, &st, server(request).filesystem.configuration.timeout)
    }

    /// A reply of `bytes`, or its size when the caller asked for the size (xattr calls).
    static func replySized(_ request: fuse_req_t?, _ bytes: [UInt8], _ size: Int) {
        if size == 0 { fuse_reply_xattr(request, bytes.count) } else if bytes.count > size { fuse_reply_err(request, ERANGE) } else {
            bytes.withUnsafeBytes { _ = fuse_reply_buf(request, $0.baseAddress, $0.count) }
        }
    }

    static func table() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { _, connection in
            guard let connection else { return }
            // No writeback cache (writes reach the layer file at once), no kernel-side ACLs.
            _ = h2fuse_init_connection(connection, 0, 0)
            connection.pointee.time_gran = 1
            // READDIRPLUS stays on (h2fuse_init_connection): a listing answers the lookups of its
            // entries in the same requests, as the kernel's readdirplus heuristic asks.
        }
        ops.lookup = { request, parent, name in
            do { UnionOperations.replyEntry(request, try UnionOperations.server(request).filesystem.lookup(UInt64(parent), UnionOperations.name(name))) } catch {
                UnionOperations.fail(request, error, "lookup in node \(parent)")
            }
        }
        ops.forget = { request, ino, count in
            UnionOperations.server(request).filesystem.forget(UInt64(ino), UInt64(count))
            fuse_reply_none(request)
        }
        ops.forget_multi = { request, count, forgets in
            UnionOperations.server(request).filesystem.forget((0..<count).map { (UInt64(forgets![$0].ino), UInt64(forgets![$0].nlookup)) })
            fuse_reply_none(request)
        }
        ops.getattr = { request, ino, info in
            do {
                let fd = info.map { Int32(truncatingIfNeeded: $0.pointee.fh) }
                UnionOperations.replyAttributes(request, try UnionOperations.server(request).filesystem.attributes(UInt64(ino), fd: fd))
            } catch {
                UnionOperations.fail(request, error, "getattr of node \(ino)")
            }
        }
        ops.setattr = { request, ino, attr, toSet, info in
            do {
                let st = attr!.pointee, set = Int32(toSet)
                var changes = UnionAttributeChanges()
                if set & FUSE_SET_ATTR_MODE != 0 { changes.mode = st.st_mode }
                if set & FUSE_SET_ATTR_UID != 0 { changes.uid = st.st_uid }
                if set & FUSE_SET_ATTR_GID != 0 { changes.gid = st.st_gid }
                if set & FUSE_SET_ATTR_SIZE != 0 { changes.size = st.st_size }
                let now = timespec(tv_sec: 0, tv_nsec: linux_utime_now)
                if set & FUSE_SET_ATTR_ATIME_NOW != 0 { changes.atime = now } else if set & FUSE_SET_ATTR_ATIME != 0 { changes.atime = st.st_atim }
                if set & FUSE_SET_ATTR_MTIME_NOW != 0 { changes.mtime = now } else if set & FUSE_SET_ATTR_MTIME != 0 { changes.mtime = st.st_mtim }
                let fd = info.map { Int32(truncatingIfNeeded: $0.pointee.fh) }
                UnionOperations.replyAttributes(request, try UnionOperations.server(request).filesystem.setAttributes(UInt64(ino), changes, fd: fd))
            } catch {
                UnionOperations.fail(request, error, "setattr of node \(ino)")
            }
        }
        ops.readlink = { request, ino in
            do {
                let target = try UnionOperations.server(request).filesystem.readLink(UInt64(ino))
                fuse_reply_readlink(request, target.map { CChar(bitPattern: $0) } + [0])
            } catch {
                UnionOperations.fail(request, error, "readlink of node \(ino)")
            }
        }
        ops.mknod = { request, parent, name, mode, device in
            do {
                UnionOperations.replyEntry(request, try UnionOperations.server(request).filesystem.makeNode(UInt64(parent), UnionOperations.name(name), mode: mode,
                                                                             device: device, caller: UnionOperations.caller(request)))
            } catch {
                UnionOperations.fail(request, error, "mknod in node \(parent)")
            }
        }
        ops.mkdir = { request, parent, name, mode in
            do {
                UnionOperations.replyEntry(request, try UnionOperations.server(request).filesystem.makeDirectory(UInt64(parent), UnionOperations.name(name),
                                                                                  mode: mode, caller: UnionOperations.caller(request)))
            } catch {
                UnionOperations.fail(request, error, "mkdir in node \(parent)")
            }
        }
        ops.symlink = { request, target, parent, name in
            do {
                UnionOperations.replyEntry(request, try UnionOperations.server(request).filesystem.makeSymbolicLink(UInt64(parent), UnionOperations.name(name),
                                                                                     target: String(cString: target!), caller: UnionOperations.caller(request)))
            } catch {
                UnionOperations.fail(request, error, "symlink in node \(parent)")
            }
        }
        ops.link = { request, ino, parent, name in
            do { UnionOperations.replyEntry(request, try UnionOperations.server(request).filesystem.link(UInt64(ino), into: UInt64(parent), UnionOperations.name(name))) } catch {
                UnionOperations.fail(request, error, "link of node \(ino)")
            }
        }
        ops.unlink = { request, parent, name in
            do {
                try UnionOperations.server(request).filesystem.unlink(UInt64(parent), UnionOperations.name(name))
                fuse_reply_err(request, 0)
            } catch {
                UnionOperations.fail(request, error, "unlink in node \(parent)")
            }
        }
        ops.rmdir = { request, parent, name in
            do {
                try UnionOperations.server(request).filesystem.removeDirectory(UInt64(parent), UnionOperations.name(name))
                fuse_reply_err(request, 0)
            } catch {
                UnionOperations.fail(request, error, "rmdir in node \(parent)")
            }
        }
        ops.rename = { request, parent, name, newParent, newName, flags in
            do {
                try UnionOperations.server(request).filesystem.rename(UInt64(parent), UnionOperations.name(name), to: UInt64(newParent),
                                                      UnionOperations.name(newName), flags: UInt32(flags))
                fuse_reply_err(request, 0)
            } catch {
                UnionOperations.fail(request, error, "rename in node \(parent)")
            }
        }
        ops.create = { request, parent, name, mode, info in
            do {
                let server = UnionOperations.server(request)
                let (entry, fd) = try server.filesystem.create(UInt64(parent), UnionOperations.name(name), mode: mode,
                                                               flags: info!.pointee.flags, caller: UnionOperations.caller(request))
                if let backing = UnionOperations.backing(server, fd) {
                    var st = entry.status
                    _ = h2fuse_reply_create_passthrough(request, entry.node, &st, server.filesystem.configuration.timeout,
                                                        UnionOperations.handle(fd, backing), backing)
                    return
                }
                info!.pointee.fh = UnionOperations.handle(fd)
                var parameters = fuse_entry_param()
                parameters.ino = fuse_ino_t(entry.node)
                parameters.attr = entry.status
                parameters.attr_timeout = UnionOperations.server(request).filesystem.configuration.timeout
                parameters.entry_timeout = parameters.attr_timeout
                fuse_reply_create(request, &parameters, info)
            } catch {
                UnionOperations.fail(request, error, "create in node \(parent)")
            }
        }
        ops.open = { request, ino, info in
            do {
                let server = UnionOperations.server(request)
                let fd = try server.filesystem.open(UInt64(ino), flags: info!.pointee.flags)
                if let backing = UnionOperations.backing(server, fd) {
                    _ = h2fuse_reply_open_passthrough(request, UnionOperations.handle(fd, backing), backing)
                    return
                }
                info!.pointee.fh = UnionOperations.handle(fd)
                fuse_reply_open(request, info)
            } catch {
                UnionOperations.fail(request, error, "open of node \(ino)")
            }
        }
        ops.read = { request, _, size, offset, info in
            UnionOperations.server(request).servedReads.add(1, ordering: .relaxed)
            var buffer = [UInt8](repeating: 0, count: size)
            let count = pread(Int32(truncatingIfNeeded: info!.pointee.fh), &buffer, size, offset)
            if count < 0 { fuse_reply_err(request, errno) } else { _ = fuse_reply_buf(request, buffer, count) }
        }
        ops.write = { request, _, data, size, offset, info in
            UnionOperations.server(request).servedWrites.add(1, ordering: .relaxed)
            let count = pwrite(Int32(truncatingIfNeeded: info!.pointee.fh), data, size, offset)
            if count < 0 { fuse_reply_err(request, errno) } else { fuse_reply_write(request, count) }
        }
        ops.flush = { request, _, _ in fuse_reply_err(request, 0) }
        ops.release = { request, _, info in
            let handle = info!.pointee.fh
            let backing = Int32(truncatingIfNeeded: handle >> 32)
            if backing > 0, let device = UnionOperations.server(request).passthroughDevice { h2fuse_backing_close(device, backing) }
            close(Int32(truncatingIfNeeded: handle))
            fuse_reply_err(request, 0)
        }
        ops.fsync = { request, _, dataOnly, info in
            let fd = Int32(truncatingIfNeeded: info!.pointee.fh)
            fuse_reply_err(request, (dataOnly != 0 ? fdatasync(fd) : fsync(fd)) == 0 ? 0 : errno)
        }
        ops.fallocate = { request, _, mode, offset, length, info in
            let result = linux_fallocate(Int32(truncatingIfNeeded: info!.pointee.fh), mode, Int64(offset), Int64(length))
            fuse_reply_err(request, result == 0 ? 0 : errno)
        }
        ops.lseek = { request, _, offset, whence, info in
            let result = lseek(Int32(truncatingIfNeeded: info!.pointee.fh), offset, whence)
            if result < 0 { fuse_reply_err(request, errno) } else { fuse_reply_lseek(request, result) }
        }
        ops.opendir = { request, ino, info in
            do {
                let handle = UnionDirectoryHandle(try UnionOperations.server(request).filesystem.listing(UInt64(ino)))
                info!.pointee.fh = UInt64(UInt(bitPattern: Unmanaged.passRetained(handle).toOpaque()))
                fuse_reply_open(request, info)
            } catch {
                UnionOperations.fail(request, error, "opendir of node \(ino)")
            }
        }
        ops.readdir = { request, _, size, offset, info in
            UnionOperations.replyListing(request, info, size, offset) { buffer, room, entry, next in
                var st = stat()
                st.st_ino = UInt(entry.inode)
                st.st_mode = mode_t(entry.type) << 12
                return fuse_add_direntry(request, buffer, room, entry.name, &st, next)
            }
        }
        ops.readdirplus = { request, ino, size, offset, info in
            let server = UnionOperations.server(request)
            let timeout = server.filesystem.configuration.timeout
            UnionOperations.replyListing(request, info, size, offset) { buffer, room, entry, next in
                var parameters = fuse_entry_param()
                if entry.name == "." || entry.name == ".." {
                    parameters.attr.st_ino = UInt(entry.inode)
                    parameters.attr.st_mode = S_IFDIR
                } else {
                    // Each entry given with its attributes is a lookup the kernel will forget.
                    guard let found = try? server.filesystem.lookup(UInt64(ino), entry.name) else { return 0 }
                    parameters.ino = fuse_ino_t(found.node)
                    parameters.attr = found.status
                    parameters.attr_timeout = timeout
                    parameters.entry_timeout = timeout
                }
                let needed = fuse_add_direntry_plus(request, buffer, room, entry.name, &parameters, next)
                // Not sent: the lookup it counted is given back.
                if needed > room && parameters.ino != 0 { server.filesystem.forget(UInt64(parameters.ino), 1) }
                return needed
            }
        }
        ops.releasedir = { request, _, info in
            Unmanaged<UnionDirectoryHandle>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(info!.pointee.fh))!).release()
            fuse_reply_err(request, 0)
        }
        ops.fsyncdir = { request, _, _, _ in fuse_reply_err(request, 0) }
        ops.statfs = { request, _ in
            do {
                var st = try UnionOperations.server(request).filesystem.statistics()
                fuse_reply_statfs(request, &st)
            } catch {
                UnionOperations.fail(request, error, "statfs")
            }
        }
        ops.getxattr = { request, ino, name, size in
            do {
                let filesystem = UnionOperations.server(request).filesystem
                let attribute = UnionOperations.name(name)
                if size == 0 {
                    fuse_reply_xattr(request, try filesystem.getAttribute(UInt64(ino), attribute, into: nil))
                } else {
                    var buffer = [UInt8](repeating: 0, count: size)
                    let count = try buffer.withUnsafeMutableBytes { try filesystem.getAttribute(UInt64(ino), attribute, into: $0) }
                    _ = fuse_reply_buf(request, buffer, count)
                }
            } catch {
                UnionOperations.fail(request, error, "getxattr of node \(ino)")
            }
        }
        ops.listxattr = { request, ino, size in
            do { UnionOperations.replySized(request, try UnionOperations.server(request).filesystem.attributeNames(UInt64(ino)), size) } catch {
                UnionOperations.fail(request, error, "listxattr of node \(ino)")
            }
        }
        ops.setxattr = { request, ino, name, value, size, flags in
            do {
                try UnionOperations.server(request).filesystem.setAttribute(UInt64(ino), UnionOperations.name(name),
                                                            UnsafeRawBufferPointer(start: value, count: size), flags: flags)
                fuse_reply_err(request, 0)
            } catch {
                UnionOperations.fail(request, error, "setxattr of node \(ino)")
            }
        }
        ops.removexattr = { request, ino, name in
            do {
                try UnionOperations.server(request).filesystem.removeAttribute(UInt64(ino), UnionOperations.name(name))
                fuse_reply_err(request, 0)
            } catch {
                UnionOperations.fail(request, error, "removexattr of node \(ino)")
            }
        }
        return ops
    }
}
