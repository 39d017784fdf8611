//! Quantization from f32, following ggml's reference `quantize_row_*_ref` functions step by step
//! (same search, same rounding, same order of float operations), so that the bytes agree with
//! files made by llama.cpp's tools and the `gguf` Python package.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::QuantError;
use super::blocks::*;
use super::types::GgmlType;

/// Groups whose largest magnitude is below this are stored as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Rounds to the nearest integer with ties to even, the way ggml's k-quant code does: by adding
/// 1.5 * 2^23 and reading the low mantissa bits. Exact for `|x| <= 4194303`; outside that range
/// (or for NaN) the result is meaningless but, as in ggml, callers clamp it.
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007F_FFFF) as i32 - 0x0040_0000
}

#[inline]
fn f16_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

#[inline]
fn f16_round(bytes: [u8; 2]) -> f32 {
    f16::from_le_bytes(bytes).to_f32()
}

/// The element of largest magnitude (the first one on ties) and that magnitude; (0, 0) when all
/// are zero.
#[inline]
fn signed_abs_max(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

impl BlockQ4_0 {
    /// Encodes 32 values.
    pub fn quantize(x: &[f32; QK4_0]) -> BlockQ4_0 {
        let (max, _) = signed_abs_max(x);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; QK4_0 / 2];
        let (lo, hi) = x.split_at(QK4_0 / 2);
        for ((q, &a), &b) in qs.iter_mut().zip(lo).zip(hi) {
            let qa = ((a * id + 8.5) as i8).min(15) as u8;
            let qb = ((b * id + 8.5) as i8).min(15) as u8;
            *q = qa | (qb << 4);
        }
        BlockQ4_0 {
            d: f16_bytes(d),
            qs,
        }
    }
}

impl BlockQ4_1 {
    /// Encodes 32 values.
    pub fn quantize(x: &[f32; QK4_1]) -> BlockQ4_1 {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; QK4_1 / 2];
        let (lo, hi) = x.split_at(QK4_1 / 2);
        for ((q, &a), &b) in qs.iter_mut().zip(lo).zip(hi) {
            let qa = (((a - min) * id + 0.5) as i8).min(15) as u8;
            let qb = (((b - min) * id + 0.5) as i8).min(15) as u8;
            *q = qa | (qb << 4);
        }
        BlockQ4_1 {
            d: f16_bytes(d),
            m: f16_bytes(min),
            qs,
        }
    }
}

impl BlockQ5_0 {
    /// Encodes 32 values.
    pub fn quantize(x: &[f32; QK5_0]) -> BlockQ5_0 {
        let (max, _) = signed_abs_max(x);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; QK5_0 / 2];
        let mut qh = 0u32;
        for (j, q) in qs.iter_mut().enumerate() {
            let qa = ((x[j] * id + 16.5) as i8).min(31) as u8;
            let qb = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
            *q = (qa & 0x0F) | ((qb & 0x0F) << 4);
            qh |= u32::from((qa & 0x10) >> 4) << j;
            qh |= u32::from((qb & 0x10) >> 4) << (j + 16);
        }
        BlockQ5_0 {
            d: f16_bytes(d),
            qh: qh.to_le_bytes(),
            qs,
        }
    }
}

impl BlockQ5_1 {
    /// Encodes 32 values.
    pub fn quantize(x: &[f32; QK5_1]) -> BlockQ5_1 {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; QK5_1 / 2];
        let mut qh = 0u32;
        for (j, q) in qs.iter_mut().enumerate() {
            // ggml does not clamp here; rounding can never reach 32, but clamp to be safe.
            let qa = (((x[j] - min) * id + 0.5) as u8).min(31);
            let qb = (((x[j + 16] - min) * id + 0.5) as u8).min(31);
            *q = (qa & 0x0F) | ((qb & 0x0F) << 4);
            qh |= u32::from((qa & 0x10) >> 4) << j;
            qh |= u32::from((qb & 0x10) >> 4) << (j + 16);
        }
        BlockQ5_1 {
            d: f16_bytes(d),
            m: f16_bytes(min),
            qh: qh.to_le_bytes(),
            qs,
        }
    }
}

/// Scale and quants of a block of 32 as Q8_0 and Q8_1 compute them.
#[inline]
fn q8_32(x: &[f32; 32]) -> (f32, [i8; 32]) {
    let mut amax = 0.0f32;
    for &v in x {
        // ggml's MAX(a, b) is `a > b ? a : b`.
        amax = if amax > v.abs() { amax } else { v.abs() };
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; 32];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    (d, qs)
}

impl BlockQ8_0 {
    /// Encodes 32 values.
    pub fn quantize(x: &[f32; QK8_0]) -> BlockQ8_0 {
        let (d, qs) = q8_32(x);
        BlockQ8_0 {
            d: f16_bytes(d),
            qs: bytemuck::cast(qs),
        }
    }
}

impl BlockQ8_1 {
    /// Encodes 32 values and the scaled sum of their quants.
    pub fn quantize(x: &[f32; QK8_1]) -> BlockQ8_1 {
        let (d, qs) = q8_32(x);
        let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
        BlockQ8_1 {
            d: f16_bytes(d),
            s: f16_bytes(sum as f32 * d),
            qs: bytemuck::cast(qs),
        }
    }
}

/// ggml's `make_qkx2_quants`: fits `x ≈ scale * l - min` with `l` in `0..=nmax`, trying `nstep + 1`
/// candidate scales around the range and refining scale and min by weighted least squares.
/// Writes the levels to `l` and returns `(scale, min)`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let Some((&x0, rest)) = x.split_first() else {
        return (0.0, 0.0);
    };
    let mut min = x0;
    let mut max = x0;
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x0;
    for (&v, &w) in rest.iter().zip(&weights[1..]) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let err = |diff: f32| if use_mad { diff.abs() } else { diff * diff };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for ((li, &v), &w) in l.iter_mut().zip(x).zip(weights) {
        *li = nearest_int(iscale * (v - min)).clamp(0, nmax) as u8;
        best_error += w * err(scale * *li as f32 + min - v);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((la, &v), &w) in laux.iter_mut().zip(x).zip(weights) {
            let q = nearest_int(iscale * (v - min)).clamp(0, nmax);
            *la = q as u8;
            let q = q as f32;
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for ((&la, &v), &w) in laux.iter().zip(x).zip(weights) {
                cur_error += w * err(this_scale * la as f32 + this_min - v);
            }
            if cur_error < best_error {
                l.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_q3_quants` with `do_rmse`: symmetric levels `l` in `-nmax..nmax` (stored offset
/// by `nmax`), refined coordinate-wise to minimise the x²-weighted error. Returns the scale.
fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (max, amax) = signed_abs_max_gt(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (li, &v) in l.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *li = q as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (li, &v) in l.iter_mut().zip(x) {
            let w = v * v;
            let cur = f32::from(*li);
            let mut slx = sumlx - w * v * cur;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur * cur;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != i32::from(*li) {
                    let nl = new_l as f32;
                    slx += w * v * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for li in l.iter_mut() {
        *li += nmax as i8;
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// Like [`signed_abs_max`] but with the strict `>` comparison the k-quant helpers use.
#[inline]
fn signed_abs_max_gt(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (max, amax)
}

/// ggml's `make_qx_quants` with `rmse_type == 1` and no importance weights: symmetric levels in
/// `-nmax..nmax` (stored offset by `nmax`), choosing among 19 candidate scales the one with the
/// least x²-weighted error. Returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (max, amax) = signed_abs_max_gt(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (li, &v) in l.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *li = (q + nmax) as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l.iter_mut().zip(x) {
                *li = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Packs 256 2-bit levels the way Q2_K and Q3_K store them: byte `32 * n + l` holds elements
/// `128 * n + l + 32 * k` in bits `2k`.
fn pack_2bit(levels: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for (half, qs) in levels.chunks_exact(128).zip(qs.chunks_exact_mut(32)) {
        for (l, q) in qs.iter_mut().enumerate() {
            *q = half[l] | (half[l + 32] << 2) | (half[l + 64] << 4) | (half[l + 96] << 6);
        }
    }
}

impl BlockQ2K {
    /// Encodes 256 values.
    pub fn quantize(x: &[f32; QK_K]) -> BlockQ2K {
        const Q4SCALE: f32 = 15.0;
        let mut y = BlockQ2K::zeroed();
        let mut levels = [0u8; QK_K];
        let mut laux = [0u8; 16];
        let mut weights = [0f32; 16];
        let mut mins = [0f32; QK_K / 16];
        let mut scales = [0f32; QK_K / 16];
        let mut max_scale = 0.0f32;
        let mut max_min = 0.0f32;
        for (j, (xs, ls)) in x
            .chunks_exact(16)
            .zip(levels.chunks_exact_mut(16))
            .enumerate()
        {
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let (scale, min) =
                make_qkx2_quants(3, xs, &weights, ls, &mut laux, -0.5, 0.1, 15, true);
            scales[j] = scale;
            mins[j] = min;
            if scale > max_scale {
                max_scale = scale;
            }
            if min > max_min {
                max_min = min;
            }
        }
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for (s, &scale) in y.scales.iter_mut().zip(&scales) {
                *s = nearest_int(iscale * scale) as u8;
            }
            y.d = f16_bytes(max_scale / Q4SCALE);
        } else {
            y.d = f16_bytes(0.0);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for (s, &min) in y.scales.iter_mut().zip(&mins) {
                *s |= (nearest_int(iscale * min) << 4) as u8;
            }
            y.dmin = f16_bytes(max_min / Q4SCALE);
        } else {
            y.dmin = f16_bytes(0.0);
        }
        let (d_all, dmin_all) = (f16_round(y.d), f16_round(y.dmin));
        for (j, (xs, ls)) in x
            .chunks_exact(16)
            .zip(levels.chunks_exact_mut(16))
            .enumerate()
        {
            let d = d_all * (y.scales[j] & 0x0F) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin_all * (y.scales[j] >> 4) as f32;
            for (l, &v) in ls.iter_mut().zip(xs) {
                *l = nearest_int((v + dm) / d).clamp(0, 3) as u8;
            }
        }
        pack_2bit(&levels, &mut y.qs);
        y
    }
}

impl BlockQ3K {
    /// Encodes 256 values.
    pub fn quantize(x: &[f32; QK_K]) -> BlockQ3K {
        let mut y = BlockQ3K::zeroed();
        let mut levels = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let mut max_scale = 0.0f32;
        let mut amax = 0.0f32;
        for (j, (xs, ls)) in x
            .chunks_exact(16)
            .zip(levels.chunks_exact_mut(16))
            .enumerate()
        {
            scales[j] = make_q3_quants(4, xs, ls);
            let scale = scales[j].abs();
            if scale > amax {
                amax = scale;
                max_scale = scales[j];
            }
        }
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &scale) in scales.iter().enumerate() {
                let l = ((nearest_int(iscale * scale) as i8).clamp(-32, 31) + 32) as u8;
                if j < 8 {
                    y.scales[j] = l & 0x0F;
                } else {
                    y.scales[j - 8] |= (l & 0x0F) << 4;
                }
                y.scales[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
            }
            y.d = f16_bytes(1.0 / iscale);
        } else {
            y.d = f16_bytes(0.0);
        }
        let d_all = f16_round(y.d);
        let group_scales = q3_k_scales(&y.scales);
        for ((xs, ls), &sc) in x
            .chunks_exact(16)
            .zip(levels.chunks_exact_mut(16))
            .zip(&group_scales)
        {
            let d = d_all * sc as f32;
            if d == 0.0 {
                continue;
            }
            for (l, &v) in ls.iter_mut().zip(xs) {
                *l = (nearest_int(v / d).clamp(-4, 3) + 4) as i8;
            }
        }
        // The third bit of element j goes to bit j / 32 of hmask[j % 32].
        let mut low = [0u8; QK_K];
        for (j, (lo, &l)) in low.iter_mut().zip(&levels).enumerate() {
            let mut l = l as u8;
            if l > 3 {
                y.hmask[j % 32] |= 1 << (j / 32);
                l -= 4;
            }
            *lo = l;
        }
        pack_2bit(&low, &mut y.qs);
        y
    }
}

/// Scales and mins of the eight groups of 32 of a Q4_K or Q5_K super-block, found with
/// `make_qkx2_quants` on weights `rms(x) + |x|`, and the levels of each element.
fn qkx_groups(
    x: &[f32; QK_K],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    levels: &mut [u8; QK_K],
) -> ([f32; 8], [f32; 8]) {
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut weights = [0f32; 32];
    let mut laux = [0u8; 32];
    for (j, (xs, ls)) in x
        .chunks_exact(32)
        .zip(levels.chunks_exact_mut(32))
        .enumerate()
    {
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) =
            make_qkx2_quants(nmax, xs, &weights, ls, &mut laux, rmin, 0.1, nstep, false);
    }
    (scales, mins)
}

/// Quantizes the group scales and mins to 6 bits and packs them (see [`get_scale_min_k4`]);
/// returns the packed bytes and the f16 super-scales `d` and `dmin`.
fn pack_k4_scales(scales: &[f32; 8], mins: &[f32; 8]) -> ([u8; K_SCALE_SIZE], [u8; 2], [u8; 2]) {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for (&s, &m) in scales.iter().zip(mins) {
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    (
        packed,
        f16_bytes(max_scale / 63.0),
        f16_bytes(max_min / 63.0),
    )
}

/// Recomputes each element's level from the stored (rounded) group scales and mins.
fn requantize_k4(
    x: &[f32; QK_K],
    packed: &[u8; K_SCALE_SIZE],
    d: [u8; 2],
    dmin: [u8; 2],
    nmax: i32,
    levels: &mut [u8; QK_K],
) {
    let (d_all, dmin_all) = (f16_round(d), f16_round(dmin));
    for (j, (xs, ls)) in x
        .chunks_exact(32)
        .zip(levels.chunks_exact_mut(32))
        .enumerate()
    {
        let (sc, m) = get_scale_min_k4(j, packed);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for (l, &v) in ls.iter_mut().zip(xs) {
            *l = nearest_int((v + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

impl BlockQ4K {
    /// Encodes 256 values.
    pub fn quantize(x: &[f32; QK_K]) -> BlockQ4K {
        let mut levels = [0u8; QK_K];
        let (scales, mins) = qkx_groups(x, 15, -1.0, 20, &mut levels);
        let (packed, d, dmin) = pack_k4_scales(&scales, &mins);
        requantize_k4(x, &packed, d, dmin, 15, &mut levels);
        let mut qs = [0u8; QK_K / 2];
        for (chunk, qs) in levels.chunks_exact(64).zip(qs.chunks_exact_mut(32)) {
            for (l, q) in qs.iter_mut().enumerate() {
                *q = chunk[l] | (chunk[l + 32] << 4);
            }
        }
        BlockQ4K {
            d,
            dmin,
            scales: packed,
            qs,
        }
    }
}

impl BlockQ5K {
    /// Encodes 256 values.
    pub fn quantize(x: &[f32; QK_K]) -> BlockQ5K {
        let mut levels = [0u8; QK_K];
        let (scales, mins) = qkx_groups(x, 31, -0.5, 15, &mut levels);
        let (packed, d, dmin) = pack_k4_scales(&scales, &mins);
        requantize_k4(x, &packed, d, dmin, 31, &mut levels);
        let mut qs = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 8];
        for (c, (chunk, qs)) in levels
            .chunks_exact(64)
            .zip(qs.chunks_exact_mut(32))
            .enumerate()
        {
            for (l, q) in qs.iter_mut().enumerate() {
                let (mut a, mut b) = (chunk[l], chunk[l + 32]);
                if a > 15 {
                    a -= 16;
                    qh[l] |= 1 << (2 * c);
                }
                if b > 15 {
                    b -= 16;
                    qh[l] |= 2 << (2 * c);
                }
                *q = a | (b << 4);
            }
        }
        BlockQ5K {
            d,
            dmin,
            scales: packed,
            qh,
            qs,
        }
    }
}

impl BlockQ6K {
    /// Encodes 256 values.
    pub fn quantize(x: &[f32; QK_K]) -> BlockQ6K {
        let mut levels = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for (j, (xs, ls)) in x
            .chunks_exact(16)
            .zip(levels.chunks_exact_mut(16))
            .enumerate()
        {
            let scale = make_qx_quants(32, xs, ls);
            scales[j] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }
        let mut y = BlockQ6K::zeroed();
        if max_abs_scale < GROUP_MAX_EPS {
            y.d = f16_bytes(0.0);
            return y;
        }
        let iscale = -128.0 / max_scale;
        y.d = f16_bytes(1.0 / iscale);
        for (s, &scale) in y.scales.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * scale).min(127) as i8 as u8;
        }
        let d_all = f16_round(y.d);
        for (j, (xs, ls)) in x
            .chunks_exact(16)
            .zip(levels.chunks_exact_mut(16))
            .enumerate()
        {
            let d = d_all * f32::from(y.scales[j] as i8);
            if d == 0.0 {
                continue;
            }
            for (l, &v) in ls.iter_mut().zip(xs) {
                *l = (nearest_int(v / d).clamp(-32, 31) + 32) as i8;
            }
        }
        let levels: [u8; QK_K] = bytemuck::cast(levels);
        let halves = levels
            .chunks_exact(128)
            .zip(y.ql.chunks_exact_mut(64))
            .zip(y.qh.chunks_exact_mut(32));
        for ((l, ql), qh) in halves {
            for i in 0..32 {
                let (q1, q2, q3, q4) = (l[i], l[i + 32], l[i + 64], l[i + 96]);
                ql[i] = (q1 & 0x0F) | ((q3 & 0x0F) << 4);
                ql[i + 32] = (q2 & 0x0F) | ((q4 & 0x0F) << 4);
                qh[i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        y
    }
}

impl BlockQ8K {
    /// Encodes 256 values with an f32 scale and the sums of each 16 quants.
    pub fn quantize(x: &[f32; QK_K]) -> BlockQ8K {
        let mut y = BlockQ8K::zeroed();
        let (max, amax) = signed_abs_max_gt(x);
        if amax == 0.0 {
            return y;
        }
        let iscale = -127.0 / max;
        let mut qs = [0i8; QK_K];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (sums, group) in y.bsums.chunks_exact_mut(2).zip(qs.chunks_exact(16)) {
            let sum: i32 = group.iter().map(|&q| i32::from(q)).sum();
            sums.copy_from_slice(&(sum as i16).to_le_bytes());
        }
        y.qs = bytemuck::cast(qs);
        y.d = (1.0 / iscale).to_le_bytes();
        y
    }
}

/// ggml's f32 to bf16 rounding: to nearest even, with NaNs kept NaN (quiet).
#[inline]
fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7FFF_FFFF > 0x7F80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7FFF + ((u >> 16) & 1)) >> 16) as u16
}

fn encode_blocks<B: Pod, const N: usize>(
    ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
    f: impl Fn(&[f32; N]) -> B,
) -> Result<(), QuantError> {
    let len = dst.len();
    let blocks: &mut [B] =
        bytemuck::try_cast_slice_mut(dst).map_err(|_| QuantError::PartialBlock {
            ty,
            len,
            type_size: size_of::<B>(),
        })?;
    for (b, x) in blocks.iter_mut().zip(src.as_chunks::<N>().0) {
        *b = f(x);
    }
    Ok(())
}

/// Bytes needed to encode `n` elements as `ty`, checking that `n` is a whole number of blocks.
fn encoded_len(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    if !ty.is_supported() {
        return Err(QuantError::Unsupported(ty));
    }
    let (block_size, type_size) = ty.layout().ok_or(QuantError::Unsupported(ty))?;
    if !n.is_multiple_of(block_size) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            len: n,
            block_size,
        });
    }
    (n / block_size)
        .checked_mul(type_size)
        .ok_or(QuantError::TooLarge { ty })
}

/// Encodes `src` as `ty` into `dst`, which must be exactly the encoded size. `src.len()` must be
/// a whole number of `ty`'s blocks. Supports F32, F16, BF16 and every quantized type in
/// [`GgmlType::SUPPORTED`], with ggml's reference (importance-free) quantizers.
pub fn quantize_into(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    let need = encoded_len(ty, src.len())?;
    if dst.len() != need {
        return Err(QuantError::LengthMismatch {
            ty,
            expected: need,
            got: dst.len(),
        });
    }
    match ty {
        GgmlType::F32 => {
            for (o, &v) in dst.as_chunks_mut::<4>().0.iter_mut().zip(src) {
                *o = v.to_le_bytes();
            }
            Ok(())
        }
        GgmlType::F16 => {
            for (o, &v) in dst.as_chunks_mut::<2>().0.iter_mut().zip(src) {
                *o = f16_bytes(v);
            }
            Ok(())
        }
        GgmlType::BF16 => {
            for (o, &v) in dst.as_chunks_mut::<2>().0.iter_mut().zip(src) {
                *o = f32_to_bf16_bits(v).to_le_bytes();
            }
            Ok(())
        }
        GgmlType::Q4_0 => encode_blocks(ty, src, dst, BlockQ4_0::quantize),
        GgmlType::Q4_1 => encode_blocks(ty, src, dst, BlockQ4_1::quantize),
        GgmlType::Q5_0 => encode_blocks(ty, src, dst, BlockQ5_0::quantize),
        GgmlType::Q5_1 => encode_blocks(ty, src, dst, BlockQ5_1::quantize),
        GgmlType::Q8_0 => encode_blocks(ty, src, dst, BlockQ8_0::quantize),
        GgmlType::Q8_1 => encode_blocks(ty, src, dst, BlockQ8_1::quantize),
        GgmlType::Q2_K => encode_blocks(ty, src, dst, BlockQ2K::quantize),
        GgmlType::Q3_K => encode_blocks(ty, src, dst, BlockQ3K::quantize),
        GgmlType::Q4_K => encode_blocks(ty, src, dst, BlockQ4K::quantize),
        GgmlType::Q5_K => encode_blocks(ty, src, dst, BlockQ5K::quantize),
        GgmlType::Q6_K => encode_blocks(ty, src, dst, BlockQ6K::quantize),
        GgmlType::Q8_K => encode_blocks(ty, src, dst, BlockQ8K::quantize),
        GgmlType::Other(_) => Err(QuantError::Unsupported(ty)),
    }
}

/// Encodes `src` as `ty`; `src.len()` must be a whole number of `ty`'s blocks. See
/// [`quantize_into`].
pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let mut out = vec![0u8; encoded_len(ty, src.len())?];
    quantize_into(ty, src, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_ties_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-2.6), -3);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
        // Out of range and NaN give some value, without panicking.
        let _ = nearest_int(f32::NAN);
        let _ = nearest_int(1e30);
    }

    #[test]
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16_bits(1.0), 0x3F80);
        // Halfway between two bf16 values rounds to the even one.
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3F80_8000)), 0x3F80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x7F80_0001)), 0x7FC0);
        assert_eq!(f32_to_bf16_bits(f32::INFINITY), 0x7F80);
    }

    #[test]
    fn zero_blocks_are_zero() {
        for ty in GgmlType::SUPPORTED {
            let n = ty.block_size() * 2;
            let bytes = quantize(ty, &vec![0.0; n]).unwrap();
            let back = super::super::dequantize_to_vec(ty, &bytes).unwrap();
            assert!(back.iter().all(|&v| v == 0.0), "{ty}");
        }
    }

    #[test]
    fn sizes_are_checked() {
        assert!(matches!(
            quantize(GgmlType::Q4_K, &[0.0; 32]),
            Err(QuantError::NotBlockMultiple { .. })
        ));
        assert!(matches!(
            quantize(GgmlType::Other(16), &[0.0; 256]),
            Err(QuantError::Unsupported(_))
        ));
        let mut out = [0u8; 17];
        assert!(matches!(
            quantize_into(GgmlType::Q4_0, &[0.0; 32], &mut out),
            Err(QuantError::LengthMismatch { .. })
        ));
    }
}
