// Decode-time products: out[r][n] = sum_k w[n][k] * x[r][k] for up to 8 rows of x, reading each
// weight byte once. One warp per output column n (a weight row); each lane takes whole 32-weight
// blocks of that row and dots them with every input row, then the warp sums. Launch:
// blockDim = (32 * MATVEC_WARPS), grid = ceil(n / MATVEC_WARPS); k is a multiple of 32.
#include "common.cuh"

#define MATVEC_WARPS 4

template <int R, typename Block>
__device__ __forceinline__ void matvec(const Block* __restrict__ w, const float* __restrict__ x,
                                       float* __restrict__ out, int n, int k) {
    const int lane = threadIdx.x % WARP;
    const int col = blockIdx.x * MATVEC_WARPS + threadIdx.x / WARP;
    if (col >= n) {
        return;
    }
    const int blocks = k / 32;
    const Block* row = w + (size_t)col * blocks;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        acc[r] = 0.0f;
    }
    for (int b = lane; b < blocks; b += WARP) {
        const Block blk = row[b];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            acc[r] += dot_block(blk, x + (size_t)r * k + (size_t)b * 32);
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const float s = warp_sum(acc[r]);
        if (lane == 0) {
            out[(size_t)r * n + col] = s;
        }
    }
}

// f16 weights: each lane takes 2 consecutive weights at a time.
template <int R>
__device__ __forceinline__ void matvec_f16(const __half* __restrict__ w, const float* __restrict__ x,
                                           float* __restrict__ out, int n, int k) {
    const int lane = threadIdx.x % WARP;
    const int col = blockIdx.x * MATVEC_WARPS + threadIdx.x / WARP;
    if (col >= n) {
        return;
    }
    const __half2* row = reinterpret_cast<const __half2*>(w + (size_t)col * k);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        acc[r] = 0.0f;
    }
    for (int i = lane; i < k / 2; i += WARP) {
        const float2 v = __half22float2(row[i]);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const float* xr = x + (size_t)r * k + 2 * i;
            acc[r] += v.x * xr[0] + v.y * xr[1];
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const float s = warp_sum(acc[r]);
        if (lane == 0) {
            out[(size_t)r * n + col] = s;
        }
    }
}

#define MATVEC_FORMAT(NAME, BLOCK, R)                                                          \
    extern "C" __global__ void __launch_bounds__(32 * MATVEC_WARPS)                            \
        matvec_##NAME##_r##R(const BLOCK* w, const float* x, float* out, int n, int k) {       \
        matvec<R, BLOCK>(w, x, out, n, k);                                                     \
    }

#define MATVEC_ROWS(NAME, BLOCK)                                                               \
    MATVEC_FORMAT(NAME, BLOCK, 1)                                                              \
    MATVEC_FORMAT(NAME, BLOCK, 2)                                                              \
    MATVEC_FORMAT(NAME, BLOCK, 3)                                                              \
    MATVEC_FORMAT(NAME, BLOCK, 4)                                                              \
    MATVEC_FORMAT(NAME, BLOCK, 5)                                                              \
    MATVEC_FORMAT(NAME, BLOCK, 6)                                                              \
    MATVEC_FORMAT(NAME, BLOCK, 7)                                                              \
    MATVEC_FORMAT(NAME, BLOCK, 8)

MATVEC_ROWS(q4_0, block_q4_0)
MATVEC_ROWS(q4_1, block_q4_1)
MATVEC_ROWS(q8_0, block_q8_0)

#define MATVEC_F16(R)                                                                          \
    extern "C" __global__ void __launch_bounds__(32 * MATVEC_WARPS)                            \
        matvec_f16_r##R(const __half* w, const float* x, float* out, int n, int k) {           \
        matvec_f16<R>(w, x, out, n, k);                                                        \
    }

MATVEC_F16(1)
MATVEC_F16(2)
MATVEC_F16(3)
MATVEC_F16(4)
MATVEC_F16(5)
MATVEC_F16(6)
MATVEC_F16(7)
MATVEC_F16(8)
