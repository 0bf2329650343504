/*
 * kernels/cpu/isa.h - internal: which vector instruction set the CPU kernels
 * use on this machine. Not part of the public interface (see kernels.h for
 * slm_cpu_isa()); included by the kernels in kernels/cpu/ and by their tests.
 *
 * The build never passes -march, so a hot loop is written once per level with
 * __attribute__((target(...))) and picks one through slm__cpu_isa_level().
 */
#ifndef SLM_KERNELS_CPU_ISA_H
#define SLM_KERNELS_CPU_ISA_H

/* Ordered: a higher level implies the lower ones are usable too. */
typedef enum {
    SLM__ISA_SCALAR = 0, /* baseline x86-64 (SSE2), or not x86 at all */
    SLM__ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
    SLM__ISA_AVX512 = 2, /* AVX-512 F */
} slm__isa;

/* The level the kernels dispatch to: the best one the CPU and the OS support,
 * lowered by slm__cpu_isa_force() if a test asked for it. Detected once; the
 * call is cheap (one relaxed atomic load) and thread-safe. */
slm__isa slm__cpu_isa_level(void);

/* The level the hardware supports, ignoring any forced level. */
slm__isa slm__cpu_isa_detected(void);

/* For tests and benchmarks only: makes the kernels use `level`, clamped to
 * what the hardware supports (so asking for AVX-512 on an AVX2 machine gives
 * AVX2). Returns the level now in effect. Not meant to be called while
 * kernels run on other threads (they would see either level, both correct). */
slm__isa slm__cpu_isa_force(slm__isa level);

/* One case of a switch on a batch size nb: fn(n, ...) with n a
 * compile-time constant in each copy, so the loops over it unroll and the
 * accumulator arrays live in registers. The kernels list the cases they
 * need. */
#define SLM__DISPATCH_CASE(fn, n, ...)                                         \
    case n:                                                                    \
        fn(n, __VA_ARGS__);                                                    \
        break;

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* The sum of v's eight lanes (pairwise: 4 + 4, 2 + 2, 1 + 1). */
__attribute__((target("avx2,fma"))) static inline float slm__hsum_avx2(__m256 v)
{
    __m128 s =
        _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

#endif
