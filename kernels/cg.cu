// Conjugate-gradient solve (Takacs et al. 2011, as the implicit library's solver): one
// thread block per row runs `steps` CG iterations on A x = b from the row's previous
// factors in out (a warm start), never forming A:
//
//   A v = base v + diag_scale * n_u * v + sum_{i in N(u)} weight_i (f_i . v) f_i
//   b   = sum_{i in N(u)} target_i f_i
//
// base = F^T F + lambda I (implicit) or 0 (explicit, where diag_scale = lambda).
// Shared memory: x, r, p, Ap (k each), tile (tile_rows*k), w, t, s (tile_rows each),
// scratch (ALS_BLOCK_THREADS / 32).
#include "common.cuh"

namespace als {

// out = A v, and b (when non-null) = the right-hand side, streaming the row's entries.
// tile_loaded: the row fits one tile and the previous call left it in shared memory (so a
// short row's factor rows are gathered from global memory once per solve, not per step).
template <typename T, typename I>
__device__ void apply_system(const T* v, T* out, T* b, const I* indices, const T* weight,
                             const T* target, const T* F, const T* base, T diag,
                             long long start, long long end, int k, int tile_rows, T* tile,
                             T* w, T* t, T* s, bool tile_loaded) {
    const int tid = threadIdx.x, nthreads = blockDim.x;
    const int lane = tid % 32, warp = tid / 32, warps = nthreads / 32;
    for (int p = tid; p < k; p += nthreads) {
        T acc = diag * v[p];
        if (base != nullptr)  // base is symmetric: read its column p, coalesced
            for (int q = 0; q < k; ++q) acc += base[q * k + p] * v[q];
        out[p] = acc;
        if (b != nullptr) b[p] = 0;
    }
    for (long long first = start; first < end; first += tile_rows) {
        const int n = (int)(end - first < tile_rows ? end - first : tile_rows);
        __syncthreads();  // the previous tile is no longer read
        if (!tile_loaded) load_tile(tile, w, t, indices, weight, target, F, first, n, k);
        __syncthreads();
        // s_j = w_j (f_j . v): one warp per entry, lanes over the factors (contiguous
        // reads; one thread per entry would read tile[j * k + q] 32-way bank-conflicted)
        for (int j = warp; j < n; j += warps) {
            T dot = 0;
            for (int q = lane; q < k; q += 32) dot += tile[j * k + q] * v[q];
            for (int offset = 16; offset > 0; offset /= 2)
                dot += __shfl_xor_sync(0xffffffffu, dot, offset);
            if (lane == 0) s[j] = w[j] * dot;
        }
        __syncthreads();
        for (int p = tid; p < k; p += nthreads) {
            T acc = 0, rhs = 0;
            for (int j = 0; j < n; ++j) {
                acc += s[j] * tile[j * k + p];
                rhs += t[j] * tile[j * k + p];
            }
            out[p] += acc;
            if (b != nullptr) b[p] += rhs;
        }
    }
    __syncthreads();
}

template <typename T>
__device__ T dot_block(const T* a, const T* b, int k, T* scratch) {
    T part = 0;
    for (int p = threadIdx.x; p < k; p += blockDim.x) part += a[p] * b[p];
    return block_sum(part, scratch);
}

}  // namespace als

template <typename T, typename I>
__global__ void __launch_bounds__(ALS_BLOCK_THREADS)
cg_solve(const long long* rows, const I* indptr, const I* indices, const T* weight,
         const T* target, const T* F, const T* base, T diag_scale, int k, int steps,
         int tile_rows, T* out) {
    ALS_DYNAMIC_SHARED(T, shared);
    T* x = shared;
    T* r = x + k;
    T* p = r + k;
    T* Ap = p + k;
    T* tile = Ap + k;
    T* w = tile + (long long)tile_rows * k;
    T* t = w + tile_rows;
    T* s = t + tile_rows;
    T* scratch = s + tile_rows;

    const long long row = rows[blockIdx.x];
    const long long start = indptr[row], end = indptr[row + 1];
    T* xo = out + row * k;
    const int tid = threadIdx.x, nthreads = blockDim.x;
    if (als::solved_if_empty(xo, k, start, end)) return;
    const T diag = diag_scale * (T)(end - start);
    for (int q = tid; q < k; q += nthreads) x[q] = xo[q];
    __syncthreads();
    // r = b - A x  (b accumulated into r, A x into Ap)
    als::apply_system(x, Ap, r, indices, weight, target, F, base, diag, start, end, k,
                      tile_rows, tile, w, t, s, false);
    const bool one_tile = end - start <= tile_rows;  // then the tile stays for every step
    for (int q = tid; q < k; q += nthreads) {
        r[q] -= Ap[q];
        p[q] = r[q];
    }
    __syncthreads();
    T rs = als::dot_block(r, r, k, scratch);
    for (int step = 0; step < steps; ++step) {
        als::apply_system(p, Ap, (T*)nullptr, indices, weight, target, F, base, diag, start,
                          end, k, tile_rows, tile, w, t, s, one_tile);
        const T pAp = als::dot_block(p, Ap, k, scratch);
        const T alpha = pAp > 0 ? rs / pAp : T(0);
        for (int q = tid; q < k; q += nthreads) {
            x[q] += alpha * p[q];
            r[q] -= alpha * Ap[q];
        }
        __syncthreads();
        const T rs_new = als::dot_block(r, r, k, scratch);
        const T beta = rs > 0 ? rs_new / rs : T(0);
        for (int q = tid; q < k; q += nthreads) p[q] = r[q] + beta * p[q];
        __syncthreads();
        rs = rs_new;
    }
    for (int q = tid; q < k; q += nthreads) xo[q] = x[q];
}
