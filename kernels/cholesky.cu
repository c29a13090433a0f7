// Batched Cholesky factorization and the two triangular solves, one thread block per
// system, the matrix in global memory (for factors too large for shared memory; the fused
// kernel in solve.cu does the same in shared memory). Solves slot s's system in place and
// writes x to out[slot_row[s]], or NaN when the matrix is not positive definite.
#include "common.cuh"

template <typename T>
__global__ void __launch_bounds__(ALS_BLOCK_THREADS)
cholesky_solve_batched(T* A, T* b, const long long* slot_row, int k, T* out) {
    __shared__ T flag;
    __shared__ T column[ALS_CHOLESKY_PANEL * ALS_MAX_FACTORS];
    const long long slot = blockIdx.x;
    T* As = A + slot * k * k;
    T* bs = b + slot * k;
    const bool ok = als::cholesky_solve(As, bs, k, k, &flag, column);
    T* x = out + slot_row[slot] * k;
    for (int p = threadIdx.x; p < k; p += blockDim.x) x[p] = ok ? bs[p] : als::quiet_nan<T>();
}
