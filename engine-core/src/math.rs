//! Elementary functions written only with IEEE basic operations: the same result on every
//! platform, and branch-free so that loops over them vectorize (the system `expf` is a call per
//! element).

/// `x` where `keep`, else +0.0, without a branch.
#[inline(always)]
pub fn mask(x: f32, keep: bool) -> f32 {
    f32::from_bits(x.to_bits() & (keep as u32).wrapping_neg())
}

const LOG2E: f32 = core::f32::consts::LOG2_E;
/// ln 2 split for Cody-Waite reduction: the high part has 15 significant bits, so `k * LN2_HI` is
/// exact for |k| <= 256.
const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
/// 1.5 * 2^23: adding it rounds to the nearest integer and leaves that integer in the low bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// Below this, [`exp`] returns exactly 0.
pub const EXP_MIN: f32 = -87.0;

/// `e^x` to about 1 ulp for x <= 88, and exactly 0 for x < -87 (including -inf and NaN). Uses only
/// additions, multiplications and bit operations, so the result is the same on every platform;
/// branch-free, so loops over it vectorize.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = if x > EXP_MIN { x } else { EXP_MIN };
    let xc = if xc < 88.0 { xc } else { 88.0 };
    let t = xc * LOG2E + ROUND_MAGIC;
    let k = t - ROUND_MAGIC;
    let ki = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let r = xc - k * LN2_HI - k * LN2_LO;
    // Taylor series of e^r for |r| <= ln(2)/2; the truncation error is below 0.1 ulp.
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits((ki.wrapping_add(127) as u32) << 23);
    mask(p * scale, x >= EXP_MIN)
}
