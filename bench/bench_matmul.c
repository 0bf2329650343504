/*
 * bench/bench_matmul.c - the batched matmul kernels (slm_cpu_matmul,
 * slm_cpu_matmul_q8) on a model's shapes, with weights coming from DRAM,
 * against this machine's read bandwidth and FMA peak measured in the same
 * run.
 *
 * Weights: `--layers` layers' worth of the shape's matrices (wq, wk, wv, wo,
 * w1, w3, w2), each its own buffer, plus the classifier, in huge-page-backed
 * memory as the resident model is; float32 and, quantized from the same
 * values, int8. A pass runs the seven products of every layer in forward
 * order, then the classifier, so each matrix has been evicted from the
 * caches by the others before it is read again (4 tinyllama layers are
 * 700 MB of float32, 180 MB of int8, against a 32 MiB L3). Each (kind,
 * batch) is timed over passes for at least --seconds, keeping the fastest
 * pass, and each matrix's best total across passes.
 *
 * References, measured right before and right after each (kind, batch)
 * block, the better of the two kept (the host's bandwidth swings between
 * phases minutes apart, and neighbours take cores): the read-bandwidth
 * probe (bench/membw.c), and the FMA peak, a register-only loop of
 * independent FMAs on every thread at the kernels' instruction set.
 * Compare ratios, not raw figures, across runs.
 *
 *   bench_matmul [--shape tinyllama-1.1b] [--threads N] [--layers N]
 *                [--seconds S] [--probe-mib N] [--isa avx512|avx2|scalar]
 *                [--batches 1,8,16,...] [--no-q8] [--panels]
 *
 * --batches replaces the float32 batch list (1, 4, 16, 64, 128; at most
 * MAX_BATCHES sizes of 1..MAX_BATCH tokens); --no-q8 skips the int8 kernel.
 * --panels times slm_cpu_matmul_panels in place of slm_cpu_matmul, on copies
 * of the same float32 matrices packed once up front as the loader packs
 * them (kind "pan"); compare with a run without it.
 * With `--shape 110m --batches 1,16` this is the continuous-batching
 * decode step: 16 sequences per step against single-stream decode.
 *
 * Output, per kind and batch: one line per distinct matrix shape and a
 * "model" line projecting the whole model (n_layers layers + classifier):
 * batch / time in tokens/s, GFLOP/s, weight GB/s, and their ratios to the
 * probe and the peak. For a batch other than 1, when batch 1 was also run
 * for that kind, a last column "x1" gives the time of this batch's call (or
 * model pass) over batch 1's, the cost of decoding `batch` streams at once
 * against one.
 */
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/membw.h"
#include "common/checked.h"
#include "common/clock.h"
#include "common/hugemem.h"
#include "coordinator/cli.h"
#include "kernels/cpu/isa.h"
#include "kernels/kernels.h"
#include "model/mkmodel.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SLM_HAVE_X86 1
#endif

enum { M_WQ, M_WK, M_WV, M_WO, M_W1, M_W3, M_W2, M_PER_LAYER };
#define M_CLS M_PER_LAYER /* index of the classifier in per-shape tables */
#define M_ALL (M_PER_LAYER + 1)

static const char *const matrix_names[M_ALL] = {"wq", "wk", "wv", "wo",
                                                "w1", "w3", "w2", "cls"};

typedef struct {
    size_t rows, cols;
    float *w;     /* (rows, cols) */
    float *wp;    /* w packed in panels (slm_cpu_pack_panels), or NULL */
    int8_t *q;    /* (rows, cols) */
    float *scale; /* (rows) */
} matrix;

typedef struct {
    int layers;
    matrix m[64][M_PER_LAYER]; /* [layer][which] */
    matrix cls;
    slm_hugemem f32_mem, q8_mem, pan_mem;
} weights;

#define MAX_BATCH   128
#define MAX_BATCHES 16
static const int f32_default_batches[] = {1, 4, 16, 64, 128};
static const int q8_batches[] = {1, 16, 128};

/* Batch 1's times per kind (0 f32, 1 q8), for the "x1" column; 0 until
 * batch 1 has run. Indexed by matrix, then M_ALL for the whole model. */
static double batch1_secs[2][M_ALL + 1];

/* ---- FMA peak --------------------------------------------------------- */

static volatile float peak_sink;

#define PEAK_CHAINS 24 /* 2 pipes x 4-cycle latency, with room to spare */
_Static_assert(PEAK_CHAINS == 24, "the unroll pragma below says 24");

#ifdef SLM_HAVE_X86
__attribute__((target("avx512f"))) static float peak_avx512(long n)
{
    __m512 a[PEAK_CHAINS];
    for (int i = 0; i < PEAK_CHAINS; i++)
        a[i] = _mm512_set1_ps(0.001f * (float)i);
    __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-6f);
    for (long it = 0; it < n; it++) {
        /* Fully unrolled, or the chains live in memory. */
#pragma GCC unroll 24
        for (int i = 0; i < PEAK_CHAINS; i++)
            a[i] = _mm512_fmadd_ps(a[i], b, c);
    }
    for (int i = 1; i < PEAK_CHAINS; i++)
        a[0] = _mm512_add_ps(a[0], a[i]);
    return _mm512_reduce_add_ps(a[0]);
}

__attribute__((target("avx2,fma"))) static float peak_avx2(long n)
{
    __m256 a[12]; /* of 16 registers */
    for (int i = 0; i < 12; i++)
        a[i] = _mm256_set1_ps(0.001f * (float)i);
    __m256 b = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-6f);
    for (long it = 0; it < n; it++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++)
            a[i] = _mm256_fmadd_ps(a[i], b, c);
    }
    for (int i = 1; i < 12; i++)
        a[0] = _mm256_add_ps(a[0], a[i]);
    float l[8];
    _mm256_storeu_ps(l, a[0]);
    return l[0];
}
#endif

/* FLOPs of one iteration of the loop above, or 0 where there is none. */
static double peak_flops_per_iter(slm__isa isa)
{
#ifdef SLM_HAVE_X86
    if (isa == SLM__ISA_AVX512)
        return PEAK_CHAINS * 16 * 2;
    if (isa == SLM__ISA_AVX2)
        return 12 * 8 * 2;
#endif
    (void)isa;
    return 0.0;
}

/* Best of 5 runs of ~0.1 s on every thread at once, in GFLOP/s. */
static double fma_peak(slm__isa isa, int threads)
{
    double per = peak_flops_per_iter(isa);
    if (per == 0.0)
        return 0.0;
    const long n = (long)(2e10 / per); /* 2e10 FLOPs per thread */
    double best = INFINITY;
    for (int rep = 0; rep < 5; rep++) {
        float s = 0.0f;
        double t0 = slm_now_seconds();
#pragma omp parallel num_threads(threads) reduction(+ : s)
        {
#ifdef SLM_HAVE_X86
            s += isa == SLM__ISA_AVX512 ? peak_avx512(n) : peak_avx2(n);
#endif
        }
        double dt = slm_now_seconds() - t0;
        peak_sink = s;
        if (dt < best)
            best = dt;
    }
    return per * (double)n * threads / best / 1e9;
}

/* ---- weights ---------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in +-1/sqrt(cols), like mkmodel's matrices. */
static void fill(float *w, size_t n, size_t cols, uint64_t *rng)
{
    float a = 1.0f / sqrtf((float)cols);
    for (size_t i = 0; i < n; i++)
        w[i] = a * ((float)(rng_next(rng) >> 40) * 0x1.0p-23f - 1.0f);
}

static slm_status weights_create(weights *wt, const slm_model_config *c,
                                 int layers, int panels)
{
    size_t d = (size_t)c->dim, h = (size_t)c->hidden_dim;
    size_t kv = (size_t)c->kv_dim, v = (size_t)c->vocab_size;
    const size_t shape[M_PER_LAYER][2] = {{d, d}, {kv, d}, {kv, d}, {d, d},
                                          {h, d}, {h, d},  {d, h}};
    /* Offsets in elements, each matrix 64-element aligned. */
    size_t n = 0, rows_total = 0, n_pan = 0, e_pan;
    for (int l = 0; l < layers; l++) {
        for (int m = 0; m < M_PER_LAYER; m++) {
            wt->m[l][m] =
                (matrix){shape[m][0], shape[m][1], NULL, NULL, NULL, NULL};
            n += (shape[m][0] * shape[m][1] + 63) & ~(size_t)63;
            rows_total += shape[m][0];
            if (!slm_cpu_panels_floats(shape[m][0], shape[m][1], &e_pan))
                return slm_fail(SLM_ERR_RANGE, "bench weights overflow");
            n_pan += (e_pan + 63) & ~(size_t)63;
        }
    }
    wt->cls = (matrix){v, d, NULL, NULL, NULL, NULL};
    n += (v * d + 63) & ~(size_t)63;
    rows_total += v;
    if (!slm_cpu_panels_floats(v, d, &e_pan))
        return slm_fail(SLM_ERR_RANGE, "bench weights overflow");
    n_pan += (e_pan + 63) & ~(size_t)63;
    size_t f32_bytes, q8_bytes, pan_bytes;
    if (!slm_size_mul(n, sizeof(float), &f32_bytes) ||
        !slm_size_mul(rows_total, sizeof(float), &q8_bytes) ||
        !slm_size_add(q8_bytes, n, &q8_bytes) ||
        !slm_size_mul(n_pan, sizeof(float), &pan_bytes))
        return slm_fail(SLM_ERR_RANGE, "bench weights overflow");
    SLM_CHECK(slm_hugemem_alloc(f32_bytes, "float32 weights", &wt->f32_mem));
    SLM_CHECK(slm_hugemem_alloc(q8_bytes, "int8 weights", &wt->q8_mem));
    if (panels)
        SLM_CHECK(slm_hugemem_alloc(pan_bytes, "packed weights", &wt->pan_mem));
    float *pp = wt->pan_mem.data; /* 64-float offsets keep it 64-byte aligned */
    float *fp = wt->f32_mem.data;
    float *sp = wt->q8_mem.data;
    int8_t *qp = (int8_t *)(sp + rows_total);
    uint64_t rng = 1;
    for (int i = 0; i <= layers * M_PER_LAYER; i++) {
        matrix *mx = i < layers * M_PER_LAYER
                         ? &wt->m[i / M_PER_LAYER][i % M_PER_LAYER]
                         : &wt->cls;
        size_t e = mx->rows * mx->cols;
        mx->w = fp;
        mx->q = qp;
        mx->scale = sp;
        fill(mx->w, e, mx->cols, &rng);
        slm_cpu_quantize_q8(mx->q, mx->scale, mx->w, mx->rows, mx->cols);
        if (panels) {
            mx->wp = pp;
            slm_cpu_pack_panels(mx->wp, mx->w, mx->rows, mx->cols, mx->cols);
            (void)slm_cpu_panels_floats(mx->rows, mx->cols, &e_pan);
            pp += (e_pan + 63) & ~(size_t)63;
        }
        fp += (e + 63) & ~(size_t)63;
        qp += (e + 63) & ~(size_t)63;
        sp += mx->rows;
    }
    wt->layers = layers;
    return SLM_OK;
}

/* ---- timing ----------------------------------------------------------- */

static void run(const matrix *mx, int q8, float *out, const float *x,
                size_t batch)
{
    if (q8)
        slm_cpu_matmul_q8(out, mx->q, mx->scale, x, batch, mx->rows, mx->cols);
    else if (mx->wp)
        slm_cpu_matmul_panels(out, mx->wp, x, batch, mx->rows, mx->cols);
    else
        slm_cpu_matmul(out, mx->w, x, batch, mx->rows, mx->cols);
}

/* best[m]: the fastest total, over passes, of matrix kind m's calls in one
 * pass (all layers); *best_layers: the fastest total of a pass's layers
 * (the classifier's is best[M_CLS]). */
static void time_passes(const weights *wt, int q8, size_t batch, float *out,
                        const float *x, double seconds, double best[M_ALL],
                        double *best_layers)
{
    for (int m = 0; m < M_ALL; m++)
        best[m] = INFINITY;
    *best_layers = INFINITY;
    double start = slm_now_seconds();
    for (int pass = 0;; pass++) {
        double t[M_ALL] = {0};
        for (int l = 0; l < wt->layers; l++) {
            for (int m = 0; m < M_PER_LAYER; m++) {
                double t0 = slm_now_seconds();
                run(&wt->m[l][m], q8, out, x, batch);
                t[m] += slm_now_seconds() - t0;
            }
        }
        double t0 = slm_now_seconds();
        run(&wt->cls, q8, out, x, batch);
        t[M_CLS] = slm_now_seconds() - t0;
        double layers = 0.0;
        for (int m = 0; m < M_ALL; m++) {
            if (m < M_PER_LAYER)
                layers += t[m];
            if (t[m] < best[m])
                best[m] = t[m];
        }
        if (layers < *best_layers)
            *best_layers = layers;
        /* At least three passes: the first also wakes the thread team. */
        if (pass >= 2 && slm_now_seconds() - start >= seconds)
            break;
    }
}

/* The "x1" column: secs over batch 1's *b1 (recorded here if batch is 1). */
static void print_ratio(size_t batch, double secs, double *b1)
{
    if (batch == 1)
        *b1 = secs;
    else if (*b1 > 0.0)
        printf(" %6.2f", secs / *b1);
}

static void print_row(const char *kind, size_t batch, const char *what,
                      size_t rows, size_t cols, double calls, double secs,
                      double weight_bytes, double bw, double peak, double *b1)
{
    double flops = 2.0 * (double)batch * (double)rows * (double)cols * calls;
    double gflops = flops / secs / 1e9, gbps = weight_bytes / secs / 1e9;
    printf("%-4s %5zu  %-5s %5zux%-5zu %9.3f %8.1f %7.1f %6.3f", kind, batch,
           what, rows, cols, secs / calls * 1e3, gflops, gbps, gbps / bw);
    if (peak > 0.0)
        printf(" %6.3f", gflops / peak);
    print_ratio(batch, secs, b1);
    printf("\n");
}

/* The lines of one (kind, batch) block: one per distinct matrix shape (q
 * and o, k and v, w1 and w3 pair up), then the model: n_layers layers at the
 * best pass's time per layer, and the classifier once. */
static void print_block(const weights *wt, const slm_model_config *cfg,
                        int layers, int q8, size_t batch,
                        const double best[M_ALL], double best_layers, double bw,
                        double peak)
{
    const char *kind = q8 ? "q8" : wt->cls.wp ? "pan" : "f32";
    double bpw = q8 ? 1.0 : 4.0; /* bytes per weight; q8 adds its scales */
    static const int firsts[] = {M_WQ, M_WK, M_W1, M_W2, M_CLS};
    for (size_t f = 0; f < sizeof firsts / sizeof *firsts; f++) {
        int m = firsts[f];
        const matrix *mx = m == M_CLS ? &wt->cls : &wt->m[0][m];
        double calls = m == M_CLS ? 1.0 : (double)layers;
        double secs = best[m];
        if (m == M_WQ || m == M_WK || m == M_W1) {
            secs += best[m == M_WQ ? M_WO : m == M_WK ? M_WV : M_W3];
            calls *= 2.0;
        }
        double bytes = (double)mx->rows * (double)mx->cols * bpw * calls +
                       (q8 ? (double)mx->rows * 4.0 * calls : 0.0);
        char name[16];
        snprintf(name, sizeof name, "%s%s", matrix_names[m],
                 m == M_WQ   ? "+o"
                 : m == M_WK ? "+v"
                 : m == M_W1 ? "+3"
                             : "");
        print_row(kind, batch, name, mx->rows, mx->cols, calls, secs, bytes, bw,
                  peak, &batch1_secs[q8][m]);
    }
    double secs = best_layers / (double)layers * cfg->n_layers + best[M_CLS];
    double params = 0.0, rows = 0.0;
    for (int m = 0; m < M_PER_LAYER; m++) {
        params += (double)wt->m[0][m].rows * (double)wt->m[0][m].cols;
        rows += (double)wt->m[0][m].rows;
    }
    params = params * cfg->n_layers + (double)wt->cls.rows * wt->cls.cols;
    rows = rows * cfg->n_layers + (double)wt->cls.rows;
    double bytes = params * bpw + (q8 ? rows * 4.0 : 0.0);
    double gflops = 2.0 * (double)batch * params / secs / 1e9;
    double gbps = bytes / secs / 1e9;
    printf("%-4s %5zu  model %8.1f tokens/s  %9.3f %8.1f %7.1f %6.3f", kind,
           batch, (double)batch / secs, secs * 1e3, gflops, gbps, gbps / bw);
    if (peak > 0.0)
        printf(" %6.3f", gflops / peak);
    print_ratio(batch, secs, &batch1_secs[q8][M_ALL]);
    printf("\n");
}

/* "1,8,16" into list; at most MAX_BATCHES sizes, each 1..MAX_BATCH. */
static slm_status parse_batches(const char *arg, int *list, size_t *n)
{
    *n = 0;
    const char *p = arg;
    for (;;) {
        char num[16];
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof num || *n == MAX_BATCHES)
            return slm_fail(SLM_ERR_INVALID,
                            "--batches: '%s' is not a list of at most %d "
                            "sizes",
                            arg, MAX_BATCHES);
        memcpy(num, p, len);
        num[len] = '\0';
        int64_t v;
        SLM_CHECK(slm_cli_int("--batches", num, 1, MAX_BATCH, &v));
        list[(*n)++] = (int)v;
        if (p[len] == '\0')
            return SLM_OK;
        p += len + 1;
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"shape", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 't'},
        {"layers", required_argument, NULL, 'l'},
        {"seconds", required_argument, NULL, 'S'},
        {"probe-mib", required_argument, NULL, 'p'},
        {"isa", required_argument, NULL, 'i'},
        {"batches", required_argument, NULL, 'b'},
        {"no-q8", no_argument, NULL, 'q'},
        {"panels", no_argument, NULL, 'P'},
        {NULL, 0, NULL, 0},
    };
    const char *shape = "tinyllama-1.1b";
    int64_t threads = 2, layers = 4, seconds = 1, probe_mib = 1024;
    int f32_batches[MAX_BATCHES], with_q8 = 1, panels = 0;
    size_t n_f32 = sizeof f32_default_batches / sizeof *f32_default_batches;
    memcpy(f32_batches, f32_default_batches, sizeof f32_default_batches);
    slm_status rc = SLM_OK;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            shape = optarg;
            break;
        case 't':
            rc = slm_cli_int("--threads", optarg, 1, 256, &threads);
            break;
        case 'l':
            rc = slm_cli_int("--layers", optarg, 1, 64, &layers);
            break;
        case 'S':
            rc = slm_cli_int("--seconds", optarg, 0, 3600, &seconds);
            break;
        case 'p':
            rc = slm_cli_int("--probe-mib", optarg, 64, 65536, &probe_mib);
            break;
        case 'i':
            if (strcmp(optarg, "avx512") == 0)
                slm__cpu_isa_force(SLM__ISA_AVX512);
            else if (strcmp(optarg, "avx2") == 0)
                slm__cpu_isa_force(SLM__ISA_AVX2);
            else if (strcmp(optarg, "scalar") == 0)
                slm__cpu_isa_force(SLM__ISA_SCALAR);
            else
                rc = slm_fail(SLM_ERR_INVALID,
                              "--isa: '%s' is not avx512, avx2 or scalar",
                              optarg);
            break;
        case 'b':
            rc = parse_batches(optarg, f32_batches, &n_f32);
            break;
        case 'q':
            with_q8 = 0;
            break;
        case 'P':
            panels = 1;
            break;
        default:
            fprintf(stderr, "usage: bench_matmul [--shape S] [--threads N] "
                            "[--layers N] [--seconds S] [--probe-mib N] "
                            "[--isa avx512|avx2|scalar] [--batches B,B,...] "
                            "[--no-q8] [--panels]\n");
            return 2;
        }
        if (rc != SLM_OK)
            goto fail;
    }
    slm_model_config cfg;
    SLM_CHECK_GOTO(slm_mkmodel_shape(shape, &cfg), rc, fail);
    omp_set_num_threads((int)threads);
    slm__isa isa = slm__cpu_isa_level();

    size_t probe_bytes = (size_t)probe_mib << 20;

    weights wt;
    memset(&wt, 0, sizeof wt);
    float *x = NULL, *out = NULL;
    SLM_CHECK_GOTO(weights_create(&wt, &cfg, (int)layers, panels), rc,
                   fail_weights);
    size_t d = (size_t)cfg.dim, h = (size_t)cfg.hidden_dim;
    size_t v = (size_t)cfg.vocab_size;
    size_t max_batch = MAX_BATCH, widest_in = h > d ? h : d;
    size_t widest_out = v > widest_in ? v : widest_in;
    x = malloc(max_batch * widest_in * sizeof(float));
    out = malloc(max_batch * widest_out * sizeof(float));
    if (!x || !out) {
        rc = slm_fail(SLM_ERR_NOMEM, "bench buffers");
        goto fail_weights;
    }
    uint64_t rng = 2;
    for (size_t i = 0; i < max_batch * widest_in; i++)
        x[i] = (float)(rng_next(&rng) >> 40) * 0x1.0p-23f - 1.0f;

    printf("shape    %s (dim %zu, hidden %zu, kv_dim %d, vocab %zu, %d "
           "layers); %lld layers in the benchmark's cycle\n",
           shape, d, h, cfg.kv_dim, v, cfg.n_layers, (long long)layers);
    printf("threads  %lld, isa %s\n", (long long)threads, slm_cpu_isa());
    printf("\nms = per call; GB/s = weight bytes read / time; bw = GB/s / "
           "probe; pk = GFLOP/s / fma peak\n");
    printf("%-4s %5s  %-5s %-11s %9s %8s %7s %6s %6s %6s\n", "kind", "batch",
           "what", "rows x cols", "ms", "GFLOP/s", "GB/s", "bw", "pk", "x1");
    for (int q8 = 0; q8 <= with_q8; q8++) {
        const int *list = q8 ? q8_batches : f32_batches;
        size_t n = q8 ? sizeof q8_batches / sizeof *q8_batches : n_f32;
        for (size_t i = 0; i < n; i++) {
            size_t batch = (size_t)list[i];
            /* References on both sides of this block, the better of each:
             * the host's bandwidth swings between phases minutes apart. */
            double bw0, bw1, best[M_ALL], best_layers;
            SLM_CHECK_GOTO(
                slm_bench_read_bandwidth(probe_bytes, (int)threads, 10, &bw0),
                rc, fail_weights);
            double pk0 = fma_peak(isa, (int)threads);
            time_passes(&wt, q8, batch, out, x, (double)seconds, best,
                        &best_layers);
            SLM_CHECK_GOTO(
                slm_bench_read_bandwidth(probe_bytes, (int)threads, 10, &bw1),
                rc, fail_weights);
            double pk1 = fma_peak(isa, (int)threads);
            double bw = bw0 > bw1 ? bw0 : bw1;
            double peak = pk0 > pk1 ? pk0 : pk1;
            const char *kind = q8 ? "q8" : panels ? "pan" : "f32";
            printf("%-4s %5zu  probe %.1f GB/s (%.1f before, %.1f after), "
                   "fma peak %.1f GFLOP/s (%.1f, %.1f)\n",
                   kind, batch, bw, bw0, bw1, peak, pk0, pk1);
            print_block(&wt, &cfg, (int)layers, q8, batch, best, best_layers,
                        bw, peak);
        }
    }
    free(out);
    free(x);
    slm_hugemem_free(&wt.f32_mem);
    slm_hugemem_free(&wt.q8_mem);
    slm_hugemem_free(&wt.pan_mem);
    return 0;
fail_weights:
    free(out);
    free(x);
    slm_hugemem_free(&wt.f32_mem);
    slm_hugemem_free(&wt.q8_mem);
    slm_hugemem_free(&wt.pan_mem);
fail:
    fprintf(stderr, "bench_matmul: %s (%s)\n", slm_error_message(),
            slm_status_str(rc));
    return 1;
}
