/* Allocator policy for a training loop that frees and reallocates the same array sizes every step. */
#include "microtensor.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

/* Keep freed blocks in the heap: by default glibc hands blocks above 128 KiB back to the OS
 * (mmap/munmap, heap trimming), and the next step then pays a page fault per 4 KiB to get them
 * back, about a fifth of a training step of the seed model. The trim threshold is above the
 * activations of the larger models (a d256 step frees ~150 MiB at once; at 128 MiB it paid
 * ~18,000 faults a step). The process keeps at most its own peak. A no-op outside glibc. */
void mt_keep_freed_memory(void) {
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}
