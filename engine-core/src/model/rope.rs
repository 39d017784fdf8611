//! Rotary position embedding parameters and the cos/sin angles they give, as llama.cpp computes
//! them (normal and NeoX layouts, frequency base, linear and YaRN scaling, frequency factors).

/// How the rotated pairs are laid out in a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Adjacent pairs `(x[2i], x[2i+1])` (llama.cpp's "normal", used by `llama`).
    Normal,
    /// Split halves `(x[i], x[i + n/2])` (GPT-NeoX style, used by `qwen2` and `phi3`).
    Neox,
}

/// The RoPE configuration of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    /// Pair layout.
    pub layout: RopeLayout,
    /// Number of leading dimensions of each head that are rotated.
    pub n_dims: usize,
    /// Frequency base (theta).
    pub freq_base: f32,
    /// Position scale: 1 / the scaling factor (1 = none).
    pub freq_scale: f32,
    /// YaRN extrapolation mix (0 = plain linear scaling).
    pub ext_factor: f32,
    /// Magnitude scale applied to cos and sin.
    pub attn_factor: f32,
    /// YaRN ramp bounds in dimensions `[low, high]`.
    pub corr_dims: [f32; 2],
    /// Per-pair frequency divisors (Llama 3.1 style `rope_freqs`), if any.
    pub freq_factors: Option<Vec<f32>>,
}

impl RopeConfig {
    /// Plain RoPE over `n_dims` dimensions with the given base.
    pub fn plain(layout: RopeLayout, n_dims: usize, freq_base: f32) -> RopeConfig {
        RopeConfig {
            layout,
            n_dims,
            freq_base,
            freq_scale: 1.0,
            ext_factor: 0.0,
            attn_factor: 1.0,
            corr_dims: [0.0, 0.0],
            freq_factors: None,
        }
    }

    /// Configures YaRN scaling by `factor` for a model trained on `n_ctx_orig` positions, with
    /// llama.cpp's defaults (beta_fast 32, beta_slow 1, magnitude correction).
    pub fn with_yarn(
        mut self,
        factor: f32,
        n_ctx_orig: u32,
        ext_factor: f32,
        attn_factor: f32,
    ) -> RopeConfig {
        self.freq_scale = 1.0 / factor;
        self.ext_factor = ext_factor;
        let corr = |n_rot: f32| {
            self.n_dims as f32 * (n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * self.freq_base.ln())
        };
        self.corr_dims = [
            corr(32.0).floor().max(0.0),
            corr(1.0).ceil().min(self.n_dims as f32 - 1.0),
        ];
        // llama.cpp folds the magnitude correction into attn_factor and cancels the one that the
        // rotation applies when ext_factor != 0, so the net magnitude scale is `attn_factor`.
        let mscale = if factor <= 1.0 {
            1.0
        } else {
            0.1 * factor.ln() + 1.0
        };
        self.attn_factor = attn_factor * mscale / (1.0 + 0.1 * factor.ln());
        self
    }

    /// Writes `(cos, sin)` for every rotated pair at `pos` into `out` (`n_dims` floats:
    /// `out[2i] = cos`, `out[2i+1] = sin`).
    pub fn angles(&self, pos: u32, out: &mut [f32]) {
        let theta_scale = self.freq_base.powf(-2.0 / self.n_dims as f32);
        let mut theta = pos as f32;
        for i0 in (0..self.n_dims).step_by(2) {
            let ff = self
                .freq_factors
                .as_ref()
                .and_then(|f| f.get(i0 / 2).copied())
                .unwrap_or(1.0);
            let theta_extrap = theta / ff;
            let theta_interp = self.freq_scale * theta_extrap;
            let mut t = theta_interp;
            let mut mscale = self.attn_factor;
            if self.ext_factor != 0.0 {
                let y = ((i0 / 2) as f32 - self.corr_dims[0])
                    / (self.corr_dims[1] - self.corr_dims[0]).max(0.001);
                let ramp_mix = (1.0 - y.clamp(0.0, 1.0)) * self.ext_factor;
                t = theta_interp * (1.0 - ramp_mix) + theta_extrap * ramp_mix;
                mscale *= 1.0 + 0.1 * (1.0 / self.freq_scale).ln();
            }
            out[i0] = t.cos() * mscale;
            out[i0 + 1] = t.sin() * mscale;
            theta *= theta_scale;
        }
    }

    /// Rotates one head in place with precomputed `angles` (from [`RopeConfig::angles`]).
    pub fn apply(&self, head: &mut [f32], angles: &[f32]) {
        rotate(self.layout, head, &angles[..self.n_dims]);
    }
}

/// Rotates the first `angles.len()` dimensions of `head` by `(cos, sin)` pairs in `angles`.
pub fn rotate(layout: RopeLayout, head: &mut [f32], angles: &[f32]) {
    let n = angles.len();
    match layout {
        RopeLayout::Normal => {
            for i in (0..n).step_by(2) {
                let (c, s) = (angles[i], angles[i + 1]);
                let (x0, x1) = (head[i], head[i + 1]);
                head[i] = x0 * c - x1 * s;
                head[i + 1] = x0 * s + x1 * c;
            }
        }
        RopeLayout::Neox => {
            let half = n / 2;
            for i in 0..half {
                let (c, s) = (angles[2 * i], angles[2 * i + 1]);
                let (x0, x1) = (head[i], head[i + half]);
                head[i] = x0 * c - x1 * s;
                head[i + half] = x0 * s + x1 * c;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity() {
        let rope = RopeConfig::plain(RopeLayout::Normal, 8, 10000.0);
        let mut angles = vec![0.0; 8];
        rope.angles(0, &mut angles);
        let mut head: Vec<f32> = (0..8).map(|i| i as f32 + 0.5).collect();
        let before = head.clone();
        rope.apply(&mut head, &angles);
        assert_eq!(head, before);
    }

    #[test]
    fn rotation_matches_formula() {
        for layout in [RopeLayout::Normal, RopeLayout::Neox] {
            let rope = RopeConfig::plain(layout, 4, 100.0);
            let mut angles = vec![0.0; 4];
            rope.angles(3, &mut angles);
            let mut head = vec![1.0, 2.0, 3.0, 4.0];
            rope.apply(&mut head, &angles);
            let (t0, t1) = (3.0f64, 3.0f64 * 100f64.powf(-0.5));
            let (a, b, c, d) = match layout {
                RopeLayout::Normal => (0, 1, 2, 3),
                RopeLayout::Neox => (0, 2, 1, 3),
            };
            let x = [1.0f64, 2.0, 3.0, 4.0];
            let want = |i: usize, j: usize, t: f64| {
                (
                    x[i] * t.cos() - x[j] * t.sin(),
                    x[i] * t.sin() + x[j] * t.cos(),
                )
            };
            let (w0, w1) = want(a, b, t0);
            let (w2, w3) = want(c, d, t1);
            for (got, want) in [(head[a], w0), (head[b], w1), (head[c], w2), (head[d], w3)] {
                assert!(
                    (got as f64 - want).abs() < 1e-5,
                    "{layout:?}: {got} vs {want}"
                );
            }
        }
    }
}
