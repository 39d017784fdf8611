// Decode-time products: out[r][n] = sum_k w[n][k] * x[r][k] for up to 8 rows of x, reading each
// weight byte once. One warp per output column n (a weight row); each lane takes whole 32-weight
// units of that row (`formats.cuh`) and dots them with every input row, then the warp sums.
// Launch: blockDim = (32 * MATVEC_WARPS), grid = ceil(n / MATVEC_WARPS); k is a multiple of the
// format's block (32, or 256 for the K-quants).
#include "common.cuh"

#define MATVEC_WARPS 4

template <int R, typename F>
__device__ __forceinline__ void matvec(const unsigned char* __restrict__ w,
                                       const float* __restrict__ x, float* __restrict__ out, int n,
                                       int k) {
    const int lane = threadIdx.x % WARP;
    const int col = blockIdx.x * MATVEC_WARPS + threadIdx.x / WARP;
    if (col >= n) {
        return;
    }
    const int units = k / 32;
    const unsigned char* row = w + (size_t)col * F::row_bytes(k);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        acc[r] = 0.0f;
    }
    for (int u = lane; u < units; u += WARP) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
            acc[r] += F::dot(row, u, x + (size_t)r * k + (size_t)u * 32);
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

// The feed-forward's gate and up products with SwiGLU: gate[r][n] = silu(w_gate[n] . x[r]) *
// (w_up[n] . x[r]), each product summed as `matvec` sums it. Same launch as `matvec`.
template <int R, typename F>
__device__ __forceinline__ void matvec_swiglu(const unsigned char* __restrict__ wg,
                                              const unsigned char* __restrict__ wu,
                                              const float* __restrict__ x,
                                              float* __restrict__ gate, int n, int k) {
    const int lane = threadIdx.x % WARP;
    const int col = blockIdx.x * MATVEC_WARPS + threadIdx.x / WARP;
    if (col >= n) {
        return;
    }
    const int units = k / 32;
    const unsigned char* rg = wg + (size_t)col * F::row_bytes(k);
    const unsigned char* ru = wu + (size_t)col * F::row_bytes(k);
    float ag[R], au[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        ag[r] = 0.0f;
        au[r] = 0.0f;
    }
    for (int u = lane; u < units; u += WARP) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const float* xr = x + (size_t)r * k + (size_t)u * 32;
            ag[r] += F::dot(rg, u, xr);
            au[r] += F::dot(ru, u, xr);
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const float g = warp_sum(ag[r]);
        const float up = warp_sum(au[r]);
        if (lane == 0) {
            gate[(size_t)r * n + col] = g / (1.0f + expf(-g)) * up;
        }
    }
}

// 16-bit float weights (f16, or bf16 with BF16): each lane takes 2 consecutive weights at a time.
template <int R, bool BF16>
__device__ __forceinline__ void matvec_half(const unsigned short* __restrict__ w,
                                            const float* __restrict__ x, float* __restrict__ out,
                                            int n, int k) {
    const int lane = threadIdx.x % WARP;
    const int col = blockIdx.x * MATVEC_WARPS + threadIdx.x / WARP;
    if (col >= n) {
        return;
    }
    const unsigned int* row = reinterpret_cast<const unsigned int*>(w + (size_t)col * k);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        acc[r] = 0.0f;
    }
    for (int i = lane; i < k / 2; i += WARP) {
        const unsigned int pair = row[i];
        float v0, v1;
        if constexpr (BF16) {
            v0 = bf16_to_float((unsigned short)(pair & 0xffff));
            v1 = bf16_to_float((unsigned short)(pair >> 16));
        } else {
            v0 = __half2float(__ushort_as_half((unsigned short)(pair & 0xffff)));
            v1 = __half2float(__ushort_as_half((unsigned short)(pair >> 16)));
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const float* xr = x + (size_t)r * k + 2 * i;
            acc[r] += v0 * xr[0] + v1 * xr[1];
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

#define MATVEC_FORMAT(NAME, FORMAT, R)                                                         \
    extern "C" __global__ void __launch_bounds__(32 * MATVEC_WARPS)                            \
        matvec_##NAME##_r##R(const unsigned char* w, const float* x, float* out, int n, int k) { \
        matvec<R, FORMAT>(w, x, out, n, k);                                                    \
    }

#define MATVEC_SWIGLU(NAME, FORMAT, R)                                                         \
    extern "C" __global__ void __launch_bounds__(32 * MATVEC_WARPS)                            \
        matvec_swiglu_##NAME##_r##R(const unsigned char* wg, const unsigned char* wu,          \
                                    const float* x, float* gate, int n, int k) {               \
        matvec_swiglu<R, FORMAT>(wg, wu, x, gate, n, k);                                       \
    }

#define MATVEC_HALF(NAME, BF16, R)                                                             \
    extern "C" __global__ void __launch_bounds__(32 * MATVEC_WARPS)                            \
        matvec_##NAME##_r##R(const unsigned short* w, const float* x, float* out, int n, int k) { \
        matvec_half<R, BF16>(w, x, out, n, k);                                                 \
    }

#define MATVEC_ROWS(KIND, NAME, FORMAT)                                                        \
    KIND(NAME, FORMAT, 1)                                                                      \
    KIND(NAME, FORMAT, 2)                                                                      \
    KIND(NAME, FORMAT, 3)                                                                      \
    KIND(NAME, FORMAT, 4)                                                                      \
    KIND(NAME, FORMAT, 5)                                                                      \
    KIND(NAME, FORMAT, 6)                                                                      \
    KIND(NAME, FORMAT, 7)                                                                      \
    KIND(NAME, FORMAT, 8)

MATVEC_ROWS(MATVEC_FORMAT, q4_0, Q4_0)
MATVEC_ROWS(MATVEC_FORMAT, q4_1, Q4_1)
MATVEC_ROWS(MATVEC_FORMAT, q8_0, Q8_0)
MATVEC_ROWS(MATVEC_FORMAT, q4_k, Q4_K)
MATVEC_ROWS(MATVEC_FORMAT, q5_k, Q5_K)
MATVEC_ROWS(MATVEC_FORMAT, q6_k, Q6_K)
MATVEC_ROWS(MATVEC_HALF, f16, false)
MATVEC_ROWS(MATVEC_HALF, bf16, true)
MATVEC_ROWS(MATVEC_SWIGLU, q4_0, Q4_0)
MATVEC_ROWS(MATVEC_SWIGLU, q4_1, Q4_1)
MATVEC_ROWS(MATVEC_SWIGLU, q8_0, Q8_0)
MATVEC_ROWS(MATVEC_SWIGLU, q4_k, Q4_K)
MATVEC_ROWS(MATVEC_SWIGLU, q5_k, Q5_K)
MATVEC_ROWS(MATVEC_SWIGLU, q6_k, Q6_K)
