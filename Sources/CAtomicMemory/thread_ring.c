#define _GNU_SOURCE
#include <unistd.h>
#include <sys/syscall.h>
#include "CAtomicMemory.h"

static __thread uint64_t ring_generation;
static __thread int64_t ring_index = -1;

int64_t h2_thread_ring(uint64_t generation) { return ring_generation == generation ? ring_index : -1; }

void h2_set_thread_ring(uint64_t generation, int64_t ring) {
    ring_generation = generation;
    ring_index = ring;
}

int64_t h2_thread_id(void) { return (int64_t)syscall(SYS_gettid); }
