#define _GNU_SOURCE  // pipe2, struct ucred
#include <stddef.h>
#include "CFUSE3.h"

void h2fuse_set_keep_cache(struct fuse_file_info *fi) { fi->keep_cache = 1; }

void h2fuse_set_cache_readdir(struct fuse_file_info *fi) { fi->cache_readdir = 1; }

struct fuse_args h2fuse_args(int argc, char **argv) {
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    return args;
}

int h2fuse_init_connection(struct fuse_conn_info *conn, int writeback, int acl) {
    // The kernel clamps this to what it supports; larger readahead means fewer, larger
    // read requests on sequential access.
    conn->max_readahead = conn->max_readahead > (1u << 20) ? conn->max_readahead : (1u << 20);
    // libfuse derives the kernel's max_pages from max_write; 1 MiB lets reads be 1 MiB too.
    conn->max_write = 1u << 20;
    // HAMMER2 stores microseconds: the kernel rounds the times it keeps (mtime and ctime
    // with the writeback cache) the same way, so stat shows what a remount will show.
    conn->time_gran = 1000;
    if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
    if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
    // Writes land in the kernel's page cache and reach the daemon in large batches at
    // writeback, fsync and close, instead of one request per write() under the inode lock.
    if (writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) conn->want |= FUSE_CAP_WRITEBACK_CACHE;
    else conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    // POSIX ACLs: the kernel enforces them (and turns on default_permissions); the daemon
    // stores them, keeps the mode in sync and gives new nodes their parent's default ACL,
    // which is why it also applies the umask itself (DONT_MASK): a default ACL replaces it.
    if (acl && (conn->capable & FUSE_CAP_POSIX_ACL) && (conn->capable & FUSE_CAP_DONT_MASK)) {
        conn->want |= FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;
    }
    return (conn->want & FUSE_CAP_WRITEBACK_CACHE) != 0;
}

int h2fuse_posix_acl(const struct fuse_conn_info *conn) { return (conn->want & FUSE_CAP_POSIX_ACL) != 0; }

int h2fuse_want_no_opendir(struct fuse_conn_info *conn) {
    if (!(conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT)) return 0;
    conn->want |= FUSE_CAP_NO_OPENDIR_SUPPORT;
    return 1;
}

// --- The request loop ----------------------------------------------------------------------
// libfuse 3.14's loop answers opcodes it does not know with ENOSYS, FUSE_TMPFILE (kernel
// 6.1+, libfuse 3.17+) among them, and the kernel then turns O_TMPFILE into EOPNOTSUPP for
// good. This loop is libfuse's multi-threaded one reduced to a fixed pool (each worker
// receives and processes requests, as fuse_session_loop_mt's do), plus FUSE_TMPFILE
// handed to `tmpfile` and answered here.

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <linux/fuse.h>

// Workers: `threads` wait for requests. When every one is busy while some wait for a flush
// (writers past the dirty limit, fsync), another is started, up to H2FUSE_MAX_WORKERS, so
// that a create or a stat does not wait behind them; busy workers that do not wait (a queue
// of reads) start none, since more threads than cores only contend. Workers beyond `threads` that find themselves idle end (as
// libfuse's max_idle_threads).
#define H2FUSE_MAX_WORKERS 32

struct h2fuse_loop {
    struct fuse_session *se;
    h2fuse_tmpfile_handler tmpfile;
    h2fuse_kill_privileges_handler kill_privileges;
    void *userdata;
    unsigned int threads;
    sem_t finished;
    pthread_mutex_t mutex;
    pthread_t workers[H2FUSE_MAX_WORKERS];
    unsigned char running[H2FUSE_MAX_WORKERS];
    // Read and written without the mutex on every request; the mutex guards the slots
    // (starting and retiring workers).
    _Atomic unsigned int alive, busy;
    // FUSE over io_uring (uring.c): threads per CPU queue (0: /dev/fuse only), the ring once
    // started, and whether starting it was tried.
    unsigned int uring_threads;
    struct h2_uring *uring;
    int uring_tried;
};


// Workers waiting for a flush (the filesystem says so through h2fuse_note_waiting).
static _Atomic int h2fuse_waiting;

void h2fuse_note_waiting(int delta) { h2fuse_waiting += delta; }

int h2fuse_waiting_count(void) { return h2fuse_waiting; }

// --- FUSE_HANDLE_KILLPRIV_V2 -----------------------------------------------------------
// libfuse 3.14 does not know this INIT flag (3.16 does). Without it the kernel keeps SB_NOSEC
// off for a mount that has xattrs, and then asks for security.capability before every
// write(). With it, the kernel sets SB_NOSEC and tells the daemon when a write, truncate or
// open(O_TRUNC) by a caller without CAP_FSETID must clear setuid/setgid. The flag is added
// to libfuse's INIT reply on its way out (custom I/O). The hooks get no user data of their
// own (libfuse passes the session's), so the state is kept per device descriptor.

#define H2FUSE_MAX_FD 4096
static _Atomic uint64_t h2fuse_init_unique[H2FUSE_MAX_FD];  // INIT request whose reply gets flags added
static _Atomic unsigned char h2fuse_offered[H2FUSE_MAX_FD];  // by the kernel: 1 KILLPRIV_V2, 2 OVER_IO_URING
static _Atomic unsigned char h2fuse_killpriv_v2[H2FUSE_MAX_FD];  // negotiated on this descriptor
static _Atomic unsigned char h2fuse_uring_wanted[H2FUSE_MAX_FD];  // the mount asks for the ring
static _Atomic unsigned char h2fuse_uring_negotiated[H2FUSE_MAX_FD];

// FUSE_OVER_IO_URING is bit 41 of the INIT flags: bit 9 of flags2 (7.42; not in Debian 12's headers).
#define H2FUSE_OVER_IO_URING_FLAGS2 (1u << 9)
// FUSE_PASSTHROUGH is bit 37: bit 5 of flags2 (7.40); the reply's max_stack_depth follows flags2.
#define H2FUSE_PASSTHROUGH_FLAGS2 (1u << 5)
static _Atomic unsigned char h2fuse_passthrough_wanted[H2FUSE_MAX_FD];
static _Atomic unsigned char h2fuse_passthrough_on[H2FUSE_MAX_FD];

// Payload buffer of a ring entry: the kernel wants max(max_write, max_pages pages), 1 MiB here.
#define H2FUSE_URING_PAYLOAD ((size_t)1 << 20)

static ssize_t h2fuse_io_read(int fd, void *buf, size_t len, void *userdata) {
    (void)userdata;
    ssize_t got = read(fd, buf, len);
    const struct fuse_in_header *in = buf;
    if (got >= (ssize_t)(sizeof *in + 16) && in->opcode == FUSE_INIT && fd >= 0 && fd < H2FUSE_MAX_FD) {
        const struct fuse_init_in *init = (const void *)((const char *)buf + sizeof *in);  // major, minor, readahead, flags
        unsigned char offered = 0;
        if (init->major == 7 && init->minor >= 33 && (init->flags & FUSE_HANDLE_KILLPRIV_V2)) offered |= 1;
        // flags2 exists from 7.36 on: older kernels send a 16-byte INIT.
        if (init->major == 7 && got >= (ssize_t)(sizeof *in + 20) && (init->flags & FUSE_INIT_EXT)
            && (init->flags2 & H2FUSE_OVER_IO_URING_FLAGS2)) offered |= 2;
        if (init->major == 7 && got >= (ssize_t)(sizeof *in + 20) && (init->flags & FUSE_INIT_EXT)
            && (init->flags2 & H2FUSE_PASSTHROUGH_FLAGS2)) offered |= 4;
        h2fuse_offered[fd] = offered;
        if (offered) h2fuse_init_unique[fd] = in->unique;
    }
    return got;
}

static ssize_t h2fuse_io_writev(int fd, struct iovec *iov, int count, void *userdata) {
    (void)userdata;
    ssize_t answered;
    if (h2fuse_uring_reply(iov, count, &answered)) return answered;
    uint64_t unique = fd >= 0 && fd < H2FUSE_MAX_FD ? h2fuse_init_unique[fd] : 0;
    if (unique != 0 && count == 2 && iov[0].iov_len == sizeof(struct fuse_out_header)) {
        const struct fuse_out_header *out = iov[0].iov_base;
        if (out->unique == unique && out->error == 0 && iov[1].iov_len >= 16 && iov[1].iov_len <= sizeof(struct fuse_init_out)) {
            struct fuse_init_out reply;
            memset(&reply, 0, sizeof reply);
            memcpy(&reply, iov[1].iov_base, iov[1].iov_len);
            size_t size = iov[1].iov_len;
            unsigned char offered = h2fuse_offered[fd];
            if (offered & 1) reply.flags |= FUSE_HANDLE_KILLPRIV_V2;
            int uring = (offered & 2) && h2fuse_uring_wanted[fd] && size >= offsetof(struct fuse_init_out, flags2) + 4;
            if (uring) {
                reply.flags |= FUSE_INIT_EXT;
                reply.flags2 |= H2FUSE_OVER_IO_URING_FLAGS2;
            }
            // Passthrough: reads and writes of files opened with a backing file go to it
            // in the kernel (not with the writeback cache, which the kernel refuses with it).
            int passthrough = (offered & 4) && h2fuse_passthrough_wanted[fd] && !(reply.flags & FUSE_WRITEBACK_CACHE)
                && size >= offsetof(struct fuse_init_out, flags2) + 8;
            if (passthrough) {
                reply.flags |= FUSE_INIT_EXT;
                reply.flags2 |= H2FUSE_PASSTHROUGH_FLAGS2;
                reply.unused[0] = 1;  // max_stack_depth: backing files on a filesystem that is not stacked
            }
            struct iovec patched[2] = { iov[0], { &reply, size } };
            h2fuse_init_unique[fd] = 0;
            ssize_t written = writev(fd, patched, 2);
            if (written > 0) {
                h2fuse_killpriv_v2[fd] = offered & 1;
                h2fuse_uring_negotiated[fd] = (unsigned char)uring;
                h2fuse_passthrough_on[fd] = (unsigned char)passthrough;
            }
            return written;
        }
    }
    return writev(fd, iov, count);
}

int h2fuse_take_over_io(struct fuse_session *se) {
    int fd = fuse_session_fd(se);
    if (fd >= 0 && fd < H2FUSE_MAX_FD) {
        h2fuse_init_unique[fd] = 0;
        h2fuse_killpriv_v2[fd] = 0;
        h2fuse_offered[fd] = 0;
        h2fuse_uring_negotiated[fd] = 0;
        h2fuse_passthrough_on[fd] = 0;
    }
    const struct fuse_custom_io io = { .writev = h2fuse_io_writev, .read = h2fuse_io_read };
    return fuse_session_custom_io(se, &io, fd);
}

int h2fuse_uring_active(const struct h2fuse_loop *loop) {
    return loop->uring != NULL && !h2fuse_uring_failed(loop->uring);
}

int h2fuse_killpriv_v2_negotiated(struct fuse_session *se) {
    int fd = fuse_session_fd(se);
    return fd >= 0 && fd < H2FUSE_MAX_FD && h2fuse_killpriv_v2[fd];
}

// The inode a request asks to lose setuid/setgid (and file capabilities) before it runs,
// 0 for none: a write, truncate or open(O_TRUNC) by a caller without CAP_FSETID.
static uint64_t h2fuse_kill_target(const struct fuse_buf *buf) {
    const struct fuse_in_header *in = buf->mem;
    const char *body = (const char *)buf->mem + sizeof *in;
    size_t size = buf->size - sizeof *in;
    switch (in->opcode) {
    case FUSE_WRITE:
        if (size >= sizeof(struct fuse_write_in) && (((const struct fuse_write_in *)body)->write_flags & FUSE_WRITE_KILL_SUIDGID)) return in->nodeid;
        break;
    case FUSE_SETATTR:
        if (size >= sizeof(struct fuse_setattr_in) && (((const struct fuse_setattr_in *)body)->valid & FATTR_KILL_SUIDGID)) return in->nodeid;
        break;
    case FUSE_OPEN:
        if (size >= sizeof(struct fuse_open_in) && (((const struct fuse_open_in *)body)->open_flags & FUSE_OPEN_KILL_SUIDGID)) return in->nodeid;
        break;
    }
    return 0;
}

static void h2fuse_reply_raw(struct fuse_session *se, uint64_t unique, int error, const void *body, size_t size) {
    struct fuse_out_header header = { .len = (uint32_t)(sizeof header + (error ? 0 : size)), .error = -error, .unique = unique };
    struct iovec iov[2] = { { &header, sizeof header }, { (void *)body, error ? 0 : size } };
    ssize_t ignored;
    if (h2fuse_uring_reply(iov, error ? 1 : 2, &ignored)) return;  // a request from a ring
    ignored = writev(fuse_session_fd(se), iov, error ? 1 : 2);
    (void)ignored;  // the kernel may have dropped the request (interrupted): nothing to do
}

/// An entry reply's body: `nodeid` and `st` valid for `timeout` seconds.
static void h2fuse_fill_entry(struct fuse_entry_out *entry, uint64_t nodeid, const struct stat *st, double timeout) {
    uint64_t seconds = (uint64_t)timeout;
    uint32_t nanoseconds = (uint32_t)((timeout - (double)seconds) * 1e9);
    entry->nodeid = nodeid;
    entry->entry_valid = seconds;
    entry->entry_valid_nsec = nanoseconds;
    entry->attr_valid = seconds;
    entry->attr_valid_nsec = nanoseconds;
    struct fuse_attr *attr = &entry->attr;
    attr->ino = st->st_ino;
    attr->size = st->st_size;
    attr->blocks = st->st_blocks;
    attr->atime = st->st_atim.tv_sec;
    attr->atimensec = st->st_atim.tv_nsec;
    attr->mtime = st->st_mtim.tv_sec;
    attr->mtimensec = st->st_mtim.tv_nsec;
    attr->ctime = st->st_ctim.tv_sec;
    attr->ctimensec = st->st_ctim.tv_nsec;
    attr->mode = st->st_mode;
    attr->nlink = st->st_nlink;
    attr->uid = st->st_uid;
    attr->gid = st->st_gid;
    attr->rdev = st->st_rdev;
    attr->blksize = st->st_blksize;
}

static void h2fuse_tmpfile(struct h2fuse_loop *loop, const struct fuse_buf *buf) {
    const struct fuse_in_header *in = buf->mem;
    struct { struct fuse_entry_out entry; struct fuse_open_out open; } out;
    memset(&out, 0, sizeof out);
    if (buf->size < sizeof *in + sizeof(struct fuse_create_in)) {
        h2fuse_reply_raw(loop->se, in->unique, EINVAL, NULL, 0);
        return;
    }
    const struct fuse_create_in *create = (const void *)((const char *)buf->mem + sizeof *in);
    struct h2fuse_tmpfile_result result;
    memset(&result, 0, sizeof result);
    int error = loop->tmpfile(loop->userdata, in->nodeid, in->uid, in->gid, create->mode, create->umask,
                              create->flags, &result);
    h2fuse_fill_entry(&out.entry, result.attr.st_ino, &result.attr, result.timeout);
    out.open.open_flags = FOPEN_KEEP_CACHE;
    h2fuse_reply_raw(loop->se, in->unique, error, &out, sizeof out);
}

// One request, from /dev/fuse or a ring (uring.c): FUSE_TMPFILE here, the rest to libfuse.
void h2fuse_dispatch(struct h2fuse_loop *loop, const struct fuse_buf *buf) {
    const struct fuse_in_header *in = buf->mem;
    int in_memory = !(buf->flags & FUSE_BUF_IS_FD) && buf->size >= sizeof *in;
    if (in_memory && in->opcode == FUSE_TMPFILE && loop->tmpfile) {
        h2fuse_tmpfile(loop, buf);
    } else {
        uint64_t kill = in_memory && loop->kill_privileges && h2fuse_killpriv_v2_negotiated(loop->se)
            ? h2fuse_kill_target(buf) : 0;
        if (kill != 0) loop->kill_privileges(loop->userdata, kill);
        fuse_session_process_buf(loop->se, buf);
    }
}

static void *h2fuse_worker(void *argument);

// With the mutex held: starts a worker in a free slot. Returns 0 or -1.
static int h2fuse_spawn_locked(struct h2fuse_loop *loop) {
    for (unsigned int slot = 0; slot < H2FUSE_MAX_WORKERS; slot++) {
        if (loop->running[slot]) continue;
        if (pthread_create(&loop->workers[slot], NULL, h2fuse_worker, loop) != 0) return -1;
        loop->running[slot] = 1;
        loop->alive++;
        return 0;
    }
    return -1;
}

static void *h2fuse_worker(void *argument) {
    struct h2fuse_loop *loop = argument;
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &blocked, NULL);  // the daemon's signal pipe takes them
    struct fuse_buf buf = { .mem = NULL };
    int retired = 0;
    int self = -1;
    pthread_mutex_lock(&loop->mutex);
    for (unsigned int slot = 0; slot < H2FUSE_MAX_WORKERS; slot++) {
        if (loop->running[slot] && pthread_equal(loop->workers[slot], pthread_self())) self = (int)slot;
    }
    pthread_mutex_unlock(&loop->mutex);
    while (!fuse_session_exited(loop->se)) {
        int received = fuse_session_receive_buf(loop->se, &buf);
        if (received == -EINTR) continue;
        if (received <= 0) {
            if (received < 0) fuse_session_exit(loop->se);
            break;
        }
        unsigned int busy = ++loop->busy;
        if (busy == loop->alive && h2fuse_waiting > 0) {
            pthread_mutex_lock(&loop->mutex);
            if (loop->busy == loop->alive && !fuse_session_exited(loop->se)) h2fuse_spawn_locked(loop);
            pthread_mutex_unlock(&loop->mutex);
        }
        // Never cancelled inside the filesystem (it would leave its locks held): a cancel
        // sent meanwhile acts in the next read.
        int cancel_state;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel_state);
        h2fuse_dispatch(loop, &buf);
        pthread_setcancelstate(cancel_state, NULL);
        busy = --loop->busy;
        if (loop->alive - busy <= loop->threads) continue;
        pthread_mutex_lock(&loop->mutex);
        if (loop->alive - loop->busy > loop->threads && !fuse_session_exited(loop->se)) {
            // More idle workers than the pool's size: this one goes. (Not once the session
            // ended: h2fuse_loop_run joins every worker it finds running then.)
            for (unsigned int slot = 0; slot < H2FUSE_MAX_WORKERS; slot++) {
                if (loop->running[slot] && pthread_equal(loop->workers[slot], pthread_self())) loop->running[slot] = 0;
            }
            loop->alive--;
            pthread_detach(pthread_self());
            retired = 1;
        }
        pthread_mutex_unlock(&loop->mutex);
        if (retired) break;
    }
    free(buf.mem);
    if (!retired) sem_post(&loop->finished);
    return NULL;
}

struct h2fuse_loop *h2fuse_loop_new(struct fuse_session *se, unsigned int threads, unsigned int uring_threads,
                                    h2fuse_tmpfile_handler tmpfile, h2fuse_kill_privileges_handler kill_privileges,
                                    void *userdata) {
    struct h2fuse_loop *loop = calloc(1, sizeof *loop);
    if (loop == NULL) return NULL;
    *loop = (struct h2fuse_loop){ .se = se, .tmpfile = tmpfile, .kill_privileges = kill_privileges, .userdata = userdata,
                                  .threads = threads < 1 ? 1 : (threads > H2FUSE_MAX_WORKERS ? H2FUSE_MAX_WORKERS : threads),
                                  .uring_threads = uring_threads };
    int fd = fuse_session_fd(se);
    if (fd >= 0 && fd < H2FUSE_MAX_FD) h2fuse_uring_wanted[fd] = uring_threads > 0;
    if (sem_init(&loop->finished, 0, 0) != 0) { free(loop); return NULL; }
    if (pthread_mutex_init(&loop->mutex, NULL) != 0) { sem_destroy(&loop->finished); free(loop); return NULL; }
    return loop;
}

int h2fuse_loop_run(struct h2fuse_loop *loop) {
    struct fuse_session *se = loop->se;
    pthread_mutex_lock(&loop->mutex);
    for (unsigned int i = 0; i < loop->threads; i++) {
        if (h2fuse_spawn_locked(loop) != 0) break;
    }
    unsigned int started = loop->alive;
    pthread_mutex_unlock(&loop->mutex);
    if (started == 0) fuse_session_exit(se);
    // Until a worker ends (unmount: the device read says ENODEV), h2fuse_loop_stop, or a
    // signal interrupting the wait of a thread that has them unblocked.
    // Every 2 ms this thread also looks whether every worker is busy while some wait for a
    // flush (none is left to read the next request), and starts one more; the workers check
    // too, but only when they take a request.
    while (!fuse_session_exited(se)) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 2000000;
        if (until.tv_nsec >= 1000000000) { until.tv_sec += 1; until.tv_nsec -= 1000000000; }
        if (sem_timedwait(&loop->finished, &until) == 0) break;
        if (errno != ETIMEDOUT && errno != EINTR) continue;
        pthread_mutex_lock(&loop->mutex);
        if (loop->busy == loop->alive && !fuse_session_exited(se) && h2fuse_waiting > 0) {
            h2fuse_spawn_locked(loop);
        }
        pthread_mutex_unlock(&loop->mutex);
        h2fuse_uring_tick(loop->uring);
        // INIT answered with FUSE_OVER_IO_URING: the kernel holds new requests until every
        // CPU's queue has an entry.
        int fd = fuse_session_fd(se);
        if (!loop->uring_tried && fd >= 0 && fd < H2FUSE_MAX_FD && h2fuse_uring_negotiated[fd]) {
            loop->uring_tried = 1;
            loop->uring = h2fuse_uring_start(loop, se, loop->uring_threads, H2FUSE_URING_PAYLOAD);
            if (loop->uring == NULL) h2fuse_uring_refuse(se);
        }
    }
    fuse_session_exit(se);
    h2fuse_uring_stop(loop->uring);
    loop->uring = NULL;
    // Workers waiting in read() end at once; one serving a request has cancellation off
    // until it is back in read(): the join waits for its request to finish, however long
    // (cancelled inside the filesystem, it would leave locks held that the final flush
    // then waits on for ever).
    pthread_mutex_lock(&loop->mutex);
    pthread_t cancelled[H2FUSE_MAX_WORKERS];
    unsigned int count = 0;
    for (unsigned int slot = 0; slot < H2FUSE_MAX_WORKERS; slot++) {
        if (!loop->running[slot]) continue;
        cancelled[count++] = loop->workers[slot];
        loop->running[slot] = 0;
    }
    loop->alive = 0;
    pthread_mutex_unlock(&loop->mutex);
    for (unsigned int i = 0; i < count; i++) pthread_cancel(cancelled[i]);  // blocked in read()
    for (unsigned int i = 0; i < count; i++) pthread_join(cancelled[i], NULL);
    fuse_session_reset(se);
    return 0;
}

void h2fuse_loop_stop(struct h2fuse_loop *loop) {
    fuse_session_exit(loop->se);
    sem_post(&loop->finished);
}

void h2fuse_loop_free(struct h2fuse_loop *loop) {
    if (loop == NULL) return;
    pthread_mutex_destroy(&loop->mutex);
    sem_destroy(&loop->finished);
    free(loop);
}

// --- Signals and peers for the volume daemon --------------------------------------------
// SIGINT, SIGTERM and SIGHUP stop every mount of the daemon: the handler writes the signal
// number to a pipe (async-signal-safe), which a thread of the daemon reads. Any thread may
// take the signal.

#include <fcntl.h>
#include <sys/socket.h>

static int h2fuse_signal_pipe[2] = { -1, -1 };

static void h2fuse_on_signal(int signal) {
    unsigned char byte = (unsigned char)signal;
    ssize_t ignored = write(h2fuse_signal_pipe[1], &byte, 1);
    (void)ignored;
}

int h2fuse_stop_signals_install(void) {
    if (h2fuse_signal_pipe[0] < 0 && pipe2(h2fuse_signal_pipe, O_CLOEXEC) != 0) return -1;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = h2fuse_on_signal;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGINT, &action, NULL) != 0 || sigaction(SIGTERM, &action, NULL) != 0 || sigaction(SIGHUP, &action, NULL) != 0) return -1;
    struct sigaction ignore;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, NULL);  // a client gone while we answer it
    return 0;
}

int h2fuse_stop_signals_wait(void) {
    unsigned char byte;
    for (;;) {
        ssize_t got = read(h2fuse_signal_pipe[0], &byte, 1);
        if (got == 1) return byte;
        if (got < 0 && errno == EINTR) continue;
        return -1;
    }
}

void h2fuse_stop_signals_wake(void) { h2fuse_on_signal(0); }

struct h2fuse_thread_body { void (*body)(void *); void *context; };

static void *h2fuse_thread_trampoline(void *argument) {
    struct h2fuse_thread_body *call = argument;
    call->body(call->context);
    return NULL;
}

int h2fuse_run_on_new_thread(void (*body)(void *), void *context) {
    struct h2fuse_thread_body call = { body, context };
    pthread_t thread;
    int error = pthread_create(&thread, NULL, h2fuse_thread_trampoline, &call);
    if (error != 0) return error;
    return pthread_join(thread, NULL);
}

int h2fuse_peer_uid(int fd, uint32_t *uid) {
    struct ucred credentials;
    socklen_t length = sizeof credentials;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return -1;
    *uid = credentials.uid;
    return 0;
}

// Mount options through libfuse's parser (fuse_opt_parse): it splits and unescapes the
// option string; the templates sort each option into a list.

#include <fuse3/fuse_opt.h>

enum { H2_OPT_OURS = 1, H2_OPT_FUSE, H2_OPT_IGNORED, H2_OPT_REFUSED };

struct h2_option_lists { char *lists[5]; size_t lengths[5]; int failed; };

static const struct fuse_opt h2_mount_option_templates[] = {
    // mount_hammer2's own (values checked by mount_hammer2).
    FUSE_OPT_KEY("local", H2_OPT_OURS), FUSE_OPT_KEY("ro", H2_OPT_OURS), FUSE_OPT_KEY("rdonly", H2_OPT_OURS),
    FUSE_OPT_KEY("rw", H2_OPT_OURS), FUSE_OPT_KEY("allow_other", H2_OPT_OURS), FUSE_OPT_KEY("debug", H2_OPT_OURS),
    FUSE_OPT_KEY("degraded", H2_OPT_OURS), FUSE_OPT_KEY("writeback", H2_OPT_OURS),
    FUSE_OPT_KEY("nowriteback", H2_OPT_OURS), FUSE_OPT_KEY("reclaim", H2_OPT_OURS),
    FUSE_OPT_KEY("noreclaim", H2_OPT_OURS), FUSE_OPT_KEY("acl", H2_OPT_OURS), FUSE_OPT_KEY("noacl", H2_OPT_OURS),
    FUSE_OPT_KEY("noktr", H2_OPT_OURS), FUSE_OPT_KEY("encrypted", H2_OPT_OURS),
    FUSE_OPT_KEY("rollback-ok", H2_OPT_OURS), FUSE_OPT_KEY("uring", H2_OPT_OURS), FUSE_OPT_KEY("nouring", H2_OPT_OURS),
    FUSE_OPT_KEY("fsync=", H2_OPT_OURS), FUSE_OPT_KEY("cache=", H2_OPT_OURS), FUSE_OPT_KEY("readahead=", H2_OPT_OURS),
    FUSE_OPT_KEY("dirtymax=", H2_OPT_OURS), FUSE_OPT_KEY("flush=", H2_OPT_OURS), FUSE_OPT_KEY("ktr=", H2_OPT_OURS),
    FUSE_OPT_KEY("ktrmask=", H2_OPT_OURS), FUSE_OPT_KEY("keyfile=", H2_OPT_OURS), FUSE_OPT_KEY("uring=", H2_OPT_OURS),
    FUSE_OPT_KEY("threads=", H2_OPT_OURS),
    // libfuse 3.14's mount options (fuse_mount: mount flags and fuse_mount_opts).
    FUSE_OPT_KEY("nosuid", H2_OPT_FUSE), FUSE_OPT_KEY("suid", H2_OPT_FUSE), FUSE_OPT_KEY("nodev", H2_OPT_FUSE),
    FUSE_OPT_KEY("dev", H2_OPT_FUSE), FUSE_OPT_KEY("noexec", H2_OPT_FUSE), FUSE_OPT_KEY("exec", H2_OPT_FUSE),
    FUSE_OPT_KEY("sync", H2_OPT_FUSE), FUSE_OPT_KEY("async", H2_OPT_FUSE), FUSE_OPT_KEY("dirsync", H2_OPT_FUSE),
    FUSE_OPT_KEY("atime", H2_OPT_FUSE), FUSE_OPT_KEY("noatime", H2_OPT_FUSE),
    FUSE_OPT_KEY("default_permissions", H2_OPT_FUSE), FUSE_OPT_KEY("allow_root", H2_OPT_FUSE),
    FUSE_OPT_KEY("auto_unmount", H2_OPT_FUSE), FUSE_OPT_KEY("max_read=", H2_OPT_FUSE),
    FUSE_OPT_KEY("context=", H2_OPT_FUSE), FUSE_OPT_KEY("fscontext=", H2_OPT_FUSE),
    FUSE_OPT_KEY("defcontext=", H2_OPT_FUSE), FUSE_OPT_KEY("rootcontext=", H2_OPT_FUSE),
    // For mount(8), fstab and systemd; and atime variants FUSE has no flag for (HAMMER2
    // keeps no atime).
    FUSE_OPT_KEY("auto", H2_OPT_IGNORED), FUSE_OPT_KEY("noauto", H2_OPT_IGNORED),
    FUSE_OPT_KEY("nofail", H2_OPT_IGNORED), FUSE_OPT_KEY("_netdev", H2_OPT_IGNORED),
    FUSE_OPT_KEY("defaults", H2_OPT_IGNORED), FUSE_OPT_KEY("user", H2_OPT_IGNORED),
    FUSE_OPT_KEY("users", H2_OPT_IGNORED), FUSE_OPT_KEY("nouser", H2_OPT_IGNORED),
    FUSE_OPT_KEY("owner", H2_OPT_IGNORED), FUSE_OPT_KEY("group", H2_OPT_IGNORED),
    FUSE_OPT_KEY("comment=", H2_OPT_IGNORED), FUSE_OPT_KEY("user=", H2_OPT_IGNORED),
    FUSE_OPT_KEY("relatime", H2_OPT_IGNORED), FUSE_OPT_KEY("norelatime", H2_OPT_IGNORED),
    FUSE_OPT_KEY("strictatime", H2_OPT_IGNORED), FUSE_OPT_KEY("nostrictatime", H2_OPT_IGNORED),
    FUSE_OPT_KEY("diratime", H2_OPT_IGNORED), FUSE_OPT_KEY("nodiratime", H2_OPT_IGNORED),
    FUSE_OPT_KEY("lazytime", H2_OPT_IGNORED), FUSE_OPT_KEY("nolazytime", H2_OPT_IGNORED),
    FUSE_OPT_KEY("loud", H2_OPT_IGNORED), FUSE_OPT_KEY("silent", H2_OPT_IGNORED),
    // hammer2 finds its mounts by these.
    FUSE_OPT_KEY("fsname=", H2_OPT_REFUSED), FUSE_OPT_KEY("subtype=", H2_OPT_REFUSED),
    FUSE_OPT_END
};

static void h2_option_append(struct h2_option_lists *lists, int which, const char *arg) {
    size_t add = strlen(arg);
    size_t used = lists->lengths[which];
    char *grown = realloc(lists->lists[which], used + add + 2);
    if (grown == NULL) { lists->failed = 1; return; }
    if (used > 0) grown[used++] = '\n';
    memcpy(grown + used, arg, add + 1);
    lists->lists[which] = grown;
    lists->lengths[which] = used + add;
}

static int h2_option_sort(void *data, const char *arg, int key, struct fuse_args *outargs) {
    (void)outargs;
    struct h2_option_lists *lists = data;
    if (key == FUSE_OPT_KEY_NONOPT) return 0;  // only "-o" strings are given
    if (key == FUSE_OPT_KEY_OPT) {
        // x-* (systemd's and mount(8)'s) match no template: fuse_opt matches prefixes only
        // up to an '='.
        h2_option_append(lists, strncmp(arg, "x-", 2) == 0 ? H2_OPT_IGNORED : 0, arg);
    } else {
        h2_option_append(lists, key, arg);
    }
    return 0;  // discarded from outargs: the lists carry them
}

int h2fuse_classify_mount_options(const char *options, char **ours, char **fuse, char **ignored, char **refused,
                                  char **unknown) {
    struct h2_option_lists lists;
    memset(&lists, 0, sizeof lists);
    char *argv[] = { "mount_hammer2", "-o", (char *)options, NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    int result = fuse_opt_parse(&args, &lists, h2_mount_option_templates, h2_option_sort);
    fuse_opt_free_args(&args);
    char **outputs[5] = { unknown, ours, fuse, ignored, refused };
    for (int i = 0; i < 5; i++) *outputs[i] = lists.lists[i] ? lists.lists[i] : strdup("");
    return result == 0 && !lists.failed ? 0 : -1;
}

// --- FUSE passthrough (kernel 6.9+; libfuse 3.17 has an API for it, 3.14 none) ------------

#include <sys/ioctl.h>

struct h2fuse_backing_map { int32_t fd; uint32_t flags; uint64_t padding; };
#define H2FUSE_DEV_IOC_BACKING_OPEN _IOW(229, 1, struct h2fuse_backing_map)
#define H2FUSE_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)
#define H2FUSE_FOPEN_PASSTHROUGH (1u << 7)

void h2fuse_want_passthrough(struct fuse_session *se) {
    int fd = fuse_session_fd(se);
    if (fd >= 0 && fd < H2FUSE_MAX_FD) h2fuse_passthrough_wanted[fd] = 1;
}

int h2fuse_passthrough_negotiated(int device) {
    return device >= 0 && device < H2FUSE_MAX_FD && h2fuse_passthrough_on[device];
}

int h2fuse_backing_open(int device, int fd) {
    struct h2fuse_backing_map map = { .fd = fd, .flags = 0, .padding = 0 };
    int id = ioctl(device, H2FUSE_DEV_IOC_BACKING_OPEN, &map);
    return id < 0 ? -errno : id;
}

void h2fuse_backing_close(int device, int id) {
    uint32_t backing = (uint32_t)id;
    ioctl(device, H2FUSE_DEV_IOC_BACKING_CLOSE, &backing);
}

int h2fuse_reply_open_passthrough(fuse_req_t req, uint64_t fh, int backing_id) {
    struct { uint64_t fh; uint32_t open_flags; int32_t backing_id; } out = { fh, H2FUSE_FOPEN_PASSTHROUGH, backing_id };
    return fuse_reply_buf(req, (const char *)&out, sizeof out);
}

int h2fuse_reply_create_passthrough(fuse_req_t req, uint64_t nodeid, const struct stat *st, double timeout, uint64_t fh,
                                    int backing_id) {
    struct {
        struct fuse_entry_out entry;
        struct { uint64_t fh; uint32_t open_flags; int32_t backing_id; } open;
    } out;
    memset(&out, 0, sizeof out);
    h2fuse_fill_entry(&out.entry, nodeid, st, timeout);
    out.open.fh = fh;
    out.open.open_flags = H2FUSE_FOPEN_PASSTHROUGH;
    out.open.backing_id = backing_id;
    return fuse_reply_buf(req, (const char *)&out, sizeof out);
}
