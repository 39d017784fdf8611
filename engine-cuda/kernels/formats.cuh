// The GGUF weight formats as the device reads them. Weights stay in their GGUF layout (rows of
// blocks, row-major). Every format is read in units of 32 consecutive weights of a row: unit `u`
// of a row covers weights 32u..32u + 32 (a whole block of the 32-weight formats, one sub-block of
// the 256-weight K-quant super-blocks). Each format gives a row's size in bytes, the dot product
// of one unit with 32 activations, and the unit's weights as floats.
//
// Only `__half`, `__half2float` and the `__device__`/`__forceinline__` qualifiers are used here,
// so the host test (`tests/formats_host.rs`) compiles this file with a C++ compiler and checks it
// against engine-core's dequantizer.
#pragma once

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

// 256 weights in 8 sub-blocks of 32: d * sc * q - dmin * m with 6-bit sub-block scales and
// minimums packed in `scales`; sub-blocks 2p and 2p + 1 share qs[32p..32p + 32] (low nibbles,
// then high nibbles).
struct block_q4_k {
    __half d;
    __half dmin;
    unsigned char scales[12];
    unsigned char qs[128];
};

// As Q4_K, with a fifth bit: bit j of qh[l] for weight l of sub-block j.
struct block_q5_k {
    __half d;
    __half dmin;
    unsigned char scales[12];
    unsigned char qh[32];
    unsigned char qs[128];
};

// 256 weights: d * sc * (q - 32), 6-bit q (4 low bits in ql, 2 high bits in qh), signed 8-bit
// scales per 16 weights.
struct block_q6_k {
    unsigned char ql[128];
    unsigned char qh[64];
    signed char scales[16];
    __half d;
};

// bfloat16 bits as f32.
__device__ __forceinline__ float bf16_to_float(unsigned short bits) {
    union {
        unsigned int u;
        float f;
    } v;
    v.u = (unsigned int)bits << 16;
    return v.f;
}

// The 6-bit scale and minimum of sub-block j of a Q4_K or Q5_K super-block (ggml's
// get_scale_min_k4).
__device__ __forceinline__ void scale_min_k4(int j, const unsigned char* q, int& sc, int& m) {
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

struct Q4_0 {
    static __device__ __forceinline__ size_t row_bytes(int k) {
        return (size_t)(k / 32) * sizeof(block_q4_0);
    }
    static __device__ __forceinline__ float dot(const unsigned char* row, int u, const float* x) {
        const block_q4_0& b = reinterpret_cast<const block_q4_0*>(row)[u];
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            const int q = b.qs[j];
            s += (float)((q & 0x0f) - 8) * x[j] + (float)((q >> 4) - 8) * x[j + 16];
        }
        return s * __half2float(b.d);
    }
    static __device__ __forceinline__ void dequant(const unsigned char* row, int u, float* out) {
        const block_q4_0& b = reinterpret_cast<const block_q4_0*>(row)[u];
        const float d = __half2float(b.d);
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            out[j] = (float)((b.qs[j] & 0x0f) - 8) * d;
            out[j + 16] = (float)((b.qs[j] >> 4) - 8) * d;
        }
    }
};

struct Q4_1 {
    static __device__ __forceinline__ size_t row_bytes(int k) {
        return (size_t)(k / 32) * sizeof(block_q4_1);
    }
    static __device__ __forceinline__ float dot(const unsigned char* row, int u, const float* x) {
        const block_q4_1& b = reinterpret_cast<const block_q4_1*>(row)[u];
        float s = 0.0f, sx = 0.0f;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            const int q = b.qs[j];
            s += (float)(q & 0x0f) * x[j] + (float)(q >> 4) * x[j + 16];
            sx += x[j] + x[j + 16];
        }
        return s * __half2float(b.d) + sx * __half2float(b.m);
    }
    static __device__ __forceinline__ void dequant(const unsigned char* row, int u, float* out) {
        const block_q4_1& b = reinterpret_cast<const block_q4_1*>(row)[u];
        const float d = __half2float(b.d), m = __half2float(b.m);
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            out[j] = (float)(b.qs[j] & 0x0f) * d + m;
            out[j + 16] = (float)(b.qs[j] >> 4) * d + m;
        }
    }
};

struct Q8_0 {
    static __device__ __forceinline__ size_t row_bytes(int k) {
        return (size_t)(k / 32) * sizeof(block_q8_0);
    }
    static __device__ __forceinline__ float dot(const unsigned char* row, int u, const float* x) {
        const block_q8_0& b = reinterpret_cast<const block_q8_0*>(row)[u];
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < 32; ++j) {
            s += (float)b.qs[j] * x[j];
        }
        return s * __half2float(b.d);
    }
    static __device__ __forceinline__ void dequant(const unsigned char* row, int u, float* out) {
        const block_q8_0& b = reinterpret_cast<const block_q8_0*>(row)[u];
        const float d = __half2float(b.d);
#pragma unroll
        for (int j = 0; j < 32; ++j) {
            out[j] = (float)b.qs[j] * d;
        }
    }
};

// Q4_K and Q5_K: unit u is sub-block u % 8 of super-block u / 8.
template <typename Super, bool FIFTH_BIT>
struct KQuant45 {
    static __device__ __forceinline__ size_t row_bytes(int k) {
        return (size_t)(k / 256) * sizeof(Super);
    }
    // The unit's integer weights (0..31) into q, with its scale and minimum.
    static __device__ __forceinline__ void unit(const unsigned char* row, int u, int* q, float& d,
                                                float& m) {
        const Super& s = reinterpret_cast<const Super*>(row)[u / 8];
        const int j = u % 8;
        int sc, mn;
        scale_min_k4(j, s.scales, sc, mn);
        d = __half2float(s.d) * (float)sc;
        m = -__half2float(s.dmin) * (float)mn;
        const unsigned char* qs = s.qs + 32 * (j / 2);
        const int shift = 4 * (j % 2);
#pragma unroll
        for (int l = 0; l < 32; ++l) {
            q[l] = (qs[l] >> shift) & 0x0f;
        }
        if constexpr (FIFTH_BIT) {
#pragma unroll
            for (int l = 0; l < 32; ++l) {
                q[l] += ((s.qh[l] >> j) & 1) << 4;
            }
        }
    }
    static __device__ __forceinline__ float dot(const unsigned char* row, int u, const float* x) {
        int q[32];
        float d, m;
        unit(row, u, q, d, m);
        float s = 0.0f, sx = 0.0f;
#pragma unroll
        for (int l = 0; l < 32; ++l) {
            s += (float)q[l] * x[l];
            sx += x[l];
        }
        return s * d + sx * m;
    }
    static __device__ __forceinline__ void dequant(const unsigned char* row, int u, float* out) {
        int q[32];
        float d, m;
        unit(row, u, q, d, m);
#pragma unroll
        for (int l = 0; l < 32; ++l) {
            out[l] = (float)q[l] * d + m;
        }
    }
};

typedef KQuant45<block_q4_k, false> Q4_K;
typedef KQuant45<block_q5_k, true> Q5_K;

// Q6_K: unit u is sub-block j = u % 8 of super-block u / 8, in ggml's order: half h = j / 4 of
// the super-block, group g = j % 4 of that half. Weight l of the unit takes the low (g < 2) or
// high nibble of ql[64h + 32 (g % 2) + l] and bits 2g..2g + 2 of qh[32h + l]; its scale is
// scales[8h + 2g + l / 16].
struct Q6_K {
    static __device__ __forceinline__ size_t row_bytes(int k) {
        return (size_t)(k / 256) * sizeof(block_q6_k);
    }
    static __device__ __forceinline__ float unit(const unsigned char* row, int u, int* q,
                                                 float* sc) {
        const block_q6_k& s = reinterpret_cast<const block_q6_k*>(row)[u / 8];
        const int j = u % 8;
        const int h = j / 4, g = j % 4;
        const unsigned char* ql = s.ql + 64 * h + 32 * (g % 2);
        const unsigned char* qh = s.qh + 32 * h;
        const int lshift = g < 2 ? 0 : 4;
#pragma unroll
        for (int l = 0; l < 32; ++l) {
            q[l] = (((ql[l] >> lshift) & 0x0f) | (((qh[l] >> (2 * g)) & 3) << 4)) - 32;
        }
        sc[0] = (float)s.scales[8 * h + 2 * g];
        sc[1] = (float)s.scales[8 * h + 2 * g + 1];
        return __half2float(s.d);
    }
    static __device__ __forceinline__ float dot(const unsigned char* row, int u, const float* x) {
        int q[32];
        float sc[2];
        const float d = unit(row, u, q, sc);
        float lo = 0.0f, hi = 0.0f;
#pragma unroll
        for (int l = 0; l < 16; ++l) {
            lo += (float)q[l] * x[l];
            hi += (float)q[l + 16] * x[l + 16];
        }
        return d * (sc[0] * lo + sc[1] * hi);
    }
    static __device__ __forceinline__ void dequant(const unsigned char* row, int u, float* out) {
        int q[32];
        float sc[2];
        const float d = unit(row, u, q, sc);
#pragma unroll
        for (int l = 0; l < 32; ++l) {
            out[l] = d * sc[l / 16] * (float)q[l];
        }
    }
};
