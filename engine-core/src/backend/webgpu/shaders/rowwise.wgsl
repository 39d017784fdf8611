// Dequantize-and-multiply for few activation rows on CPU adapters (lavapipe, SwiftShader): one
// invocation computes one output feature for up to R activation rows, walking the whole weight
// row, with no workgroup memory, barriers or reductions (which such adapters emulate at a high
// cost: this is about 3 times faster than `matvec.wgsl` on lavapipe).

struct Params {
    k: u32,
    n: u32,
    n_total: u32,
    col0: u32,
    rows: u32,     // activation rows (<= R)
    nb: u32,
    soff: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(64)
fn main(ids: Ids) {
    _ = init(ids);
    let wg = workgroupUniformLoad(&WG_ID);
    let row = wg.x * 64u + LI;
    if (row >= P.n) {
        return;
    }
    let t0 = 0u;
    let nr = min(R, P.rows);
    var acc: array<f32, R>;
    let groups = P.k / 8u;
    for (var g = 0u; g < groups; g++) {
        let w = dq8(row, g, P.nb, P.soff);
        for (var r = 0u; r < R; r++) {
            if (r < nr) {
                let xi = ((t0 + r) * P.k + g * 8u) / 4u;
                acc[r] += f32(dot(w[0], vec4<hf>(X[xi])) + dot(w[1], vec4<hf>(X[xi + 1u])));
            }
        }
    }
    for (var r = 0u; r < nr; r++) {
        Y[(t0 + r) * P.n_total + P.col0 + row] = acc[r];
    }
}
