// Short rows solved in their own space: one thread block per row of n <= k / 2 entries
// factorizes an n x n system instead of a k x k one (the Woodbury identity), as the CPU
// backend does. Exact, like the fused kernel; O(n^2 k + n^3) instead of O(n k^2 + k^3).
//
// Implicit: with B = F^T F + lambda I = C C^T, the caller passes the whitened factors
// F C^-T (rows f_i), and with z_i = sqrt(weight_i) f_i the row's system becomes
// (I + Z^T Z) h = g, g = sum_i target_i f_i; the caller turns h into x_u = C^-T h. As
// g = Z^T q with q_i = target_i / sqrt(weight_i) (every entry with a target has a weight,
// alpha > 0), the push-through identity gives
//
//   h = Z^T S^-1 q,   S = I + Z Z^T (n x n),
//
// which in float32 is about 100 times more accurate than h = g - Z^T S^-1 Z g (that form
// subtracts nearly equal vectors when the weights are large). A row with a target but a
// zero weight (alpha = 0) takes the latter. Explicit (ALS-WR, weights 1, F unwhitened):
//
//   (lambda n I + F_u^T F_u) x = F_u^T r   =>   x = F_u^T S^-1 r,   S = lambda n I + F_u F_u^T.
//
// Implicit with the penalty scaled by each row's positive entries (woodbury_solve_whitened):
// no part is shared, so F comes in the eigenbasis of F^T F (eigenvalues eigen), where the
// row's F^T F + eigen_penalty * n_u I is diagonal, and each row whitens its own factor
// rows by d = (eigen + eigen_penalty * n_u)^-1/2 (as cg.cu's whitened CG does): the same
// system in h, and x = d h in that basis (the caller rotates it back). A row without a
// positive entry gets d = 0: the solution 0.
//
// out[blockIdx.x] gets h (implicit), x (explicit) or d h (whitened): the caller scatters
// the rows.
// Shared memory: the row's factors (max_length rows of lda_f >= k values), S (max_length
// rows of lda_s >= max_length), g (k), v (the right-hand side, then S^-1 v), s (square
// roots of the weights), the Cholesky's column buffer (ALS_CHOLESKY_PANEL * max_length;
// before the Cholesky, block_sum's scratch), flag; whitened, d (k) after it. gpu.py
// makes both strides odd, so that threads reading one column of different rows hit
// different banks.
#include "common.cuh"

namespace als {

template <bool whiten, typename T, typename I>
__device__ void woodbury_row(T* shared, const long long* rows, const I* indptr,
                             const I* indices, const T* weight, const T* target, const T* F,
                             T diag_scale, int implicit, const long long* counts,
                             const T* eigen, T eigen_penalty, int k, int max_length,
                             int lda_f, int lda_s, T* out) {
    T* Fu = shared;
    T* S = Fu + (long long)max_length * lda_f;
    T* g = S + (long long)max_length * lda_s;
    T* v = g + k;
    T* s = v + max_length;
    T* column = s + max_length;
    T* flag = column + ALS_CHOLESKY_PANEL * max_length;
    T* const d = whiten ? flag + 1 : nullptr;

    const long long row = rows[blockIdx.x];
    const long long start = indptr[row];
    const int n = (int)(indptr[row + 1] - start);  // 1 <= n <= max_length (gpu.py)
    const int tid = threadIdx.x, nthreads = blockDim.x;
    // The row's factor rows, value by value (lda_f is odd: rows are not 16-byte aligned)
    // but all of a thread's copies in flight at once (copy_async).
    copy_factor_rows<1>(Fu, lda_f, indices, start, F, n, k);
    if (whiten)
        for (int p = tid; p < k; p += nthreads)
            d[p] = whitening(eigen, eigen_penalty, counts[row], p);
    wait_copies();
    if (whiten) {  // each factor row times d
        __syncthreads();
        for (FlatWalk at(n, k); at.valid(); at.next()) Fu[at.row * lda_f + at.col] *= d[at.col];
    }
    T unweighted = 0;  // entries with a target but no weight
    for (int i = tid; i < n; i += nthreads) {
        const T w = weight[start + i], t = target[start + i];
        s[i] = implicit ? als::sqrt_(w) : T(1);  // weight = c - 1 >= 0
        v[i] = t;
        if (implicit && t != T(0) && !(w > T(0))) unweighted += 1;
    }
    // push: v = q (implicit) or r (explicit), the result Z^T S^-1 v; else the subtraction.
    // block_sum's barriers also make the loads above visible to every thread; its scratch
    // (blockDim.x / 32 = 4 values) is the column buffer, unused until the Cholesky.
    const bool push = block_sum(unweighted, column) == T(0);
    if (push && implicit) {
        for (int i = tid; i < n; i += nthreads) v[i] = v[i] != T(0) ? v[i] / s[i] : T(0);
    } else if (!push) {  // g = sum_i target_i f_i (v still holds the targets)
        for (int p = tid; p < k; p += nthreads) {
            T acc = 0;
            for (int i = 0; i < n; ++i) acc += v[i] * Fu[i * lda_f + p];
            g[p] = acc;
        }
        __syncthreads();
    }
    // S's lower triangle, and (subtraction form) the right-hand side Z g.
    const T diag = implicit ? T(1) : diag_scale * (T)n;
    for (FlatWalk at(n, n); at.valid(); at.next()) {
        if (at.col > at.row) continue;
        const T* a = Fu + at.row * lda_f;
        const T* b = Fu + at.col * lda_f;
        T dot = 0;
        for (int p = 0; p < k; ++p) dot += a[p] * b[p];
        S[at.row * lda_s + at.col] = s[at.row] * s[at.col] * dot + (at.row == at.col ? diag : T(0));
    }
    if (!push) {
        for (int i = tid; i < n; i += nthreads) {
            T dot = 0;
            for (int p = 0; p < k; ++p) dot += Fu[i * lda_f + p] * g[p];
            v[i] = s[i] * dot;
        }
    }
    __syncthreads();
    const bool ok = cholesky_solve(S, v, n, lda_s, flag, column);  // v = S^-1 v
    T* x = out + (long long)blockIdx.x * k;
    for (int p = tid; p < k; p += nthreads) {
        T acc = 0;  // (Z^T v)[p]
        for (int i = 0; i < n; ++i) acc += s[i] * v[i] * Fu[i * lda_f + p];
        const T result = push ? acc : g[p] - acc;
        x[p] = ok ? (whiten ? d[p] * result : result) : quiet_nan<T>();
    }
}

}  // namespace als

template <typename T, typename I>
__global__ void __launch_bounds__(ALS_BLOCK_THREADS)
woodbury_solve(const long long* rows, const I* indptr, const I* indices, const T* weight,
               const T* target, const T* F, T diag_scale, int implicit, int k,
               int max_length, int lda_f, int lda_s, T* out) {
    ALS_DYNAMIC_SHARED(T, shared);
    als::woodbury_row<false>(shared, rows, indptr, indices, weight, target, F, diag_scale,
                             implicit, (const long long*)nullptr, (const T*)nullptr, T(0), k,
                             max_length, lda_f, lda_s, out);
}

// Implicit rows with a scaled penalty, whitened one by one (see the top).
template <typename T, typename I>
__global__ void __launch_bounds__(ALS_BLOCK_THREADS)
woodbury_solve_whitened(const long long* rows, const I* indptr, const I* indices,
                        const T* weight, const T* target, const T* F,
                        const long long* counts, const T* eigen, T eigen_penalty, int k,
                        int max_length, int lda_f, int lda_s, T* out) {
    ALS_DYNAMIC_SHARED(T, shared);
    als::woodbury_row<true>(shared, rows, indptr, indices, weight, target, F, T(0), 1,
                            counts, eigen, eigen_penalty, k, max_length, lda_f, lda_s, out);
}
