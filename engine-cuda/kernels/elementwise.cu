// Row-wise and element-wise operations on f32 activations.
#include "common.cuh"

// out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * weight. One block per row; blockDim a multiple of
// 32 (at most 1024). The sum of squares is taken in f32 in a fixed order for a given blockDim.
extern "C" __global__ void rms_norm(const float* __restrict__ x, const float* __restrict__ weight,
                                    float eps, int dim, float* __restrict__ out) {
    __shared__ float partial[32];
    const float* xr = x + (size_t)blockIdx.x * dim;
    float* outr = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        ss += xr[i] * xr[i];
    }
    ss = block_sum(ss, partial);
    const float scale = rsqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        outr[i] = xr[i] * scale * weight[i];
    }
}

// x[r] += y[r], then out[r] = rms_norm(x[r]) * weight: a residual add and the norm after it, with
// the same arithmetic as `add` then `rms_norm`. Launch as rms_norm.
extern "C" __global__ void add_rms_norm(float* __restrict__ x, const float* __restrict__ y,
                                        const float* __restrict__ weight, float eps, int dim,
                                        float* __restrict__ out) {
    __shared__ float partial[32];
    float* xr = x + (size_t)blockIdx.x * dim;
    const float* yr = y + (size_t)blockIdx.x * dim;
    float* outr = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = xr[i] + yr[i];
        xr[i] = v;
        ss += v * v;
    }
    ss = block_sum(ss, partial);
    const float scale = rsqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        outr[i] = xr[i] * scale * weight[i];
    }
}

// x[i] += y[i].
extern "C" __global__ void add(float* __restrict__ x, const float* __restrict__ y, int len) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < len) {
        x[i] += y[i];
    }
}

// x[r][i] += bias[i] for every row.
extern "C" __global__ void add_bias(float* __restrict__ x, const float* __restrict__ bias, int rows,
                                    int dim) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < rows * dim) {
        x[i] += bias[i % dim];
    }
}

// gate[i] = silu(gate[i]) * up[i].
extern "C" __global__ void swiglu(float* __restrict__ gate, const float* __restrict__ up, int len) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < len) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// out[r] = the dequantized row token[r] of a table. One block per row of the step; blockDim
// threads take the row's 32-weight units in turn.
template <typename F>
__device__ __forceinline__ void embed(const unsigned char* __restrict__ table,
                                      const int* __restrict__ tokens, int dim,
                                      float* __restrict__ out) {
    const unsigned char* row = table + (size_t)tokens[blockIdx.x] * F::row_bytes(dim);
    float* o = out + (size_t)blockIdx.x * dim;
    for (int u = threadIdx.x; u < dim / 32; u += blockDim.x) {
        F::dequant(row, u, o + u * 32);
    }
}

#define EMBED(NAME, FORMAT)                                                                    \
    extern "C" __global__ void embed_##NAME(const unsigned char* t, const int* tokens, int dim, \
                                            float* out) {                                      \
        embed<FORMAT>(t, tokens, dim, out);                                                    \
    }

EMBED(q4_0, Q4_0)
EMBED(q4_1, Q4_1)
EMBED(q8_0, Q8_0)
EMBED(q4_k, Q4_K)
EMBED(q5_k, Q5_K)
EMBED(q6_k, Q6_K)

// 16-bit float tables: one thread per element.
extern "C" __global__ void embed_f16(const __half* t, const int* tokens, int dim, float* out) {
    const __half* row = t + (size_t)tokens[blockIdx.x] * dim;
    float* o = out + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        o[i] = __half2float(row[i]);
    }
}

extern "C" __global__ void embed_bf16(const unsigned short* t, const int* tokens, int dim,
                                      float* out) {
    const unsigned short* row = t + (size_t)tokens[blockIdx.x] * dim;
    float* o = out + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        o[i] = bf16_to_float(row[i]);
    }
}
