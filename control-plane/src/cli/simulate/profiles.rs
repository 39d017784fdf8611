//! Device profiles of the simulated web clients: what each kind of browser reports to
//! `/v1/route` and how fast its engine runs the model. The defaults, with their sources, are in
//! `profiles.toml`; `--profiles FILE` replaces them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use control_plane::gateway::browser_route::{
    AdapterInfo, BrowserPath, Capabilities, Downloading, Measured, WebGpuInfo,
};
use serde::Deserialize;

/// The built-in profiles.
const DEFAULT_PROFILES: &str = include_str!("profiles.toml");

/// One kind of visitor.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Its name in the report.
    pub name: String,
    /// Its share of sessions (normalized over all profiles).
    pub share: f64,
    /// The WebGPU adapter, or none.
    pub webgpu: Option<Adapter>,
    /// `navigator.deviceMemory`, if the browser reports it.
    pub device_memory_gb: Option<f64>,
    /// `navigator.hardwareConcurrency`.
    pub hardware_concurrency: u32,
    /// Whether pages are cross-origin isolated (threads on the CPU path).
    #[serde(default)]
    pub cross_origin_isolated: bool,
    /// Share of sessions that start with the model cached.
    pub cached_share: f64,
    /// Download speed, Mbit/s.
    pub download_mbit_s: f64,
    /// Decode speed on WebGPU, tokens/s.
    pub gpu_decode_tok_s: f64,
    /// Prefill speed on WebGPU, tokens/s.
    pub gpu_prefill_tok_s: f64,
    /// Decode speed on the WASM CPU path, tokens/s.
    pub cpu_decode_tok_s: f64,
    /// Prefill speed on the WASM CPU path, tokens/s.
    pub cpu_prefill_tok_s: f64,
    /// Share of sessions whose engine never becomes ready.
    #[serde(default)]
    pub load_failure_rate: f64,
}

/// A WebGPU adapter as a profile gives it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adapter {
    /// `GPUAdapterInfo.vendor`.
    pub vendor: String,
    /// `GPUAdapterInfo.architecture`.
    pub architecture: String,
    /// Features such as `shader-f16`.
    #[serde(default)]
    pub features: Vec<String>,
    /// `limits.maxBufferSize`.
    pub max_buffer_size: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    profiles: Vec<Profile>,
}

/// The profiles of `path`, or the built-in ones.
pub fn load(path: Option<&Path>) -> Result<Vec<Profile>> {
    let text = match path {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => DEFAULT_PROFILES.to_owned(),
    };
    let file: ProfileFile = toml::from_str(&text).context("parsing the device profiles")?;
    let ok = |x: f64| x.is_finite() && x >= 0.0;
    for p in &file.profiles {
        let rates = [p.cached_share, p.load_failure_rate];
        let numbers = [
            p.share,
            p.download_mbit_s,
            p.gpu_decode_tok_s,
            p.gpu_prefill_tok_s,
            p.cpu_decode_tok_s,
            p.cpu_prefill_tok_s,
        ];
        if !numbers.iter().chain(&rates).all(|&x| ok(x)) || rates.iter().any(|&r| r > 1.0) {
            bail!(
                "profile {:?}: numbers must be finite and not negative, shares at most 1",
                p.name
            );
        }
    }
    if file.profiles.iter().map(|p| p.share).sum::<f64>() <= 0.0 {
        bail!("the device profiles' shares add up to nothing");
    }
    Ok(file.profiles)
}

/// The profile at `u` in `[0, 1)` of the cumulative shares.
pub fn pick(profiles: &[Profile], u: f64) -> usize {
    let total: f64 = profiles.iter().map(|p| p.share).sum();
    let mut acc = 0.0;
    for (i, p) in profiles.iter().enumerate() {
        acc += p.share / total;
        if u < acc {
            return i;
        }
    }
    profiles.len() - 1
}

impl Profile {
    /// The capability report of a browser of this kind, with the variants it has cached and
    /// loaded, the download under way, and the speeds it has measured (after it ran the model
    /// once).
    pub fn capabilities(
        &self,
        cached: &[String],
        loaded: &[String],
        downloading: Vec<Downloading>,
        measured: Option<BrowserPath>,
    ) -> Capabilities {
        Capabilities {
            webgpu: self.webgpu.as_ref().map(|a| WebGpuInfo {
                available: true,
                adapter: AdapterInfo {
                    vendor: a.vendor.clone(),
                    architecture: a.architecture.clone(),
                    is_fallback: false,
                },
                features: a.features.clone(),
                limits: BTreeMap::from([("maxBufferSize".to_owned(), a.max_buffer_size)]),
            }),
            wasm_simd: true,
            cross_origin_isolated: self.cross_origin_isolated,
            hardware_concurrency: Some(self.hardware_concurrency),
            device_memory_gb: self.device_memory_gb,
            storage_available_bytes: Some(2e9),
            cached_variants: cached.to_vec(),
            loaded_variants: loaded.to_vec(),
            downloading,
            measured: measured.map(|path| {
                let (decode, prefill) = self.speeds(path);
                Measured {
                    decode_tok_s: Some(decode),
                    prefill_tok_s: Some(prefill),
                }
            }),
        }
    }

    /// Decode and prefill speeds on a path, tokens/s.
    pub fn speeds(&self, path: BrowserPath) -> (f64, f64) {
        match path {
            BrowserPath::Webgpu => (self.gpu_decode_tok_s, self.gpu_prefill_tok_s),
            BrowserPath::Cpu => (self.cpu_decode_tok_s, self.cpu_prefill_tok_s),
        }
    }

    /// Download speed, bytes per second.
    pub fn download_bytes_per_sec(&self) -> f64 {
        self.download_mbit_s.max(0.1) * 1e6 / 8.0
    }

    /// Milliseconds to download `bytes`.
    pub fn download_ms(&self, bytes: u64) -> f64 {
        bytes as f64 / self.download_bytes_per_sec() * 1e3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_profiles_parse_and_add_up() {
        let profiles = load(None).unwrap();
        let total: f64 = profiles.iter().map(|p| p.share).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        assert_eq!(pick(&profiles, 0.0), 0);
        assert_eq!(pick(&profiles, 0.999_999), profiles.len() - 1);
        let no_gpu = profiles.iter().find(|p| p.webgpu.is_none()).unwrap();
        assert!(
            no_gpu
                .capabilities(&[], &[], Vec::new(), None)
                .webgpu
                .is_none()
        );
    }

    #[test]
    fn bad_profiles_are_refused() {
        let dir = std::env::temp_dir().join(format!("tandem-profiles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.toml");
        let one = DEFAULT_PROFILES.replace("cached_share = 0.5", "cached_share = 1.5");
        std::fs::write(&path, one).unwrap();
        assert!(load(Some(&path)).is_err());
        std::fs::write(&path, "[[profiles]]\nname = \"x\"").unwrap();
        assert!(load(Some(&path)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
