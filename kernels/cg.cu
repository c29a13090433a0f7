// Conjugate-gradient solve (Takacs et al. 2011, as the implicit library's solver): one
// thread block per row runs `steps` CG iterations on A x = b from the row's previous
// factors in out (a warm start), never forming A:
//
//   A v = base v + (diag_constant + diag_scale * n_u) v
//         + sum_{i in N(u)} weight_i (f_i . v) f_i
//   b   = sum_{i in N(u)} target_i f_i
//
// n_u = counts[u]: the row's entries (explicit), or its positive entries (implicit with a
// scaled penalty). base = F^T F + lambda I (implicit CG, diag_constant = diag_scale = 0),
// F^T F (the scaled penalty, diag_scale = lambda) or no base (use_base = 0: base's k^2
// products skipped at every step): explicit feedback, where diag_scale = lambda; and
// preconditioned CG, on factors whitened by the shared part
// (F C^-T, F^T F + lambda I = C C^T), where the shared part becomes I: diag_constant = 1.
//
// Preconditioned CG with the scaled penalty (cg_solve_whitened; the long rows' kernels
// with whiten = 1): the rows share no part to whiten by, so F and x come in the
// eigenbasis of F^T F (eigenvalues eigen), where a row's F^T F + lambda n_u I is
// diagonal, and each row whitens itself: the steps are taken on h = x / d,
// d = (eigen + eigen_penalty * n_u)^-1/2, whose system is I + d (sum weight_i f_i f_i^T) d
// (diag_constant = 1, no base), and x = d h is written back. A row without a positive
// entry (n_u = 0) gets d = 0, h = 0: the solution 0.
// Shared memory: x, r, p, Ap (k each), whitened also d and d v (k each), tile
// (tile_rows*k), w, t, s (tile_rows each), scratch (ALS_BLOCK_THREADS / 32).
//
// A row longer than the backend's split_length would hold one block for all of its
// entries at every step (a top item of a power-law set has hundreds of thousands, and its
// block ran for most of the half-step). Such rows take the same iterations spread over
// many blocks, a launch pair per step: cg_segment_products, one block per segment of the
// row, adds the segment's share of the entries' part of A v (first, of the residual
// b - A x) to the row's slot with atomicAdd; then cg_long_step, one block per row, adds
// the shared part and takes the step (cg_long_start sets up the residual). Their state
// (r, p, r.r) stays in global memory between launches. O(n k) per step, as in cg_solve,
// where building the row's A would take O(n k^2). Whitened rows (whiten = 1) keep d p
// apart for the segments' products (PD), which are then d (sum weight_i f_i f_i^T) d p.
#include "common.cuh"

namespace als {

// Element p of (base + diag I) v: the part of A v that the row's entries leave out (base
// null: none but the diagonal). base is symmetric: its column p is read, coalesced.
template <typename T>
__device__ T shared_part(const T* v, const T* base, T diag, int k, int p) {
    T acc = diag * v[p];
    if (base != nullptr)
        for (int q = 0; q < k; ++q) acc += base[q * k + p] * v[q];
    return acc;
}

// The shared memory through which apply_system streams a row's entries, carved from
// `at`: up to `capacity` gathered factor rows (k values each), then each row's weight w,
// target t and s = w (f . v). end() is the first value after it.
template <typename T>
struct EntryTile {
    int capacity;
    T* rows;
    T* w;
    T* t;
    T* s;
    __device__ EntryTile(T* at, int k, int tile_rows)
        : capacity(tile_rows), rows(at), w(at + (long long)tile_rows * k), t(w + tile_rows),
          s(t + tile_rows) {}
    __device__ T* end() const { return s + capacity; }
};

// out = A v, streaming the row's entries; or, with_residual, the residual b - A v in two
// parts: out = the shared part's product alone, and residual = the entries' part,
// sum (t - w (f . v)) f (the caller takes residual - out). Each entry's t - w (f . v) is
// taken before it is summed, as the CPU backend takes it: near the solution b and A v
// agree in most of their digits, and b less A v lost the rest in float32 with large
// confidences (two PCG steps, entries of c = 4e6: 1.6e-2 of the solution's scale off the
// float64 steps, against 2e-7 this way).
// tile_loaded: the row fits one tile and the previous call left it in shared memory (so a
// short row's factor rows are gathered from global memory once per solve, not per step).
// d (non-null: a whitened row, see above; 2 k values, d then room for d v): the entries'
// part is d (sum w f f^T) (d v), and the residual's d (sum (t - w (f . d v)) f).
template <bool with_residual, typename T, typename I>
__device__ void apply_system(const T* v, T* out, T* residual, const I* indices,
                             const T* weight, const T* target, const T* F, const T* base,
                             T diag, long long start, long long end, int k,
                             const EntryTile<T>& tile, bool tile_loaded, T* d = nullptr) {
    const int tid = threadIdx.x, nthreads = blockDim.x;
    const int lane = tid % 32, warp = tid / 32, warps = nthreads / 32;
    T* const sums = with_residual ? residual : out;  // what the entries add to
    for (int p = tid; p < k; p += nthreads) {
        out[p] = shared_part(v, base, diag, k, p);
        if (with_residual) residual[p] = 0;
        if (d != nullptr) d[k + p] = d[p] * v[p];  // (read after the tile loop's barrier)
    }
    const T* u = d != nullptr ? d + k : v;  // the vector the entries multiply
    T* const rows = tile.rows;
    for (long long first = start; first < end; first += tile.capacity) {
        const int n = (int)(end - first < tile.capacity ? end - first : tile.capacity);
        __syncthreads();  // the previous tile is no longer read
        if (!tile_loaded)
            load_tile(rows, tile.w, tile.t, indices, weight, target, F, first, n, k);
        __syncthreads();
        // s_j = w_j (f_j . v), or t_j - w_j (f_j . v) for the residual: one warp per
        // entry, lanes over the factors (contiguous reads; one thread per entry would read
        // rows[j * k + q] 32-way bank-conflicted)
        for (int j = warp; j < n; j += warps) {
            T dot = 0;
            for (int q = lane; q < k; q += 32) dot += rows[j * k + q] * u[q];
            for (int offset = 16; offset > 0; offset /= 2)
                dot += __shfl_xor_sync(0xffffffffu, dot, offset);
            if (lane == 0)
                tile.s[j] = with_residual ? tile.t[j] - tile.w[j] * dot : tile.w[j] * dot;
        }
        __syncthreads();
        for (int p = tid; p < k; p += nthreads) {
            T acc = 0;
            for (int j = 0; j < n; ++j) acc += tile.s[j] * rows[j * k + p];
            sums[p] += (d != nullptr ? d[p] : T(1)) * acc;
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

// One row's iterations, for cg_solve and cg_solve_whitened (whiten, a constant of each,
// so that cg_solve compiles without the whitening's code and registers). shared: the
// block's shared memory.
template <bool whiten, typename T, typename I>
__device__ void cg_row(T* shared, const long long* rows, const I* indptr, const I* indices,
                       const T* weight, const T* target, const T* F, const T* base,
                       int use_base, T diag_constant, T diag_scale, const long long* counts,
                       const T* eigen, T eigen_penalty, int k, int steps, int tile_rows,
                       T* out) {
    T* x = shared;
    T* r = x + k;
    T* p = r + k;
    T* Ap = p + k;
    T* const d = whiten ? Ap + k : nullptr;  // d, then d v
    const EntryTile<T> tile(Ap + (whiten ? 3 : 1) * k, k, tile_rows);
    T* scratch = tile.end();

    const long long row = rows[blockIdx.x];
    const long long start = indptr[row], end = indptr[row + 1];
    T* xo = out + row * k;
    const int tid = threadIdx.x, nthreads = blockDim.x;
    if (solved_if_empty(xo, k, start, end)) return;
    const T diag = diag_constant + diag_scale * (T)counts[row];
    const T* shared_part = use_base ? base : nullptr;
    for (int q = tid; q < k; q += nthreads) {
        if (whiten) {
            d[q] = whitening(eigen, eigen_penalty, counts[row], q);
            x[q] = d[q] > 0 ? xo[q] / d[q] : T(0);  // h = x / d
        } else {
            x[q] = xo[q];
        }
    }
    __syncthreads();
    // r = b - A x  (the entries' part into r, the shared part's into Ap)
    apply_system<true>(x, Ap, r, indices, weight, target, F, shared_part, diag, start, end,
                       k, tile, false, d);
    const bool one_tile = end - start <= tile_rows;  // then the tile stays for every step
    for (int q = tid; q < k; q += nthreads) r[q] -= Ap[q];
    cg_iterations(x, r, p, Ap, k, steps, scratch, [&](const T* v, T* result) {
        apply_system<false>(v, result, (T*)nullptr, indices, weight, target, F, shared_part,
                            diag, start, end, k, tile, one_tile, d);
    });
    for (int q = tid; q < k; q += nthreads) xo[q] = whiten ? d[q] * x[q] : x[q];
}

}  // namespace als

template <typename T, typename I>
__global__ void __launch_bounds__(ALS_BLOCK_THREADS)
cg_solve(const long long* rows, const I* indptr, const I* indices, const T* weight,
         const T* target, const T* F, const T* base, int use_base, T diag_constant,
         T diag_scale, const long long* counts, int k, int steps, int tile_rows, T* out) {
    ALS_DYNAMIC_SHARED(T, shared);
    als::cg_row<false>(shared, rows, indptr, indices, weight, target, F, base, use_base,
                       diag_constant, diag_scale, counts, (const T*)nullptr, T(0), k, steps,
                       tile_rows, out);
}

// Preconditioned CG with the scaled penalty: cg_solve's iterations on rows whitened one
// by one (see the top), F and out in the eigenbasis of F^T F.
template <typename T, typename I>
__global__ void __launch_bounds__(ALS_BLOCK_THREADS)
cg_solve_whitened(const long long* rows, const I* indptr, const I* indices, const T* weight,
                  const T* target, const T* F, const long long* counts, const T* eigen,
                  T eigen_penalty, int k, int steps, int tile_rows, T* out) {
    ALS_DYNAMIC_SHARED(T, shared);
    als::cg_row<true>(shared, rows, indptr, indices, weight, target, F, (const T*)nullptr,
                      0, T(1), T(0), counts, eigen, eigen_penalty, k, steps, tile_rows, out);
}

// The long rows' entries' part of A v, for the slots' vectors V (slots x k): one block
// per segment adds sum_{i in segment} weight_i (f_i . v) f_i to products[slot]; or, with
// residual = 1, the entries' part of the residual b - A v, sum (target_i - weight_i
// (f_i . v)) f_i (as apply_system takes it), to residuals[slot] (each zeroed by the
// caller; segments of a row add with atomicAdd). Shared memory: v, the segment's sums
// (2 k), room for the shared part's (k; 0 here), tile (tile_rows * k), w, t, s
// (tile_rows each).
template <typename T, typename I>
__global__ void __launch_bounds__(ALS_BLOCK_THREADS)
cg_segment_products(const long long* segment_slot, const long long* segment_start,
                    const long long* segment_end, const I* indices, const T* weight,
                    const T* target, const T* F, const T* V, int k, int tile_rows,
                    int residual, T* products, T* residuals) {
    ALS_DYNAMIC_SHARED(T, shared);
    T* v = shared;
    T* part = v + k;
    T* rest = part + k;
    const als::EntryTile<T> tile(rest + k, k, tile_rows);

    const long long slot = segment_slot[blockIdx.x];
    const int tid = threadIdx.x, nthreads = blockDim.x;
    for (int q = tid; q < k; q += nthreads) v[q] = V[slot * k + q];
    __syncthreads();
    // with the residual, its entries' part in rest (part: the shared part's, 0: no base)
    if (residual)
        als::apply_system<true>(v, part, rest, indices, weight, target, F, (const T*)nullptr,
                                T(0), segment_start[blockIdx.x], segment_end[blockIdx.x], k,
                                tile, false);
    else
        als::apply_system<false>(v, part, (T*)nullptr, indices, weight, target, F,
                                 (const T*)nullptr, T(0), segment_start[blockIdx.x],
                                 segment_end[blockIdx.x], k, tile, false);
    T* const sums = residual ? residuals : products;
    const T* const mine = residual ? rest : part;
    for (int q = tid; q < k; q += nthreads) atomicAdd(sums + slot * k + q, mine[q]);
}

// The start of the long rows' iterations, one block per slot, from x = out[slot_row]:
// r = b - A x (residuals[slot], the entries' part, made from x by cg_segment_products,
// less the shared part's product), p = r, rs = r.r. Whitened rows (whiten = 1):
// residuals were made from x itself, and the steps are taken on h = x / d
// (r = d residuals - h), with PD = d p.
// Shared memory: x (k), scratch (ALS_BLOCK_THREADS / 32).
template <typename T>
__global__ void __launch_bounds__(ALS_BLOCK_THREADS)
cg_long_start(const long long* slot_row, const long long* slot_count, const T* residuals,
              const T* base, int use_base, T diag_constant, T diag_scale, const T* eigen,
              int whiten, T eigen_penalty, int k, const T* out, T* R, T* P, T* PD, T* RS) {
    ALS_DYNAMIC_SHARED(T, shared);
    T* x = shared;
    T* scratch = x + k;

    const long long slot = blockIdx.x, at = slot * k;
    const T* xo = out + slot_row[slot] * k;
    const long long count = slot_count[slot];
    const T diag = diag_constant + diag_scale * (T)count;
    const int tid = threadIdx.x, nthreads = blockDim.x;
    for (int q = tid; q < k; q += nthreads) {
        const T d = whiten ? als::whitening(eigen, eigen_penalty, count, q) : T(1);
        x[q] = d > 0 ? xo[q] / d : T(0);
    }
    __syncthreads();
    T part = 0;
    for (int q = tid; q < k; q += nthreads) {
        const T d = whiten ? als::whitening(eigen, eigen_penalty, count, q) : T(1);
        const T r = d * residuals[at + q] -
                    als::shared_part(x, use_base ? base : (const T*)nullptr, diag, k, q);
        R[at + q] = r;
        P[at + q] = r;
        if (whiten) PD[at + q] = d * r;
        part += r * r;
    }
    const T rs = als::block_sum(part, scratch);
    if (tid == 0) RS[slot] = rs;
}

// One CG step of the long rows, one block per slot, as cg_iterations takes it: A p from
// products[slot] (the entries' part of A p) and the shared part; then x (in out[slot_row]),
// r, p and rs. Whitened rows (whiten = 1): products were made from PD = d p, and
// A p = d products + p; x = d h moves by d p, and PD is made again.
// Shared memory: p, Ap (k each), scratch (ALS_BLOCK_THREADS / 32).
template <typename T>
__global__ void __launch_bounds__(ALS_BLOCK_THREADS)
cg_long_step(const long long* slot_row, const long long* slot_count, const T* products,
             const T* base, int use_base, T diag_constant, T diag_scale, const T* eigen,
             int whiten, T eigen_penalty, int k, T* out, T* R, T* P, T* PD, T* RS) {
    ALS_DYNAMIC_SHARED(T, shared);
    T* p = shared;
    T* Ap = p + k;
    T* scratch = Ap + k;

    const long long slot = blockIdx.x, at = slot * k;
    T* xo = out + slot_row[slot] * k;
    const long long count = slot_count[slot];
    const T diag = diag_constant + diag_scale * (T)count;
    const int tid = threadIdx.x, nthreads = blockDim.x;
    for (int q = tid; q < k; q += nthreads) p[q] = P[at + q];
    __syncthreads();
    for (int q = tid; q < k; q += nthreads) {
        const T d = whiten ? als::whitening(eigen, eigen_penalty, count, q) : T(1);
        Ap[q] = d * products[at + q] +
                als::shared_part(p, use_base ? base : (const T*)nullptr, diag, k, q);
    }
    __syncthreads();
    const T rs = RS[slot];
    const T pAp = als::dot_block(p, Ap, k, scratch);
    const T alpha = pAp > 0 ? rs / pAp : T(0);
    T part = 0;
    for (int q = tid; q < k; q += nthreads) {
        const T d = whiten ? als::whitening(eigen, eigen_penalty, count, q) : T(1);
        xo[q] += alpha * d * p[q];
        const T r = R[at + q] - alpha * Ap[q];
        R[at + q] = r;
        part += r * r;
    }
    const T rs_new = als::block_sum(part, scratch);
    const T beta = rs > 0 ? rs_new / rs : T(0);
    for (int q = tid; q < k; q += nthreads) {
        const T next = R[at + q] + beta * p[q];
        P[at + q] = next;
        if (whiten)
            PD[at + q] = als::whitening(eigen, eigen_penalty, count, q) * next;
    }
    if (tid == 0) RS[slot] = rs_new;
}
