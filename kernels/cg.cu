// Conjugate-gradient solve (Takacs et al. 2011, as the implicit library's solver): one
// thread block per row runs `steps` CG iterations on A x = b from the row's previous
// factors in out (a warm start), never forming A:
//
//   A v = base v + (diag_constant + diag_scale * n_u) v
//         + sum_{i in N(u)} weight_i (f_i . v) f_i
//   b   = sum_{i in N(u)} target_i f_i
//
// base = F^T F + lambda I (implicit CG, diag_constant = diag_scale = 0) or no base
// (use_base = 0: base's k^2 products skipped at every step): explicit feedback, where
// diag_scale = lambda; and preconditioned CG, on factors whitened by the shared part
// (F C^-T, F^T F + lambda I = C C^T), where the shared part becomes I: diag_constant = 1.
// Shared memory: x, r, p, Ap (k each), tile (tile_rows*k), w, t, s (tile_rows each),
// scratch (ALS_BLOCK_THREADS / 32).
//
// A row longer than the backend's split_length would hold one block for all of its
// entries at every step (a top item of a power-law set has hundreds of thousands, and its
// block ran for most of the half-step): its A is built instead by gram.cu, spread over
// many blocks, and cg_dense_batched runs the same iterations on it.
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

// `steps` CG iterations from x, whose residual b - A x is in r, leaving the result in x
// (p, Ap: k values of scratch space each). apply(v, out) sets out = A v for the whole
// block and ends with a block barrier.
template <typename T, typename Apply>
__device__ void cg_iterations(T* x, T* r, T* p, T* Ap, int k, int steps, T* scratch,
                              Apply apply) {
    const int tid = threadIdx.x, nthreads = blockDim.x;
    for (int q = tid; q < k; q += nthreads) p[q] = r[q];
    __syncthreads();
    T rs = dot_block(r, r, k, scratch);
    for (int step = 0; step < steps; ++step) {
        apply(p, Ap);
        const T pAp = dot_block(p, Ap, k, scratch);
        const T alpha = pAp > 0 ? rs / pAp : T(0);
        for (int q = tid; q < k; q += nthreads) {
            x[q] += alpha * p[q];
            r[q] -= alpha * Ap[q];
        }
        __syncthreads();
        const T rs_new = dot_block(r, r, k, scratch);
        const T beta = rs > 0 ? rs_new / rs : T(0);
        for (int q = tid; q < k; q += nthreads) p[q] = r[q] + beta * p[q];
        __syncthreads();
        rs = rs_new;
    }
}

// out = A v for a symmetric k x k matrix A in global memory, both triangles stored: thread
// i reads column i (A[j][i] = A[i][j]), contiguous across the warp for each j.
template <typename T>
__device__ void apply_dense(const T* A, const T* v, T* out, int k) {
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
        T acc = 0;
        for (int j = 0; j < k; ++j) acc += A[(long long)j * k + i] * v[j];
        out[i] = acc;
    }
    __syncthreads();
}

}  // namespace als

template <typename T, typename I>
__global__ void __launch_bounds__(ALS_BLOCK_THREADS)
cg_solve(const long long* rows, const I* indptr, const I* indices, const T* weight,
         const T* target, const T* F, const T* base, int use_base, T diag_constant,
         T diag_scale, int k, int steps, int tile_rows, T* out) {
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
    const T diag = diag_constant + diag_scale * (T)(end - start);
    const T* shared_part = use_base ? base : nullptr;
    for (int q = tid; q < k; q += nthreads) x[q] = xo[q];
    __syncthreads();
    // r = b - A x  (b accumulated into r, A x into Ap)
    als::apply_system(x, Ap, r, indices, weight, target, F, shared_part, diag, start, end,
                      k, tile_rows, tile, w, t, s, false);
    const bool one_tile = end - start <= tile_rows;  // then the tile stays for every step
    for (int q = tid; q < k; q += nthreads) r[q] -= Ap[q];
    als::cg_iterations(x, r, p, Ap, k, steps, scratch, [&](const T* v, T* result) {
        als::apply_system(v, result, (T*)nullptr, indices, weight, target, F, shared_part,
                          diag, start, end, k, tile_rows, tile, w, t, s, one_tile);
    });
    for (int q = tid; q < k; q += nthreads) xo[q] = x[q];
}

// The iterations of cg_solve for the rows whose systems gram.cu built (A: one k x k slot
// per block, its lower triangle and the base; b: the right-hand sides), from and into
// out[slot_row[slot]]. The upper triangle is mirrored from the lower one first, so that
// each product reads A by columns. Shared memory: x, r, p, Ap (k each), scratch
// (ALS_BLOCK_THREADS / 32).
template <typename T>
__global__ void __launch_bounds__(ALS_BLOCK_THREADS)
cg_dense_batched(T* A, const T* b, const long long* slot_row, int k, int steps, T* out) {
    ALS_DYNAMIC_SHARED(T, shared);
    T* x = shared;
    T* r = x + k;
    T* p = r + k;
    T* Ap = p + k;
    T* scratch = Ap + k;

    T* a = A + (long long)blockIdx.x * k * k;
    const T* rhs = b + (long long)blockIdx.x * k;
    T* xo = out + slot_row[blockIdx.x] * k;
    const int tid = threadIdx.x, nthreads = blockDim.x;
    for (als::FlatWalk at(k, k); at.valid(); at.next())
        if (at.col > at.row) a[at.row * k + at.col] = a[at.col * k + at.row];
    for (int q = tid; q < k; q += nthreads) x[q] = xo[q];
    __syncthreads();  // the mirror (global memory) and x are visible to the whole block
    als::apply_dense(a, x, Ap, k);
    for (int q = tid; q < k; q += nthreads) r[q] = rhs[q] - Ap[q];
    als::cg_iterations(x, r, p, Ap, k, steps, scratch, [&](const T* v, T* result) {
        als::apply_dense(a, v, result, k);
    });
    for (int q = tid; q < k; q += nthreads) xo[q] = x[q];
}
