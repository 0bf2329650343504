/*
 * bench/gpu/membw_cuda.c - the GPU's memory bandwidth as a device-to-device
 * cudaMemcpy sees it: a copy of N bytes reads N and writes N, so it moves 2N
 * bytes. The best of several timed copies (CUDA events) is the ceiling a
 * bandwidth-bound decode step is measured against. Prints one line,
 * "membw_cuda: device D: X GB/s (N MiB copies)", and exits 77 where there is
 * no GPU.
 *
 * usage: membw_cuda [MiB] (default 1024)
 */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(call)                                                            \
    do {                                                                       \
        cudaError_t e_ = (call);                                               \
        if (e_ != cudaSuccess) {                                               \
            fprintf(stderr, "membw_cuda: %s: %s\n", #call,                     \
                    cudaGetErrorString(e_));                                   \
            return 1;                                                          \
        }                                                                      \
    } while (0)

int main(int argc, char **argv)
{
    long mib = argc > 1 ? strtol(argv[1], NULL, 10) : 1024;
    if (mib < 1 || mib > 65536) {
        fprintf(stderr, "usage: membw_cuda [MiB in 1..65536]\n");
        return 2;
    }
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        fprintf(stderr, "membw_cuda: no CUDA device\n");
        return 77;
    }
    const size_t bytes = (size_t)mib << 20;
    void *a = NULL, *b = NULL;
    CHECK(cudaMalloc(&a, bytes));
    CHECK(cudaMalloc(&b, bytes));
    CHECK(cudaMemset(a, 1, bytes));
    CHECK(cudaMemset(b, 0, bytes));
    cudaEvent_t start, stop;
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventCreate(&stop));
    CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice)); /* warm up */
    float best_ms = 1e30f;
    for (int i = 0; i < 20; i++) {
        CHECK(cudaEventRecord(start, 0));
        CHECK(cudaMemcpy(i % 2 ? a : b, i % 2 ? b : a, bytes,
                         cudaMemcpyDeviceToDevice));
        CHECK(cudaEventRecord(stop, 0));
        CHECK(cudaEventSynchronize(stop));
        float ms = 0;
        CHECK(cudaEventElapsedTime(&ms, start, stop));
        if (ms < best_ms)
            best_ms = ms;
    }
    int dev = 0;
    CHECK(cudaGetDevice(&dev));
    printf("membw_cuda: device %d: %.1f GB/s (%ld MiB copies)\n", dev,
           2.0 * (double)bytes / (best_ms * 1e-3) / 1e9, mib);
    cudaFree(a);
    cudaFree(b);
    return 0;
}
