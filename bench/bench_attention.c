/*
 * bench/bench_attention.c - slm_cpu_attention_paged_head on the 110m
 * serving step: 16 sequences x 12 query heads, head_size 64, kv_dim 768,
 * block_size 16, one thread.
 *
 * The sequences sit at positions spread evenly over 8..136 (a serving step
 * mixes young and old sequences), each with its own block table drawn from
 * a shuffled pool, so blocks are scattered as the allocator leaves them
 * after churn. The pool holds --layers layers, and successive calls walk
 * them in turn as a forward pass does, so a call finds its keys and values
 * in L3 or DRAM, not in the L1/L2 the previous call warmed (one layer of
 * this step is about 7 MB of keys and values).
 *
 * A "call" is one step's worth for one layer: all 16 x 12 (sequence, head)
 * pairs. Each path (AVX-512 where the CPU has it, then the scalar twin) is
 * timed over --reps rounds of --calls calls; the median round is reported
 * in microseconds per call, with the fastest and slowest rounds (the host
 * is shared, so look at medians).
 *
 *   bench_attention [--layers N] [--reps N] [--calls N]
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/membw.h"
#include "common/clock.h"
#include "coordinator/cli.h"
#include "kernels/cpu/isa.h"
#include "kernels/kernels.h"

enum {
    N_SEQS = 16,
    N_HEADS = 12,
    HEAD_SIZE = 64,
    KV_DIM = N_HEADS * HEAD_SIZE,
    BLOCK_SIZE = 16,
    POS_MIN = 8,
    POS_MAX = 136,
    BLOCKS_PER_SEQ = (POS_MAX + BLOCK_SIZE) / BLOCK_SIZE,
    /* Slack, so the tables do not simply tile the pool. */
    POOL_BLOCKS = N_SEQS * BLOCKS_PER_SEQ + 16,
    MAX_REPS = 1001,
};

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: enough for shuffling and filler values. */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static float rng_float(uint64_t *s)
{
    return (float)(rng_next(s) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    size_t layers;
    float *k, *v; /* (layers, POOL_BLOCKS, BLOCK_SIZE, KV_DIM) */
    float *q;     /* (N_SEQS, KV_DIM) */
    float *out;   /* (N_SEQS, KV_DIM) */
    float *att;   /* (POS_MAX + 1) */
    uint32_t table[N_SEQS][BLOCKS_PER_SEQ];
    size_t pos[N_SEQS];
} bench;

static void one_call(bench *b, size_t layer)
{
    const size_t off = layer * (size_t)POOL_BLOCKS * BLOCK_SIZE * KV_DIM;
    for (size_t s = 0; s < N_SEQS; s++)
        for (size_t h = 0; h < N_HEADS; h++)
            slm_cpu_attention_paged_head(b->out + s * KV_DIM + h * HEAD_SIZE,
                                         b->q + s * KV_DIM + h * HEAD_SIZE,
                                         b->k + off, b->v + off, b->table[s],
                                         BLOCK_SIZE, b->att, HEAD_SIZE, KV_DIM,
                                         h * HEAD_SIZE, b->pos[s]);
}

/* Median, fastest and slowest of `reps` rounds, in microseconds per call. */
static void time_path(bench *b, size_t reps, size_t calls, double r[3])
{
    double us[MAX_REPS];
    size_t layer = 0;
    for (size_t i = 0; i < calls; i++) { /* warm-up: page faults, clocks */
        one_call(b, layer);
        layer = (layer + 1) % b->layers;
    }
    for (size_t r_i = 0; r_i < reps; r_i++) {
        double t0 = slm_now_seconds();
        for (size_t i = 0; i < calls; i++) {
            one_call(b, layer);
            layer = (layer + 1) % b->layers;
        }
        us[r_i] = (slm_now_seconds() - t0) * 1e6 / (double)calls;
    }
    qsort(us, reps, sizeof *us, cmp_double);
    r[0] = us[reps / 2];
    r[1] = us[0];
    r[2] = us[reps - 1];
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"layers", required_argument, NULL, 'l'},
        {"reps", required_argument, NULL, 'r'},
        {"calls", required_argument, NULL, 'c'},
        {NULL, 0, NULL, 0},
    };
    int64_t layers = 12, reps = 31, calls = 48;
    slm_status rc = SLM_OK;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            rc = slm_cli_int("--layers", optarg, 1, 64, &layers);
            break;
        case 'r':
            rc = slm_cli_int("--reps", optarg, 1, MAX_REPS, &reps);
            break;
        case 'c':
            rc = slm_cli_int("--calls", optarg, 1, 100000, &calls);
            break;
        default:
            fprintf(stderr, "usage: bench_attention [--layers N] [--reps N] "
                            "[--calls N]\n");
            return 2;
        }
        if (rc != SLM_OK) {
            fprintf(stderr, "bench_attention: %s\n", slm_status_str(rc));
            return 2;
        }
    }

    bench b;
    memset(&b, 0, sizeof b);
    b.layers = (size_t)layers;
    /* At most 64 layers of 160 blocks of 16 rows of 768 floats: 504 MB a
     * pool, far from overflowing size_t. */
    const size_t pool = b.layers * POOL_BLOCKS * BLOCK_SIZE * KV_DIM;
    b.k = malloc(pool * sizeof *b.k);
    b.v = malloc(pool * sizeof *b.v);
    b.q = malloc((size_t)N_SEQS * KV_DIM * sizeof *b.q);
    b.out = malloc((size_t)N_SEQS * KV_DIM * sizeof *b.out);
    b.att = malloc((POS_MAX + 1) * sizeof *b.att);
    if (!b.k || !b.v || !b.q || !b.out || !b.att) {
        fprintf(stderr, "bench_attention: out of memory\n");
        return 1;
    }
    uint64_t rng = 0x6174746e62656e63ULL;
    /* Keys scaled as trained models' are, so the softmax is not flat. */
    for (size_t i = 0; i < pool; i++) {
        b.k[i] = rng_float(&rng);
        b.v[i] = rng_float(&rng);
    }
    for (size_t i = 0; i < (size_t)N_SEQS * KV_DIM; i++)
        b.q[i] = 2.0f * rng_float(&rng);
    uint32_t perm[POOL_BLOCKS];
    for (uint32_t i = 0; i < POOL_BLOCKS; i++)
        perm[i] = i;
    for (size_t i = POOL_BLOCKS - 1; i > 0; i--) {
        size_t j = (size_t)(rng_next(&rng) % (i + 1));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (size_t s = 0; s < N_SEQS; s++) {
        b.pos[s] = POS_MIN + s * (POS_MAX - POS_MIN) / (N_SEQS - 1);
        for (size_t j = 0; j < BLOCKS_PER_SEQ; j++)
            b.table[s][j] = perm[s * BLOCKS_PER_SEQ + j];
    }

    const slm__isa hw = slm__cpu_isa_detected();
    printf("110m step: %d seqs x %d heads, head_size %d, block_size %d, "
           "positions %d..%d, %zu layers, 1 thread\n",
           N_SEQS, N_HEADS, HEAD_SIZE, BLOCK_SIZE, POS_MIN, POS_MAX, b.layers);
    printf("%-8s %12s %12s %12s\n", "path", "median us", "min us", "max us");
    double r[3], vec = 0.0;
    if (hw >= SLM__ISA_AVX512) {
        slm__cpu_isa_force(SLM__ISA_AVX512);
        time_path(&b, (size_t)reps, (size_t)calls, r);
        vec = r[0];
        printf("%-8s %12.1f %12.1f %12.1f\n", "avx512", r[0], r[1], r[2]);
    }
    slm__cpu_isa_force(SLM__ISA_SCALAR);
    time_path(&b, (size_t)reps, (size_t)calls, r);
    printf("%-8s %12.1f %12.1f %12.1f\n", "scalar", r[0], r[1], r[2]);
    if (vec > 0.0)
        printf("scalar / avx512: %.2fx\n", r[0] / vec);
    /* What a call must read (each position's key and value slices of this
     * head), against what one core can stream from DRAM: the floor for the
     * layers that come from DRAM. */
    size_t positions = 0;
    for (size_t s = 0; s < N_SEQS; s++)
        positions += (b.pos[s] + 1) * N_HEADS;
    const double bytes = (double)positions * 2.0 * HEAD_SIZE * sizeof(float);
    double gbps = 0.0;
    if (slm_bench_read_bandwidth((size_t)512 << 20, 1, 3, &gbps) == SLM_OK)
        printf("reads %.2f MB a call; one core streams %.1f GB/s: %.1f us\n",
               bytes * 1e-6, gbps, bytes / gbps * 1e-3);
    slm__cpu_isa_force(hw);

    free(b.k);
    free(b.v);
    free(b.q);
    free(b.out);
    free(b.att);
    return 0;
}
