#define _GNU_SOURCE
#include <pthread.h>
#include <unistd.h>
#include <sys/syscall.h>
#include "CAtomicMemory.h"

static __thread uint64_t ring_generation;
static __thread int64_t ring_index = -1;
static __thread uint32_t cached_tid;
static __thread int32_t noted_error;

void h2_thread_error_set(int32_t code) { noted_error = code; }
int32_t h2_thread_error_get(void) { return noted_error; }

// Registered segments: a thread's ring goes back to its segment when the thread exits
// (dispatch threads come and go; without this the rings would run out).
#define MAX_SEGMENTS 64
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { uint64_t generation; uint64_t *claimed; } registry[MAX_SEGMENTS];
static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;

static void release_ring(void *unused) {
    (void)unused;
    if (ring_index < 0) return;
    pthread_mutex_lock(&registry_lock);
    for (int i = 0; i < MAX_SEGMENTS; i++) {
        if (registry[i].claimed && registry[i].generation == ring_generation) {
            __atomic_fetch_and(registry[i].claimed, ~(UINT64_C(1) << ring_index), __ATOMIC_RELEASE);
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    ring_index = -1;
}

// In the child of a fork (fuse_daemonize), only the forking thread lives on: its cached id
// is its parent's, and the rings the parent's other threads held are nobody's now.
static void after_fork_in_child(void) {
    cached_tid = 0;
    for (int i = 0; i < MAX_SEGMENTS; i++) {
        if (!registry[i].claimed) continue;
        uint64_t mine = (ring_index >= 0 && registry[i].generation == ring_generation) ? UINT64_C(1) << ring_index : 0;
        __atomic_store_n(registry[i].claimed, mine, __ATOMIC_RELEASE);
    }
    pthread_mutex_init(&registry_lock, 0);
}

static void make_exit_key(void) { pthread_key_create(&exit_key, release_ring); }

int64_t h2_thread_ring(uint64_t generation) { return ring_generation == generation ? ring_index : -1; }

int64_t h2_ring_claim(uint64_t generation, void *claimed, uint32_t count) {
    uint64_t *word = (uint64_t *)claimed;
    // The word after the bitmap is where the next search starts: rings are taken round
    // robin, so a ring given back by an exited thread is reused last, its records kept.
    uint32_t *cursor = (uint32_t *)(word + 1);
    uint64_t usable = count >= 64 ? ~UINT64_C(0) : (UINT64_C(1) << count) - 1;
    uint64_t old = __atomic_load_n(word, __ATOMIC_RELAXED);
    int bit;
    for (;;) {
        uint64_t free = ~old & usable;
        if (free == 0) return -1;
        uint32_t start = __atomic_load_n(cursor, __ATOMIC_RELAXED) % (count > 64 ? 64 : count);
        uint64_t after = free & (~UINT64_C(0) << start);
        bit = __builtin_ctzll(after ? after : free);
        if (__atomic_compare_exchange_n(word, &old, old | (UINT64_C(1) << bit), 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) break;
    }
    __atomic_store_n(cursor, (uint32_t)bit + 1, __ATOMIC_RELAXED);
    if (ring_index >= 0 && ring_generation != generation) release_ring(0);  // one ring per thread
    ring_generation = generation;
    ring_index = bit;
    pthread_once(&exit_key_once, make_exit_key);
    pthread_setspecific(exit_key, (void *)1);  // non-NULL, so release_ring runs at exit
    return bit;
}

static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;
static void install_fork_handler(void) { pthread_atfork(0, 0, after_fork_in_child); }

void h2_ring_register(uint64_t generation, void *claimed) {
    pthread_once(&fork_handler_once, install_fork_handler);
    pthread_mutex_lock(&registry_lock);
    for (int i = 0; i < MAX_SEGMENTS; i++) {
        if (!registry[i].claimed) {
            registry[i].generation = generation;
            registry[i].claimed = (uint64_t *)claimed;
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

void h2_ring_unregister(uint64_t generation) {
    pthread_mutex_lock(&registry_lock);
    for (int i = 0; i < MAX_SEGMENTS; i++) {
        if (registry[i].claimed && registry[i].generation == generation) registry[i].claimed = 0;
    }
    pthread_mutex_unlock(&registry_lock);
}

uint32_t h2_thread_id(void) {
    if (cached_tid == 0) cached_tid = (uint32_t)syscall(SYS_gettid);
    return cached_tid;
}

static uint64_t no_trace_mask;
uint64_t *h2_trace_mask_word = &no_trace_mask;
static void *trace_context;

void h2_trace_install(uint64_t *mask_word, void *context) {
    __atomic_store_n(&trace_context, context, __ATOMIC_RELEASE);
    __atomic_store_n(&h2_trace_mask_word, mask_word ? mask_word : &no_trace_mask, __ATOMIC_RELEASE);
}

void *h2_trace_context(void) { return __atomic_load_n(&trace_context, __ATOMIC_ACQUIRE); }
