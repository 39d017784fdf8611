// Fused dequantize-and-multiply for few activation rows (decode): `Y[r][col0 + n] = W[n] . X[r]`
// for `rows <= R` rows. A workgroup of 64 invocations computes NR output features; its
// invocations split the row into groups of 8 weights, decode each group once and use it for
// every activation row, then reduce.

struct Params {
    k: u32,        // input features (row length)
    n: u32,        // output features in this part
    n_total: u32,  // output row stride
    col0: u32,     // first output feature of this part
    rows: u32,     // activation rows (<= R)
    nb: u32,       // weight blocks per row
    soff: u32,     // scale region offset (split layouts)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

const WG: u32 = 64u;
const NA: u32 = NR * R;
var<workgroup> MRED: array<f32, NA * WG>;

fn store(j: u32, t: f32, row0: u32) {
    let row = row0 + j / R;
    let r = j % R;
    if (row < P.n && r < P.rows) {
        Y[r * P.n_total + P.col0 + row] = t;
    }
}

@compute @workgroup_size(64)
fn main(ids: Ids) {
    let row0 = init(ids) * NR;
    var acc: array<f32, NA>;
    let groups = P.k / 8u;
    for (var g = LI; g < groups; g += WG) {
        var xa: array<vec4<hf>, R>;
        var xb: array<vec4<hf>, R>;
        for (var r = 0u; r < R; r++) {
            if (r < P.rows) {
                let xi = (r * P.k + g * 8u) / 4u;
                xa[r] = vec4<hf>(X[xi]);
                xb[r] = vec4<hf>(X[xi + 1u]);
            }
        }
        for (var i = 0u; i < NR; i++) {
            let row = row0 + i;
            if (row < P.n) {
                let w = dq8(row, g, P.nb, P.soff);
                for (var r = 0u; r < R; r++) {
                    acc[i * R + r] += f32(dot(w[0], xa[r]) + dot(w[1], xb[r]));
                }
            }
        }
    }
//#if SG
    for (var j = 0u; j < NA; j++) {
        let s = subgroupAdd(acc[j]);
        if (SGI == 0u) {
            MRED[SGID * NA + j] = s;
        }
    }
    workgroupBarrier();
    if (LI < NA) {
        var t = 0.0;
        for (var i = 0u; i < NSG; i++) {
            t += MRED[i * NA + LI];
        }
        store(LI, t, row0);
    }
//#else
    for (var j = 0u; j < NA; j++) {
        MRED[j * WG + LI] = acc[j];
    }
    workgroupBarrier();
    if (LI < NA) {
        var t = 0.0;
        for (var i = 0u; i < WG; i++) {
            t += MRED[LI * WG + i];
        }
        store(LI, t, row0);
    }
//#endif
}
