// The stored-entry part of the training loss (DESIGN.md section 1):
//
//   total += sum_{(u,i) stored} weight_ui * s_ui^2 - 2 * target_ui * s_ui,   s_ui = x_u . y_i
//
// One thread per entry (grid-stride; its row found by binary search in indptr), a block
// reduction, one atomicAdd per block into a double accumulator.
#include "common.cuh"

template <typename T, typename I>
__global__ void __launch_bounds__(ALS_BLOCK_THREADS)
loss_terms(const I* indptr, long long n_rows, const I* indices, const T* weight,
           const T* target, const T* X, const T* Y, long long nnz, int k, double* total) {
    __shared__ double scratch[ALS_BLOCK_THREADS / 32];
    double sum = 0;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < nnz;
         e += (long long)gridDim.x * blockDim.x) {
        // The entry's row: the last u with indptr[u] <= e (binary search).
        long long lo = 0, hi = n_rows;
        while (hi - lo > 1) {
            const long long mid = (lo + hi) / 2;
            if ((long long)indptr[mid] <= e) lo = mid; else hi = mid;
        }
        const T* x = X + lo * k;
        const T* y = Y + (long long)indices[e] * k;
        T s = 0;
        for (int p = 0; p < k; ++p) s += x[p] * y[p];
        sum += (double)weight[e] * s * s - 2.0 * (double)target[e] * s;
    }
    sum = als::block_sum(sum, scratch);
    if (threadIdx.x == 0) atomicAdd(total, sum);
}
