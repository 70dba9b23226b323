// Copy-up, whiteouts and the work directory (docs/unionfs.md, "Copy-up"). What becomes
// visible in the upper layer is built in W/work under a temporary name and renamed into
// place in one step: a crash leaves the old state or the new one, never a part.

import CXattr
import CLinuxCalls
import Glibc

extension UnionFilesystem {
    var upper: Layer {
        get throws {
            guard hasUpper else { throw UnionError(EROFS) }
            return layers[0]
        }
    }

    var workLayer: Layer {
        get throws {
            guard let work else { throw UnionError(EROFS) }
            return work
        }
    }

    /// A fresh name in W/work.
    func temporaryName() -> String {
        "work/#\(getpid())-\(temporaryCounter.add(1, ordering: .relaxed).newValue)"
    }

    /// Makes `node`'s object an upper one (parents first) and returns its path.
    @discardableResult
    func copyUp(_ node: UInt64, _ table: inout NodeTable) throws -> String {
        var info = try info(node, table)
        let path = try self.path(node, table)
        guard info.layers[0] != 0 || !hasUpper else { return path }
        let upper = try self.upper, work = try workLayer
        if node != Self.rootNode { try copyUp(info.parent, &table) }
        let source = layers[info.layers[0]]
        let st = try source.status(path)
        let temporary = temporaryName()
        do {
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                try check(mkdirat(work.fd, temporary, 0o700))
            case S_IFREG:
                // Hard links of a lower file stay one file: a name copied up before is
                // linked instead of copied again (W/links/DEV-INO).
                let index = "links/\(st.st_dev)-\(st.st_ino)"
                if st.st_nlink > 1, linkat(work.fd, index, upper.fd, path, 0) == 0 {
                    info.layers = [0]
                    table.nodes[node] = info
                    addIdentity(node, try upper.status(path), &table)
                    return path
                }
                try copyFile(from: source, path, to: work, temporary, size: Int(st.st_size))
                if st.st_nlink > 1 && linkat(work.fd, temporary, work.fd, index, 0) != 0 && errno != EEXIST {
                    throw UnionError(errno)
                }
            case S_IFLNK:
                var target = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let count = readlinkat(source.fd, path, &target, target.count - 1)
                guard count >= 0 else { throw UnionError(errno) }
                target[count] = 0
                try check(symlinkat(target, work.fd, temporary))
            default:
                try check(mknodat(work.fd, temporary, st.st_mode, st.st_rdev))
            }
            try copyMetadata(st, from: source.absolute(path), to: work, temporary)
            try check(renameat(work.fd, temporary, upper.fd, path))
        } catch {
            try? removeTree(temporary, in: work)
            throw error
        }
        // A directory made upper merges with what it had below (it is not opaque).
        info.layers = info.isDirectory ? [0] + info.layers : [0]
        table.nodes[node] = info
        addIdentity(node, try upper.status(path), &table)
        return path
    }

    /// The data of a regular file: only its data ranges (a sparse file stays sparse), by
    /// copy_file_range where the filesystems allow, synced unless the union is volatile.
    func copyFile(from source: Layer, _ path: String, to work: Layer, _ temporary: String, size: Int) throws {
        let input = try check(openat(source.fd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC))
        defer { close(input) }
        let output = try check(openat(work.fd, temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600))
        defer { close(output) }
        var position: off_t = 0
        var buffer: [UInt8] = []
        while position < size {
            let data = lseek(input, position, linux_seek_data)
            if data < 0 { if errno == ENXIO { break }; throw UnionError(errno) }
            var end = lseek(input, data, linux_seek_hole)
            if end < 0 { end = off_t(size) }
            var from = data
            while from < end {
                var inOffset = Int64(from), outOffset = Int64(from)
                let copied = linux_copy_file_range(input, &inOffset, output, &outOffset, Int(end - from))
                if copied > 0 { from += off_t(copied); continue }
                if copied == 0 { break }
                guard [EXDEV, ENOSYS, EINVAL, EOPNOTSUPP].contains(errno) else { throw UnionError(errno) }
                if buffer.isEmpty { buffer = [UInt8](repeating: 0, count: 1 << 20) }
                let count = pread(input, &buffer, min(buffer.count, Int(end - from)), from)
                guard count > 0 else { if count < 0 { throw UnionError(errno) }; break }
                guard pwrite(output, buffer, count, from) == count else { throw UnionError(errno == 0 ? EIO : errno) }
                from += off_t(count)
            }
            position = end
        }
        try check(ftruncate(output, off_t(size)))
        if !configuration.volatile { try check(fsync(output)) }
    }

    /// Owner, mode, xattrs (the union's own left out) and times of `st` onto W/`temporary`.
    func copyMetadata(_ st: stat, from source: String, to work: Layer, _ temporary: String) throws {
        let isLink = st.st_mode & S_IFMT == S_IFLNK
        if geteuid() == 0 { try check(fchownat(work.fd, temporary, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW)) }
        let target = work.absolute(temporary)
        for name in try visibleAttributeNames(source).split(separator: 0) {
            let text = String(decoding: name, as: UTF8.self)
            let size = lgetxattr(source, text, nil, 0)
            guard size >= 0 else { continue }
            var value = [UInt8](repeating: 0, count: size)
            let got = lgetxattr(source, text, &value, value.count)
            guard got >= 0 else { continue }
            if lsetxattr(target, text, value, got, 0) != 0 {
                // trusted.* and security.* need privileges an unprivileged union lacks.
                guard errno == EPERM || errno == ENOTSUP, !text.hasPrefix("user.") else { throw UnionError(errno) }
            }
        }
        if !isLink { try check(fchmodat(work.fd, temporary, st.st_mode & 0o7777, 0)) }
        var times = [st.st_atim, st.st_mtim]
        try check(utimensat(work.fd, temporary, &times, AT_SYMLINK_NOFOLLOW))
    }

    /// Puts a whiteout at `path` of the upper layer, replacing what is there (not a
    /// directory) in one step.
    func whiteOut(_ path: String) throws {
        let upper = try self.upper, work = try workLayer
        let temporary = temporaryName()
        try check(mknodat(work.fd, temporary, S_IFCHR | 0o000, 0))
        if renameat(work.fd, temporary, upper.fd, path) != 0 {
            let error = errno
            unlinkat(work.fd, temporary, 0)
            throw UnionError(error)
        }
    }

    func setOpaque(_ full: String) throws {
        try check(lsetxattr(full, names.opaque, "y", 1, 0))
    }

    /// Removes `path` of `layer` and everything under it.
    func removeTree(_ path: String, in layer: Layer) throws {
        if unlinkat(layer.fd, path, 0) == 0 || errno == ENOENT { return }
        guard errno == EISDIR || errno == EPERM else { throw UnionError(errno) }
        let fd = try check(openat(layer.fd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC))
        guard let directory = fdopendir(fd) else { close(fd); throw UnionError(errno) }
        var children: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { children.append(name) }
        }
        closedir(directory)
        for child in children { try removeTree(path + "/" + child, in: layer) }
        try check(unlinkat(layer.fd, path, AT_REMOVEDIR))
    }

    /// Removes the whiteouts an upper directory holds (it is empty in the union).
    func removeWhiteouts(_ path: String) throws {
        let upper = try self.upper
        let fd = try check(openat(upper.fd, Layer.at(path), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC))
        guard let directory = fdopendir(fd) else { close(fd); throw UnionError(errno) }
        defer { closedir(directory) }
        var whiteouts: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard name != "." && name != ".." else { continue }
            var st = stat()
            if fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0, st.st_mode & S_IFMT == S_IFCHR, st.st_rdev == 0 {
                whiteouts.append(name)
            } else {
                throw UnionError(ENOTEMPTY)
            }
        }
        for name in whiteouts { try check(unlinkat(fd, name, 0)) }
    }
}
