// getxattr, setxattr, listxattr, removexattr: the FUSE side of ExtendedAttributes.swift.
// The kernel checks permissions (trusted.* for root only, user.* only on files and
// directories); listxattr hides trusted.* from other users here. Sizes follow xattr(7): a
// zero size asks for the length, a short buffer is ERANGE.

import CFUSE3
import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Engine

extension FUSEOperations {
    static func addAttributeOperations(_ ops: inout fuse_lowlevel_ops) {
        ops.getxattr = { request, ino, name, size in
            let trace = RequestTrace(.getxattr, UInt64(ino))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                let value = try server.pfs.attribute(UInt64(ino), name: FUSEOperations.name(name))
                FUSEOperations.replySized(request, server, value, size)
            } catch {
                server.fail(request, error, "getxattr of inode \(ino)")
            }
        }
        ops.listxattr = { request, ino, size in
            let trace = RequestTrace(.listxattr, UInt64(ino))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                // The kernel refuses trusted.* to callers without CAP_SYS_ADMIN but leaves
                // listing to the filesystem (ext4 hides them, trusted_xattr_list).
                let privileged = FUSEOperations.caller(request).uid == 0
                let trusted = Array("trusted.".utf8)
                let names: [UInt8] = try server.pfs.attributeNames(UInt64(ino))
                    .filter { privileged || !$0.starts(with: trusted) }
                    .flatMap { $0 + [UInt8(0)] }
                FUSEOperations.replySized(request, server, names, size)
            } catch {
                server.fail(request, error, "listxattr of inode \(ino)")
            }
        }
        ops.setxattr = { request, ino, name, value, size, flags in
            let trace = RequestTrace(.setxattr, UInt64(ino))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                let bytes = size == 0 ? [] : Array(UnsafeRawBufferPointer(start: value, count: size))
                try server.pfs.setAttribute(UInt64(ino), name: FUSEOperations.name(name), value: bytes, flags: flags)
                fuse_reply_err(request, 0)
            } catch {
                server.fail(request, error, "setxattr of inode \(ino)")
            }
        }
        ops.removexattr = { request, ino, name in
            let trace = RequestTrace(.removexattr, UInt64(ino))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                try server.pfs.removeAttribute(UInt64(ino), name: FUSEOperations.name(name))
                fuse_reply_err(request, 0)
            } catch {
                server.fail(request, error, "removexattr of inode \(ino)")
            }
        }
    }

    /// FUSE_HANDLE_KILLPRIV_V2, from the request loop before the write, truncate or open
    /// it concerns: setuid/setgid and file capabilities go, and the kernel's copy of the
    /// mode with them.
    static let killPrivileges: h2fuse_kill_privileges_handler = { userdata, inode in
        let server = Unmanaged<FUSEServer>.fromOpaque(userdata!).takeUnretainedValue()
        do {
            if try server.pfs.killPrivileges(inode) { server.invalidateAttributes(inode) }
        } catch {
            server.logger("clearing setuid/setgid of inode \(inode) on \(server.options.fsname): \(error)")
        }
    }

    /// xattr(7)'s sizing: size 0 asks for the length; a buffer too small is ERANGE.
    static func replySized(_ request: fuse_req_t?, _ server: FUSEServer, _ bytes: [UInt8], _ size: Int) {
        if size == 0 {
            fuse_reply_xattr(request, bytes.count)
        } else if bytes.count > size {
            server.replyError(request, ERANGE)
        } else {
            bytes.withUnsafeBytes { _ = fuse_reply_buf(request, $0.baseAddress, $0.count) }
        }
    }
}
