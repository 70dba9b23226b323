// libfuse3's low-level API for Swift. Swift cannot call C macros or reach bitfields
// reliably, so the few places libfuse uses them get a small function here.
#ifndef CFUSE3_H
#define CFUSE3_H

// 3.12: fuse_session_loop_mt must take the 3.12 loop config (fuse_loop_cfg_*); under an older
// API version it maps to an entry point that misreads it and ends each worker after one request.
#define FUSE_USE_VERSION 312
#include <fuse3/fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

// fuse_session_loop_mt is a versioned macro (fuse_session_loop_mt_312 in libfuse 3.12+).
int h2fuse_session_loop_mt(struct fuse_session *se, unsigned int max_threads);

// fuse_file_info flags are bitfields.
void h2fuse_set_keep_cache(struct fuse_file_info *fi);
void h2fuse_set_cache_readdir(struct fuse_file_info *fi);

// FUSE_ARGS_INIT is a macro.
struct fuse_args h2fuse_args(int argc, char **argv);

// Asks the kernel for large readahead, as much as it offers, and for its writeback cache
// when `writeback` is non-zero (and the filesystem is writable).
void h2fuse_init_connection(struct fuse_conn_info *conn, int writeback);

#endif
