// Shared by every kernel file: the GGUF block formats as the device reads them, and warp
// reductions. Weights stay in their GGUF layout (rows of blocks, row-major); activations are
// f32.
#pragma once
#include <cuda_fp16.h>

#define WARP 32

// Minus infinity (NVRTC has no math.h macros).
#define NEG_INF __int_as_float(0xff800000)

// 32 weights: (q - 8) * d, low nibbles first.
struct block_q4_0 {
    __half d;
    unsigned char qs[16];
};

// 32 weights: q * d + m, low nibbles first.
struct block_q4_1 {
    __half d;
    __half m;
    unsigned char qs[16];
};

// 32 weights: q * d.
struct block_q8_0 {
    __half d;
    signed char qs[32];
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

// The sum of `v` over a block of `blockDim.x` threads (a multiple of 32, at most 1024); every
// thread gets it.
__device__ __forceinline__ float block_sum(float v, float* shared32) {
    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    v = warp_sum(v);
    if (lane == 0) {
        shared32[warp] = v;
    }
    __syncthreads();
    const int warps = blockDim.x / WARP;
    v = lane < warps ? shared32[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

// The 32 weights of one block, dequantized (lane-independent helpers: each lane handles whole
// blocks so that every weight byte is read once).
__device__ __forceinline__ float dot_block(const block_q4_0& b, const float* x) {
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const int q = b.qs[j];
        s += (float)((q & 0x0f) - 8) * x[j] + (float)((q >> 4) - 8) * x[j + 16];
    }
    return s * __half2float(b.d);
}

__device__ __forceinline__ float dot_block(const block_q4_1& b, const float* x) {
    float s = 0.0f, sx = 0.0f;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const int q = b.qs[j];
        s += (float)(q & 0x0f) * x[j] + (float)(q >> 4) * x[j + 16];
        sx += x[j] + x[j + 16];
    }
    return s * __half2float(b.d) + sx * __half2float(b.m);
}

__device__ __forceinline__ float dot_block(const block_q8_0& b, const float* x) {
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
        s += (float)b.qs[j] * x[j];
    }
    return s * __half2float(b.d);
}

__device__ __forceinline__ void dequant_block(const block_q4_0& b, float* out) {
    const float d = __half2float(b.d);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        out[j] = (float)((b.qs[j] & 0x0f) - 8) * d;
        out[j + 16] = (float)((b.qs[j] >> 4) - 8) * d;
    }
}

__device__ __forceinline__ void dequant_block(const block_q4_1& b, float* out) {
    const float d = __half2float(b.d), m = __half2float(b.m);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        out[j] = (float)(b.qs[j] & 0x0f) * d + m;
        out[j + 16] = (float)(b.qs[j] >> 4) * d + m;
    }
}

__device__ __forceinline__ void dequant_block(const block_q8_0& b, float* out) {
    const float d = __half2float(b.d);
#pragma unroll
    for (int j = 0; j < 32; ++j) {
        out[j] = (float)b.qs[j] * d;
    }
}
