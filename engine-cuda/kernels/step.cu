// The per-step operations that follow the step's metadata: RoPE by each row's angles, writing
// keys and values into their cache slots, gathering the output rows.
#include "common.cuh"

// Rotates the first n_dims dimensions of each head of every row: adjacent pairs (x[2i],
// x[2i+1]) or, with neox, halves (x[i], x[i + n_dims/2]); angles holds (cos, sin) per pair, per
// row. Launch: grid (rows, n_heads), blockDim >= n_dims / 2.
extern "C" __global__ void rope(float* __restrict__ x, const float* __restrict__ angles, int n_heads,
                                int head_dim, int n_dims, int neox) {
    const int row = blockIdx.x;
    const int head = blockIdx.y;
    const int i = threadIdx.x;
    if (2 * i >= n_dims) {
        return;
    }
    const float c = angles[(size_t)row * n_dims + 2 * i];
    const float s = angles[(size_t)row * n_dims + 2 * i + 1];
    float* h = x + ((size_t)row * n_heads + head) * head_dim;
    const int a = neox ? i : 2 * i;
    const int b = neox ? i + n_dims / 2 : 2 * i + 1;
    const float x0 = h[a], x1 = h[b];
    h[a] = x0 * c - x1 * s;
    h[b] = x0 * s + x1 * c;
}

// cache[slot[r]] = src[r] for every row (kv_dim floats each), for one layer's K or V cache.
// Launch: grid rows, blockDim a multiple of 32.
extern "C" __global__ void kv_write_f32(float* __restrict__ cache, const float* __restrict__ src,
                                        const int* __restrict__ slots, int kv_dim) {
    const int row = blockIdx.x;
    float* dst = cache + (size_t)slots[row] * kv_dim;
    const float* s = src + (size_t)row * kv_dim;
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        dst[i] = s[i];
    }
}

extern "C" __global__ void kv_write_f16(__half* __restrict__ cache, const float* __restrict__ src,
                                        const int* __restrict__ slots, int kv_dim) {
    const int row = blockIdx.x;
    __half* dst = cache + (size_t)slots[row] * kv_dim;
    const float* s = src + (size_t)row * kv_dim;
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        dst[i] = __float2half_rn(s[i]);
    }
}

// out[i] = x[rows[i]] (dim floats each). Launch: grid = number of output rows.
extern "C" __global__ void gather_rows(const float* __restrict__ x, const int* __restrict__ rows,
                                       int dim, float* __restrict__ out) {
    const float* src = x + (size_t)rows[blockIdx.x] * dim;
    float* dst = out + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        dst[i] = src[i];
    }
}
