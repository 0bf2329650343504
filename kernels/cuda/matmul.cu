/* kernels/cuda/matmul.cu - matrix products through cuBLAS; CPU twin:
 * slm_cpu_matvec applied row by row on the weights converted to float.
 *
 * Row-major y(rows, out_dim) = x(rows, in_dim) . w(out_dim, in_dim)^T is, read
 * column-major, y^T(out_dim, rows) = w^T . x^T where cuBLAS sees w's memory as
 * an (in_dim, out_dim) column-major matrix with ld in_dim (so op T) and x's as
 * (in_dim, rows) with ld in_dim (op N): one cublasGemmEx with m = out_dim,
 * n = rows, k = in_dim, ldc = out_dim. Accumulation is CUBLAS_COMPUTE_32F
 * (float32, tensor cores allowed); alpha and beta are float. */
#include "kernels/cuda/util.cuh"

#include <cublas_v2.h>

extern "C" slm_status slm_cuda_blas_create(void **handle, void *stream)
{
    cublasHandle_t h = nullptr;
    cublasStatus_t st = cublasCreate(&h);
    if (st != CUBLAS_STATUS_SUCCESS)
        return slm_fail(SLM_ERR_INTERNAL, "cublasCreate: %s",
                        cublasGetStatusString(st));
    st = cublasSetStream(h, (cudaStream_t)stream);
    if (st != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(h);
        return slm_fail(SLM_ERR_INTERNAL, "cublasSetStream: %s",
                        cublasGetStatusString(st));
    }
    *handle = h;
    return SLM_OK;
}

extern "C" void slm_cuda_blas_destroy(void **handle)
{
    if (!handle || !*handle)
        return;
    cublasDestroy((cublasHandle_t)*handle);
    *handle = nullptr;
}

extern "C" slm_status slm_cuda_matmul(void *handle, void *y, int y_f32,
                                      const void *x, const void *w, size_t rows,
                                      size_t in_dim, size_t out_dim,
                                      slm_cuda_dtype dt)
{
    SLM_CHECK(slm_cuda::check_dtype(dt, "matmul"));
    if (!handle)
        return slm_fail(SLM_ERR_INVALID, "cuda matmul: no cuBLAS handle");
    if (rows == 0 || out_dim == 0)
        return SLM_OK;
    if (in_dim == 0)
        return slm_fail(SLM_ERR_INVALID, "cuda matmul: in_dim 0");
    if (rows > INT_MAX || in_dim > INT_MAX || out_dim > INT_MAX)
        return slm_fail(SLM_ERR_RANGE,
                        "cuda matmul: (%zu x %zu) . (%zu x %zu)^T exceeds "
                        "cuBLAS's int sizes",
                        rows, in_dim, out_dim, in_dim);
    const cudaDataType_t ab = dt == SLM_CUDA_F16 ? CUDA_R_16F : CUDA_R_16BF;
    const cudaDataType_t c = y_f32 ? CUDA_R_32F : ab;
    const float alpha = 1.0f, beta = 0.0f;
    cublasStatus_t st = cublasGemmEx(
        (cublasHandle_t)handle, CUBLAS_OP_T, CUBLAS_OP_N, (int)out_dim,
        (int)rows, (int)in_dim, &alpha, w, ab, (int)in_dim, x, ab, (int)in_dim,
        &beta, y, c, (int)out_dim, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
        return slm_fail(SLM_ERR_INTERNAL,
                        "cuda matmul (%zu x %zu) . (%zu x %zu)^T: %s", rows,
                        in_dim, out_dim, in_dim, cublasGetStatusString(st));
    return slm_cuda::launch_status("matmul");
}
