// Embedding lookup: `Y[r] = table[token[r]]`, decoding group `g` of the token's row in one
// invocation. The table may be split by rows: this part holds rows `row0 .. row0 + nrows`.

struct Params {
    cols: u32,
    nb: u32,
    soff: u32,
    row0: u32,
    nrows: u32,
    rows: u32,    // step rows
    vocab: u32,   // rows of the whole table
    _pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> S: array<u32>;
@group(0) @binding(2) var<storage, read> W: array<u32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn main(ids: Ids) {
    let i = init(ids) * 256u + LI;
    let groups = P.cols / 8u;
    if (i >= P.rows * groups) {
        return;
    }
    let r = i / groups;
    let g = i % groups;
    let tok = min(S[S[HDR_TOKENS] + r], P.vocab - 1u);
    if (tok < P.row0 || tok >= P.row0 + P.nrows) {
        return;
    }
    let w = dq8(tok - P.row0, g, P.nb, P.soff);
    let o = r * P.cols + g * 8u;
    for (var e = 0u; e < 4u; e++) {
        Y[o + e] = f32(w[0][e]);
        Y[o + 4u + e] = f32(w[1][e]);
    }
}
