// Element-wise and row-gathering operations; each compiled variant keeps one kernel.
// Invocation `i` of a 2-D grid of 256-wide workgroups handles element `i`.

struct Params {
    len: u32,   // elements (or pairs) to process
    dim: u32,   // row width
    a: u32,     // kernel-specific
    b: u32,     // kernel-specific
}

@group(0) @binding(0) var<uniform> P: Params;

//#if K_ADD
// `X += Y`.
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read> Y: array<f32>;
@compute @workgroup_size(256)
fn main(ids: Ids) {
    let i = init(ids) * 256u + LI;
    if (i < P.len) {
        X[i] = X[i] + Y[i];
    }
}
//#endif

//#if K_SWIGLU
// `X = silu(X) * Y`.
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read> Y: array<f32>;
@compute @workgroup_size(256)
fn main(ids: Ids) {
    let i = init(ids) * 256u + LI;
    if (i < P.len) {
        let g = X[i];
        X[i] = g / (1.0 + exp(-g)) * Y[i];
    }
}
//#endif

//#if K_BIAS
// `X[r] += B` for rows of width `dim`.
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read> Y: array<f32>;
@compute @workgroup_size(256)
fn main(ids: Ids) {
    let i = init(ids) * 256u + LI;
    if (i < P.len) {
        X[i] = X[i] + Y[i % P.dim];
    }
}
//#endif

//#if K_GATHER
// `Y[j] = X[logit_rows[j]]` for rows of width `dim`.
@group(0) @binding(1) var<storage, read> S: array<u32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@compute @workgroup_size(256)
fn main(ids: Ids) {
    let i = init(ids) * 256u + LI;
    if (i < P.len) {
        let j = i / P.dim;
        let src = S[S[HDR_LOGIT_ROWS] + j];
        Y[i] = X[src * P.dim + i % P.dim];
    }
}
//#endif

//#if K_ROPE
// Rotates pair `p` of head `h` of row `r` in place, by the step's angles; `a` = heads,
// `b` = head size.
@group(0) @binding(1) var<storage, read> S: array<u32>;
@group(0) @binding(2) var<storage, read_write> X: array<f32>;
@compute @workgroup_size(256)
fn main(ids: Ids) {
    let i = init(ids) * 256u + LI;
    let half_n = S[HDR_ROPE_DIMS] / 2u;
    if (i >= P.len || half_n == 0u) {
        return;
    }
    let p = i % half_n;
    let h = (i / half_n) % P.a;
    let r = i / (half_n * P.a);
    let ang = S[HDR_ANGLES] + r * 2u * half_n + 2u * p;
    let c = bitcast<f32>(S[ang]);
    let s = bitcast<f32>(S[ang + 1u]);
    let base = r * P.a * P.b + h * P.b;
    var i0: u32;
    var i1: u32;
    if (S[HDR_ROPE_LAYOUT] == 0u) {
        i0 = base + 2u * p;
        i1 = i0 + 1u;
    } else {
        i0 = base + p;
        i1 = i0 + half_n;
    }
    let x0 = X[i0];
    let x1 = X[i1];
    X[i0] = x0 * c - x1 * s;
    X[i1] = x0 * s + x1 * c;
}
//#endif

//#if K_KV_WRITE
// Stores row `r`'s keys and values in its cache slot; `dim` = floats per row (kv_dim). The f16
// cache packs two halves per word (one invocation per pair).
@group(0) @binding(1) var<storage, read> S: array<u32>;
@group(0) @binding(2) var<storage, read> KIN: array<f32>;
@group(0) @binding(3) var<storage, read> VIN: array<f32>;
//#if KV16
@group(0) @binding(4) var<storage, read_write> KC: array<u32>;
@group(0) @binding(5) var<storage, read_write> VC: array<u32>;
@compute @workgroup_size(256)
fn main(ids: Ids) {
    let i = init(ids) * 256u + LI;
    if (i >= P.len) {
        return;
    }
    let pairs = P.dim / 2u;
    let r = i / pairs;
    let p = i % pairs;
    let slot = S[S[HDR_SLOTS] + r];
    let src = r * P.dim + 2u * p;
    let dst = slot * pairs + p;
    KC[dst] = pack2x16float(vec2<f32>(KIN[src], KIN[src + 1u]));
    VC[dst] = pack2x16float(vec2<f32>(VIN[src], VIN[src + 1u]));
}
//#else
@group(0) @binding(4) var<storage, read_write> KC: array<f32>;
@group(0) @binding(5) var<storage, read_write> VC: array<f32>;
@compute @workgroup_size(256)
fn main(ids: Ids) {
    let i = init(ids) * 256u + LI;
    if (i >= P.len) {
        return;
    }
    let r = i / P.dim;
    let e = i % P.dim;
    let slot = S[S[HDR_SLOTS] + r];
    KC[slot * P.dim + e] = KIN[i];
    VC[slot * P.dim + e] = VIN[i];
}
//#endif
//#endif
