// Shared definitions of the gpu-als kernels.
//
// Every kernel file includes this header and nothing else, so that it compiles unchanged
// with NVRTC (through CuPy's RawModule) and, for the tests, with g++ as host code under
// tests/cuda_host.h, which defines GPU_ALS_HOST_EMULATION.
//
// Notation (DESIGN.md section 1): a "row" is a user (or an item, on the item half-step),
// F the fixed side's factors (n_cols x k, row-major), weight = c - 1 (implicit) or 1
// (explicit), target = c * p (implicit) or r (explicit).
#pragma once

// Threads per block of every kernel (the fused one: this or ALS_FUSED_THREADS);
// gpu_als/backends/gpu.py reads the same value.
#define ALS_BLOCK_THREADS 128
// Most threads per block of the fused kernel (solve.cu), whose code takes any multiple of
// 32: gpu.py launches it with ALS_BLOCK_THREADS or with this many, whichever keeps more
// warps resident per multiprocessor. At k = 128 in float32 shared memory holds three
// blocks on an H100/H200 whatever their threads: 12 warps of 128-thread blocks, 24 of
// 256-thread ones, to hide the latency of the shared-memory loads and barriers.
#define ALS_FUSED_THREADS 256
// Blocks of ALS_FUSED_THREADS threads that the fused kernel's registers leave room for on
// one multiprocessor (__launch_bounds__'s minimum): ptxas then keeps it to 65536 / (3 *
// 256) = 85 registers a thread (68 to 80 in the builds checked; float32 spills nothing,
// float64 4 to 12 bytes), which is also room for 6 blocks of 128. Left to itself, ptxas
// picked 64 to 128 registers and, in some builds, spilled up to 36 bytes. Registers bound
// the resident blocks only at small k: at k = 64 in float32 shared memory allows 8 blocks
// on an H100/H200 and 6 on an A100, the 95 registers ptxas had picked for sm_90 allowed 5.
#define ALS_FUSED_MIN_BLOCKS 3
// Largest number of factors (gpu_als/backends/gpu.py's MAX_FACTORS; a test checks).
#define ALS_MAX_FACTORS 1024
// 1: copy_async (the tiles, the Woodbury path's rows, the fused kernel's base) is cp.async
// on sm_80 and later; 0: plain copies, as before sm_80 (GPUBackend(async_copies=False)
// compiles with 0, for comparison).
#ifndef ALS_ASYNC_COPIES
#define ALS_ASYNC_COPIES 1
#endif
// Columns per panel of the blocked Cholesky; its column buffer holds this many columns
// (gpu_als/backends/gpu.py's CHOLESKY_PANEL; a test checks).
#define ALS_CHOLESKY_PANEL 4

// Dynamic shared memory: `ALS_DYNAMIC_SHARED(T, name)` declares `T* name` pointing at the
// block's dynamically sized shared memory (the launch's shared_mem bytes).
#ifdef GPU_ALS_HOST_EMULATION
#define ALS_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(gpu_als_emu::dynamic_shared())
#else
#define ALS_DYNAMIC_SHARED(T, name)                               \
    extern __shared__ __align__(16) unsigned char name##_bytes[]; \
    T* name = reinterpret_cast<T*>(name##_bytes)
#endif

namespace als {

template <typename T> __device__ __forceinline__ T quiet_nan();
template <> __device__ __forceinline__ float quiet_nan<float>() { return __int_as_float(0x7fc00000); }
template <> __device__ __forceinline__ double quiet_nan<double>() {
    return __longlong_as_double(0x7ff8000000000000LL);
}

template <typename T> __device__ __forceinline__ T sqrt_(T x);
template <> __device__ __forceinline__ float sqrt_<float>(float x) { return sqrtf(x); }
template <> __device__ __forceinline__ double sqrt_<double>(double x) { return sqrt(x); }

// 1 / sqrt(x): in float32 one instruction (MUFU.RSQ, within 2 ulp), where sqrtf and then a
// division are two correctly rounded sequences in a row.
template <typename T> __device__ __forceinline__ T rsqrt_(T x);
template <> __device__ __forceinline__ float rsqrt_<float>(float x) { return rsqrtf(x); }
template <> __device__ __forceinline__ double rsqrt_<double>(double x) { return rsqrt(x); }

// Element q of the whitening d = (eigen + penalty * count)^-1/2 of a row whose penalty is
// scaled by its count of positive entries (cg.cu's whitened CG, woodbury.cu's whitened
// rows: in the eigenbasis of F^T F, eigenvalues eigen, the row's shared part F^T F +
// penalty * count * I is diagonal); 0 for a row without a positive entry.
template <typename T>
__device__ T whitening(const T* eigen, T penalty, long long count, int q) {
    return count > 0 ? rsqrt_(eigen[q] + penalty * (T)count) : T(0);
}

// Sum of `value` over the block; every thread gets the result. `scratch` holds at least
// blockDim.x / 32 values. Contains __syncthreads: call from all threads of the block.
template <typename T>
__device__ T block_sum(T value, T* scratch) {
    for (int offset = 16; offset > 0; offset /= 2)
        value += __shfl_down_sync(0xffffffffu, value, offset);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    T total = 0;
    for (int w = 0; w < (int)(blockDim.x / 32); ++w) total += scratch[w];
    __syncthreads();
    return total;
}

// A row without stored entries has the zero vector as its exact solution: writes it to x
// (k values) and returns true, on every thread of the block (so the block returns
// together); false for a row with entries.
template <typename T>
__device__ bool solved_if_empty(T* x, int k, long long start, long long end) {
    if (start != end) return false;
    for (int p = threadIdx.x; p < k; p += blockDim.x) x[p] = 0;
    return true;
}

// Walks a block's share of the flat indices idx = tid, tid + blockDim.x, ... < rows * cols
// as (row, col) = (idx / cols, idx % cols), with no integer division per step (k <= 1024,
// so every flat index fits an int):
//
//   for (als::FlatWalk at(rows, cols); at.valid(); at.next()) use(at.row, at.col);
struct FlatWalk {
    int row, col, step_row, step_col, rows, cols;
    __device__ FlatWalk(int rows_, int cols_)
        : row((int)threadIdx.x / cols_), col((int)threadIdx.x % cols_),
          step_row((int)blockDim.x / cols_), step_col((int)blockDim.x % cols_), rows(rows_),
          cols(cols_) {}
    __device__ bool valid() const { return row < rows; }
    __device__ void next() {
        row += step_row;
        col += step_col;
        if (col >= cols) {  // step_col < cols: one wrap at most
            col -= cols;
            ++row;
        }
    }
};

// One panel of the blocked Cholesky below: columns j .. j + WIDTH - 1 of L, then the
// rank-WIDTH update of the trailing lower triangle. Two block barriers.
//
// Every thread factorizes the panel's WIDTH x WIDTH diagonal block D = L_D L_D^T in
// registers (all threads read the same entries: broadcasts); the rows below it take
// L[i][j..] = A[i][j..] L_D^-T, one row per thread, written to A's lower triangle, to its
// mirror (L^T, which the solves read) and to the column buffer (column[t * k + i]), which
// the trailing update reads contiguously. A non-positive pivot sets *flag and is replaced
// by 1 so the arithmetic stays finite.
template <int WIDTH, typename T>
__device__ __forceinline__ void cholesky_panel(T* A, int lda, int k, int j, T* column,
                                               T* flag) {
    const int tid = threadIdx.x, nthreads = blockDim.x;
    const int lane = tid % 32, warp = tid / 32, warps = nthreads / 32;
    T L[WIDTH][WIDTH], inv[WIDTH];
    bool positive = true;
    for (int a = 0; a < WIDTH; ++a) {
        for (int c = 0; c <= a; ++c) {
            T s = A[(j + a) * lda + j + c];
            for (int t = 0; t < c; ++t) s -= L[a][t] * L[c][t];
            if (c < a) {
                L[a][c] = s * inv[c];
            } else {  // the pivot L_aa = sqrt(s): only its reciprocal is ever used
                positive = positive && s > 0;
                inv[a] = s > 0 ? rsqrt_(s) : T(1);
            }
        }
    }
    if (tid == 0 && !positive) *flag = 1;
    for (int i = j + WIDTH + tid; i < k; i += nthreads) {
        T l[WIDTH];
        for (int c = 0; c < WIDTH; ++c) {
            T s = A[i * lda + j + c];
            for (int t = 0; t < c; ++t) s -= l[t] * L[c][t];
            l[c] = s * inv[c];
            A[i * lda + j + c] = l[c];
            A[(j + c) * lda + i] = l[c];
            column[c * k + i] = l[c];
        }
    }
    __syncthreads();  // the panel is in the column buffer, and every thread has read D
    if (tid == 0) {   // D's factor and its mirror (no thread reads D's entries any more),
                      // with 1 / L_aa on the diagonal for the solves
        for (int a = 0; a < WIDTH; ++a)
            for (int c = 0; c <= a; ++c) {
                const T value = c == a ? inv[a] : L[a][c];
                A[(j + a) * lda + j + c] = value;
                A[(j + c) * lda + j + a] = value;
            }
    }
    // A[i][c] -= sum_t L[i][j + t] L[c][j + t] for j + WIDTH <= c <= i: warps take rows,
    // two at a time (i and i + warps), lanes columns (contiguous, none above the
    // diagonal); one read and one write of A per element for WIDTH updates. The two rows
    // share each column's reads of the buffer, and their updates are independent, so a
    // warp has two in flight where one row at a time waited on each.
    for (int i = j + WIDTH + warp; i < k; i += 2 * warps) {
        const int i2 = i + warps;  // the second row, if there is one
        const bool second = i2 < k;
        T li[WIDTH], li2[WIDTH];
        for (int t = 0; t < WIDTH; ++t) {
            li[t] = column[t * k + i];
            li2[t] = second ? column[t * k + i2] : T(0);
        }
        const int last = second ? i2 : i;
        for (int c = j + WIDTH + lane; c <= last; c += 32) {
            T lc[WIDTH];
            for (int t = 0; t < WIDTH; ++t) lc[t] = column[t * k + c];
            if (c <= i) {
                T s = A[i * lda + c];
                for (int t = 0; t < WIDTH; ++t) s -= li[t] * lc[t];
                A[i * lda + c] = s;
            }
            if (second) {
                T s = A[i2 * lda + c];
                for (int t = 0; t < WIDTH; ++t) s -= li2[t] * lc[t];
                A[i2 * lda + c] = s;
            }
        }
    }
    __syncthreads();
}

// The triangular solves L y = b, then L^T x = y, leaving x in b, with A as the
// factorization below leaves it (L below the diagonal, L^T above, 1 / L_jj on it). Blocked
// by 32 rows: warp 0 solves a block's 32 x 32 triangle with the block's values in its
// lanes' registers (per step a shuffle, a multiply and a multiply-add; the unblocked solve
// went through shared memory with two warp syncs per step), then every thread takes the
// block's part out of the rows still to solve; two block barriers per block. Both steps
// read A contiguously across lanes: A[(first + s) * lda + i] is L[i][first + s] above the
// diagonal (forward) and L[first + s][i] below it (backward).
template <typename T>
__device__ void triangular_solves(const T* A, T* b, int k, int lda) {
    const int tid = threadIdx.x, nthreads = blockDim.x, lane = tid % 32, warp = tid / 32;
    for (int first = 0; first < k; first += 32) {  // forward: L y = b
        const int size = k - first < 32 ? k - first : 32;
        if (warp == 0) {
            T v = lane < size ? b[first + lane] : T(0);
            for (int s = 0; s < size; ++s) {
                const T y = __shfl_sync(0xffffffffu, v, s) * A[(first + s) * lda + first + s];
                if (lane == s) v = y;
                if (lane > s && lane < size) v -= A[(first + s) * lda + first + lane] * y;
            }
            if (lane < size) b[first + lane] = v;
        }
        __syncthreads();
        for (int i = first + size + tid; i < k; i += nthreads) {
            T acc = b[i];
            for (int s = 0; s < size; ++s) acc -= A[(first + s) * lda + i] * b[first + s];
            b[i] = acc;
        }
        __syncthreads();
    }
    for (int last = k; last > 0; last -= 32) {  // backward: L^T x = y
        const int first = last > 32 ? last - 32 : 0, size = last - first;
        if (warp == 0) {
            T v = lane < size ? b[first + lane] : T(0);
            for (int s = size - 1; s >= 0; --s) {
                const T x = __shfl_sync(0xffffffffu, v, s) * A[(first + s) * lda + first + s];
                if (lane == s) v = x;
                if (lane < s) v -= A[(first + s) * lda + first + lane] * x;
            }
            if (lane < size) b[first + lane] = v;
        }
        __syncthreads();
        for (int i = tid; i < first; i += nthreads) {
            T acc = b[i];
            for (int s = 0; s < size; ++s) acc -= A[(first + s) * lda + i] * b[first + s];
            b[i] = acc;
        }
        __syncthreads();
    }
}

// In-place Cholesky factorization A = L L^T of the k x k SPD matrix A (row-major, `lda`
// the row stride): L overwrites the lower triangle and L^T the upper one (so that both
// solves read L contiguously), each with 1 / L_jj on the diagonal (so that the solves'
// serial steps multiply instead of divide), then the solves L y = b and L^T x = y leave x
// in b (triangular_solves). Blocked by panels of ALS_CHOLESKY_PANEL columns
// (cholesky_panel): two block barriers and one pass over the trailing triangle per panel
// instead of per column. `column` (shared memory, ALS_CHOLESKY_PANEL * k values) holds the
// panel's columns of L. Runs on the whole block (blockDim.x a multiple of 32); A and b may
// live in shared or global memory. Returns false (on every thread) if A is not
// numerically positive definite.
template <typename T>
__device__ bool cholesky_solve(T* A, T* b, int k, int lda, T* flag, T* column) {
    const int tid = threadIdx.x;
    static_assert(ALS_CHOLESKY_PANEL == 4, "the switch below has a case per narrower panel");
    if (tid == 0) *flag = 0;  // only thread 0 writes the flag until the end
    for (int j = 0; j < k; j += ALS_CHOLESKY_PANEL) {
        switch (k - j < ALS_CHOLESKY_PANEL ? k - j : ALS_CHOLESKY_PANEL) {  // block-uniform
            case 1: cholesky_panel<1>(A, lda, k, j, column, flag); break;
            case 2: cholesky_panel<2>(A, lda, k, j, column, flag); break;
            case 3: cholesky_panel<3>(A, lda, k, j, column, flag); break;
            default: cholesky_panel<ALS_CHOLESKY_PANEL>(A, lda, k, j, column, flag);
        }
    }
    triangular_solves(A, b, k, lda);  // ends with a block barrier
    const bool ok = *flag == 0;
    __syncthreads();
    return ok;
}

// Four consecutive values at p (16-byte aligned, in shared memory) into out: one 128-bit
// load for float, two for double, instead of four scalar loads.
template <typename T>
__device__ __forceinline__ void load4(const T* p, T out[4]) {
#ifdef GPU_ALS_HOST_EMULATION
    gpu_als_emu::check_aligned(p, 16);  // the GPU faults on a misaligned vector load
    std::memcpy(out, p, 4 * sizeof(T));
#else
    struct alignas(16) Quad { T v[4]; };
    const Quad q = *reinterpret_cast<const Quad*>(p);
    for (int i = 0; i < 4; ++i) out[i] = q.v[i];
#endif
}

// Part of accumulate_tile: rows first_row .. first_row + 3 of A against the columns
// chunk + lane + 32 c (c < COLS) at or left of the diagonal, over the tile's n entries.
// Each lane keeps its 4 x COLS sums in registers. Per entry it reads one weight, its four
// rows' values (one vector load when k % 4 == 0: then the rows start 16-byte aligned and
// all four exist) and COLS column values, for 4 * COLS fused multiply-adds.
template <int COLS, bool Atomic, typename T>
__device__ __forceinline__ void accumulate_block(T* A, int lda, const T* tile, const T* w,
                                                 int n, int k, int first_row, int chunk) {
    constexpr int ROWS = 4;
    const int lane = threadIdx.x % 32;
    const bool vector_rows = k % 4 == 0;
    T acc[ROWS][COLS];
    for (int r = 0; r < ROWS; ++r)
        for (int c = 0; c < COLS; ++c) acc[r][c] = 0;
    for (int j = 0; j < n; ++j) {
        const T* f = tile + j * k;
        const T weight = w[j];
        T a[ROWS], v[COLS];
        if (vector_rows) {
            load4(f + first_row, a);
        } else {
            for (int r = 0; r < ROWS; ++r) a[r] = first_row + r < k ? f[first_row + r] : T(0);
        }
        for (int c = 0; c < COLS; ++c) {
            const int q = chunk + lane + 32 * c;
            v[c] = q < k ? weight * f[q] : T(0);
        }
        for (int r = 0; r < ROWS; ++r)
            for (int c = 0; c < COLS; ++c) acc[r][c] += a[r] * v[c];
    }
    for (int r = 0; r < ROWS; ++r) {
        const int p = first_row + r;
        for (int c = 0; c < COLS; ++c) {
            const int q = chunk + lane + 32 * c;
            if (p < k && q <= p) {
                if (Atomic)
                    atomicAdd(A + p * lda + q, acc[r][c]);
                else
                    A[p * lda + q] += acc[r][c];
            }
        }
    }
}

// Adds one tile of a row's entries to its system: A += sum_j w_j f_j f_j^T (lower
// triangle) and b += sum_j t_j f_j, where the tile's n factor rows sit in `tile` (n x k,
// row-major, 16-byte aligned) and their weights / targets in `w` / `t`. With Atomic, the
// additions to A and b are atomicAdd (A and b in global memory, shared by several blocks).
//
// Register blocking: each warp takes blocks of 4 consecutive rows of A and, for each, the
// 128-column chunks left of the diagonal; a chunk that needs only COLS < 4 of its 32-column
// groups (near the diagonal, or k small) runs the COLS specialisation, so no lane multiplies
// columns it does not store (see accumulate_block).
template <bool Atomic, typename T>
__device__ void accumulate_tile(T* A, int lda, T* b, const T* tile, const T* w,
                                const T* t, int n, int k) {
    constexpr int ROWS = 4, MAX_COLS = 4, WIDTH = 32 * MAX_COLS;
    const int tid = threadIdx.x, nthreads = blockDim.x;
    const int warp = tid / 32, warps = nthreads / 32;
    for (int first_row = ROWS * warp; first_row < k; first_row += ROWS * warps) {
        const int last_row = first_row + ROWS - 1 < k ? first_row + ROWS - 1 : k - 1;
        for (int chunk = 0; chunk <= last_row; chunk += WIDTH) {  // columns <= last_row
            // 32-column groups this chunk needs: chunk .. min(last_row, chunk + WIDTH - 1)
            const int groups = (last_row - chunk) / 32 + 1;
            switch (groups < MAX_COLS ? groups : MAX_COLS) {
                case 1: accumulate_block<1, Atomic>(A, lda, tile, w, n, k, first_row, chunk); break;
                case 2: accumulate_block<2, Atomic>(A, lda, tile, w, n, k, first_row, chunk); break;
                case 3: accumulate_block<3, Atomic>(A, lda, tile, w, n, k, first_row, chunk); break;
                default: accumulate_block<4, Atomic>(A, lda, tile, w, n, k, first_row, chunk);
            }
        }
    }
    for (int p = tid; p < k; p += nthreads) {
        T acc = 0;
        for (int j = 0; j < n; ++j) acc += t[j] * tile[j * k + p];
        if (Atomic)
            atomicAdd(b + p, acc);
        else
            b[p] += acc;
    }
}

// Starts copying WIDTH values (4, 8 or 16 bytes, aligned to that size) from global to
// shared memory; wait_copies() waits for this thread's copies. On sm_80 and later this is
// cp.async: the values go to shared memory without passing through registers, so a thread
// can have all of its copies in flight at once, where a plain copy (load, then store)
// waits for each load before the next. Before sm_80 (or with ALS_ASYNC_COPIES 0), a plain
// copy.
template <typename T, int WIDTH>
__device__ __forceinline__ void copy_async(T* to, const T* from) {
    constexpr int BYTES = WIDTH * sizeof(T);
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(GPU_ALS_HOST_EMULATION)
    gpu_als_emu::copy_async(to, from, BYTES);  // lands at wait_copies (tests/cuda_host.h)
#elif __CUDA_ARCH__ >= 800 && ALS_ASYNC_COPIES
    const unsigned address = (unsigned)__cvta_generic_to_shared(to);
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n"
                 :: "r"(address), "l"(from), "n"(BYTES) : "memory");
#else
    for (int i = 0; i < WIDTH; ++i) to[i] = from[i];
#endif
}

__device__ __forceinline__ void wait_copies() {
#if defined(GPU_ALS_HOST_EMULATION)
    gpu_als_emu::wait_copies();
#elif __CUDA_ARCH__ >= 800 && ALS_ASYNC_COPIES
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// Starts copying the factor rows F[indices[start + j]] (k values each), j < n, to the rows
// of `to`, `stride` values apart, in pieces of WIDTH values (copy_async: k % WIDTH == 0 and
// both sides aligned for the pieces); the caller waits for them (wait_copies).
template <int WIDTH, typename T, typename I>
__device__ __forceinline__ void copy_factor_rows(T* to, int stride, const I* indices,
                                                 long long start, const T* F, int n, int k) {
    for (FlatWalk at(n, k / WIDTH); at.valid(); at.next()) {
        const int col = at.col * WIDTH;
        copy_async<T, WIDTH>(to + at.row * stride + col,
                             F + (long long)indices[start + at.row] * k + col);
    }
}

// Loads entries [start, start + n) of the CSR into the tile: the factor rows F[indices[e]]
// (n x k, row-major, 16-byte aligned) and the entries' weights and targets. The rows move in
// 16-byte pieces when k is a multiple of their width and F is 16-byte aligned (CuPy's
// allocations are; a view need not be), else value by value; either way by copy_async, so
// that a thread's gathers overlap. The caller's __syncthreads makes the tile visible.
template <typename T, typename I>
__device__ void load_tile(T* tile, T* w, T* t, const I* indices, const T* weight,
                          const T* target, const T* F, long long start, int n, int k) {
    constexpr int VECTOR = 16 / sizeof(T);
    const int tid = threadIdx.x, nthreads = blockDim.x;
    if (k % VECTOR == 0 && reinterpret_cast<unsigned long long>(F) % 16 == 0)
        copy_factor_rows<VECTOR>(tile, k, indices, start, F, n, k);
    else
        copy_factor_rows<1>(tile, k, indices, start, F, n, k);
    for (int j = tid; j < n; j += nthreads) {
        copy_async<T, 1>(w + j, weight + start + j);
        copy_async<T, 1>(t + j, target + start + j);
    }
    wait_copies();
}

// Adds CSR entries [start, end) to a system, tile by tile: A += sum w f f^T (lower
// triangle; `lda` A's row stride), b += sum t f (atomically with Atomic). Contains
// __syncthreads: call from all threads of the block; `tile`, `w`, `t` are shared memory for
// tile_rows entries.
template <bool Atomic, typename T, typename I>
__device__ void accumulate_entries(T* A, int lda, T* b, const I* indices, const T* weight,
                                   const T* target, const T* F, long long start,
                                   long long end, int k, int tile_rows, T* tile, T* w, T* t) {
    for (long long first = start; first < end; first += tile_rows) {
        const int n = (int)(end - first < tile_rows ? end - first : tile_rows);
        load_tile(tile, w, t, indices, weight, target, F, first, n, k);
        __syncthreads();
        accumulate_tile<Atomic>(A, lda, b, tile, w, t, n, k);
        __syncthreads();
    }
}

}  // namespace als
