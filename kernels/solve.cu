// Fused build + solve: one thread block per row builds the row's k x k system in shared
// memory from its CSR slice and solves it there, so no n x k x k array touches global
// memory. For factors up to what the opt-in shared memory holds (gpu.py checks before
// launching); longer rows and larger k take gram.cu + cholesky.cu.
//
//   A = base + diag(diag_scale * counts[u]) + sum_{i in N(u)} weight_i f_i f_i^T
//   b = sum_{i in N(u)} target_i f_i,      x_u = A^-1 b
//
// base = F^T F + lambda I (implicit) or 0 (explicit, where diag_scale = lambda and counts
// are the rows' entries; implicit with a scaled penalty: their positive entries).
// Shared memory: A (k rows of lda >= k values; gpu.py makes lda odd, so that column
// accesses hit 32 different banks), b (k), tile (tile_rows*k, tile_rows >= ALS_CHOLESKY_PANEL:
// the Cholesky's column buffer once the system is built), w and t (tile_rows each), flag.
#include "common.cuh"

template <typename T, typename I>
__global__ void __launch_bounds__(ALS_FUSED_THREADS, ALS_FUSED_MIN_BLOCKS)
fused_solve(const long long* rows, const I* indptr, const I* indices, const T* weight,
            const T* target, const T* F, const T* base, T diag_scale,
            const long long* counts, int k, int lda, int tile_rows, T* out) {
    ALS_DYNAMIC_SHARED(T, shared);
    T* A = shared;
    T* b = A + (long long)k * lda;
    T* tile = b + k;
    T* w = tile + (long long)tile_rows * k;
    T* t = w + tile_rows;
    T* flag = t + tile_rows;

    const long long row = rows[blockIdx.x];
    const long long start = indptr[row], end = indptr[row + 1];
    T* x = out + row * k;
    const int tid = threadIdx.x, nthreads = blockDim.x;
    if (als::solved_if_empty(x, k, start, end)) return;
    const T diag = diag_scale * (T)counts[row];
    // The lower triangle only: nothing reads the upper one before the Cholesky writes L^T
    // there (the emulation's NaN-filled shared memory would show it). Below the diagonal
    // by copy_async, so that a thread's k^2 / 256 reads of base are in flight together
    // (a load-then-store loop waited on each); each diagonal entry, plus diag, by the
    // thread that reaches it.
    for (als::FlatWalk at(k, k); at.valid(); at.next()) {
        if (at.col < at.row)
            als::copy_async<T, 1>(A + at.row * lda + at.col, base + at.row * k + at.col);
        else if (at.col == at.row)
            A[at.row * lda + at.col] = base[at.row * k + at.col] + diag;
    }
    for (int p = tid; p < k; p += nthreads) b[p] = 0;
    als::wait_copies();
    __syncthreads();
    als::accumulate_entries<false>(A, lda, b, indices, weight, target, F, start, end, k,
                                   tile_rows, tile, w, t);
    const bool ok = als::cholesky_solve(A, b, k, lda, flag, tile);  // tile: free now
    for (int p = tid; p < k; p += nthreads) x[p] = ok ? b[p] : als::quiet_nan<T>();
}
