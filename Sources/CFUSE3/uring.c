// FUSE over io_uring (Linux 6.14+, fuse module parameter enable_uring=Y), for libfuse 3.14,
// which only reads /dev/fuse. The kernel offers FUSE_OVER_IO_URING in INIT; shims.c adds
// it to libfuse's reply when asked to (h2fuse_uring_want). Afterwards every CPU has a queue
// in the kernel; each of our ring threads owns one io_uring and one entry (a header buffer
// and a payload buffer) registered on one queue. A request arrives as a completion in the
// entry's buffers; the thread rebuilds the byte layout /dev/fuse would have delivered (the
// in header, the first argument, the rest) in front of the payload without copying it,
// hands that to libfuse as usual, and libfuse's reply (through the custom writev of
// shims.c) lands in the same buffers and goes back with COMMIT_AND_FETCH, which also waits
// for the next request: one system call per request instead of a read and a write.
// FORGET and INTERRUPT still come through /dev/fuse, which the loop of shims.c keeps
// reading. The structures below are the kernel's UAPI (include/uapi/linux/fuse.h, 7.42),
// absent from Debian 12's headers.

#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>
#include <linux/fuse.h>
#include "CFUSE3.h"

#define H2_URING_IN_OUT_HEADER_SZ 128
#define H2_URING_OP_IN_OUT_SZ 128
#define H2_URING_CMD_REGISTER 1
#define H2_URING_CMD_COMMIT_AND_FETCH 2

struct h2_uring_ent_in_out {
    uint64_t flags;
    uint64_t commit_id;  // to be sent back with the reply
    uint32_t payload_sz;
    uint32_t padding;
    uint64_t reserved;
};

struct h2_uring_req_header {
    char in_out[H2_URING_IN_OUT_HEADER_SZ];  // fuse_in_header, then fuse_out_header
    char op_in[H2_URING_OP_IN_OUT_SZ];       // the request's first argument
    struct h2_uring_ent_in_out ring_ent_in_out;
};

struct h2_uring_cmd_req {  // the 80-byte command area of a 128-byte SQE
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;
    uint8_t padding[6];
};

// Room in front of the payload for the in header and the first argument, so that the
// request is contiguous as libfuse expects it.
#define H2_URING_LEAD 4096

struct h2_uring_thread {
    struct h2_uring *owner;
    pthread_t thread;
    unsigned int qid;
    struct io_uring ring;
    int ring_ready;
    struct h2_uring_req_header *header;
    char *area;       // H2_URING_LEAD bytes, then the payload
    size_t payload_size;
    struct iovec iov[2];
    // The request being served: its reply is the next writev with this unique.
    uint64_t unique;
    int replied;
};

// Threads a queue may grow to while some wait (for a flush, for space), as the /dev/fuse
// pool of shims.c does: requests from that CPU must not queue behind the waiting ones.
#define H2_URING_MAX_PER_QUEUE 16

struct h2_uring {
    struct h2fuse_loop *loop;
    struct fuse_session *se;
    int fd;
    int stop_fd;
    unsigned int queues;
    size_t payload_size;
    atomic_int failed;
    pthread_mutex_t mutex;     // guards `prepared`, `started` and the slots
    unsigned int prepared;     // threads[] slots with resources
    unsigned int started;      // threads started (the first `started` slots)
    int stopping;              // no thread is added any more
    _Atomic unsigned int *alive, *busy;  // per queue
    struct h2_uring_thread threads[];
};

static _Thread_local struct h2_uring_thread *h2_uring_current;

// Called by the custom writev of shims.c: a reply of the request this thread serves from
// its ring goes into the ring entry instead of /dev/fuse. Returns 0 when it is not one,
// else 1 with *written as writev's result.
int h2fuse_uring_reply(const struct iovec *iov, int count, ssize_t *written) {
    struct h2_uring_thread *self = h2_uring_current;
    if (self == NULL || self->replied || count < 1 || iov[0].iov_len != sizeof(struct fuse_out_header)) return 0;
    const struct fuse_out_header *out = iov[0].iov_base;
    if (out->unique != self->unique) return 0;
    char *payload = self->area + H2_URING_LEAD;
    size_t length = 0;
    for (int i = 1; i < count; i++) length += iov[i].iov_len;
    if (length > self->payload_size) {
        errno = EINVAL;
        *written = -1;
        return 1;
    }
    size_t at = 0;
    for (int i = 1; i < count; i++) {
        // A reply may point into the request's own buffer (memmove, not memcpy), or be
        // there already (a read served through h2fuse_uring_payload).
        if (iov[i].iov_base != payload + at) memmove(payload + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    struct fuse_out_header header = *out;
    header.len = (uint32_t)(sizeof header + length);
    memcpy(self->header->in_out, &header, sizeof header);
    self->header->ring_ent_in_out.payload_sz = (uint32_t)length;
    self->replied = 1;
    *written = (ssize_t)(sizeof header + length);
    return 1;
}

void *h2fuse_uring_payload(size_t *capacity) {
    struct h2_uring_thread *self = h2_uring_current;
    if (self == NULL || self->replied) return NULL;
    *capacity = self->payload_size;
    return self->area + H2_URING_LEAD;
}

static int h2_uring_submit_command(struct h2_uring_thread *self, uint32_t command, uint64_t commit_id) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&self->ring);
    if (sqe == NULL) return -EBUSY;
    memset(sqe, 0, 128);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = self->owner->fd;
    sqe->cmd_op = command;
    sqe->user_data = 1;
    if (command == H2_URING_CMD_REGISTER) {
        sqe->addr = (uint64_t)(uintptr_t)self->iov;
        sqe->len = 2;
    }
    struct h2_uring_cmd_req *request = (struct h2_uring_cmd_req *)sqe->cmd;
    request->qid = (uint16_t)self->qid;
    request->commit_id = commit_id;
    return 0;
}

// An error as the reply in the entry (the request must be answered for the kernel to
// hand the entry a new one).
static void h2_uring_answer_error(struct h2_uring_thread *self, int error) {
    struct fuse_out_header out = { .len = sizeof out, .error = -error, .unique = self->unique };
    memcpy(self->header->in_out, &out, sizeof out);
    self->header->ring_ent_in_out.payload_sz = 0;
}

// Serves one request that arrived in the entry; its reply is left in the entry.
static void h2_uring_serve(struct h2_uring_thread *self) {
    const struct fuse_in_header *in = (const void *)self->header->in_out;
    uint32_t payload = self->header->ring_ent_in_out.payload_sz;
    size_t first = in->len >= sizeof *in + payload ? in->len - sizeof *in - payload : SIZE_MAX;
    self->unique = in->unique;
    self->replied = 0;
    if (first > H2_URING_OP_IN_OUT_SZ || payload > self->payload_size) {
        // Lengths that do not add up (a kernel speaking another layout): refused, not decoded.
        h2_uring_answer_error(self, EIO);
        return;
    }
    char *start = self->area + H2_URING_LEAD - first - sizeof *in;
    memcpy(start, in, sizeof *in);
    memcpy(start + sizeof *in, self->header->op_in, first);
    struct fuse_buf buf = { .size = in->len, .mem = start };
    h2_uring_current = self;
    h2fuse_dispatch(self->owner->loop, &buf);
    h2_uring_current = NULL;
    // Every request that comes through the ring is answered before process_buf returns
    // (FORGET, which has no answer, comes through /dev/fuse); a reply too large for the
    // entry was refused by h2fuse_uring_reply.
    if (!self->replied) h2_uring_answer_error(self, EIO);
}

static int h2_uring_add_locked(struct h2_uring *uring, unsigned int qid);

static void *h2_uring_worker(void *argument) {
    struct h2_uring_thread *self = argument;
    struct h2_uring *uring = self->owner;
    // As the /dev/fuse workers: the daemon's signal pipe takes these; SIGBUS (a trace
    // segment truncated under the daemon, CAtomicMemory) must stay deliverable.
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &blocked, NULL);
    // On the CPU of its queue, which is the CPU of the callers whose requests it serves:
    // the request and its answer then stay on one core.
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(self->qid, &cpus);
    sched_setaffinity(0, sizeof cpus, &cpus);
    // The stop eventfd: readable once the loop ends.
    struct io_uring_sqe *poll = io_uring_get_sqe(&self->ring);
    io_uring_prep_poll_add(poll, uring->stop_fd, POLLIN);
    io_uring_sqe_set_data64(poll, 2);
    if (h2_uring_submit_command(self, H2_URING_CMD_REGISTER, 0) != 0) { uring->failed = 1; return NULL; }
    for (;;) {
        int submitted = io_uring_submit_and_wait(&self->ring, 1);
        if (submitted < 0 && submitted != -EINTR) break;
        struct io_uring_cqe *cqe;
        if (io_uring_peek_cqe(&self->ring, &cqe) != 0) continue;
        uint64_t what = cqe->user_data;
        int result = cqe->res;
        io_uring_cqe_seen(&self->ring, cqe);
        if (what == 2) break;  // stop
        if (result == -EINTR || result == -EAGAIN) {
            // Not taken: register again (a commit's reply was delivered before the fetch).
            if (h2_uring_submit_command(self, H2_URING_CMD_REGISTER, 0) != 0) break;
            continue;
        }
        if (result < 0) {  // ENOTCONN at unmount; anything else stops the ring too
            if (result != -ENOTCONN) uring->failed = 1;
            break;
        }
        unsigned int busy = ++uring->busy[self->qid];
        if (busy >= uring->alive[self->qid]) h2fuse_uring_tick(uring);
        h2_uring_serve(self);
        --uring->busy[self->qid];
        if (h2_uring_submit_command(self, H2_URING_CMD_COMMIT_AND_FETCH, self->header->ring_ent_in_out.commit_id) != 0) break;
    }
    return NULL;
}

static void h2_uring_free_thread(struct h2_uring_thread *self) {
    if (self->ring_ready) io_uring_queue_exit(&self->ring);
    if (self->header) munmap(self->header, 4096);
    if (self->area) munmap(self->area, H2_URING_LEAD + self->payload_size);
}

// With the mutex held: a thread for queue `qid` in the next slot. Returns 0 or -1.
static int h2_uring_add_locked(struct h2_uring *uring, unsigned int qid) {
    if (uring->stopping || uring->prepared >= uring->queues * H2_URING_MAX_PER_QUEUE || uring->started != uring->prepared) return -1;
    struct h2_uring_thread *self = &uring->threads[uring->prepared++];
    self->owner = uring;
    self->qid = qid;
    self->payload_size = uring->payload_size;
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    params.flags = IORING_SETUP_SQE128;
    if (io_uring_queue_init_params(4, &self->ring, &params) != 0) return -1;
    self->ring_ready = 1;
    // Page-aligned buffers, touched only as far as requests fill them.
    void *header = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *area = mmap(NULL, H2_URING_LEAD + self->payload_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    self->header = header == MAP_FAILED ? NULL : header;
    self->area = area == MAP_FAILED ? NULL : area;
    if (self->header == NULL || self->area == NULL) return -1;
    self->iov[0] = (struct iovec){ self->header, sizeof(struct h2_uring_req_header) };
    self->iov[1] = (struct iovec){ self->area + H2_URING_LEAD, self->payload_size };
    uring->alive[qid]++;
    if (pthread_create(&self->thread, NULL, h2_uring_worker, self) != 0) {
        uring->alive[qid]--;
        return -1;
    }
    uring->started++;
    return 0;
}

void h2fuse_uring_tick(struct h2_uring *uring) {
    if (uring == NULL || h2fuse_waiting_count() <= 0) return;
    pthread_mutex_lock(&uring->mutex);
    for (unsigned int qid = 0; qid < uring->queues; qid++) {
        if (uring->busy[qid] >= uring->alive[qid] && uring->alive[qid] < H2_URING_MAX_PER_QUEUE) h2_uring_add_locked(uring, qid);
    }
    pthread_mutex_unlock(&uring->mutex);
}

struct h2_uring *h2fuse_uring_start(struct h2fuse_loop *loop, struct fuse_session *se, unsigned int threads_per_queue,
                                    size_t payload_size) {
    // Fault injection for the tests: a start that fails (as an io_uring_setup or mmap
    // refused would), to show the kernel is then told to serve through /dev/fuse.
    if (getenv("HAMMER2_FAULT_URING_START") != NULL) return NULL;
    unsigned int queues = (unsigned int)get_nprocs_conf();
    if (threads_per_queue < 1) threads_per_queue = 1;
    if (threads_per_queue > H2_URING_MAX_PER_QUEUE) threads_per_queue = H2_URING_MAX_PER_QUEUE;
    size_t slots = (size_t)queues * H2_URING_MAX_PER_QUEUE;
    struct h2_uring *uring = calloc(1, sizeof *uring + slots * sizeof(struct h2_uring_thread));
    if (uring == NULL) return NULL;
    uring->loop = loop;
    uring->se = se;
    uring->fd = fuse_session_fd(se);
    uring->queues = queues;
    uring->payload_size = payload_size;
    uring->alive = calloc(queues, sizeof *uring->alive);
    uring->busy = calloc(queues, sizeof *uring->busy);
    uring->stop_fd = eventfd(0, EFD_CLOEXEC);
    pthread_mutex_init(&uring->mutex, NULL);
    int error = uring->alive == NULL || uring->busy == NULL || uring->stop_fd < 0;
    pthread_mutex_lock(&uring->mutex);
    for (unsigned int i = 0; i < threads_per_queue && !error; i++) {
        for (unsigned int qid = 0; qid < queues && !error; qid++) error = h2_uring_add_locked(uring, qid) != 0;
    }
    pthread_mutex_unlock(&uring->mutex);
    if (error) {
        h2fuse_uring_stop(uring);
        return NULL;
    }
    return uring;
}

int h2fuse_uring_failed(const struct h2_uring *uring) { return uring != NULL && uring->failed; }

void h2fuse_uring_stop(struct h2_uring *uring) {
    if (uring == NULL) return;
    if (uring->stop_fd >= 0) {
        uint64_t one = 1;
        ssize_t ignored = write(uring->stop_fd, &one, sizeof one);
        (void)ignored;
    }
    pthread_mutex_lock(&uring->mutex);
    uring->stopping = 1;
    unsigned int started = uring->started, prepared = uring->prepared;
    pthread_mutex_unlock(&uring->mutex);
    for (unsigned int i = 0; i < started; i++) pthread_join(uring->threads[i].thread, NULL);
    for (unsigned int i = 0; i < prepared; i++) h2_uring_free_thread(&uring->threads[i]);
    if (uring->stop_fd >= 0) close(uring->stop_fd);
    pthread_mutex_destroy(&uring->mutex);
    free(uring->alive);
    free(uring->busy);
    free(uring);
}

// After a failed start: a registration the kernel refuses (a queue that does not exist)
// makes it give up the ring for this connection and serve requests through /dev/fuse
// again; without it they would wait for a ring that never comes.
void h2fuse_uring_refuse(struct fuse_session *se) {
    struct io_uring ring;
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    params.flags = IORING_SETUP_SQE128;
    if (io_uring_queue_init_params(2, &ring, &params) != 0) return;
    static char header[4096], payload[8192];
    struct iovec iov[2] = { { header, sizeof(struct h2_uring_req_header) }, { payload, sizeof payload } };
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    memset(sqe, 0, 128);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fuse_session_fd(se);
    sqe->cmd_op = H2_URING_CMD_REGISTER;
    sqe->addr = (uint64_t)(uintptr_t)iov;
    sqe->len = 2;
    ((struct h2_uring_cmd_req *)sqe->cmd)->qid = UINT16_MAX;
    struct io_uring_cqe *cqe;
    if (io_uring_submit_and_wait(&ring, 1) >= 0 && io_uring_peek_cqe(&ring, &cqe) == 0) io_uring_cqe_seen(&ring, cqe);
    io_uring_queue_exit(&ring);
}
