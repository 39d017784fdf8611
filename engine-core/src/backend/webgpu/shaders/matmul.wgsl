// Tiled dequantize-and-multiply for many activation rows (prefill):
// `Y[t][col0 + n] = W[n] . X[t]`. A workgroup of 256 invocations computes a 64x64 tile of
// (features x rows); each step decodes a 64x32 slice of weights and loads a 64x32 slice of
// activations into workgroup memory (transposed, as vec4s along the tile), then every
// invocation accumulates a 4x4 block of outputs. The f16 variant multiplies in f16 within a
// step and accumulates the steps in f32.

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

@compute @workgroup_size(256)
fn main(ids: Ids) {
    _ = init(ids);
    let m0 = ids.wg.x * BM;
    let n0 = ids.wg.y * BN;
    let tm = LI % 16u;
    let tn = LI / 16u;
    let lm = LI / 4u;
    let lq = LI % 4u;
    let wrow = m0 + lm;
    let tok = n0 + lm;
    let groups = P.k / 8u;
    let steps = (groups + 3u) / 4u;
    var acc: array<vec4<f32>, 4>;
    for (var s = 0u; s < steps; s++) {
        let g = s * 4u + lq;
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
        let c = lm / 4u;
        let lane = lm % 4u;
        for (var e = 0u; e < 4u; e++) {
            WS[(lq * 8u + e) * 16u + c][lane] = w[0][e];
            WS[(lq * 8u + 4u + e) * 16u + c][lane] = w[1][e];
            XS[(lq * 8u + e) * 16u + c][lane] = xa[e];
            XS[(lq * 8u + 4u + e) * 16u + c][lane] = xb[e];
        }
        workgroupBarrier();
//#if F16
        var part: array<vec4<f16>, 4>;
        for (var kk = 0u; kk < BK; kk++) {
            let a = WS[kk * 16u + tm];
            let b = XS[kk * 16u + tn];
            part[0] += a * b.x;
            part[1] += a * b.y;
            part[2] += a * b.z;
            part[3] += a * b.w;
        }
        for (var j = 0u; j < 4u; j++) {
            acc[j] += vec4<f32>(part[j]);
        }
//#else
        for (var kk = 0u; kk < BK; kk++) {
            let a = WS[kk * 16u + tm];
            let b = XS[kk * 16u + tn];
            acc[0] += a * b.x;
            acc[1] += a * b.y;
            acc[2] += a * b.z;
            acc[3] += a * b.w;
        }
//#endif
        workgroupBarrier();
    }
    for (var j = 0u; j < 4u; j++) {
        let t = n0 + tn * 4u + j;
        if (t < P.rows) {
            for (var c = 0u; c < 4u; c++) {
                let row = m0 + tm * 4u + c;
                if (row < P.n) {
                    Y[t * P.n_total + P.col0 + row] = acc[j][c];
                }
            }
        }
    }
}
