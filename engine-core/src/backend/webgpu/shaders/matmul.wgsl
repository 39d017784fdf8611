// Tiled dequantize-and-multiply for many activation rows (prefill):
// `Y[t][col0 + n] = W[n] . X[t]`. A workgroup of 64 invocations computes a 64x64 tile of
// (features x rows); each step decodes a 64x32 slice of weights and loads a 64x32 slice of
// activations into workgroup memory (transposed, as vec4s along the tile), then every
// invocation accumulates an 8x8 block of outputs (four vec4 loads per 64 multiply-adds). The
// f16 variant multiplies in f16 within a step and accumulates the steps in f32.

struct Params {
    k: u32,
    n: u32,
    n_total: u32,
    col0: u32,
    rows: u32,
    nb: u32,
    soff: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 32u;
var<workgroup> WS: array<vec4<hf>, 512>;
var<workgroup> XS: array<vec4<hf>, 512>;

@compute @workgroup_size(64)
fn main(ids: Ids) {
    _ = init(ids);
    let wg = workgroupUniformLoad(&WG_ID);
    let m0 = wg.x * BM;
    let n0 = wg.y * BN;
    // Outputs: features 8 * tm .. + 8, rows 8 * tn .. + 8 of the tile.
    let tm = LI % 8u;
    let tn = LI / 8u;
    let wrow = m0 + LI;
    let tok = n0 + LI;
    let groups = P.k / 8u;
    let steps = (groups + 3u) / 4u;
    // acc[2 * j + h]: features 8 * tm + 4 * h .. + 4 of row 8 * tn + j.
    var acc: array<vec4<f32>, 16>;
    for (var s = 0u; s < steps; s++) {
        for (var q = 0u; q < 4u; q++) {
            let g = s * 4u + q;
            var w = array<vec4<hf>, 2>(vec4<hf>(0.0), vec4<hf>(0.0));
            if (wrow < P.n && g < groups) {
                w = dq8(wrow, g, P.nb, P.soff);
            }
            var xa = vec4<hf>(0.0);
            var xb = vec4<hf>(0.0);
            if (tok < P.rows && g < groups) {
                let xi = (tok * P.k + g * 8u) / 4u;
                xa = vec4<hf>(X[xi]);
                xb = vec4<hf>(X[xi + 1u]);
            }
            let c = LI / 4u;
            let lane = LI % 4u;
            for (var e = 0u; e < 4u; e++) {
                WS[(q * 8u + e) * 16u + c][lane] = w[0][e];
                WS[(q * 8u + 4u + e) * 16u + c][lane] = w[1][e];
                XS[(q * 8u + e) * 16u + c][lane] = xa[e];
                XS[(q * 8u + 4u + e) * 16u + c][lane] = xb[e];
            }
        }
        workgroupBarrier();
//#if F16
        var part: array<vec4<f16>, 16>;
//#endif
        // Unrolled by hand: constant indices keep the accumulators in registers on compilers
        // that would otherwise spill a dynamically indexed array to memory (llvmpipe).
        for (var kk = 0u; kk < BK; kk++) {
            let a0 = WS[kk * 16u + 2u * tm];
            let a1 = WS[kk * 16u + 2u * tm + 1u];
            let b0 = XS[kk * 16u + 2u * tn];
            let b1 = XS[kk * 16u + 2u * tn + 1u];
//#if F16
            part[0] += a0 * b0.x;
            part[1] += a1 * b0.x;
            part[8] += a0 * b1.x;
            part[9] += a1 * b1.x;
            part[2] += a0 * b0.y;
            part[3] += a1 * b0.y;
            part[10] += a0 * b1.y;
            part[11] += a1 * b1.y;
            part[4] += a0 * b0.z;
            part[5] += a1 * b0.z;
            part[12] += a0 * b1.z;
            part[13] += a1 * b1.z;
            part[6] += a0 * b0.w;
            part[7] += a1 * b0.w;
            part[14] += a0 * b1.w;
            part[15] += a1 * b1.w;
//#else
            acc[0] += a0 * b0.x;
            acc[1] += a1 * b0.x;
            acc[8] += a0 * b1.x;
            acc[9] += a1 * b1.x;
            acc[2] += a0 * b0.y;
            acc[3] += a1 * b0.y;
            acc[10] += a0 * b1.y;
            acc[11] += a1 * b1.y;
            acc[4] += a0 * b0.z;
            acc[5] += a1 * b0.z;
            acc[12] += a0 * b1.z;
            acc[13] += a1 * b1.z;
            acc[6] += a0 * b0.w;
            acc[7] += a1 * b0.w;
            acc[14] += a0 * b1.w;
            acc[15] += a1 * b1.w;
//#endif
        }
//#if F16
        acc[0] += vec4<f32>(part[0]);
        acc[1] += vec4<f32>(part[1]);
        acc[2] += vec4<f32>(part[2]);
        acc[3] += vec4<f32>(part[3]);
        acc[4] += vec4<f32>(part[4]);
        acc[5] += vec4<f32>(part[5]);
        acc[6] += vec4<f32>(part[6]);
        acc[7] += vec4<f32>(part[7]);
        acc[8] += vec4<f32>(part[8]);
        acc[9] += vec4<f32>(part[9]);
        acc[10] += vec4<f32>(part[10]);
        acc[11] += vec4<f32>(part[11]);
        acc[12] += vec4<f32>(part[12]);
        acc[13] += vec4<f32>(part[13]);
        acc[14] += vec4<f32>(part[14]);
        acc[15] += vec4<f32>(part[15]);
//#endif
        workgroupBarrier();
    }
    for (var j = 0u; j < 8u; j++) {
        let t = n0 + tn * 8u + j;
        if (t < P.rows) {
            for (var c = 0u; c < 8u; c++) {
                let row = m0 + tm * 8u + c;
                if (row < P.n) {
                    Y[t * P.n_total + P.col0 + row] = acc[2u * j + c / 4u][c % 4u];
                }
            }
        }
    }
}
