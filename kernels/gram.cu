// Builds rows' systems in global memory, for rows too long for one block or factors too
// large for shared memory. A row is cut into segments; one thread block per segment loads
// the segment's factor rows in tiles and adds its share to the row's slot:
//
//   A[slot] += sum_{i in segment} weight_i f_i f_i^T   (lower triangle)
//   b[slot] += sum_{i in segment} target_i f_i
//
// The slots start as base (+ the explicit diagonal), set by the caller; segments of one row
// add with atomicAdd. cholesky.cu then solves the slots.
#include "common.cuh"

template <typename T, typename I>
__global__ void __launch_bounds__(ALS_BLOCK_THREADS)
build_systems(const long long* segment_slot, const long long* segment_start,
              const long long* segment_end, const I* indices, const T* weight,
              const T* target, const T* F, int k, int tile_rows, T* A, T* b) {
    ALS_DYNAMIC_SHARED(T, shared);
    T* tile = shared;
    T* w = tile + (long long)tile_rows * k;
    T* t = w + tile_rows;

    const long long slot = segment_slot[blockIdx.x];
    const long long start = segment_start[blockIdx.x], end = segment_end[blockIdx.x];
    T* As = A + slot * k * k;
    T* bs = b + slot * k;
    als::accumulate_entries<true>(As, k, bs, indices, weight, target, F, start, end, k,
                                  tile_rows, tile, w, t);
}

// The part of every row's implicit system that its entries leave unchanged, from the fixed
// factors' Gram matrix G = F^T F (k x k, float64, row-major; symmetric up to the rounding
// of its product):
//
//   base = (G + G^T) / 2 + regularization * I,   rounded to T
//
// exactly symmetric, as the CG kernels need (they read base by columns). One launch where
// the same CuPy expression took seven, each with its host overhead: on small data (the
// H200's ML-100K half-steps) that overhead was most of this phase.
template <typename T>
__global__ void __launch_bounds__(ALS_BLOCK_THREADS)
shared_base(const double* gram, double regularization, int k, T* base) {
    const int n = k * k;  // k <= ALS_MAX_FACTORS: n fits an int
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += gridDim.x * blockDim.x) {
        const int i = e / k, j = e - i * k;
        const double mean = (gram[e] + gram[j * k + i]) / 2;
        base[e] = (T)(i == j ? mean + regularization : mean);
    }
}
