//! Adapter and device setup: options, the features and limits read up front, and their report.

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::backend::BackendError;

/// Arithmetic precision of the kernels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f16 where the adapter has `shader-f16`, f32 otherwise.
    #[default]
    Auto,
    /// f32 everywhere.
    F32,
    /// f16 matrix products and an f16 KV cache; fails when the adapter lacks `shader-f16`.
    F16,
}

/// Options of the WebGPU backend.
#[derive(Clone, Debug)]
pub struct WebGpuOptions {
    /// Kernel precision.
    pub precision: Precision,
    /// Use subgroup operations when the adapter has them (a workgroup-memory fallback otherwise).
    pub subgroups: bool,
    /// Pick the first adapter whose name contains this (case-insensitive); `None` = wgpu's choice.
    pub adapter: Option<String>,
    /// Prefer a discrete GPU over an integrated one.
    pub high_performance: bool,
    /// Bind at most this many bytes of a tensor at once (lowered to the adapter's limit); tensors
    /// larger than this are split across bindings. `None` = the adapter's limit.
    pub max_binding_size: Option<u64>,
    /// Use the kernels made for CPU adapters (one invocation per output feature, no workgroup
    /// reductions): `None` = when the adapter is a CPU (lavapipe, SwiftShader).
    pub cpu_kernels: Option<bool>,
    /// Device memory the model, its KV cache and scratch may take, for [`super::WebGpuBackend::check_model`].
    /// `None` = no budget (WebGPU does not report the device's memory).
    pub memory_budget: Option<u64>,
}

impl Default for WebGpuOptions {
    fn default() -> Self {
        WebGpuOptions {
            precision: Precision::Auto,
            subgroups: true,
            adapter: None,
            high_performance: true,
            max_binding_size: None,
            cpu_kernels: None,
            memory_budget: None,
        }
    }
}

/// What the adapter is and what it allows, read before anything is uploaded.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    /// Adapter name (e.g. `NVIDIA GeForce RTX 4090`, `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub name: String,
    /// Graphics API under wgpu (`Vulkan`, `Metal`, `Dx12`, `BrowserWebGpu`).
    pub api: String,
    /// Device type (`DiscreteGpu`, `IntegratedGpu`, `Cpu`, ...).
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Whether `shader-f16` exists on the adapter.
    pub shader_f16: bool,
    /// Whether subgroup operations exist on the adapter.
    pub subgroups: bool,
    /// Smallest and largest subgroup size (0 when unknown).
    pub subgroup_sizes: (u32, u32),
    /// Largest storage-buffer binding, in bytes.
    pub max_storage_binding: u64,
    /// Largest buffer, in bytes.
    pub max_buffer: u64,
    /// Workgroup memory, in bytes.
    pub max_workgroup_storage: u32,
    /// Invocations per workgroup.
    pub max_invocations: u32,
    /// Storage buffers per shader stage.
    pub max_storage_buffers_per_stage: u32,
    /// Whether the f16 path is in use.
    pub using_f16: bool,
    /// Whether the subgroup path is in use.
    pub using_subgroups: bool,
    /// The binding size tensors are split at.
    pub binding_limit: u64,
    /// Whether the matrix products use the kernels made for CPU adapters.
    pub cpu_kernels: bool,
}

impl fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "adapter: {} ({}, {}, driver {})",
            self.name, self.api, self.device_type, self.driver
        )?;
        writeln!(
            f,
            "features: shader-f16 {}, subgroups {} (sizes {}..{})",
            yes(self.shader_f16),
            yes(self.subgroups),
            self.subgroup_sizes.0,
            self.subgroup_sizes.1
        )?;
        writeln!(
            f,
            "limits: storage binding {} MiB, buffer {} MiB, workgroup memory {} KiB, {} invocations, {} storage buffers per stage",
            self.max_storage_binding >> 20,
            self.max_buffer >> 20,
            self.max_workgroup_storage >> 10,
            self.max_invocations,
            self.max_storage_buffers_per_stage
        )?;
        write!(
            f,
            "using: {} arithmetic, {} reductions, {} matrix kernels, tensors split at {} MiB",
            if self.using_f16 { "f16" } else { "f32" },
            if self.using_subgroups {
                "subgroup"
            } else {
                "workgroup-memory"
            },
            if self.cpu_kernels {
                "CPU-adapter"
            } else {
                "GPU"
            },
            self.binding_limit >> 20
        )
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The device and what was negotiated with it.
pub(crate) struct DeviceSetup {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub report: AdapterReport,
    pub limits: wgpu::Limits,
}

/// The first error a device reported outside an error scope (kept until it is returned once).
pub(crate) type ErrorSlot = Arc<Mutex<Option<String>>>;

/// The minimum workgroup memory and invocations the kernels need.
const NEED_WORKGROUP_STORAGE: u32 = 16384;
const NEED_INVOCATIONS: u32 = 256;
const NEED_STORAGE_BUFFERS: u32 = 6;

/// Finds an adapter, reads its features and limits, and opens a device.
pub(crate) async fn open(
    options: &WebGpuOptions,
    errors: &ErrorSlot,
) -> Result<DeviceSetup, BackendError> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = match &options.adapter {
        Some(want) => {
            let want = want.to_lowercase();
            let all = instance.enumerate_adapters(wgpu::Backends::all()).await;
            let names: Vec<String> = all.iter().map(|a| a.get_info().name).collect();
            all.into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&want))
                .ok_or_else(|| {
                    BackendError::Unavailable(format!(
                        "no WebGPU adapter named like {want:?} (found: {})",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ))
                })?
        }
        None => instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: if options.high_performance {
                    wgpu::PowerPreference::HighPerformance
                } else {
                    wgpu::PowerPreference::LowPower
                },
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| BackendError::Unavailable(format!("no WebGPU adapter: {e}")))?,
    };
    let info = adapter.get_info();
    let features = adapter.features();
    let limits = adapter.limits();
    let shader_f16 = features.contains(wgpu::Features::SHADER_F16);
    let subgroups = features.contains(wgpu::Features::SUBGROUP);
    let using_f16 = match options.precision {
        Precision::F32 => false,
        Precision::Auto => shader_f16,
        Precision::F16 if shader_f16 => true,
        Precision::F16 => {
            return Err(BackendError::Unavailable(format!(
                "f16 precision needs shader-f16, which {} lacks",
                info.name
            )));
        }
    };
    let using_subgroups = subgroups && options.subgroups;
    if limits.max_compute_workgroup_storage_size < NEED_WORKGROUP_STORAGE
        || limits.max_compute_invocations_per_workgroup < NEED_INVOCATIONS
        || limits.max_storage_buffers_per_shader_stage < NEED_STORAGE_BUFFERS
    {
        return Err(BackendError::Unavailable(format!(
            "{} allows {} bytes of workgroup memory, {} invocations per workgroup and {} storage buffers per stage; the kernels need {NEED_WORKGROUP_STORAGE}, {NEED_INVOCATIONS} and {NEED_STORAGE_BUFFERS}",
            info.name,
            limits.max_compute_workgroup_storage_size,
            limits.max_compute_invocations_per_workgroup,
            limits.max_storage_buffers_per_shader_stage
        )));
    }
    let mut required = wgpu::Features::empty();
    if using_f16 {
        required |= wgpu::Features::SHADER_F16;
    }
    if using_subgroups {
        required |= wgpu::Features::SUBGROUP;
    }
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("tandem"),
            required_features: required,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        })
        .await
        .map_err(|e| BackendError::Unavailable(format!("cannot open {}: {e}", info.name)))?;
    let slot = errors.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        if s.is_none() {
            *s = Some(e.to_string());
        }
    }));
    let limits = device.limits();
    let binding_limit = options
        .max_binding_size
        .unwrap_or(u64::MAX)
        .min(limits.max_storage_buffer_binding_size)
        .min(limits.max_buffer_size)
        // Keep word indices in u32 range.
        .min(1 << 31)
        & !255;
    let report = AdapterReport {
        name: info.name.clone(),
        api: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_owned(),
        shader_f16,
        subgroups,
        subgroup_sizes: (info.subgroup_min_size, info.subgroup_max_size),
        max_storage_binding: limits.max_storage_buffer_binding_size,
        max_buffer: limits.max_buffer_size,
        max_workgroup_storage: limits.max_compute_workgroup_storage_size,
        max_invocations: limits.max_compute_invocations_per_workgroup,
        max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
        using_f16,
        using_subgroups,
        binding_limit,
        cpu_kernels: options
            .cpu_kernels
            .unwrap_or(info.device_type == wgpu::DeviceType::Cpu),
    };
    Ok(DeviceSetup {
        device,
        queue,
        report,
        limits,
    })
}
