#include "CMalloc.h"
#include <stdlib.h>  // defines __GLIBC__ on glibc

#if defined(__GLIBC__)
#include <malloc.h>

int h2_malloc_limit_arenas(int arenas) { return mallopt(M_ARENA_MAX, arenas); }

int h2_malloc_trim(void) { return malloc_trim(0); }
#else
int h2_malloc_limit_arenas(int arenas) { (void)arenas; return 0; }

int h2_malloc_trim(void) { return 0; }
#endif
