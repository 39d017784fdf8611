// Weight decoders: `dq8(row, g, nb, soff)` returns the 8 consecutive weights of group `g` of a
// row (in two vec4s), for the one weight type this module is compiled for. `nb` is the number
// of blocks per row and `soff` the word offset of the separate f16 scale region (Q4_0, Q8_0).
// Every kernel that includes this file binds the weights as `W: array<u32>`. Arithmetic follows
// the CPU dequantizers, so the f32 variant decodes bit for bit like them.

fn h2(w: u32) -> vec2<hf> {
    return vec2<hf>(unpack2x16float(w));
}

// The f16 scale of block `b` in a region of two scales per word.
fn scale_of(soff: u32, b: u32) -> hf {
    let v = h2(W[soff + b / 2u]);
    return select(v.x, v.y, (b & 1u) == 1u);
}

// The four nibbles at bit `sh` of each byte of `w`.
fn nib4(w: u32, sh: u32) -> vec4<u32> {
    return (vec4<u32>(w) >> vec4<u32>(sh, sh + 8u, sh + 16u, sh + 24u)) & vec4<u32>(15u);
}

// The four bytes of `w`, sign-extended.
fn sb4(w: u32) -> vec4<i32> {
    return (vec4<i32>(bitcast<i32>(w)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
}

//#if W_F32
const GPB: u32 = 1u;
fn dq8(row: u32, g: u32, nb: u32, soff: u32) -> array<vec4<hf>, 2> {
    let b = (row * nb + g) * 8u;
    let a = vec4<f32>(bitcast<f32>(W[b]), bitcast<f32>(W[b + 1u]), bitcast<f32>(W[b + 2u]), bitcast<f32>(W[b + 3u]));
    let c = vec4<f32>(bitcast<f32>(W[b + 4u]), bitcast<f32>(W[b + 5u]), bitcast<f32>(W[b + 6u]), bitcast<f32>(W[b + 7u]));
    return array<vec4<hf>, 2>(vec4<hf>(a), vec4<hf>(c));
}
//#endif

//#if W_F16
const GPB: u32 = 1u;
fn dq8(row: u32, g: u32, nb: u32, soff: u32) -> array<vec4<hf>, 2> {
    let b = (row * nb + g) * 4u;
    return array<vec4<hf>, 2>(vec4<hf>(h2(W[b]), h2(W[b + 1u])), vec4<hf>(h2(W[b + 2u]), h2(W[b + 3u])));
}
//#endif

//#if W_Q4_0
const GPB: u32 = 4u;
fn dq8(row: u32, g: u32, nb: u32, soff: u32) -> array<vec4<hf>, 2> {
    let b = row * nb + g / 4u;
    let gi = g % 4u;
    let at = b * 4u + (gi & 1u) * 2u;
    let sh = (gi >> 1u) * 4u;
    let d = scale_of(soff, b);
    let q0 = vec4<hf>(nib4(W[at], sh)) - hf(8.0);
    let q1 = vec4<hf>(nib4(W[at + 1u], sh)) - hf(8.0);
    return array<vec4<hf>, 2>(q0 * d, q1 * d);
}
//#endif

//#if W_Q4_1
const GPB: u32 = 4u;
fn dq8(row: u32, g: u32, nb: u32, soff: u32) -> array<vec4<hf>, 2> {
    let b = row * nb + g / 4u;
    let gi = g % 4u;
    let base = b * 5u;
    let dm = h2(W[base]);
    let at = base + 1u + (gi & 1u) * 2u;
    let sh = (gi >> 1u) * 4u;
    let q0 = vec4<hf>(nib4(W[at], sh));
    let q1 = vec4<hf>(nib4(W[at + 1u], sh));
    return array<vec4<hf>, 2>(q0 * dm.x + dm.y, q1 * dm.x + dm.y);
}
//#endif

//#if W_Q8_0
const GPB: u32 = 4u;
fn dq8(row: u32, g: u32, nb: u32, soff: u32) -> array<vec4<hf>, 2> {
    let b = row * nb + g / 4u;
    let at = b * 8u + (g % 4u) * 2u;
    let d = scale_of(soff, b);
    return array<vec4<hf>, 2>(vec4<hf>(sb4(W[at])) * d, vec4<hf>(sb4(W[at + 1u])) * d);
}
//#endif

//#if W_Q4_K
const GPB: u32 = 32u;
// Byte `k` of a Q4_K block's 12 scale bytes.
fn q4k_scale_byte(base: u32, k: u32) -> u32 {
    return (W[base + 1u + k / 4u] >> (8u * (k % 4u))) & 255u;
}
fn dq8(row: u32, g: u32, nb: u32, soff: u32) -> array<vec4<hf>, 2> {
    let b = row * nb + g / 32u;
    let gs = g % 32u;
    let base = b * 36u;
    let dm = h2(W[base]);
    let j = gs / 4u;
    var sc: u32;
    var m: u32;
    if (j < 4u) {
        sc = q4k_scale_byte(base, j) & 63u;
        m = q4k_scale_byte(base, j + 4u) & 63u;
    } else {
        sc = (q4k_scale_byte(base, j + 4u) & 15u) | ((q4k_scale_byte(base, j - 4u) >> 6u) << 4u);
        m = (q4k_scale_byte(base, j + 4u) >> 4u) | ((q4k_scale_byte(base, j) >> 6u) << 4u);
    }
    let d1 = dm.x * hf(sc);
    let m1 = dm.y * hf(m);
    let at = base + 4u + 8u * (j / 2u) + 2u * (gs % 4u);
    let sh = (j & 1u) * 4u;
    let q0 = vec4<hf>(nib4(W[at], sh));
    let q1 = vec4<hf>(nib4(W[at + 1u], sh));
    return array<vec4<hf>, 2>(d1 * q0 - m1, d1 * q1 - m1);
}
//#endif

//#if W_Q6_K
const GPB: u32 = 32u;
fn dq8(row: u32, g: u32, nb: u32, soff: u32) -> array<vec4<hf>, 2> {
    let b = row * nb + g / 32u;
    let gs = g % 32u;
    let base = b * 53u;
    let n = gs / 16u;
    let gh = gs % 16u;
    let t = gh / 4u;
    let l0 = 8u * (gh % 4u);
    let ql = base + (64u * n + l0 + 32u * (t & 1u)) / 4u;
    let qh = base + 32u + (32u * n + l0) / 4u;
    let shl = 4u * (t >> 1u);
    let shh = 2u * t;
    let mh = vec4<u32>(shh, shh + 8u, shh + 16u, shh + 24u);
    let h0 = (vec4<u32>(W[qh]) >> mh) & vec4<u32>(3u);
    let h1 = (vec4<u32>(W[qh + 1u]) >> mh) & vec4<u32>(3u);
    let q0 = vec4<i32>(nib4(W[ql], shl) | (h0 << vec4<u32>(4u))) - vec4<i32>(32);
    let q1 = vec4<i32>(nib4(W[ql + 1u], shl) | (h1 << vec4<u32>(4u))) - vec4<i32>(32);
    let si = 8u * n + l0 / 16u + 2u * t;
    let scw = W[base + 48u + si / 4u];
    let sc = (bitcast<i32>(scw << (24u - 8u * (si % 4u)))) >> 24u;
    let d = h2(W[base + 52u]).x;
    let ds = d * hf(sc);
    return array<vec4<hf>, 2>(ds * vec4<hf>(q0), ds * vec4<hf>(q1));
}
//#endif
