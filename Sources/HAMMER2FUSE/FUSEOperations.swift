// The low-level operation table. Each callback recovers its FUSEServer from the request's
// user data and replies exactly once on every path.

import CFUSE3
import Glibc
import HAMMER2Engine
import HAMMER2Format

enum FUSEOperations {
    static func server(_ request: fuse_req_t?) -> FUSEServer {
        Unmanaged<FUSEServer>.fromOpaque(fuse_req_userdata(request)!).takeUnretainedValue()
    }

    static func entry(_ server: FUSEServer, _ record: InodeRecord) -> fuse_entry_param {
        var entry = fuse_entry_param()
        entry.ino = fuse_ino_t(record.meta.inum)
        entry.generation = 0
        entry.attr = Attributes.stat(for: record)
        entry.attr_timeout = server.options.cacheTimeout
        entry.entry_timeout = server.options.cacheTimeout
        return entry
    }

    static func table() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { _, connection in
            if let connection { h2fuse_init_connection(connection) }
        }
        ops.lookup = { request, parent, name in
            let server = FUSEOperations.server(request)
            let nameBytes = Array(UnsafeRawBufferPointer(start: name, count: strlen(name!)))
            do {
                let dir = try server.pfs.inode(UInt64(parent))
                let found = try server.pfs.lookup(in: dir, name: nameBytes)
                var entry = FUSEOperations.entry(server, try server.pfs.record(found.inum))
                fuse_reply_entry(request, &entry)
            } catch {
                server.fail(request, error, "lookup of \"\(String(decoding: nameBytes, as: UTF8.self))\" in inode \(parent)")
            }
        }
        ops.getattr = { request, ino, _ in
            let server = FUSEOperations.server(request)
            do {
                var st = Attributes.stat(for: try server.pfs.record(UInt64(ino)))
                fuse_reply_attr(request, &st, server.options.cacheTimeout)
            } catch {
                server.fail(request, error, "getattr of inode \(ino)")
            }
        }
        ops.readlink = { request, ino in
            let server = FUSEOperations.server(request)
            do {
                let target = try server.pfs.readLink(try server.pfs.inode(UInt64(ino)))
                guard !target.contains(0) else { throw EngineError.corrupt("symlink target of inode \(ino) contains NUL") }
                let cString = target.map { CChar(bitPattern: $0) } + [0]
                fuse_reply_readlink(request, cString)
            } catch {
                server.fail(request, error, "readlink of inode \(ino)")
            }
        }
        ops.open = { request, ino, info in
            let server = FUSEOperations.server(request)
            do {
                let inode = try server.pfs.inode(UInt64(ino))
                guard inode.meta.type != .directory else { throw EngineError.isDirectory }
                guard let info else { throw EngineError.invalidArgument("no file info") }
                if info.pointee.flags & O_ACCMODE != O_RDONLY || info.pointee.flags & O_TRUNC != 0 {
                    fuse_reply_err(request, EROFS)
                    return
                }
                // The volume is read-only: cached pages stay valid across opens.
                h2fuse_set_keep_cache(info)
                fuse_reply_open(request, info)
            } catch {
                server.fail(request, error, "open of inode \(ino)")
            }
        }
        ops.read = { request, ino, size, offset, _ in
            let server = FUSEOperations.server(request)
            do {
                let inode = try server.pfs.inode(UInt64(ino))
                guard inode.meta.type != .directory else { throw EngineError.isDirectory }
                let bytes = try server.pfs.read(inode, offset: UInt64(max(offset, 0)), count: size)
                bytes.withUnsafeBytes { _ = fuse_reply_buf(request, $0.baseAddress, $0.count) }
            } catch {
                server.fail(request, error, "read of inode \(ino) at offset \(offset) (\(size) bytes)")
            }
        }
        ops.release = { request, _, _ in fuse_reply_err(request, 0) }
        ops.opendir = { request, ino, info in
            let server = FUSEOperations.server(request)
            do {
                let inode = try server.pfs.inode(UInt64(ino))
                guard inode.meta.type == .directory else { throw EngineError.notDirectory }
                if let info { h2fuse_set_cache_readdir(info) }
                fuse_reply_open(request, info)
            } catch {
                server.fail(request, error, "opendir of inode \(ino)")
            }
        }
        ops.readdir = { request, ino, size, offset, _ in
            FUSEOperations.readDirectory(request, ino, size, offset, plus: false)
        }
        ops.readdirplus = { request, ino, size, offset, _ in
            FUSEOperations.readDirectory(request, ino, size, offset, plus: true)
        }
        ops.releasedir = { request, _, _ in fuse_reply_err(request, 0) }
        ops.statfs = { request, _ in
            var st = FUSEOperations.server(request).statfs()
            fuse_reply_statfs(request, &st)
        }
        return ops
    }

    /// Readdir cookies: 1 and 2 follow "." and ".."; an entry's cookie is its directory
    /// hash key without bit 63, plus one. Hash keys do not move, so cookies stay valid
    /// however large the directory and however the listing is split across calls.
    static func readDirectory(_ request: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t, plus: Bool) {
        let server = FUSEOperations.server(request)
        do {
            let pfs = server.pfs
            let dir = try pfs.inode(UInt64(ino))
            var buffer = [CChar](repeating: 0, count: size)
            var used = 0
            // Appends one entry; false when the buffer is full.
            func add(_ name: [UInt8], _ next: UInt64, _ stat: () throws -> (Glibc.stat, InodeRecord?)) throws -> Bool {
                let cName = name.map { CChar(bitPattern: $0) } + [0]
                let (st, record) = try stat()
                let needed: Int = buffer.withUnsafeMutableBufferPointer { buf in
                    if plus {
                        var entry = fuse_entry_param()
                        if let record { entry = FUSEOperations.entry(server, record) } else { entry.attr = st }
                        return fuse_add_direntry_plus(request, buf.baseAddress! + used, size - used, cName, &entry, off_t(next))
                    } else {
                        var st = st
                        return fuse_add_direntry(request, buf.baseAddress! + used, size - used, cName, &st, off_t(next))
                    }
                }
                if needed > size - used { return false }
                used += needed
                return true
            }
            var cookie = UInt64(max(offset, 0))
            if cookie == 0 {
                guard try add(Array(".".utf8), 1, { (Attributes.direntStat(inum: UInt64(ino), type: .directory), nil) }) else {
                    return replyBuffer(request, buffer, used)
                }
                cookie = 1
            }
            if cookie == 1 {
                let parent = dir.meta.iparent == 0 ? UInt64(ino) : dir.meta.iparent
                guard try add(Array("..".utf8), 2, { (Attributes.direntStat(inum: parent, type: .directory), nil) }) else {
                    return replyBuffer(request, buffer, used)
                }
                cookie = 2
            }
            try pfs.readDirectory(dir, from: cookie <= 2 ? 0 : cookie) { entry in
                try add(entry.name, entry.nextCookie) {
                    if plus {
                        let record = try pfs.record(entry.inum)
                        return (Attributes.stat(for: record), record)
                    }
                    return (Attributes.direntStat(inum: entry.inum, type: entry.type), nil)
                }
            }
            replyBuffer(request, buffer, used)
        } catch {
            server.fail(request, error, "readdir of inode \(ino)")
        }
    }

    static func replyBuffer(_ request: fuse_req_t?, _ buffer: [CChar], _ count: Int) {
        buffer.withUnsafeBytes { _ = fuse_reply_buf(request, $0.baseAddress, count) }
    }
}
