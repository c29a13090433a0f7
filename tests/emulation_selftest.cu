// Kernels that exercise each CUDA feature the host emulation provides (tests/cuda_host.h),
// checked against NumPy in tests/test_kernels.py.
#include "common.cuh"

// out[t] for thread t of each block: warp primitives and a block reduction.
__global__ void warp_features(const float* in, float* out, int* ballots, float* block_sums,
                              double* total) {
    __shared__ float scratch[32];
    const int t = threadIdx.x, lane = t % 32;
    const long long g = blockIdx.x * (long long)blockDim.x + t;
    const float v = in[g];
    const float down = __shfl_down_sync(0xffffffffu, v, 3);
    const float xr = __shfl_xor_sync(0xffffffffu, v, 5);
    const float bcast = __shfl_sync(0xffffffffu, v, 7);
    __syncwarp();
    const unsigned bits = __ballot_sync(0xffffffffu, v > 0.5f);
    out[4 * g + 0] = down;
    out[4 * g + 1] = xr;
    out[4 * g + 2] = bcast;
    out[4 * g + 3] = (float)lane;
    if (lane == 0) ballots[g / 32] = (int)bits;
    const float sum = als::block_sum(v, scratch);
    if (t == 0) block_sums[blockIdx.x] = sum;
    atomicAdd(total, (double)v);
}

// Dynamic shared memory: reverse each block's slice through it.
template <typename T>
__global__ void reverse_through_shared(const T* in, T* out) {
    ALS_DYNAMIC_SHARED(T, buffer);
    const long long base = blockIdx.x * (long long)blockDim.x;
    buffer[threadIdx.x] = in[base + threadIdx.x];
    __syncthreads();
    out[base + threadIdx.x] = buffer[blockDim.x - 1 - threadIdx.x];
}

// Reads shared memory it never wrote: the emulation poisons it with NaN bytes.
__global__ void read_unwritten_shared(float* out) {
    ALS_DYNAMIC_SHARED(float, buffer);
    out[threadIdx.x] = buffer[threadIdx.x];
}

// als::load4 from shared memory `offset` values past the 16-byte aligned start: four values
// into out when aligned; a fault (as on a GPU) when not.
__global__ void load4_from_shared(const float* in, float* out, int offset) {
    ALS_DYNAMIC_SHARED(float, buffer);
    buffer[threadIdx.x] = in[threadIdx.x];
    __syncthreads();
    if (threadIdx.x == 0) als::load4(buffer + offset, out);
}

// Thread 1 waits at its warp's barrier, the others at the block's: neither can complete
// (a GPU hangs); the emulation reports the deadlock.
__global__ void wait_at_different_barriers(float* out) {
    if (threadIdx.x == 1)
        __syncwarp();
    else
        __syncthreads();
    out[threadIdx.x] = 1;
}

// Each thread copies in[t] to shared memory by copy_async, waits for it (if `wait`), and
// after the barrier reads its neighbour's: in[(t + 1) % n] with the wait; without it the
// copies have not landed (the poison, NaN) and the launch reports them never waited for.
__global__ void copy_async_then_read(const float* in, float* out, int wait) {
    ALS_DYNAMIC_SHARED(float, buffer);
    const int t = threadIdx.x, n = blockDim.x;
    als::copy_async<float, 1>(buffer + t, in + t);
    if (wait) als::wait_copies();
    __syncthreads();
    out[t] = buffer[(t + 1) % n];
}
