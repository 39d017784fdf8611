// Causal attention over the paged KV cache. The f16 cache (KV16) packs two halves per word;
// arithmetic is f32 in both cases.
//
// K_ATT_SPLIT (decode, flash-decoding): one workgroup per (chunk of CH cached tokens, head,
// row) computes the chunk's maximum score, sum of exponentials and unnormalized output;
// K_ATT_COMBINE merges the chunks of each (row, head).
// K_ATT_TILED (prefill): one workgroup per (tile of up to 16 rows of one sequence, head) walks
// the sequence's cache in tiles of BKV tokens with an online softmax; 4 invocations per row
// each own a quarter of the head.

struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    kv_dim: u32,
    block_size: u32,
    n_chunks: u32,
    scale: f32,
    q_stride: u32,
}

@group(0) @binding(0) var<uniform> P: Params;

const NEG_BIG: f32 = -F32_MAX;

//#if K_ATT_COMBINE
@group(0) @binding(1) var<storage, read> PART: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;

@compute @workgroup_size(64)
fn main(ids: Ids) {
    _ = init(ids);
    let wg = workgroupUniformLoad(&WG_ID);
    let h = wg.x;
    let r = wg.y;
    let hd = P.head_dim;
    let stride = hd + 2u;
    let base = (r * P.n_heads + h) * P.n_chunks * stride;
    var m = NEG_BIG;
    for (var c = 0u; c < P.n_chunks; c++) {
        if (PART[base + c * stride + 1u] > 0.0) {
            m = max(m, PART[base + c * stride]);
        }
    }
    var l = 0.0;
    for (var c = 0u; c < P.n_chunks; c++) {
        let lc = PART[base + c * stride + 1u];
        if (lc > 0.0) {
            l += lc * exp(PART[base + c * stride] - m);
        }
    }
    for (var d = LI; d < hd; d += 64u) {
        var o = 0.0;
        for (var c = 0u; c < P.n_chunks; c++) {
            let at = base + c * stride;
            if (PART[at + 1u] > 0.0) {
                o += PART[at + 2u + d] * exp(PART[at] - m);
            }
        }
        OUT[r * P.q_stride + h * hd + d] = o / l;
    }
}
//#else

@group(0) @binding(1) var<storage, read> S: array<u32>;
@group(0) @binding(2) var<storage, read> Q: array<f32>;
//#if KV16
@group(0) @binding(3) var<storage, read> KC: array<u32>;
@group(0) @binding(4) var<storage, read> VC: array<u32>;
fn kload(i: u32) -> f32 {
    return unpack2x16float(KC[i / 2u])[i & 1u];
}
fn vload(i: u32) -> f32 {
    return unpack2x16float(VC[i / 2u])[i & 1u];
}
fn kload4(i: u32) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(KC[i / 2u]), unpack2x16float(KC[i / 2u + 1u]));
}
//#else
@group(0) @binding(3) var<storage, read> KC: array<f32>;
@group(0) @binding(4) var<storage, read> VC: array<f32>;
fn kload(i: u32) -> f32 {
    return KC[i];
}
fn vload(i: u32) -> f32 {
    return VC[i];
}
fn kload4(i: u32) -> vec4<f32> {
    return vec4<f32>(KC[i], KC[i + 1u], KC[i + 2u], KC[i + 3u]);
}
//#endif

// Cache slot of token `t` of the sequence whose block table starts at word `bt`.
fn slot_of(bt: u32, t: u32) -> u32 {
    return S[bt + t / P.block_size] * P.block_size + t % P.block_size;
}

//#if K_ATT_SPLIT
@group(0) @binding(5) var<storage, read_write> PART: array<f32>;

const CH: u32 = 256u;
var<workgroup> QS: array<f32, 256>;
var<workgroup> SC: array<f32, CH>;
var<workgroup> SL: array<u32, CH>;

@compute @workgroup_size(64)
fn main(ids: Ids) {
    _ = init(ids);
    let wg = workgroupUniformLoad(&WG_ID);
    let c = wg.x;
    let h = wg.y;
    let r = wg.z;
    let hd = P.head_dim;
    let seq = S[S[HDR_ROWSEQ] + r];
    let ctx = S[S[HDR_POS] + r] + 1u;
    let pbase = ((r * P.n_heads + h) * P.n_chunks + c) * (hd + 2u);
    let start = c * CH;
    if (start >= ctx) {
        if (LI == 0u) {
            PART[pbase] = NEG_BIG;
            PART[pbase + 1u] = 0.0;
        }
        return;
    }
    let end = min(start + CH, ctx);
    let kvh = h / (P.n_heads / P.n_kv_heads);
    let bt = S[S[HDR_SEQS] + seq * 4u + 3u];
    for (var d = LI; d < hd; d += 64u) {
        QS[d] = Q[r * P.q_stride + h * hd + d] * P.scale;
    }
    workgroupBarrier();
    var lmax = NEG_BIG;
    for (var t = start + LI; t < end; t += 64u) {
        let slot = slot_of(bt, t);
        SL[t - start] = slot;
        let kb = slot * P.kv_dim + kvh * hd;
        var s = 0.0;
        for (var d = 0u; d < hd; d += 4u) {
            s += dot(vec4<f32>(QS[d], QS[d + 1u], QS[d + 2u], QS[d + 3u]), kload4(kb + d));
        }
        SC[t - start] = s;
        lmax = max(lmax, s);
    }
    let m = wg_max(lmax, 64u);
    var lsum = 0.0;
    for (var t = start + LI; t < end; t += 64u) {
        let p = exp(SC[t - start] - m);
        SC[t - start] = p;
        lsum += p;
    }
    let l = wg_sum(lsum, 64u);
    for (var d = LI; d < hd; d += 64u) {
        var o = 0.0;
        for (var t = start; t < end; t++) {
            o += SC[t - start] * vload(SL[t - start] * P.kv_dim + kvh * hd + d);
        }
        PART[pbase + 2u + d] = o;
    }
    if (LI == 0u) {
        PART[pbase] = m;
        PART[pbase + 1u] = l;
    }
}
//#endif

//#if K_ATT_TILED
@group(0) @binding(5) var<storage, read_write> OUT: array<f32>;

// HD (head size), HD4 (= HD / 4) and BKV (tokens per tile) come from the variant.
const BQ: u32 = 16u;
var<workgroup> KV: array<f32, BKV * HD>;
var<workgroup> PS: array<f32, BQ * BKV * 4u>;
var<workgroup> SLT: array<u32, BKV>;

fn load_tile(bt: u32, t0: u32, ctx_end: u32, kvh: u32, values: bool) {
    if (LI < BKV) {
        let t = t0 + LI;
        if (t < ctx_end) {
            SLT[LI] = slot_of(bt, t);
        }
    }
    workgroupBarrier();
    for (var e = LI; e < BKV * HD; e += 64u) {
        let tt = e / HD;
        var v = 0.0;
        if (t0 + tt < ctx_end) {
            let at = SLT[tt] * P.kv_dim + kvh * HD + e % HD;
            if (values) {
                v = vload(at);
            } else {
                v = kload(at);
            }
        }
        KV[e] = v;
    }
    workgroupBarrier();
}

@compute @workgroup_size(64)
fn main(ids: Ids) {
    _ = init(ids);
    let wg = workgroupUniformLoad(&WG_ID);
    let h = wg.y;
    let tb = S[HDR_TILES] + wg.x * 4u;
    let seq = S[tb];
    let row_start = S[tb + 1u];
    let nr = S[tb + 2u];
    let sb = S[HDR_SEQS] + seq * 4u;
    let first_pos = S[sb + 2u] + (row_start - S[sb]);
    let bt = S[sb + 3u];
    let ctx_end = first_pos + nr;
    let i = LI / 4u;
    let lane = LI % 4u;
    let valid = i < nr;
    let r = row_start + i;
    let pos = first_pos + i;
    let kvh = h / (P.n_heads / P.n_kv_heads);
    let d0 = lane * HD4;
    var q: array<f32, HD4>;
    var o: array<f32, HD4>;
    if (valid) {
        for (var j = 0u; j < HD4; j++) {
            q[j] = Q[r * P.q_stride + h * HD + d0 + j] * P.scale;
        }
    }
    var m = NEG_BIG;
    var l = 0.0;
    for (var t0 = 0u; t0 < ctx_end; t0 += BKV) {
        load_tile(bt, t0, ctx_end, kvh, false);
        for (var tt = 0u; tt < BKV; tt++) {
            var s = 0.0;
            for (var j = 0u; j < HD4; j++) {
                s += q[j] * KV[tt * HD + d0 + j];
            }
            PS[(i * BKV + tt) * 4u + lane] = s;
        }
        workgroupBarrier();
        var p: array<f32, BKV>;
        var tmax = NEG_BIG;
        for (var tt = 0u; tt < BKV; tt++) {
            let b = (i * BKV + tt) * 4u;
            let s = (PS[b] + PS[b + 1u]) + (PS[b + 2u] + PS[b + 3u]);
            p[tt] = s;
            if (t0 + tt <= pos) {
                tmax = max(tmax, s);
            }
        }
        let m_new = max(m, tmax);
        let corr = exp(m - m_new);
        var psum = 0.0;
        for (var tt = 0u; tt < BKV; tt++) {
            var e = 0.0;
            if (t0 + tt <= pos) {
                e = exp(p[tt] - m_new);
            }
            p[tt] = e;
            psum += e;
        }
        l = l * corr + psum;
        for (var j = 0u; j < HD4; j++) {
            o[j] *= corr;
        }
        m = m_new;
        load_tile(bt, t0, ctx_end, kvh, true);
        for (var tt = 0u; tt < BKV; tt++) {
            for (var j = 0u; j < HD4; j++) {
                o[j] += p[tt] * KV[tt * HD + d0 + j];
            }
        }
        workgroupBarrier();
    }
    if (valid) {
        for (var j = 0u; j < HD4; j++) {
            OUT[r * P.q_stride + h * HD + d0 + j] = o[j] / l;
        }
    }
}
//#endif
//#endif
