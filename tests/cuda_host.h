// Host emulation of the CUDA features that kernels/*.cu use, so that each kernel file
// compiles unchanged with g++ (C++20) and runs on the CPU in the tests.
//
// Model: a launch runs the blocks of its grid one after another, or (``lanes`` > 1) that
// many at a time, block b in lane b % lanes. __syncthreads is a barrier of the block's
// threads, warp primitives exchange values through a per-warp buffer and a barrier of the
// warp's threads. Each CUDA thread is a fiber (a stack of its own, started by ucontext) on
// the launching OS thread: it runs until it waits at a barrier, then the next one runs, so a
// barrier costs a few context switches in user space (switch_to), where OS threads (128 per
// block) took a futex wake-up each and most of the emulated suite's time on two cores. Threads
// that wait at barriers no other thread can complete (a __syncthreads some threads skip
// while others wait at a warp primitive: a GPU hangs) are a fault, not a hang. Under the
// sanitizers each CUDA thread is a real OS thread instead (GPU_ALS_EMU_OS_THREADS):
// ThreadSanitizer sees races only between OS threads, and AddressSanitizer keeps no
// bookkeeping of stacks switched under it. Static
// __shared__ variables are function-local statics (shared by the block's threads, and by
// every lane: a kernel that declares one runs one lane); dynamic shared memory is one
// buffer per lane, refilled with 0xFF bytes (NaN for floats) before every block so that a
// kernel reading shared memory it never wrote fails the parity tests. Blocks in lanes
// that run at once let ThreadSanitizer see two blocks updating one address without
// atomicAdd, as a GPU runs many blocks at once. An asynchronous copy (cp.async, the kernels'
// copy_async) reads its source when issued and writes shared memory only at the thread's
// wait_copies(), the latest moment a GPU may: a read before the wait sees the poison, and a
// thread that ends with copies it never waited for is a fault.
//
// What this cannot see: the CUDA memory model (every store here is immediately visible to
// all threads; ThreadSanitizer builds catch missing barriers, not missing __threadfence),
// timing, occupancy, bank conflicts, register limits, warp divergence costs and tensor-core
// instructions. Masks of *_sync primitives are ignored: the whole warp must take part.
// Built with AddressSanitizer (tests/emulation.py ASAN_FLAGS), an access outside an array
// or outside the launch's dynamic shared memory is reported, as compute-sanitizer's
// memcheck would on a GPU.
#pragma once
#define GPU_ALS_HOST_EMULATION 1

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// (Fibers need glibc's ucontext: elsewhere, OS threads too.)
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__) || !defined(__linux__)
#define GPU_ALS_EMU_OS_THREADS 1
#else
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>
#endif

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace gpu_als_emu {

struct Launch;
inline thread_local dim3 thread_idx, block_idx;
inline thread_local int linear_tid = 0;
inline thread_local Launch* current = nullptr;  // the lane of this thread's block
void start_block(Launch* launch);

// Runs when the last thread arrives at a phase of a barrier (prepares the next block).
struct Completion {
    Launch* launch = nullptr;
    void operator()() noexcept {
        if (launch != nullptr) start_block(launch);
    }
};

#if !defined(GPU_ALS_EMU_OS_THREADS)
// One CUDA thread: a fiber of the scheduler (run_threads).
struct Fiber {
    ucontext_t context{};  // where the fiber starts
    void* resume[5] = {};  // where it waits: a __builtin_setjmp buffer (see switch_to)
    void** scheduler = nullptr;
    bool started = false;
    const std::function<void(int)>* body = nullptr;
    int index = 0;
    bool done = false;
    const class Barrier* waiting = nullptr;  // and the phase it waits to see pass
    unsigned long waiting_phase = 0;
};
inline thread_local Fiber* running_fiber = nullptr;

// Resumes the context saved in ``target`` by __builtin_setjmp, on the stack it was saved
// from. GCC's builtins save and restore the frame and stack pointers and nothing else
// (GCC keeps the callee-saved registers of a function that calls __builtin_setjmp in its
// frame, so its callers' survive the jump): no system call for the signal mask, as
// swapcontext makes on every switch (two per
// barrier wait: with swapcontext the GPU tests under the emulation took 114 s here, 41 s
// with this). Fibers start by setcontext, once.
[[noreturn]] __attribute__((noinline)) inline void switch_to(void** target) {
    __builtin_longjmp(target, 1);
}

// A barrier of fibers: the last to arrive completes the phase; the others give the OS
// thread back to the scheduler (run_threads), which resumes them once it has passed. The
// thread-local state that says which CUDA thread runs (current, linear_tid, thread_idx,
// block_idx) is the other fibers' meanwhile: a waiting fiber keeps its own on its stack.
class Barrier {
   public:
    explicit Barrier(int expected, Completion completion = {})
        : expected_(expected), completion_(completion) {}

    void arrive_and_wait() {
        const unsigned long phase = phase_;
        if (++arrived_ >= expected_) {
            complete();
            return;
        }
        Fiber* self = running_fiber;
        self->waiting = this;
        self->waiting_phase = phase;
        const auto identity = std::tuple(current, linear_tid, thread_idx, block_idx);
        if (__builtin_setjmp(self->resume) == 0) switch_to(self->scheduler);
        std::tie(current, linear_tid, thread_idx, block_idx) = identity;
    }

    void arrive_and_drop() {
        --expected_;
        if (arrived_ > 0 && arrived_ >= expected_) complete();
    }

    bool passed(unsigned long phase) const { return phase_ != phase; }

   private:
    void complete() {
        arrived_ = 0;
        completion_();
        ++phase_;
    }

    int expected_;
    int arrived_ = 0;
    unsigned long phase_ = 0;
    Completion completion_;
};
#elif defined(__SANITIZE_THREAD__)
// Under ThreadSanitizer: the same barrier built on a mutex and a condition variable, which
// TSan intercepts; it does not model the fences inside libstdc++'s std::barrier and would
// report the harness's own block changes as races. (Much slower: TSan builds only.)
class Barrier {
   public:
    explicit Barrier(int expected, Completion completion = {})
        : expected_(expected), completion_(completion) {}

    void arrive_and_wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        const unsigned long phase = phase_;
        if (++arrived_ >= expected_) {
            complete();
        } else {
            ready_.wait(lock, [&] { return phase_ != phase; });
        }
    }

    void arrive_and_drop() {
        std::unique_lock<std::mutex> lock(mutex_);
        --expected_;
        if (arrived_ > 0 && arrived_ >= expected_) complete();
    }

   private:
    void complete() {
        arrived_ = 0;
        completion_();
        ++phase_;
        ready_.notify_all();
    }

    std::mutex mutex_;
    std::condition_variable ready_;
    int expected_;
    int arrived_ = 0;
    unsigned long phase_ = 0;
    Completion completion_;
};
#else
// C++20's barrier; arrive_and_drop lowers the count for later phases, as a thread that
// has left a CUDA block no longer takes part in __syncthreads.
using Barrier = std::barrier<Completion>;
#endif

// Bytes kept past the launch's dynamic shared memory, poisoned as it is and checked after
// every block: a kernel that writes past its shared memory (a host size too small), by up
// to this many bytes, gets a fault naming it, where it used to overwrite the harness's own
// state and hang. None under AddressSanitizer, which reports the access itself.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr std::size_t SHARED_GUARD_BYTES = 0;
#else
inline constexpr std::size_t SHARED_GUARD_BYTES = 16 * 1024;
#endif

struct Launch {
    dim3 grid, block;
    int nthreads = 0;
    std::size_t shared_bytes = 0;
    std::vector<unsigned char> dynamic_shared;  // shared_bytes, then the guard bytes
    std::unique_ptr<Barrier> block_barrier;
    std::vector<std::unique_ptr<Barrier>> warp_barriers;
    // Two slots per thread for the warp primitives' values (see warp_publish), and the
    // one each thread writes next.
    std::vector<std::array<unsigned char, 8>> warp_buffer;
    std::vector<unsigned char> exchange_parity;
    // Each thread's asynchronous copies not yet waited for (see copy_async).
    struct PendingCopy {
        void* to;
        std::array<unsigned char, 16> bytes;
        std::size_t size;
    };
    std::vector<std::vector<PendingCopy>> pending_copies;
};

inline void report_fault(const std::string& what);

// Fresh barriers and poisoned shared memory for the next block (after checking that the
// block before left the guard bytes as they were).
inline void start_block(Launch* launch) {
    const auto& shared = launch->dynamic_shared;
    if (std::any_of(shared.begin() + launch->shared_bytes, shared.end(),
                    [](unsigned char byte) { return byte != 0xFF; }))
        report_fault("a block wrote past the launch's " +
                     std::to_string(launch->shared_bytes) +
                     " bytes of dynamic shared memory (shared_mem too small?)");
    launch->block_barrier = std::make_unique<Barrier>(launch->nthreads);
    launch->warp_barriers.clear();
    for (int first = 0; first < launch->nthreads; first += 32)
        launch->warp_barriers.push_back(
            std::make_unique<Barrier>(std::min(32, launch->nthreads - first)));
    std::fill(launch->exchange_parity.begin(), launch->exchange_parity.end(), 0);
    std::fill_n(launch->dynamic_shared.begin(), launch->shared_bytes, 0xFF);  // (the guard:
    // as it was, or reported)
}

inline Barrier& warp_barrier() { return *current->warp_barriers[linear_tid / 32]; }

inline void* dynamic_shared() { return current->dynamic_shared.data(); }

// What a GPU would stop a launch for and x86 lets pass (a misaligned vector access): the
// first such fault is kept, and the Python launcher raises it after the launch.
inline std::mutex fault_mutex;
inline std::string fault;

inline void report_fault(const std::string& what) {
    std::lock_guard<std::mutex> lock(fault_mutex);
    if (fault.empty()) fault = what;
}

inline void check_aligned(const void* p, std::size_t alignment) {
    if (reinterpret_cast<std::uintptr_t>(p) % alignment != 0)
        report_fault("misaligned address: a " + std::to_string(alignment) +
                     "-byte vector access at an address that is not a multiple of it");
}

// cp.async of `bytes` (4, 8 or 16, aligned to that size): the source is read now, and the
// destination written at this thread's wait_copies(), not before (a GPU may land it at any
// time up to the wait): a kernel that reads it without waiting reads the poison.
inline void copy_async(void* to, const void* from, std::size_t bytes) {
    check_aligned(to, bytes);
    check_aligned(from, bytes);
    Launch::PendingCopy copy{to, {}, bytes};
    std::memcpy(copy.bytes.data(), from, bytes);
    current->pending_copies[linear_tid].push_back(copy);
}

// cp.async.wait_all: this thread's copies land.
inline void wait_copies() {
    auto& pending = current->pending_copies[linear_tid];
    for (const auto& copy : pending) std::memcpy(copy.to, copy.bytes.data(), copy.size);
    pending.clear();
}

// A warp primitive's exchange: publishes this thread's value, waits for the warp's
// threads, and returns the slots they published to (lane i's at [i]; warp_size of them).
// A thread's exchanges alternate between its two slots, so one barrier per exchange does:
// exchange n + 2 overwrites a slot only after every thread of the warp has passed the
// barrier of exchange n + 1, that is, has read exchange n.
template <typename T>
const std::array<unsigned char, 8>* warp_publish(T value, int& warp_size) {
    static_assert(sizeof(T) <= 8, "warp exchanges of at most 8 bytes");
    Launch& launch = *current;
    const int warp_start = linear_tid - linear_tid % 32;
    warp_size = std::min(32, launch.nthreads - warp_start);
    const int parity = launch.exchange_parity[linear_tid];
    launch.exchange_parity[linear_tid] = static_cast<unsigned char>(parity ^ 1);
    auto* slots = launch.warp_buffer.data() + parity * launch.nthreads + warp_start;
    std::memcpy(slots[linear_tid - warp_start].data(), &value, sizeof(T));
    warp_barrier().arrive_and_wait();
    return slots;
}

template <typename T>
T warp_exchange(T value, int source_lane) {
    int warp_size;
    const auto* slots = warp_publish(value, warp_size);
    T result = value;
    if (source_lane >= 0 && source_lane < warp_size)
        std::memcpy(&result, slots[source_lane].data(), sizeof(T));
    return result;
}

// Arguments as cuLaunchKernel takes them: params[i] points at argument i's value.
template <typename... Args, std::size_t... I>
std::tuple<Args...> unpack(void** params, std::index_sequence<I...>) {
    return std::tuple<Args...>{*static_cast<std::remove_reference_t<Args>*>(params[I])...};
}

#if defined(GPU_ALS_EMU_OS_THREADS)
// body(0), ..., body(count - 1), each on an OS thread of its own, all at once.
inline void run_threads(int count, const std::function<void(int)>& body) {
    std::vector<std::thread> threads;
    threads.reserve(count);
    for (int i = 0; i < count; ++i) threads.emplace_back(body, i);
    for (auto& thread : threads) thread.join();
}
#else
// Bytes of a fiber's stack, the lowest page of it a guard (an overflow faults there).
inline constexpr std::size_t FIBER_STACK_BYTES = 256 * 1024;

// The fibers' stacks, mapped once per OS thread and reused by every launch after.
struct FiberStacks {
    std::vector<void*> stacks;
    ~FiberStacks() {
        for (void* stack : stacks) munmap(stack, FIBER_STACK_BYTES);
    }
    void* operator[](int i) {
        while ((int)stacks.size() <= i) {
            void* stack = mmap(nullptr, FIBER_STACK_BYTES, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (stack == MAP_FAILED) throw std::bad_alloc();
            mprotect(stack, static_cast<std::size_t>(sysconf(_SC_PAGESIZE)), PROT_NONE);
            stacks.push_back(stack);
        }
        return stacks[i];
    }
};

inline void fiber_main() {
    Fiber* self = running_fiber;
    (*self->body)(self->index);
    self->done = true;
    switch_to(self->scheduler);  // not resumed again
}

// body(0), ..., body(count - 1), each on a fiber, on this OS thread: round after round,
// every fiber not waiting on a barrier runs until it waits on one or ends. A round in
// which none can run, with fibers left, is a deadlock: reported as a fault, the fibers
// abandoned (the kernels hold nothing that needs their destructors).
inline void run_threads(int count, const std::function<void(int)>& body) {
    static thread_local FiberStacks stacks;
    std::vector<Fiber> fibers(count);
    void* scheduler[5];
    for (int i = 0; i < count; ++i) {
        Fiber& fiber = fibers[i];
        fiber.index = i;
        fiber.body = &body;
        fiber.scheduler = scheduler;
        getcontext(&fiber.context);
        fiber.context.uc_stack.ss_sp = stacks[i];
        fiber.context.uc_stack.ss_size = FIBER_STACK_BYTES;
        fiber.context.uc_link = nullptr;
        makecontext(&fiber.context, fiber_main, 0);
    }
    for (int left = count; left > 0;) {
        bool ran = false;
        for (Fiber& fiber : fibers) {
            if (fiber.done || (fiber.waiting != nullptr &&
                               !fiber.waiting->passed(fiber.waiting_phase)))
                continue;
            ran = true;
            fiber.waiting = nullptr;
            running_fiber = &fiber;
            if (__builtin_setjmp(scheduler) == 0) {
                if (fiber.started) switch_to(fiber.resume);
                fiber.started = true;
                setcontext(&fiber.context);
            }
            left -= fiber.done;
        }
        if (!ran) {
            report_fault("deadlock: the threads of a block wait at barriers that none of "
                         "them can complete (a __syncthreads or warp primitive that some "
                         "threads skip while others wait there; a GPU hangs)");
            break;
        }
    }
    running_fiber = nullptr;
    current = nullptr;
}
#endif

template <typename... Args>
void launch(void (*kernel)(Args...), dim3 grid, dim3 block, std::size_t shared_bytes,
            void** params, unsigned lanes) {
    auto args = unpack<Args...>(params, std::index_sequence_for<Args...>{});
    const long long n_blocks = 1LL * grid.x * grid.y * grid.z;
    lanes = static_cast<unsigned>(std::clamp<long long>(lanes, 1, n_blocks));
    const int nthreads = static_cast<int>(block.x * block.y * block.z);
    std::vector<std::unique_ptr<Launch>> states;  // one per lane
    std::vector<std::unique_ptr<Barrier>> block_ends;
    for (unsigned lane = 0; lane < lanes; ++lane) {
        auto state = std::make_unique<Launch>();
        state->grid = grid;
        state->block = block;
        state->nthreads = nthreads;
        // shared_mem bytes (malloc's 16-byte alignment, as CUDA's at least), then the
        // guard: none in an AddressSanitizer build, which then reports any access past them.
        state->shared_bytes = shared_bytes;
        state->dynamic_shared.assign(shared_bytes + SHARED_GUARD_BYTES, 0xFF);
        state->warp_buffer.resize(2 * nthreads);
        state->exchange_parity.assign(nthreads, 0);
        state->pending_copies.resize(nthreads);
        start_block(state.get());
        // The lane's threads meet here after each block; the last one in prepares the next.
        block_ends.push_back(std::make_unique<Barrier>(nthreads, Completion{state.get()}));
        states.push_back(std::move(state));
    }
    // CUDA thread t of lane `lane` is run_threads' index lane * nthreads + t.
    run_threads(static_cast<int>(lanes) * nthreads, [&](int index) {
        const unsigned lane = static_cast<unsigned>(index / nthreads);
        const int t = index % nthreads;
        current = states[lane].get();
        linear_tid = t;
        thread_idx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
        for (long long b = lane; b < n_blocks; b += lanes) {
            block_idx = {static_cast<unsigned>(b % grid.x),
                         static_cast<unsigned>((b / grid.x) % grid.y),
                         static_cast<unsigned>(b / (1LL * grid.x * grid.y))};
            std::apply(kernel, args);
            if (!current->pending_copies[t].empty()) {
                report_fault("a thread ended with cp.async copies it never waited for "
                             "(copy_async without wait_copies)");
                current->pending_copies[t].clear();
            }
            // An exited thread no longer counts at barriers (as on sm_70 and later).
            current->block_barrier->arrive_and_drop();
            current->warp_barriers[t / 32]->arrive_and_drop();
            block_ends[lane]->arrive_and_wait();
        }
        current = nullptr;
    });
}

// Parameter signature for the Python launcher's checks: "Pf4" (pointer to 4-byte float),
// "i8" (8-byte integer), ... comma separated.
template <typename T>
std::string type_code() {
    if constexpr (std::is_pointer_v<T>)
        return "P" + type_code<std::remove_cv_t<std::remove_pointer_t<T>>>();
    else
        return std::string(std::is_floating_point_v<T> ? "f" : "i") + std::to_string(sizeof(T));
}

template <typename... Args>
std::string signature(void (*)(Args...)) {
    std::string out;
    ((out += (out.empty() ? "" : ",") + type_code<Args>()), ...);
    return out;
}

}  // namespace gpu_als_emu

// ---- CUDA keywords and built-in variables ----------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __constant__ static const
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define threadIdx (gpu_als_emu::thread_idx)
#define blockIdx (gpu_als_emu::block_idx)
#define blockDim (gpu_als_emu::current->block)
#define gridDim (gpu_als_emu::current->grid)

// ---- synchronisation and warp primitives -----------------------------------------------
inline void __syncthreads() { gpu_als_emu::current->block_barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { gpu_als_emu::warp_barrier().arrive_and_wait(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <typename T>
T __shfl_sync(unsigned, T value, int lane, int width = 32) {
    const int lane_id = gpu_als_emu::linear_tid % 32;
    return gpu_als_emu::warp_exchange(value, lane_id - lane_id % width + lane % width);
}
template <typename T>
T __shfl_xor_sync(unsigned, T value, int mask, int width = 32) {
    const int lane_id = gpu_als_emu::linear_tid % 32;
    const int source = lane_id ^ mask;
    return gpu_als_emu::warp_exchange(value, source / width == lane_id / width ? source : lane_id);
}
template <typename T>
T __shfl_down_sync(unsigned, T value, unsigned delta, int width = 32) {
    const int lane_id = gpu_als_emu::linear_tid % 32;
    const int source = lane_id + static_cast<int>(delta);
    return gpu_als_emu::warp_exchange(value, source / width == lane_id / width ? source : lane_id);
}
template <typename T>
T __shfl_up_sync(unsigned, T value, unsigned delta, int width = 32) {
    const int lane_id = gpu_als_emu::linear_tid % 32;
    const int source = lane_id - static_cast<int>(delta);
    return gpu_als_emu::warp_exchange(
        value, source >= 0 && source / width == lane_id / width ? source : lane_id);
}
inline unsigned __ballot_sync(unsigned, int predicate) {
    int warp_size;
    const auto* slots =
        gpu_als_emu::warp_publish(static_cast<unsigned char>(predicate != 0), warp_size);
    unsigned bits = 0;
    for (int lane = 0; lane < warp_size; ++lane)
        bits |= static_cast<unsigned>(slots[lane][0]) << lane;
    return bits;
}

// ---- atomics ------------------------------------------------------------------------
template <typename T>
T atomicAdd(T* address, T value) {
    return std::atomic_ref<T>(*address).fetch_add(value);
}

// ---- math ---------------------------------------------------------------------------
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __int_as_float(int bits) { float f; std::memcpy(&f, &bits, 4); return f; }
inline double __longlong_as_double(long long bits) { double d; std::memcpy(&d, &bits, 8); return d; }
template <typename T>
T __ldg(const T* p) { return *p; }
using std::fma;
using std::max;
using std::min;
using std::sqrt;

// One exported C entry point per kernel specialisation, for the Python launcher:
//   GPU_ALS_EMU_EXPORT(symbol, kernel<...>) defines symbol(grid, block, shared, params,
//   lanes) and symbol_signature() returning the parameter type codes.
// The launch's fault (see report_fault), or "", clearing it.
extern "C" const char* gpu_als_emu_take_fault() {
    static std::string taken;
    std::lock_guard<std::mutex> lock(gpu_als_emu::fault_mutex);
    taken = gpu_als_emu::fault;
    gpu_als_emu::fault.clear();
    return taken.c_str();
}

#define GPU_ALS_EMU_EXPORT(symbol, ...)                                                   \
    extern "C" void symbol(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, \
                           unsigned bz, std::size_t shared, void** params,               \
                           unsigned lanes) {                                             \
        gpu_als_emu::launch(&__VA_ARGS__, dim3{gx, gy, gz}, dim3{bx, by, bz}, shared,    \
                            params, lanes);                                              \
    }                                                                                    \
    extern "C" const char* symbol##_signature() {                                        \
        static const std::string s = gpu_als_emu::signature(&__VA_ARGS__);               \
        return s.c_str();                                                                \
    }
