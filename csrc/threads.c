/* A tiny persistent thread pool for the kernels.
 *
 * Workers spin briefly after each job (so back-to-back kernel calls in a training
 * step wake them in well under a microsecond), then sleep on a condition variable
 * (so they never hold a core while Python or numpy's BLAS does other work).
 * The default thread count is the cores this process may run on; mt_set_num_threads
 * changes it (Python checks the value and applies MICROTENSOR_NUM_THREADS). Workers
 * beyond the current count park on their own condition variable: they neither spin
 * nor wake for jobs until the count grows again. Tasks are claimed with an atomic
 * counter; every task writes its own output range, so results do not depend on
 * which thread ran which task.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"
#include "microtensor.h"

#define MT_MAX_THREADS 64
#define MT_SPIN_ITERS 20000 /* pause iterations (~100 us) before a worker sleeps */
#define GATE_CLOSED ((uint64_t)1 << 31)
#define GATE_COUNT (GATE_CLOSED - 1)

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_cond_t park; /* workers with index >= nthreads - 1 wait here */
    int nthreads; /* including the calling thread */
    int started;  /* workers created */
    int64_t generation;
    int sleepers;
    mt_task_fn fn;
    void *ctx;
    int64_t ntasks;
    int64_t next;
    uint64_t gate;   /* (generation << 32) | closed bit | workers that entered the job */
    int64_t exited;  /* workers that entered and have left the current job */
    int busy;        /* a job is in flight (nested or concurrent calls run inline) */
    int active;      /* workers with an index below this take part in the current job */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0};

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static int64_t start_generation[MT_MAX_THREADS];

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int available_cores(void) {
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void after_fork_in_child(void) {
    /* The workers do not exist in a forked child: start afresh there. */
    pool.started = 0;
    pool.sleepers = 0;
    pool.busy = 0;
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.park, NULL);
}

static void init_count(void) {
    int n = available_cores();
    if (n > MT_MAX_THREADS) n = MT_MAX_THREADS;
    pool.nthreads = n < 1 ? 1 : n;
    pthread_atfork(NULL, NULL, after_fork_in_child);
}

int mt_num_threads(void) {
    pthread_once(&pool_once, init_count);
    return pool.nthreads;
}

void mt_set_num_threads(int n) {
    pthread_once(&pool_once, init_count);
    if (n < 1) n = 1;
    if (n > MT_MAX_THREADS) n = MT_MAX_THREADS;
    pthread_mutex_lock(&pool.lock);
    __atomic_store_n(&pool.nthreads, n, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool.park);
    pthread_mutex_unlock(&pool.lock);
}

/* Park worker `index` while the thread count leaves it out; true when it did. */
static int park_if_unused(int index) {
    if (index < __atomic_load_n(&pool.nthreads, __ATOMIC_ACQUIRE) - 1) return 0;
    pthread_mutex_lock(&pool.lock);
    while (index >= __atomic_load_n(&pool.nthreads, __ATOMIC_ACQUIRE) - 1) pthread_cond_wait(&pool.park, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
    return 1;
}

static void run_tasks(void) {
    mt_task_fn fn = pool.fn;
    void *ctx = pool.ctx;
    int64_t n = pool.ntasks;
    for (;;) {
        int64_t t = __atomic_fetch_add(&pool.next, 1, __ATOMIC_ACQ_REL);
        if (t >= n) break;
        fn(ctx, t);
    }
}

/* Enter job `gen` unless the caller has already closed it (then its tasks are all done). */
static int enter_job(int64_t gen) {
    uint64_t v = __atomic_load_n(&pool.gate, __ATOMIC_ACQUIRE);
    for (;;) {
        if ((v >> 32) != ((uint64_t)gen & 0xffffffffu) || (v & GATE_CLOSED)) return 0;
        if (__atomic_compare_exchange_n(&pool.gate, &v, v + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return 1;
    }
}

static void *worker_main(void *arg) {
    int index = (int)(intptr_t)arg;
    /* The generation when this worker was created, not when it first runs: a job posted in
     * between must still find it. */
    int64_t seen = start_generation[index];
    for (;;) {
        if (park_if_unused(index)) seen = __atomic_load_n(&pool.generation, __ATOMIC_ACQUIRE);
        int spins = 0;
        while (__atomic_load_n(&pool.generation, __ATOMIC_ACQUIRE) == seen && spins < MT_SPIN_ITERS) {
            cpu_relax();
            spins++;
        }
        if (__atomic_load_n(&pool.generation, __ATOMIC_ACQUIRE) == seen) {
            pthread_mutex_lock(&pool.lock);
            pool.sleepers++;
            while (__atomic_load_n(&pool.generation, __ATOMIC_ACQUIRE) == seen)
                pthread_cond_wait(&pool.wake, &pool.lock);
            pool.sleepers--;
            pthread_mutex_unlock(&pool.lock);
        }
        seen = __atomic_load_n(&pool.generation, __ATOMIC_ACQUIRE);
        /* A worker that wakes after the caller finished every task stays out, so the caller
         * never waits for a thread the scheduler has not run yet. */
        if (!enter_job(seen)) continue;
        if (index < pool.active) run_tasks();
        __atomic_fetch_add(&pool.exited, 1, __ATOMIC_ACQ_REL);
    }
    return NULL;
}

/* Start workers up to want-1 (the caller is the other thread); returns how many run. */
static int ensure_workers(int want) {
    while (pool.started < want - 1) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        start_generation[pool.started] = __atomic_load_n(&pool.generation, __ATOMIC_ACQUIRE);
        int err = pthread_create(&th, &attr, worker_main, (void *)(intptr_t)pool.started);
        pthread_attr_destroy(&attr);
        if (err) break;
        pool.started++;
    }
    return pool.started;
}

static void run_inline(int64_t ntasks, mt_task_fn fn, void *ctx) {
    for (int64_t t = 0; t < ntasks; t++) fn(ctx, t);
}

void mt_parallel_for(int64_t ntasks, mt_task_fn fn, void *ctx) {
    int nthreads = mt_num_threads();
    if (ntasks <= 1 || nthreads <= 1 || __atomic_exchange_n(&pool.busy, 1, __ATOMIC_ACQ_REL)) {
        run_inline(ntasks, fn, ctx);
        return;
    }
    int workers = ensure_workers(nthreads);
    if (workers > nthreads - 1) workers = nthreads - 1; /* the rest are parked */
    if (workers > ntasks - 1) workers = (int)(ntasks - 1);
    if (workers == 0) {
        __atomic_store_n(&pool.busy, 0, __ATOMIC_RELEASE);
        run_inline(ntasks, fn, ctx);
        return;
    }
    pool.fn = fn;
    pool.ctx = ctx;
    pool.ntasks = ntasks;
    pool.active = workers;
    __atomic_store_n(&pool.next, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.exited, 0, __ATOMIC_RELAXED);
    int64_t gen = pool.generation + 1;
    __atomic_store_n(&pool.gate, ((uint64_t)gen & 0xffffffffu) << 32, __ATOMIC_RELEASE);
    pthread_mutex_lock(&pool.lock);
    __atomic_store_n(&pool.generation, gen, __ATOMIC_RELEASE);
    if (pool.sleepers) pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    run_tasks();
    int64_t entered = (int64_t)(__atomic_fetch_or(&pool.gate, GATE_CLOSED, __ATOMIC_ACQ_REL) & GATE_COUNT);
    for (int spins = 0; __atomic_load_n(&pool.exited, __ATOMIC_ACQUIRE) < entered; spins++) {
        if (spins < 4000)
            cpu_relax();
        else
            sched_yield(); /* the worker we wait for may be waiting for this core */
    }
    __atomic_store_n(&pool.busy, 0, __ATOMIC_RELEASE);
}

typedef struct {
    mt_rows_fn fn;
    void *ctx;
    int64_t rows, min_rows, next;
    int threads;
} rows_job;

/* One thread's share of mt_parallel_rows: chunks claimed from the shared row counter, each a 2 * threads-th of the
 * rows left (at least min_rows), so a worker that wakes late takes less and the threads finish together. */
static void rows_task(void *ctx, int64_t t) {
    rows_job *j = ctx;
    (void)t;
    for (;;) {
        int64_t r0 = __atomic_load_n(&j->next, __ATOMIC_RELAXED), n;
        do { /* a failed exchange reloads r0 */
            if (r0 >= j->rows) return;
            n = (j->rows - r0) / (2 * j->threads);
            n = n < j->min_rows ? j->min_rows : n;
        } while (!__atomic_compare_exchange_n(&j->next, &r0, r0 + n, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
        j->fn(j->ctx, r0, r0 + n < j->rows ? r0 + n : j->rows);
    }
}

void mt_parallel_rows(int64_t rows, int64_t cost_per_row, mt_rows_fn fn, void *ctx) {
    int threads = mt_num_threads();
    if (rows < 2 || threads < 2 || rows * cost_per_row < MT_PAR_MIN_WORK) {
        if (rows > 0) fn(ctx, 0, rows);
        return;
    }
    int64_t min_rows = MT_PAR_MIN_WORK / 2 / (cost_per_row > 0 ? cost_per_row : 1);
    rows_job j = {fn, ctx, rows, min_rows > 0 ? min_rows : 1, 0, threads};
    mt_parallel_for(threads, rows_task, &j);
}
