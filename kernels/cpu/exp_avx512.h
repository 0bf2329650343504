/*
 * kernels/cpu/exp_avx512.h - internal: expf on 16 floats at once, for the
 * AVX-512 kernels in kernels/cpu/ (the attention softmax) and their tests.
 *
 * Within 2 ulp of the correctly rounded exp over the whole float range
 * (tests/unit/test_kernels.c checks it against exp in double): below
 * about -103.97 the result rounds to +0, above about 88.72 it is +inf,
 * NaN stays NaN. Subnormal results are produced, not flushed.
 *
 * The method is the textbook one. With n = round(x / ln 2) and
 * r = x - n ln 2, |r| <= ln(2) / 2 and exp(x) = 2^n exp(r). ln 2 is split
 * Cody-Waite style into a head with 16 significant bits, so that n * head
 * is exact for every n the clamped range gives, and x - n * head cancels
 * exactly; the tail then corrects r. exp(r) is its Taylor polynomial to
 * degree 7, whose truncation error (r^8 / 8! < 5.2e-9 relative) is far
 * below a float ulp; Horner's rule with fused multiply-adds keeps the
 * rounding error near half an ulp. vscalefps multiplies by 2^n, including
 * the gradual underflow to subnormals and 0 and the overflow to inf, with
 * one rounding.
 *
 * The input is clamped to [-104, 89] first, where the answers are already
 * 0 and inf: otherwise -inf would give r = -inf - (-inf) = NaN. The clamps
 * keep a NaN input (vmaxps/vminps return their second operand when either
 * is NaN).
 */
#ifndef SLM_KERNELS_CPU_EXP_AVX512_H
#define SLM_KERNELS_CPU_EXP_AVX512_H

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx512f"), always_inline)) static inline __m512
slm__cpu_exp_avx512(__m512 x)
{
    const __m512 lo = _mm512_set1_ps(-104.0f), hi = _mm512_set1_ps(89.0f);
    x = _mm512_min_ps(hi, _mm512_max_ps(lo, x));
    const __m512 n = _mm512_roundscale_ps(
        _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* 0x1.62e4p-1 and ln 2 - 0x1.62e4p-1; |n| <= 151 */
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f); /* 1/7! */
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}
#endif

#endif
