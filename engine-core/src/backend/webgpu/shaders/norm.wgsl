// Row-wise RMSNorm: `Y[r] = X[r] / sqrt(mean(X[r]^2) + eps) * G`, one workgroup per row.

struct Params {
    dim: u32,
    rows: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(ids: Ids) {
    let r = init(ids);
    if (r >= P.rows) {
        return;
    }
    let base = r * P.dim;
    var ss = 0.0;
    for (var i = LI; i < P.dim; i += 256u) {
        let v = X[base + i];
        ss += v * v;
    }
    let total = wg_sum(ss, 256u);
    let scale = 1.0 / sqrt(total / f32(P.dim) + P.eps);
    for (var i = LI; i < P.dim; i += 256u) {
        Y[base + i] = X[base + i] * scale * G[i];
    }
}
