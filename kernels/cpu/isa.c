/* kernels/cpu/isa.c - run-time choice of the vector instruction set; see
 * isa.h and slm_cpu_isa() in kernels.h. */
#include "kernels/cpu/isa.h"
#include "kernels/kernels.h"

/* -1 until detected. Written with relaxed atomics: two threads racing on the
 * first call compute the same answer, so either store is fine. */
static int detected_level = -1;
static int active_level = -1;

static slm__isa detect(void)
{
#if defined(__x86_64__) || defined(__i386__)
    /* __builtin_cpu_supports consults CPUID and, for AVX and AVX-512, whether
     * the OS saves the wider registers (XCR0), so a "yes" is safe to use. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return SLM__ISA_AVX512;
    /* F16C comes with every AVX2 CPU made; the 16-bit kernels use it. */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return SLM__ISA_AVX2;
#endif
    return SLM__ISA_SCALAR;
}

slm__isa slm__cpu_isa_detected(void)
{
    int level = __atomic_load_n(&detected_level, __ATOMIC_RELAXED);
    if (level < 0) {
        level = (int)detect();
        __atomic_store_n(&detected_level, level, __ATOMIC_RELAXED);
    }
    return (slm__isa)level;
}

slm__isa slm__cpu_isa_level(void)
{
    int level = __atomic_load_n(&active_level, __ATOMIC_RELAXED);
    if (level < 0) {
        level = (int)slm__cpu_isa_detected();
        __atomic_store_n(&active_level, level, __ATOMIC_RELAXED);
    }
    return (slm__isa)level;
}

slm__isa slm__cpu_isa_force(slm__isa level)
{
    slm__isa hw = slm__cpu_isa_detected();
    if (level > hw)
        level = hw;
    if (level < SLM__ISA_SCALAR)
        level = SLM__ISA_SCALAR;
    __atomic_store_n(&active_level, (int)level, __ATOMIC_RELAXED);
    return level;
}

const char *slm_cpu_isa(void)
{
    switch (slm__cpu_isa_level()) {
    case SLM__ISA_AVX512:
        return "avx512";
    case SLM__ISA_AVX2:
        return "avx2";
    case SLM__ISA_SCALAR:
        break;
    }
    return "scalar";
}
