// Atomic loads, stores and adds on raw memory (a shared-memory segment), which Swift's
// Synchronization offers only for its own stored atomics. Also the calling thread's ring.
#ifndef CATOMICMEMORY_H
#define CATOMICMEMORY_H

#include <stdint.h>

static inline uint64_t h2_load_acquire_u64(const void *p) { return __atomic_load_n((const uint64_t *)p, __ATOMIC_ACQUIRE); }
static inline void h2_store_release_u64(void *p, uint64_t v) { __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELEASE); }
static inline uint64_t h2_load_relaxed_u64(const void *p) { return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED); }
static inline void h2_store_relaxed_u64(void *p, uint64_t v) { __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED); }
static inline uint32_t h2_fetch_add_u32(void *p, uint32_t v) { return __atomic_fetch_add((uint32_t *)p, v, __ATOMIC_ACQ_REL); }
static inline uint32_t h2_load_acquire_u32(const void *p) { return __atomic_load_n((const uint32_t *)p, __ATOMIC_ACQUIRE); }
static inline void h2_store_release_u32(void *p, uint32_t v) { __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELEASE); }
static inline void h2_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void h2_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }

// The trace ring this thread claimed in a segment (one per thread and segment generation),
// or -1. Thread-local in C because Swift has no cheap thread-local storage.
int64_t h2_thread_ring(uint64_t generation);
void h2_set_thread_ring(uint64_t generation, int64_t ring);
// The kernel's id of the calling thread (gettid is not in Swift's Glibc module).
int64_t h2_thread_id(void);

#endif
