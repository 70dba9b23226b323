// Mappings of files that others may shrink (a trace segment: its owner, or root, can
// truncate it while the daemon writes and tools read). A store or load past the new end of
// file raises SIGBUS; for an address inside a guarded mapping the handler replaces the
// pages from there to the mapping's end with anonymous zero pages and returns, so the
// access is retried and succeeds, and the process lives on. Other SIGBUSes go to the
// handler that was installed before.
#define _GNU_SOURCE
#include "CAtomicMemory.h"
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <pthread.h>

#define H2_GUARD_SLOTS 64

struct h2_guard_slot {
    uintptr_t start;   // 0: free
    uintptr_t end;
};

static struct h2_guard_slot slots[H2_GUARD_SLOTS];
static struct sigaction previous;
static pthread_once_t installed = PTHREAD_ONCE_INIT;
static uint64_t replaced_count;

static void on_sigbus(int signo, siginfo_t *info, void *context) {
    uintptr_t address = (uintptr_t)info->si_addr;
    for (int i = 0; i < H2_GUARD_SLOTS; i++) {
        uintptr_t start = __atomic_load_n(&slots[i].start, __ATOMIC_ACQUIRE);
        uintptr_t end = __atomic_load_n(&slots[i].end, __ATOMIC_ACQUIRE);
        if (start == 0 || address < start || address >= end) continue;
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t from = address & ~(page - 1);
        // mmap is a system call, safe in a signal handler.
        void *mapped = mmap((void *)from, end - from, PROT_READ | PROT_WRITE,
                            MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mapped != MAP_FAILED) {
            __atomic_fetch_add(&replaced_count, 1, __ATOMIC_RELAXED);
            return;
        }
        break;
    }
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction) { previous.sa_sigaction(signo, info, context); return; }
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN && previous.sa_handler) {
        previous.sa_handler(signo);
        return;
    }
    // The default action: restore it and return; the faulting access repeats and kills.
    signal(SIGBUS, SIG_DFL);
}

static void install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, &previous);
}

int h2_mapping_guard_add(void *base, uint64_t bytes) {
    pthread_once(&installed, install);
    for (int i = 0; i < H2_GUARD_SLOTS; i++) {
        uintptr_t expected = 0;
        // Claim the slot with a placeholder start, fill the end, then publish the start.
        if (__atomic_compare_exchange_n(&slots[i].start, &expected, (uintptr_t)1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            __atomic_store_n(&slots[i].end, (uintptr_t)base + (uintptr_t)bytes, __ATOMIC_RELEASE);
            __atomic_store_n(&slots[i].start, (uintptr_t)base, __ATOMIC_RELEASE);
            return 0;
        }
    }
    return -1;
}

void h2_mapping_guard_remove(void *base) {
    for (int i = 0; i < H2_GUARD_SLOTS; i++) {
        if (__atomic_load_n(&slots[i].start, __ATOMIC_ACQUIRE) == (uintptr_t)base) {
            __atomic_store_n(&slots[i].end, 0, __ATOMIC_RELEASE);
            __atomic_store_n(&slots[i].start, 0, __ATOMIC_RELEASE);
            return;
        }
    }
}

uint64_t h2_mapping_guard_replacements(void) { return __atomic_load_n(&replaced_count, __ATOMIC_RELAXED); }
