// The stored-entry part of the training loss (DESIGN.md section 1):
//
//   total += sum_{(u,i) stored} weight_ui * s_ui^2 - 2 * target_ui * s_ui,   s_ui = x_u . y_i
//
// One thread per entry (grid-stride), a block reduction, one atomicAdd per block into a
// double accumulator.
#include "common.cuh"

template <typename T, typename I>
__global__ void __launch_bounds__(ALS_BLOCK_THREADS)
loss_terms(const I* row_of, const I* indices, const T* weight, const T* target, const T* X,
           const T* Y, long long nnz, int k, double* total) {
    __shared__ double scratch[ALS_BLOCK_THREADS / 32];
    double sum = 0;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < nnz;
         e += (long long)gridDim.x * blockDim.x) {
        const T* x = X + (long long)row_of[e] * k;
        const T* y = Y + (long long)indices[e] * k;
        T s = 0;
        for (int p = 0; p < k; ++p) s += x[p] * y[p];
        sum += (double)weight[e] * s * s - 2.0 * (double)target[e] * s;
    }
    sum = als::block_sum(sum, scratch);
    if (threadIdx.x == 0) atomicAdd(total, sum);
}
