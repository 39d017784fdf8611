// Token selection on the device, one workgroup per logit row, with the CPU sampler's semantics:
// NaN logits count as -inf and +inf as the largest float; greedy picks the lowest id among the
// maxima; otherwise top-k -> temperature -> softmax -> top-p -> min-p -> a draw with the
// caller's uniform number, in rank order (higher logit, then lower id) when top-k is on or the
// nucleus has at most 1024 tokens, in id order otherwise (as the CPU sampler does).
//
// Filters are cuts in rank order found by bisection: over the 32 bits of an order-preserving
// key of the logit, then over token ids among equal keys. Each probe is one pass over the row
// with a workgroup reduction, so a row costs a few dozen passes (greedy: one).

struct Params {
    vocab: u32,
    rows: u32,
    _a: u32,
    _b: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> L: array<f32>;
// Per row: 1/temperature (0 = greedy), top_k, top_p, min_p, uniform draw, 3 unused.
@group(0) @binding(2) var<storage, read> SPEC: array<u32>;
// Per row: vocab keys, then vocab weights.
@group(0) @binding(3) var<storage, read_write> SCR: array<u32>;
@group(0) @binding(4) var<storage, read_write> OUT: array<u32>;

const WG: u32 = 256u;
const MAXID: u32 = 0xffffffffu;
// The key of -inf (and NaN).
const KEY_NEG_INF: u32 = 0x007fffffu;

var<workgroup> RK: array<u32, 256>;
var<workgroup> RI: array<u32, 256>;
var<workgroup> BEST: vec2<u32>;

var<private> SB: u32;
// Current filters: rank cuts (key, id) and the minimum weight.
var<private> C1: vec2<u32>;
var<private> C2: vec2<u32>;
var<private> MINW: f32;

fn clean(x: f32) -> f32 {
    let b = bitcast<u32>(x);
    if ((b & 0x7fffffffu) > 0x7f800000u || b == 0xff800000u) {
        return neg_inf();
    }
    if (b == 0x7f800000u) {
        return F32_MAX;
    }
    return x;
}

fn key_of(x: f32) -> u32 {
    let b = bitcast<u32>(clean(x));
    if ((b & 0x80000000u) != 0u) {
        return ~b;
    }
    return b | 0x80000000u;
}

// e^x as the CPU sampler computes it (exactly 0 below -87).
fn pexp(x: f32) -> f32 {
    if (!(x >= -87.0)) {
        return 0.0;
    }
    let xc = min(x, 88.0);
    let k = round(xc * 1.44269504);
    let ki = i32(k);
    let r = xc - k * bitcast<f32>(0x3f317200u) - k * bitcast<f32>(0x35bfbe8eu);
    let p = 1.0 + r * (1.0 + r * (1.0 / 2.0 + r * (1.0 / 6.0 + r * (1.0 / 24.0
        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    return p * bitcast<f32>(u32(ki + 127) << 23u);
}

// Whether token (k, i) ranks at or above the cut (ck, ci).
fn rank_ge(k: u32, i: u32, c: vec2<u32>) -> bool {
    return k > c.x || (k == c.x && i <= c.y);
}

// Sum over the filtered tokens at or above cut `c` with id <= `idmax` (only those whose key
// equals c.x when `eq`) of their weight (`mass`) or of 1.
fn probe(mass: bool, c: vec2<u32>, eq: bool, idmax: u32) -> f32 {
    var s = 0.0;
    for (var i = LI; i < P.vocab; i += WG) {
        let k = SCR[SB + i];
        let w = bitcast<f32>(SCR[SB + P.vocab + i]);
        var keep = rank_ge(k, i, C1) && rank_ge(k, i, C2) && w >= MINW && i <= idmax;
        if (eq) {
            keep = keep && k == c.x;
        } else {
            keep = keep && rank_ge(k, i, c);
        }
        if (keep) {
            if (mass) {
                s += w;
            } else {
                s += 1.0;
            }
        }
    }
    return wg_sum(s, WG);
}

fn meets(s: f32, goal: f32, strict: bool) -> bool {
    if (strict) {
        return s > goal;
    }
    return s >= goal;
}

// The lowest cut in rank order whose filtered tokens at or above it reach `goal` (count or
// mass; strictly exceed it when `strict`). With `exact`, the id part is always resolved (the
// cut names one token); otherwise a key held by a single token leaves it open.
fn threshold(mass: bool, goal: f32, strict: bool, exact: bool) -> vec2<u32> {
    var p = 0u;
    for (var b = 0u; b < 32u; b++) {
        let c = p | (0x80000000u >> b);
        if (meets(probe(mass, vec2<u32>(c, MAXID), false, MAXID), goal, strict)) {
            p = c;
        }
    }
    if (!exact && probe(false, vec2<u32>(p, MAXID), true, MAXID) <= 1.0) {
        return vec2<u32>(p, MAXID);
    }
    let above = probe(mass, vec2<u32>(p + 1u, MAXID), false, MAXID);
    // Smallest id `ci` with above + (tied tokens with id <= ci) meeting the goal.
    var ci = 0u;
    var bit = 1u;
    while (bit < P.vocab) {
        bit <<= 1u;
    }
    for (; bit > 0u; bit >>= 1u) {
        let probe_id = ci + bit - 1u;
        if (probe_id < P.vocab && !meets(above + probe(mass, vec2<u32>(p, MAXID), true, probe_id), goal, strict)) {
            ci += bit;
        }
    }
    return vec2<u32>(p, min(ci, P.vocab - 1u));
}

@compute @workgroup_size(256)
fn main(ids: Ids) {
    let row = init(ids);
    if (row >= P.rows) {
        return;
    }
    SB = row * 2u * P.vocab;
    let base = row * P.vocab;
    let sp = row * 8u;
    let inv_t = bitcast<f32>(SPEC[sp]);
    let top_k = SPEC[sp + 1u];
    let top_p = bitcast<f32>(SPEC[sp + 2u]);
    let min_p = bitcast<f32>(SPEC[sp + 3u]);
    let u = bitcast<f32>(SPEC[sp + 4u]);

    // Maximum key, lowest id among equals.
    var bk = 0u;
    var bi = MAXID;
    for (var i = LI; i < P.vocab; i += WG) {
        let k = key_of(L[base + i]);
        if (k > bk) {
            bk = k;
            bi = i;
        }
    }
    RK[LI] = bk;
    RI[LI] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (LI < s) {
            let k2 = RK[LI + s];
            let i2 = RI[LI + s];
            if (k2 > RK[LI] || (k2 == RK[LI] && i2 < RI[LI])) {
                RK[LI] = k2;
                RI[LI] = i2;
            }
        }
        workgroupBarrier();
    }
    if (LI == 0u) {
        BEST = vec2<u32>(RK[0], RI[0]);
    }
    let best = workgroupUniformLoad(&BEST);
    if (best.x <= KEY_NEG_INF || inv_t == 0.0) {
        if (LI == 0u) {
            OUT[row] = select(best.y, 0u, best.x <= KEY_NEG_INF);
        }
        return;
    }
    let maxv = clean(L[base + best.y]);

    // Keys and weights.
    for (var i = LI; i < P.vocab; i += WG) {
        let x = L[base + i];
        let k = key_of(x);
        var w = 0.0;
        if (k > KEY_NEG_INF) {
            w = pexp((clean(x) - maxv) * inv_t);
        }
        SCR[SB + i] = k;
        SCR[SB + P.vocab + i] = bitcast<u32>(w);
    }
    storageBarrier();
    workgroupBarrier();

    C1 = vec2<u32>(0u, MAXID);
    C2 = vec2<u32>(0u, MAXID);
    MINW = 0.0;
    let top_k_on = top_k > 0u && top_k < P.vocab;
    if (top_k_on) {
        C1 = threshold(false, f32(top_k), false, false);
    }
    var rank_order = top_k_on;
    if (top_p < 1.0) {
        let total = probe(true, vec2<u32>(0u, MAXID), false, MAXID);
        C2 = threshold(true, top_p * total, false, false);
        if (!top_k_on) {
            rank_order = probe(false, vec2<u32>(0u, MAXID), false, MAXID) <= 1024.0;
        }
    }
    MINW = min_p;
    let total = probe(true, vec2<u32>(0u, MAXID), false, MAXID);
    let goal = f32(u) * total;
    var chosen = best.y;
    if (total > 0.0 && total > goal) {
        if (rank_order) {
            chosen = threshold(true, goal, true, true).y;
        } else {
            // Smallest id whose running mass (in id order) exceeds the goal.
            var ci = 0u;
            var bit = 1u;
            while (bit < P.vocab) {
                bit <<= 1u;
            }
            for (; bit > 0u; bit >>= 1u) {
                let probe_id = ci + bit - 1u;
                if (probe_id < P.vocab && !(probe(true, vec2<u32>(0u, MAXID), false, probe_id) > goal)) {
                    ci += bit;
                }
            }
            chosen = min(ci, P.vocab - 1u);
        }
    }
    if (LI == 0u) {
        OUT[row] = chosen;
    }
}
