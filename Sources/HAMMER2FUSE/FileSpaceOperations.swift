// fallocate and lseek (SEEK_DATA / SEEK_HOLE): the FUSE side of FileSpace.swift.

import CFUSE3
import Glibc
import HAMMER2CopyOnWrite
import CAtomicMemory
import HAMMER2Engine

extension FUSEOperations {
    // lseek whence values (unistd.h; Glibc does not export them without _GNU_SOURCE).
    static let seekData: Int32 = 3, seekHole: Int32 = 4

    static func addFileSpaceOperations(_ ops: inout fuse_lowlevel_ops) {
        ops.fallocate = { request, ino, mode, offset, length, _ in
            let trace = RequestTrace(.fallocate, UInt64(ino), UInt64(max(offset, 0)), UInt64(max(length, 0)))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                guard offset >= 0, length > 0 else { throw EngineError.invalidArgument("fallocate range") }
                _ = try server.pfs.allocate(UInt64(ino), mode: mode, offset: UInt64(offset), length: UInt64(length))
                fuse_reply_err(request, 0)
            } catch {
                server.fail(request, error, "fallocate of inode \(ino) at offset \(offset) (\(length) bytes, mode 0x\(String(mode, radix: 16)))")
            }
        }
        ops.lseek = { request, ino, offset, whence, _ in
            let trace = RequestTrace(.lseek, UInt64(ino), UInt64(max(offset, 0)), UInt64(whence))
            defer { trace.end() }
            let server = FUSEOperations.server(request)
            do {
                guard whence == FUSEOperations.seekData || whence == FUSEOperations.seekHole else {
                    throw EngineError.invalidArgument("lseek whence \(whence)")  // the kernel answers the others
                }
                guard offset >= 0 else { throw EngineError.posix(ENXIO, "negative offset") }
                // The kernel asks without writing its dirty pages back first: while the file
                // is open for writing some of its data may exist only there. Invalidating
                // the pages makes the kernel write them (launder) before this answers.
                if server.pfs.hasWriters(UInt64(ino)) { server.writeBackKernelPages(UInt64(ino)) }
                let found = try server.pfs.seek(UInt64(ino), from: UInt64(offset), data: whence == FUSEOperations.seekData)
                fuse_reply_lseek(request, off_t(found))
            } catch {
                server.fail(request, error, "lseek of inode \(ino) from offset \(offset)")
            }
        }
    }

    /// FUSE_TMPFILE, from the request loop (h2fuse_session_loop).
    static let temporaryFile: h2fuse_tmpfile_handler = { userdata, parent, uid, gid, mode, umask, flags, result in
        let trace = RequestTrace(.tmpfile, parent)
        defer { trace.end() }
        let server = Unmanaged<FUSEServer>.fromOpaque(userdata!).takeUnretainedValue()
        do {
            let status = try server.pfs.createTemporary(in: parent, mode: mode, caller: Caller(uid: uid, gid: gid, umask: umask))
            if Int32(bitPattern: flags) & O_ACCMODE != O_RDONLY { server.pfs.openForWriting(status.meta.inum, 1) }
            result!.pointee.attr = Attributes.stat(for: status)  // nlink 0: the kernel takes it as it is
            result!.pointee.timeout = server.options.cacheTimeout
            return 0
        } catch {
            let code = (error as? EngineError)?.errno ?? EIO
            if code == EIO { server.logger("O_TMPFILE in inode \(parent) on \(server.options.fsname): \(error)") }
            h2_thread_error_set(code)
            return code
        }
    }

    /// Whether an open with these flags may write.
    static func writes(_ info: UnsafeMutablePointer<fuse_file_info>?) -> Bool {
        guard let info else { return false }
        return info.pointee.flags & O_ACCMODE != O_RDONLY
    }
}
