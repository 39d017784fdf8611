// Shared by every kernel file: the GGUF weight formats as the device reads them
// (`formats.cuh`), and warp reductions. Activations are f32.
#pragma once
#include <cuda_fp16.h>

#include "formats.cuh"

#define WARP 32

// Minus infinity (NVRTC has no math.h macros).
#define NEG_INF __int_as_float(0xff800000)

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
