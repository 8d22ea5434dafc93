// Host emulation of the CUDA C built-ins that sched's emitted kernels use, so that the emitted
// text compiles with a C++20 compiler and runs on the CPU (kernels/tests/common/host_cuda.rs).
//
// The model: blocks run one after another, and the threads of a block are fibers (ucontext) of
// the launching thread, switched at __syncthreads(), which is a barrier of the block (see
// `sched_host::launch`). A __shared__ variable is a function-local static, which is the block's
// shared memory because only one block runs at a time. The math functions are the C library's
// (glibc on Linux), which are the ones Rust's f32 and f64 methods call, so arithmetic and
// transcendental results are those of the CPU evaluator. The harness compiles with -fno-builtin,
// so that the compiler cannot fold a transcendental function of a constant to a correctly rounded
// value that the C library would not return.

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ucontext.h>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __shared__ static

struct uint2 {
    unsigned int x, y;
};

struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};

struct alignas(16) float4 {
    float x, y, z, w;
};

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

inline uint2 make_uint2(unsigned int x, unsigned int y) {
    return uint2{x, y};
}

inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
    return uint4{x, y, z, w};
}

inline float4 make_float4(float x, float y, float z, float w) {
    return float4{x, y, z, w};
}

// The high 32 bits of the 64-bit product of two 32-bit words.
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}

inline float __int_as_float(int bits) {
    return std::bit_cast<float>(bits);
}

inline int __float_as_int(float x) {
    return std::bit_cast<int>(x);
}

inline float __uint_as_float(unsigned int bits) {
    return std::bit_cast<float>(bits);
}

inline unsigned int __float_as_uint(float x) {
    return std::bit_cast<unsigned int>(x);
}

inline double __longlong_as_double(long long int bits) {
    return std::bit_cast<double>(bits);
}

inline long long int __double_as_longlong(double x) {
    return std::bit_cast<long long int>(x);
}

using std::isnan;

// The coordinates of the running thread, which the launcher sets before it resumes a thread.
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace sched_host {

// Reports why the program cannot go on, and ends it.
[[noreturn]] inline void fail(const char* why) {
    std::fprintf(stderr, "%s\n", why);
    std::exit(2);
}

// A kernel launch as a function of the launch's arguments, which `context` points to.
using Kernel = void (*)(const void* context);

// The fibers that run the threads of a block, and the state of the running launch.
struct Fibers {
    // The context of the launching code, to which a fiber returns when it reaches
    // __syncthreads() or ends.
    ucontext_t scheduler;
    std::vector<ucontext_t> contexts;
    std::vector<std::vector<unsigned char>> stacks;
    // Whether each fiber of the running block has ended.
    std::vector<bool> ended;
    // The fiber that runs, and the kernel it runs.
    unsigned int current = 0;
    Kernel kernel = nullptr;
    const void* context = nullptr;
};

inline Fibers fibers;

// The stack of a fiber: the emitted kernels and the C library's math functions need a few KiB.
constexpr std::size_t STACK_BYTES = 64 * 1024;

// The body of every fiber: thread `current` of the running block.
inline void fiber_main() {
    fibers.kernel(fibers.context);
    fibers.ended[fibers.current] = true;
    // Returning resumes the context's uc_link, the scheduler.
}

// Runs `kernel(context)` as `grid` blocks of `block` threads. The blocks run one after another,
// so a __shared__ variable (a function-local static) is the running block's shared memory. The
// threads of a block are fibers on this thread, resumed in the order of their index, each until
// it reaches __syncthreads() or ends; a barrier is passed when every thread of the block has
// reached it. Every thread of a block must reach every __syncthreads() of the block, as on a GPU;
// the launch fails if some thread ends while others wait at a barrier.
//
// Running a thread until its next barrier before the next thread starts makes the interleaving
// deterministic, and it makes a missing barrier visible: a thread that reads what a later thread
// writes before a __syncthreads() would read it before the writer has run.
inline void launch(unsigned int grid, unsigned int block, Kernel kernel, const void* context) {
    fibers.kernel = kernel;
    fibers.context = context;
    // A context is initialized (a system call) once, and made to start the kernel again for
    // every block. The contexts do not move once initialized: a context points into itself.
    if (fibers.contexts.size() < block) {
        std::vector<ucontext_t> contexts(block);
        fibers.stacks.resize(block);
        for (unsigned int t = 0; t < block; ++t) {
            fibers.stacks[t].resize(STACK_BYTES);
            if (getcontext(&contexts[t]) != 0) {
                fail("getcontext fails");
            }
        }
        fibers.contexts.swap(contexts);
    }
    fibers.ended.assign(block, false);
    gridDim = dim3{grid};
    blockDim = dim3{block};
    for (unsigned int b = 0; b < grid; ++b) {
        blockIdx = dim3{b};
        for (unsigned int t = 0; t < block; ++t) {
            ucontext_t& fiber = fibers.contexts[t];
            fiber.uc_stack.ss_sp = fibers.stacks[t].data();
            fiber.uc_stack.ss_size = STACK_BYTES;
            fiber.uc_link = &fibers.scheduler;
            makecontext(&fiber, fiber_main, 0);
            fibers.ended[t] = false;
        }
        for (;;) {
            // One phase: every thread runs to its next barrier, or to its end.
            unsigned int ended = 0;
            for (unsigned int t = 0; t < block; ++t) {
                if (fibers.ended[t]) {
                    ++ended;
                    continue;
                }
                fibers.current = t;
                threadIdx = dim3{t};
                swapcontext(&fibers.scheduler, &fibers.contexts[t]);
                ended += fibers.ended[t] ? 1 : 0;
            }
            if (ended == block) {
                break;
            }
            if (ended != 0) {
                fail("a thread of a block ended while the others wait at __syncthreads()");
            }
        }
    }
}

// The element types of buffers, as the harness numbers them.
enum class Type : std::uint64_t { F32 = 0, U32 = 1, F64 = 2 };

template <class T>
constexpr Type type_of();

template <>
constexpr Type type_of<float>() {
    return Type::F32;
}

template <>
constexpr Type type_of<unsigned int>() {
    return Type::U32;
}

template <>
constexpr Type type_of<double>() {
    return Type::F64;
}

// The harness's input: native 64-bit words and the bytes of buffers.
class Reader {
public:
    explicit Reader(const char* path) {
        std::FILE* file = std::fopen(path, "rb");
        if (file == nullptr) {
            fail("cannot open the input file");
        }
        unsigned char chunk[65536];
        std::size_t got;
        while ((got = std::fread(chunk, 1, sizeof chunk, file)) > 0) {
            bytes_.insert(bytes_.end(), chunk, chunk + got);
        }
        std::fclose(file);
    }

    std::uint64_t word() {
        std::uint64_t value;
        std::memcpy(&value, take(sizeof value), sizeof value);
        return value;
    }

    // The next `count` bytes, then padding to a multiple of 8.
    const unsigned char* take(std::size_t count) {
        const std::size_t padded = (count + 7) / 8 * 8;
        if (bytes_.size() - position_ < padded) {
            fail("the input file ends early");
        }
        const unsigned char* start = bytes_.data() + position_;
        position_ += padded;
        return start;
    }

    bool done() const {
        return position_ == bytes_.size();
    }

private:
    std::vector<unsigned char> bytes_;
    std::size_t position_ = 0;
};

// The buffers of one case, each 16-byte aligned, as the CUDA launcher guarantees.
class Buffers {
public:
    Buffers() = default;
    Buffers(const Buffers&) = delete;
    Buffers& operator=(const Buffers&) = delete;

    ~Buffers() {
        for (const Allocation& allocation : allocations_) {
            std::free(allocation.data);
        }
    }

    // Reads a buffer: its type, its element count and its contents.
    void read(Reader& input) {
        const Type type = Type(input.word());
        const std::uint64_t count = input.word();
        const std::size_t size = type == Type::F64 ? 8 : 4;
        const std::size_t bytes = (std::size_t)count * size;
        // At least one aligned vector, so that an empty buffer is still a distinct pointer.
        void* data = std::aligned_alloc(16, (bytes + 31) / 16 * 16);
        if (data == nullptr) {
            fail("cannot allocate a buffer");
        }
        std::memcpy(data, input.take(bytes), bytes);
        allocations_.push_back(Allocation{data, bytes, type});
    }

    template <class T>
    T* pointer(std::uint64_t k) const {
        if (k >= allocations_.size() || allocations_[k].type != type_of<T>()) {
            fail("a launch passes a buffer that does not exist or has another type");
        }
        return static_cast<T*>(allocations_[k].data);
    }

    // Writes every buffer, in order.
    void write(std::FILE* output) const {
        for (const Allocation& allocation : allocations_) {
            if (std::fwrite(allocation.data, 1, allocation.bytes, output) != allocation.bytes) {
                fail("cannot write a buffer");
            }
        }
    }

private:
    struct Allocation {
        void* data;
        std::size_t bytes;
        Type type;
    };

    std::vector<Allocation> allocations_;
};

// One launch as the input describes it: its shape and its arguments, one word each.
struct Launch {
    unsigned int grid;
    unsigned int block;
    std::vector<std::uint64_t> args;
    const Buffers* buffers;

    template <class T>
    T* pointer(std::size_t k) const {
        return buffers->template pointer<T>(args.at(k));
    }

    // Argument k as a scalar of type T (float, unsigned int, int, unsigned long long or double),
    // passed by value: the low 32 bits of its word for a 4-byte type, else the whole word.
    template <class T>
    T scalar(std::size_t k) const {
        if constexpr (sizeof(T) == 4) {
            return std::bit_cast<T>((std::uint32_t)args.at(k));
        } else {
            return std::bit_cast<T>(args.at(k));
        }
    }
};

// A function that launches one entry point with arguments of fixed types.
using Caller = void (*)(const Launch&);

// Runs the cases of the input file argv[1] with `callers` and writes their buffers to argv[2].
// The input is the number of cases and then, per case, the number of buffers, each buffer (its
// type, its element count and its bytes padded to 8), the number of launches and each launch
// (its caller, grid, block, number of arguments and the arguments).
inline int run_cases(int argc, char** argv, const Caller* callers, std::size_t count) {
    if (argc != 3) {
        fail("usage: program INPUT OUTPUT");
    }
    Reader input(argv[1]);
    std::FILE* output = std::fopen(argv[2], "wb");
    if (output == nullptr) {
        fail("cannot open the output file");
    }
    const std::uint64_t cases = input.word();
    for (std::uint64_t c = 0; c < cases; ++c) {
        Buffers buffers;
        const std::uint64_t buffer_count = input.word();
        for (std::uint64_t b = 0; b < buffer_count; ++b) {
            buffers.read(input);
        }
        const std::uint64_t launches = input.word();
        for (std::uint64_t l = 0; l < launches; ++l) {
            const std::uint64_t caller = input.word();
            Launch launch{(unsigned int)input.word(), (unsigned int)input.word(), {}, &buffers};
            const std::uint64_t arguments = input.word();
            for (std::uint64_t a = 0; a < arguments; ++a) {
                launch.args.push_back(input.word());
            }
            if (caller >= count) {
                fail("a launch names a caller that does not exist");
            }
            callers[caller](launch);
        }
        buffers.write(output);
    }
    if (!input.done()) {
        fail("the input file has more than its cases");
    }
    return std::fclose(output) == 0 ? 0 : 2;
}

}  // namespace sched_host

inline void __syncthreads() {
    swapcontext(&sched_host::fibers.contexts[sched_host::fibers.current], &sched_host::fibers.scheduler);
}
