#include <stddef.h>
#include "CFUSE3.h"

int h2fuse_session_loop_mt(struct fuse_session *se, unsigned int max_threads) {
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (config == NULL) return -1;
    fuse_loop_cfg_set_clone_fd(config, 0);
    fuse_loop_cfg_set_max_threads(config, max_threads);
    int result = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    return result;
}

void h2fuse_set_keep_cache(struct fuse_file_info *fi) { fi->keep_cache = 1; }

void h2fuse_set_cache_readdir(struct fuse_file_info *fi) { fi->cache_readdir = 1; }

struct fuse_args h2fuse_args(int argc, char **argv) {
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    return args;
}

void h2fuse_init_connection(struct fuse_conn_info *conn, int writeback) {
    // The kernel clamps this to what it supports; larger readahead means fewer, larger
    // read requests on sequential access.
    conn->max_readahead = conn->max_readahead > (1u << 20) ? conn->max_readahead : (1u << 20);
    // libfuse derives the kernel's max_pages from max_write; 1 MiB lets reads be 1 MiB too.
    conn->max_write = 1u << 20;
    if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
    if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
    // Writes land in the kernel's page cache and reach the daemon in large batches at
    // writeback, fsync and close, instead of one request per write() under the inode lock.
    if (writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) conn->want |= FUSE_CAP_WRITEBACK_CACHE;
    else conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}
