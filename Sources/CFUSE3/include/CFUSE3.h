// libfuse3's low-level API for Swift. Swift cannot call C macros or reach bitfields
// reliably, so the few places libfuse uses them get a small function here.
#ifndef CFUSE3_H
#define CFUSE3_H

#define FUSE_USE_VERSION 312
#include <fuse3/fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/statvfs.h>


// The request loop (shims.c): `threads` workers; FUSE_TMPFILE requests (which libfuse 3.14
// does not know) go to `tmpfile`, which fills `result` (the new inode's attributes) and
// returns 0 or an errno.
// `mode` has the umask applied.
struct h2fuse_tmpfile_result {
    struct stat attr;
    double timeout;
};
typedef int (*h2fuse_tmpfile_handler)(void *userdata, uint64_t parent, uint32_t uid, uint32_t gid, uint32_t mode,
                                      uint32_t flags, struct h2fuse_tmpfile_result *result);
int h2fuse_session_loop(struct fuse_session *se, unsigned int threads, h2fuse_tmpfile_handler tmpfile, void *userdata);

// fuse_file_info flags are bitfields.
void h2fuse_set_keep_cache(struct fuse_file_info *fi);
void h2fuse_set_cache_readdir(struct fuse_file_info *fi);

// FUSE_ARGS_INIT is a macro.
struct fuse_args h2fuse_args(int argc, char **argv);

// Asks the kernel for large readahead, as much as it offers, and for its writeback cache
// when `writeback` is non-zero (and the filesystem is writable).
int h2fuse_init_connection(struct fuse_conn_info *conn, int writeback);

#endif
