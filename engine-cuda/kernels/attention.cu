// Causal attention of each row's query heads over its sequence's cached keys and values,
// through the sequence's block table. One block per (row, query head); keys go in chunks of
// ATTN_CHUNK with an online softmax (running maximum and sum), so any context length fits.
// Launch: grid (rows, n_heads), blockDim ATTN_THREADS; head_dim at most 2 * ATTN_THREADS.
#include "common.cuh"

#define ATTN_THREADS 128
#define ATTN_CHUNK 512

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }

// q: rows x n_heads x head_dim. cache_k/v: slots x n_kv_heads x head_dim (one layer).
// row_pos[r]: the row's position (it sees keys 0..=pos); row_table[r]: where its sequence's
// block table starts in `tables`.
template <typename T>
__device__ void attention(const float* __restrict__ q, const T* __restrict__ cache_k,
                          const T* __restrict__ cache_v, const int* __restrict__ row_pos,
                          const int* __restrict__ row_table, const int* __restrict__ tables,
                          int n_heads, int n_kv_heads, int head_dim, int block_size, float scale,
                          float* __restrict__ out) {
    __shared__ float qs[2 * ATTN_THREADS];
    __shared__ float scores[ATTN_CHUNK];
    __shared__ float partial[32];
    const int row = blockIdx.x;
    const int head = blockIdx.y;
    const int kv_head = head / (n_heads / n_kv_heads);
    const int tid = threadIdx.x;
    const int kv_dim = n_kv_heads * head_dim;
    const float* qh = q + ((size_t)row * n_heads + head) * head_dim;
    for (int d = tid; d < head_dim; d += ATTN_THREADS) {
        qs[d] = qh[d] * scale;
    }
    __syncthreads();
    const int n_keys = row_pos[row] + 1;
    const int* table = tables + row_table[row];
    // This thread's output dimensions: tid and tid + ATTN_THREADS.
    float acc0 = 0.0f, acc1 = 0.0f;
    float running_max = NEG_INF, running_sum = 0.0f;
    for (int c0 = 0; c0 < n_keys; c0 += ATTN_CHUNK) {
        const int len = min(ATTN_CHUNK, n_keys - c0);
        float local_max = NEG_INF;
        for (int j = tid; j < len; j += ATTN_THREADS) {
            const int p = c0 + j;
            const size_t slot = (size_t)table[p / block_size] * block_size + p % block_size;
            const T* k = cache_k + slot * kv_dim + (size_t)kv_head * head_dim;
            float s = 0.0f;
            for (int d = 0; d < head_dim; ++d) {
                s += qs[d] * load(k + d);
            }
            scores[j] = s;
            local_max = fmaxf(local_max, s);
        }
        // The chunk's maximum, for every thread.
        float m = local_max;
#pragma unroll
        for (int o = WARP / 2; o > 0; o >>= 1) {
            m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        }
        if (tid % WARP == 0) {
            partial[tid / WARP] = m;
        }
        __syncthreads();
        m = NEG_INF;
        for (int w = 0; w < ATTN_THREADS / WARP; ++w) {
            m = fmaxf(m, partial[w]);
        }
        __syncthreads();
        const float new_max = fmaxf(running_max, m);
        const float rescale = expf(running_max - new_max);
        float local_sum = 0.0f;
        for (int j = tid; j < len; j += ATTN_THREADS) {
            const float e = expf(scores[j] - new_max);
            scores[j] = e;
            local_sum += e;
        }
        const float chunk_sum = block_sum(local_sum, partial);
        running_sum = running_sum * rescale + chunk_sum;
        running_max = new_max;
        acc0 *= rescale;
        acc1 *= rescale;
        // Every thread sees every weight of the chunk (block_sum synchronized the block).
        for (int j = 0; j < len; ++j) {
            const int p = c0 + j;
            const size_t slot = (size_t)table[p / block_size] * block_size + p % block_size;
            const T* v = cache_v + slot * kv_dim + (size_t)kv_head * head_dim;
            const float w = scores[j];
            if (tid < head_dim) {
                acc0 += w * load(v + tid);
            }
            if (tid + ATTN_THREADS < head_dim) {
                acc1 += w * load(v + tid + ATTN_THREADS);
            }
        }
        __syncthreads();
    }
    float* o = out + ((size_t)row * n_heads + head) * head_dim;
    const float inv = 1.0f / running_sum;
    if (tid < head_dim) {
        o[tid] = acc0 * inv;
    }
    if (tid + ATTN_THREADS < head_dim) {
        o[tid + ATTN_THREADS] = acc1 * inv;
    }
}

extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
    attention_f32(const float* q, const float* cache_k, const float* cache_v, const int* row_pos,
                  const int* row_table, const int* tables, int n_heads, int n_kv_heads,
                  int head_dim, int block_size, float scale, float* out) {
    attention<float>(q, cache_k, cache_v, row_pos, row_table, tables, n_heads, n_kv_heads,
                     head_dim, block_size, scale, out);
}

extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
    attention_f16(const float* q, const __half* cache_k, const __half* cache_v, const int* row_pos,
                  const int* row_table, const int* tables, int n_heads, int n_kv_heads,
                  int head_dim, int block_size, float scale, float* out) {
    attention<__half>(q, cache_k, cache_v, row_pos, row_table, tables, n_heads, n_kv_heads,
                      head_dim, block_size, scale, out);
}
