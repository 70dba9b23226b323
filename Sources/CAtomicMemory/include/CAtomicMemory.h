// Atomic loads, stores and adds on raw memory (a shared-memory segment), which Swift's
// Synchronization offers only for its own stored atomics; the calling thread's trace ring;
// and the process's installed trace mask, read on every trace point.
#ifndef CATOMICMEMORY_H
#define CATOMICMEMORY_H

#include <stdint.h>
#include <sched.h>

static inline uint64_t h2_load_acquire_u64(const void *p) { return __atomic_load_n((const uint64_t *)p, __ATOMIC_ACQUIRE); }
static inline void h2_store_release_u64(void *p, uint64_t v) { __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELEASE); }
static inline uint64_t h2_load_relaxed_u64(const void *p) { return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED); }
static inline void h2_store_relaxed_u64(void *p, uint64_t v) { __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED); }
static inline uint32_t h2_fetch_add_u32(void *p, uint32_t v) { return __atomic_fetch_add((uint32_t *)p, v, __ATOMIC_ACQ_REL); }
static inline uint32_t h2_load_acquire_u32(const void *p) { return __atomic_load_n((const uint32_t *)p, __ATOMIC_ACQUIRE); }
static inline void h2_store_release_u32(void *p, uint32_t v) { __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELEASE); }
static inline void h2_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void h2_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }

// A sequence lock whose word also excludes other writers: begin turns an even sequence odd
// (waiting while another writer holds it odd) and returns the even value; end makes it
// even again, one higher. Readers never write the word.
static inline uint64_t h2_seq_write_begin(void *p) {
    uint64_t *word = (uint64_t *)p;
    for (unsigned spins = 0;; spins++) {
        uint64_t s = __atomic_load_n(word, __ATOMIC_RELAXED);
        if ((s & 1) == 0 && __atomic_compare_exchange_n(word, &s, s + 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            __atomic_thread_fence(__ATOMIC_RELEASE);  // the odd word is seen before any field changes
            return s;
        }
        if (spins > 64) sched_yield();  // the holder was preempted (two cores, many threads)
    }
}
static inline void h2_seq_write_end(void *p, uint64_t begun) { __atomic_store_n((uint64_t *)p, begun + 2, __ATOMIC_RELEASE); }

// The ring this thread holds in the segment of `generation`, or -1. Thread-local in C
// because Swift has no cheap thread-local storage.
int64_t h2_thread_ring(uint64_t generation);
// Claims a free ring (a clear bit of the 64-bit word `claimed`, below `count`, searched
// from the u32 cursor that follows the word, round robin) for the calling thread; the ring is released when the thread exits, if the segment is still
// registered. -1 when every ring is held (the thread then records nothing there).
int64_t h2_ring_claim(uint64_t generation, void *claimed, uint32_t count);
// Segments whose rings are released at thread exit (a segment unregisters before unmapping).
void h2_ring_register(uint64_t generation, void *claimed);
void h2_ring_unregister(uint64_t generation);
// The kernel's id of the calling thread (gettid is not in Swift's Glibc module), cached.
uint32_t h2_thread_id(void);

// An error code the calling thread noted for the request it is serving (the FUSE adapter's
// reply error, for the request's trace event).
void h2_thread_error_set(int32_t code);
int32_t h2_thread_error_get(void);

// The process's installed trace segment: its mask word (a zero word until one is
// installed) and an opaque reference to it. A trace point costs these two loads and a
// test when its subsystem is masked off.
extern uint64_t *h2_trace_mask_word;
static inline uint64_t h2_trace_mask(void) {
    return __atomic_load_n(__atomic_load_n(&h2_trace_mask_word, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
}
void h2_trace_install(uint64_t *mask_word, void *context);
void *h2_trace_context(void);

// Guards a shared file mapping that others may truncate: a SIGBUS inside it replaces the
// pages from the fault to the mapping's end with anonymous zero pages (the access then
// succeeds) instead of killing the process. Up to 64 mappings; -1 when none is free.
int h2_mapping_guard_add(void *base, uint64_t bytes);
void h2_mapping_guard_remove(void *base);
// How many faults were absorbed so far (the writer reports a segment that shrank).
uint64_t h2_mapping_guard_replacements(void);

#endif
