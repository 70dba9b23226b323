// Conversion of HAMMER2 inode metadata to POSIX attributes, as DragonFly's
// hammer2_vop_getattr reports them: times are stored in microseconds, uid/gid are UUIDs
// whose last four bytes hold the unix id, st_blocks comes from the inode blockref's
// data_count statistic (what the file occupies on media after compression), atime is mtime.

import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format

enum Attributes {
    static func fileTypeBits(_ type: ObjectType) -> mode_t {
        switch type {
        case .directory: return S_IFDIR
        case .regularFile: return S_IFREG
        case .softlink: return S_IFLNK
        case .fifo: return S_IFIFO
        case .socket: return S_IFSOCK
        case .characterDevice: return S_IFCHR
        case .blockDevice: return S_IFBLK
        default: return S_IFREG
        }
    }

    /// A stored time as a timespec. The field is unsigned on disk, but DragonFly's
    /// hammer2_timespec_to_time stores a time before 1970 as the two's complement of the
    /// signed microsecond count, so it reads back as signed.
    static func timespec(microseconds: UInt64) -> Glibc.timespec {
        let signed = Int64(bitPattern: microseconds)
        var seconds = signed / 1_000_000, micro = signed % 1_000_000
        if micro < 0 { seconds -= 1; micro += 1_000_000 }
        return Glibc.timespec(tv_sec: Int(seconds), tv_nsec: Int(micro) * 1000)
    }

    /// hammer2_timespec_to_time: microseconds since the epoch, wrapping (a negative time
    /// becomes its two's complement; nanoseconds are truncated to microseconds).
    static func microseconds(_ ts: Glibc.timespec) -> UInt64 {
        UInt64(bitPattern: Int64(ts.tv_sec) &* 1_000_000 &+ Int64(ts.tv_nsec / 1000))
    }

    /// Linux's makedev: 12 bits of major and 20 of minor in the classic layout, split.
    static func deviceNumber(major: UInt32, minor: UInt32) -> dev_t {
        let major = UInt64(major), minor = UInt64(minor)
        return dev_t(((major & 0xFFFF_F000) << 32) | ((major & 0xFFF) << 8) | ((minor & 0xFFFF_FF00) << 12) | (minor & 0xFF))
    }

    static func stat(for status: NodeStatus) -> Glibc.stat {
        let meta = status.meta
        var st = Glibc.stat()
        st.st_ino = ino_t(meta.inum)
        st.st_mode = fileTypeBits(meta.type) | mode_t(meta.mode & 0o7777)
        // An unlinked file still open has no links (fstat says 0); the PFS root, which no
        // directory entry names, has one.
        st.st_nlink = nlink_t(meta.inum == PFSHandle.rootInodeNumber ? max(meta.nlinks, 1) : meta.nlinks)
        st.st_uid = meta.uid.unixID
        st.st_gid = meta.gid.unixID
        st.st_size = off_t(clamping: meta.size)
        st.st_blksize = blksize_t(HAMMER2.physicalBufferSize)
        // As hammer2_vop_getattr: a directory counts one inode; anything else its data_count.
        let bytes = status.allocatedBytes
        st.st_blocks = blkcnt_t(clamping: (bytes + 511) / 512)
        if meta.type == .characterDevice || meta.type == .blockDevice {
            st.st_rdev = deviceNumber(major: meta.rmajor, minor: meta.rminor)
        }
        st.st_mtim = timespec(microseconds: meta.mtime)
        st.st_ctim = timespec(microseconds: meta.ctime)
        // HAMMER2 does not maintain atime (DragonFly reports mtime); one set explicitly
        // (utimensat) is kept and shown.
        st.st_atim = timespec(microseconds: meta.atime != 0 ? meta.atime : meta.mtime)
        return st
    }

    /// The d_type-bearing stat readdir needs: inode number and type only.
    static func direntStat(inum: UInt64, type: ObjectType) -> Glibc.stat {
        var st = Glibc.stat()
        st.st_ino = ino_t(inum)
        st.st_mode = fileTypeBits(type)
        return st
    }
}
