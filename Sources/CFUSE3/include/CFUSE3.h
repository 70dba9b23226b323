// libfuse3's low-level API for Swift. Swift cannot call C macros or reach bitfields
// reliably, so the few places libfuse uses them get a small function here.
#ifndef CFUSE3_H
#define CFUSE3_H

#define FUSE_USE_VERSION 312
#include <fuse3/fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>


// The request loop (shims.c): `threads` workers; FUSE_TMPFILE requests (which libfuse 3.14
// does not know) go to `tmpfile`, which fills `result` (the new inode's attributes) and
// returns 0 or an errno.
// `umask` is the caller's, for the daemon to apply (it is not applied to `mode`).
// `kill_privileges` gets the inode a write, truncate or open(O_TRUNC) by a caller without
// CAP_FSETID is about to change, before the request runs (FUSE_HANDLE_KILLPRIV_V2).
struct h2fuse_tmpfile_result {
    struct stat attr;
    double timeout;
};
typedef int (*h2fuse_tmpfile_handler)(void *userdata, uint64_t parent, uint32_t uid, uint32_t gid, uint32_t mode,
                                      uint32_t umask, uint32_t flags, struct h2fuse_tmpfile_result *result);
typedef void (*h2fuse_kill_privileges_handler)(void *userdata, uint64_t inode);
struct h2fuse_loop;
// `uring_threads` > 0 asks the kernel for FUSE over io_uring (uring.c) with that many
// threads per CPU queue; /dev/fuse serves when the kernel does not offer it.
struct h2fuse_loop *h2fuse_loop_new(struct fuse_session *se, unsigned int threads, unsigned int uring_threads,
                                    h2fuse_tmpfile_handler tmpfile, h2fuse_kill_privileges_handler kill_privileges,
                                    void *userdata);
// Whether requests come through io_uring (after INIT).
int h2fuse_uring_active(const struct h2fuse_loop *loop);

// FUSE over io_uring (uring.c), used by the loop.
struct h2_uring;
struct h2_uring *h2fuse_uring_start(struct h2fuse_loop *loop, struct fuse_session *se, unsigned int threads_per_queue,
                                    size_t payload_size);
void h2fuse_dispatch(struct h2fuse_loop *loop, const struct fuse_buf *buf);
void h2fuse_uring_stop(struct h2_uring *uring);
int h2fuse_uring_failed(const struct h2_uring *uring);
// Every 2 ms and when a ring thread takes a request: a queue whose threads are all busy
// while some wait for a flush gets one more (up to 16 per queue).
void h2fuse_uring_tick(struct h2_uring *uring);
int h2fuse_waiting_count(void);
void h2fuse_uring_refuse(struct fuse_session *se);
int h2fuse_uring_reply(const struct iovec *iov, int count, ssize_t *written);
// The reply buffer of the request this thread serves from a ring (its payload: a reply
// built there is not copied again), or NULL outside a ring.
void *h2fuse_uring_payload(size_t *capacity);
// Serves until the kernel ends the session (unmount) or h2fuse_loop_stop; then resets it.
int h2fuse_loop_run(struct h2fuse_loop *loop);
// Ends h2fuse_loop_run from any thread (a signal, the daemon stopping every mount).
void h2fuse_loop_stop(struct h2fuse_loop *loop);
void h2fuse_loop_free(struct h2fuse_loop *loop);

// After fuse_session_mount: the session's device I/O goes through shims.c, which adds
// FUSE_HANDLE_KILLPRIV_V2 to the INIT reply. Returns 0 or a negative errno.
int h2fuse_take_over_io(struct fuse_session *se);
// Whether the kernel accepted FUSE_HANDLE_KILLPRIV_V2 on this session (after INIT).
int h2fuse_killpriv_v2_negotiated(struct fuse_session *se);

// fuse_file_info flags are bitfields.
void h2fuse_set_keep_cache(struct fuse_file_info *fi);
void h2fuse_set_cache_readdir(struct fuse_file_info *fi);

// FUSE_ARGS_INIT is a macro.
struct fuse_args h2fuse_args(int argc, char **argv);

// Asks the kernel for large readahead, as much as it offers, and for its writeback cache
// when `writeback` is non-zero (and the filesystem is writable).
// `acl` non-zero asks for POSIX ACLs (FUSE_CAP_POSIX_ACL with FUSE_CAP_DONT_MASK).
int h2fuse_init_connection(struct fuse_conn_info *conn, int writeback, int acl);
// Whether POSIX ACLs were granted (after INIT).
int h2fuse_posix_acl(const struct fuse_conn_info *conn);
// Zero-message opendir (kernel 5.1+): when the kernel offers it, asks for it and returns 1;
// the filesystem then answers OPENDIR with ENOSYS once, and the kernel opens directories
// by itself from then on (no OPENDIR or RELEASEDIR) and caches their listings.
int h2fuse_want_no_opendir(struct fuse_conn_info *conn);

// The volume daemon's stop signals (SIGINT, SIGTERM, SIGHUP): install once; wait returns
// the signal number (0 after wake, -1 on error).
int h2fuse_stop_signals_install(void);
int h2fuse_stop_signals_wait(void);
void h2fuse_stop_signals_wake(void);
// Splits a mount option string (what follows -o; commas separate, a backslash escapes)
// with libfuse's fuse_opt_parse into: the options mount_hammer2 interprets (`ours`), the
// mount options libfuse takes (`fuse`), options for mount(8) and systemd only, passed over
// (`ignored`: auto, noauto, nofail, _netdev, user, x-*, the atime variants FUSE lacks...),
// options that may not be set (`refused`: fsname=, subtype=, which hammer2 finds mounts
// by) and unknown ones. Each list is newline-separated and malloc'ed (free them); returns
// 0, or -1 when libfuse's parser failed (out of memory, a bad escape).
int h2fuse_classify_mount_options(const char *options, char **ours, char **fuse, char **ignored, char **refused,
                                  char **unknown);
// Runs `body(context)` on a new thread and waits for it (0, or an errno when the thread
// cannot start). After fuse_daemonize's fork the calling thread's cached thread id is its
// parent's (the Swift runtime keeps it per thread for its priority-inheriting locks): a
// lock it contends for would never be granted, so the daemon works on fresh threads only.
int h2fuse_run_on_new_thread(void (*body)(void *), void *context);
// A worker starts (+1) or stops (-1) waiting for a flush: the request loops then start more
// workers, so that other requests do not queue behind it.
void h2fuse_note_waiting(int delta);

// The user id of a Unix socket's peer (SO_PEERCRED).
int h2fuse_peer_uid(int fd, uint32_t *uid);

// FUSE passthrough (shims.c): offered at INIT when asked for; a layer file registered as a
// backing file (CAP_SYS_ADMIN) and an open answered with its id.
void h2fuse_want_passthrough(struct fuse_session *se);
int h2fuse_passthrough_negotiated(int device);
int h2fuse_backing_open(int device, int fd);
void h2fuse_backing_close(int device, int id);
int h2fuse_reply_open_passthrough(fuse_req_t req, uint64_t fh, int backing_id);
int h2fuse_reply_create_passthrough(fuse_req_t req, uint64_t nodeid, const struct stat *st, double timeout, uint64_t fh,
                                    int backing_id);

#endif
