// glibc's malloc tuning for the filesystem daemon (mallopt and malloc_trim are not in
// Swift's Glibc module). The daemon's live data stays within its budgets; what grew past
// them was free memory glibc kept in per-thread arenas (docs/benchmarks.md, "Memory").
#ifndef CMALLOC_H
#define CMALLOC_H

// Limits malloc to `arenas` arenas (M_ARENA_MAX). Call before threads start allocating.
// Returns 1 on success, 0 where the C library does not support it.
int h2_malloc_limit_arenas(int arenas);

// Gives free memory of every arena back to the kernel (malloc_trim(0)). Returns 1 if
// memory was released.
int h2_malloc_trim(void);

#endif
