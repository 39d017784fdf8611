//! Portable reference kernels: integer dot products of quantized weight rows with 8-bit
//! activations, one block at a time. Every SIMD kernel is tested against these.

use half::f16;

use super::super::acts::{ActRow, QK};
use super::{Tile, TileFn};
use crate::quant::GgmlType;

#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Integer dot of 32 weights (given by `w(i)`) with activation block `b` of `a`.
#[inline(always)]
fn idot32(a: &ActRow<'_>, b: usize, w: impl Fn(usize) -> i32) -> i32 {
    (0..QK).map(|i| w(i) * a.int(b * QK + i)).sum()
}

/// Q4_0: `x = d * (q - 8)`, 18-byte blocks `[d: f16, qs: [u8; 16]]`.
pub fn dot_q4_0(w: &[u8], a: ActRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (b, blk) in w.chunks_exact(18).enumerate() {
        let d = f16_at(blk, 0);
        let qs = &blk[2..18];
        let s = idot32(&a, b, |i| {
            i32::from(if i < 16 { qs[i] & 15 } else { qs[i - 16] >> 4 })
        });
        acc += d * (s as f32 * a.d[b] - 8.0 * a.ds[b]);
    }
    acc
}

/// Q4_1: `x = d * q + m`, 20-byte blocks `[d: f16, m: f16, qs: [u8; 16]]`.
pub fn dot_q4_1(w: &[u8], a: ActRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (b, blk) in w.chunks_exact(20).enumerate() {
        let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
        let qs = &blk[4..20];
        let s = idot32(&a, b, |i| {
            i32::from(if i < 16 { qs[i] & 15 } else { qs[i - 16] >> 4 })
        });
        acc += d * a.d[b] * s as f32 + m * a.ds[b];
    }
    acc
}

#[inline(always)]
fn q5_value(qs: &[u8], qh: u32, i: usize) -> i32 {
    if i < 16 {
        i32::from(qs[i] & 15) | (((qh >> i) & 1) << 4) as i32
    } else {
        i32::from(qs[i - 16] >> 4) | (((qh >> i) & 1) << 4) as i32
    }
}

/// Q5_0: `x = d * (q - 16)`, 22-byte blocks `[d: f16, qh: u32, qs: [u8; 16]]`.
pub fn dot_q5_0(w: &[u8], a: ActRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (b, blk) in w.chunks_exact(22).enumerate() {
        let d = f16_at(blk, 0);
        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
        let qs = &blk[6..22];
        let s = idot32(&a, b, |i| q5_value(qs, qh, i));
        acc += d * (s as f32 * a.d[b] - 16.0 * a.ds[b]);
    }
    acc
}

/// Q5_1: `x = d * q + m`, 24-byte blocks `[d: f16, m: f16, qh: u32, qs: [u8; 16]]`.
pub fn dot_q5_1(w: &[u8], a: ActRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (b, blk) in w.chunks_exact(24).enumerate() {
        let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
        let qh = u32::from_le_bytes([blk[4], blk[5], blk[6], blk[7]]);
        let qs = &blk[8..24];
        let s = idot32(&a, b, |i| q5_value(qs, qh, i));
        acc += d * a.d[b] * s as f32 + m * a.ds[b];
    }
    acc
}

/// Q8_0: `x = d * q`, 34-byte blocks `[d: f16, qs: [i8; 32]]`.
pub fn dot_q8_0(w: &[u8], a: ActRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (b, blk) in w.chunks_exact(34).enumerate() {
        let d = f16_at(blk, 0);
        let s = idot32(&a, b, |i| i32::from(blk[2 + i] as i8));
        acc += d * a.d[b] * s as f32;
    }
    acc
}

/// The 6-bit scale and minimum of sub-block `j` from the 12 packed bytes of a Q4_K/Q5_K block.
#[inline(always)]
pub fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K: 144-byte super-blocks of 256, `[d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]]`,
/// eight sub-blocks of 32 with `x = d * sc * q - dmin * m`.
pub fn dot_q4_k(w: &[u8], a: ActRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (sb, blk) in w.chunks_exact(144).enumerate() {
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        let scales = &blk[4..16];
        let qs = &blk[16..144];
        let mut sum = 0.0f32;
        let mut mins = 0.0f32;
        for j in 0..8 {
            let b = sb * 8 + j;
            let (sc, m) = scale_min_k4(j, scales);
            let chunk = &qs[(j / 2) * 32..(j / 2) * 32 + 32];
            let s = if j % 2 == 0 {
                idot32(&a, b, |i| i32::from(chunk[i] & 15))
            } else {
                idot32(&a, b, |i| i32::from(chunk[i] >> 4))
            };
            sum += f32::from(sc) * a.d[b] * s as f32;
            mins += f32::from(m) * a.ds[b];
        }
        acc += d * sum - dmin * mins;
    }
    acc
}

/// Q6_K: 210-byte super-blocks of 256, `[ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16]`,
/// sixteen sub-blocks of 16 with `x = d * sc * (q - 32)`.
pub fn dot_q6_k(w: &[u8], a: ActRow<'_>) -> f32 {
    let mut acc = 0.0f32;
    for (sb, blk) in w.chunks_exact(210).enumerate() {
        let ql = &blk[0..128];
        let qh = &blk[128..192];
        let sc = &blk[192..208];
        let d = f16_at(blk, 208);
        let mut sum = 0.0f32;
        for half in 0..2 {
            let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
            // Four 32-element groups per half; group g takes bits `2g` of qh and the low or high
            // nibble of ql[l] or ql[l + 32].
            for g in 0..4 {
                let b = sb * 8 + half * 4 + g;
                let value = |l: usize| -> i32 {
                    let byte = ql[l + 32 * (g & 1)];
                    let nib = if g < 2 { byte & 15 } else { byte >> 4 };
                    let hi = (qh[l] >> (2 * g)) & 3;
                    i32::from(nib | (hi << 4)) - 32
                };
                let lo16: i32 = (0..16).map(|l| value(l) * a.int(b * QK + l)).sum();
                let hi16: i32 = (16..32).map(|l| value(l) * a.int(b * QK + l)).sum();
                let s0 = f32::from(sc[8 * half + 2 * g] as i8);
                let s1 = f32::from(sc[8 * half + 2 * g + 1] as i8);
                sum += a.d[b] * (s0 * lo16 as f32 + s1 * hi16 as f32);
            }
        }
        acc += d * sum;
    }
    acc
}

/// The scalar row-dot function for a weight type, if it has an integer kernel.
pub fn row_dot(ty: GgmlType) -> Option<fn(&[u8], ActRow<'_>) -> f32> {
    Some(match ty {
        GgmlType::Q4_0 => dot_q4_0,
        GgmlType::Q4_1 => dot_q4_1,
        GgmlType::Q5_0 => dot_q5_0,
        GgmlType::Q5_1 => dot_q5_1,
        GgmlType::Q8_0 => dot_q8_0,
        GgmlType::Q4_K => dot_q4_k,
        GgmlType::Q6_K => dot_q6_k,
        _ => return None,
    })
}

macro_rules! scalar_tile {
    ($name:ident, $dot:path) => {
        /// Tile kernel over the scalar row dot.
        ///
        /// # Safety
        /// `out` must be valid for writes at `t * out_stride + r` for the tile's rows and tokens.
        pub unsafe fn $name(tile: &Tile<'_>) {
            let rb = tile.row_bytes;
            for t in 0..tile.tokens {
                let a = tile.acts.row(tile.t0 + t);
                for r in 0..tile.rows {
                    let v = $dot(&tile.w[r * rb..(r + 1) * rb], a);
                    // SAFETY: the caller guarantees the tile lies inside `out`.
                    unsafe { *tile.out.add(t * tile.out_stride + r) = v };
                }
            }
        }
    };
}

scalar_tile!(tile_q4_0, dot_q4_0);
scalar_tile!(tile_q4_1, dot_q4_1);
scalar_tile!(tile_q5_0, dot_q5_0);
scalar_tile!(tile_q5_1, dot_q5_1);
scalar_tile!(tile_q8_0, dot_q8_0);
scalar_tile!(tile_q4_k, dot_q4_k);
scalar_tile!(tile_q6_k, dot_q6_k);

/// The scalar tile kernel for a weight type.
pub fn tile(ty: GgmlType) -> Option<TileFn> {
    Some(match ty {
        GgmlType::Q4_0 => tile_q4_0,
        GgmlType::Q4_1 => tile_q4_1,
        GgmlType::Q5_0 => tile_q5_0,
        GgmlType::Q5_1 => tile_q5_1,
        GgmlType::Q8_0 => tile_q8_0,
        GgmlType::Q4_K => tile_q4_k,
        GgmlType::Q6_K => tile_q6_k,
        _ => return None,
    })
}
