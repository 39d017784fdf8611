// A host build of kernels/formats.cuh, the device's reading of the GGUF weight formats, for
// tests/formats_host.rs. Reads one row of K weights in FORMAT (its bytes) and K activations from
// standard input; writes the row's weights as the device dequantizes them (K floats), then the
// dot product of each 32-weight unit with its 32 activations (K / 32 floats).
// Usage: harness FORMAT K
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define __device__
#define __forceinline__ inline

struct __half {
    unsigned short bits;
};

// IEEE binary16 to binary32, exactly.
static inline float __half2float(__half h) {
    const int sign = (h.bits >> 15) & 1, exp = (h.bits >> 10) & 31, man = h.bits & 1023;
    float v;
    if (exp == 0) {
        v = std::ldexp((float)man, -24);
    } else if (exp == 31) {
        v = man ? NAN : INFINITY;
    } else {
        v = std::ldexp((float)(man | 1024), exp - 25);
    }
    return sign ? -v : v;
}

#include "formats.cuh"

template <typename F>
static int run(int k) {
    std::vector<unsigned char> row(F::row_bytes(k));
    std::vector<float> x(k), out(k), dots(k / 32);
    if (fread(row.data(), 1, row.size(), stdin) != row.size() ||
        fread(x.data(), sizeof(float), x.size(), stdin) != x.size()) {
        fprintf(stderr, "short input\n");
        return 1;
    }
    for (int u = 0; u < k / 32; ++u) {
        F::dequant(row.data(), u, out.data() + 32 * u);
        dots[u] = F::dot(row.data(), u, x.data() + 32 * u);
    }
    fwrite(out.data(), sizeof(float), out.size(), stdout);
    fwrite(dots.data(), sizeof(float), dots.size(), stdout);
    return 0;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: harness FORMAT K\n");
        return 2;
    }
    const char* f = argv[1];
    const int k = atoi(argv[2]);
    if (!strcmp(f, "q4_0")) return run<Q4_0>(k);
    if (!strcmp(f, "q4_1")) return run<Q4_1>(k);
    if (!strcmp(f, "q8_0")) return run<Q8_0>(k);
    if (!strcmp(f, "q4_k")) return run<Q4_K>(k);
    if (!strcmp(f, "q5_k")) return run<Q5_K>(k);
    if (!strcmp(f, "q6_k")) return run<Q6_K>(k);
    fprintf(stderr, "unknown format %s\n", f);
    return 2;
}
