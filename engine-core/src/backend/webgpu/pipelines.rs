//! Shader assembly and the pipeline cache: each kernel is compiled once per variant (precision,
//! subgroups, weight type, tile constants) and reused; bind group layouts are shared by kernels
//! with the same binding signature.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::backend::BackendError;

/// Shared helpers prepended to every kernel.
const COMMON: &str = include_str!("shaders/common.wgsl");

/// How a kernel binds one storage buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`.
    ReadWrite,
}

/// A bind group layout: binding 0 is the per-dispatch uniform (dynamic offset), then the storage
/// buffers in order.
pub(crate) struct Layout {
    /// Identifies the layout in bind group cache keys.
    pub id: u32,
    pub bgl: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
}

/// A compiled kernel.
pub(crate) struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: Arc<Layout>,
}

/// What to compile: a source file, the flags and constants of this variant, and the bindings.
pub(crate) struct KernelSpec<'a> {
    /// The WGSL source (one kernel family).
    pub source: &'static str,
    /// Cache key: unique per variant.
    pub key: String,
    /// Flags for `//#if` sections.
    pub flags: Vec<&'a str>,
    /// `const NAME: u32 = VALUE;` lines.
    pub consts: Vec<(&'a str, u32)>,
    /// Extra source appended (e.g. the weight decoder).
    pub extra: &'static [&'static str],
    /// Storage bindings 1.. in order.
    pub bindings: &'a [Access],
    /// Whether this kernel computes in f16.
    pub f16: bool,
}

/// Size of one dispatch's uniform block.
pub(crate) const PARAMS_BYTES: u64 = 64;

/// Compiled kernels and layouts.
pub(crate) struct Pipelines {
    subgroups: bool,
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
    layouts: Mutex<HashMap<Vec<Access>, Arc<Layout>>>,
}

impl Pipelines {
    pub fn new(subgroups: bool) -> Pipelines {
        Pipelines {
            subgroups,
            kernels: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
        }
    }

    fn layout(&self, device: &wgpu::Device, bindings: &[Access]) -> Arc<Layout> {
        let mut layouts = self.layouts.lock().unwrap_or_else(|p| p.into_inner());
        let next = layouts.len() as u32;
        layouts
            .entry(bindings.to_vec())
            .or_insert_with(|| {
                let mut entries = vec![wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: true,
                        min_binding_size: wgpu::BufferSize::new(PARAMS_BYTES),
                    },
                    count: None,
                }];
                for (i, a) in bindings.iter().enumerate() {
                    entries.push(wgpu::BindGroupLayoutEntry {
                        binding: i as u32 + 1,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Storage {
                                read_only: *a == Access::Read,
                            },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    });
                }
                let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: None,
                    entries: &entries,
                });
                let pipeline_layout =
                    device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: None,
                        bind_group_layouts: &[Some(&bgl)],
                        immediate_size: 0,
                    });
                Arc::new(Layout {
                    id: next,
                    bgl,
                    pipeline_layout,
                })
            })
            .clone()
    }

    /// The kernel for `spec`, compiled on first use. Compilation errors are caught in an error
    /// scope and returned.
    pub fn get(
        &self,
        device: &wgpu::Device,
        spec: &KernelSpec<'_>,
    ) -> Result<Arc<Kernel>, BackendError> {
        if let Some(k) = self
            .kernels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&spec.key)
        {
            return Ok(k.clone());
        }
        let source = self.source(spec)?;
        let layout = self.layout(device, spec.bindings);
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&spec.key),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&spec.key),
            layout: Some(&layout.pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(Some(e)) = poll_now(scope.pop()) {
            return Err(BackendError::Device(format!(
                "kernel {} does not compile: {e}",
                spec.key
            )));
        }
        let kernel = Arc::new(Kernel { pipeline, layout });
        self.kernels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.key.clone(), kernel.clone());
        Ok(kernel)
    }

    /// The full WGSL text of a kernel variant.
    pub fn source(&self, spec: &KernelSpec<'_>) -> Result<String, BackendError> {
        let mut flags: Vec<&str> = spec.flags.clone();
        if self.subgroups {
            flags.push("SG");
        }
        if spec.f16 {
            flags.push("F16");
        }
        let mut text = String::new();
        if spec.f16 {
            text.push_str("enable f16;\n");
        }
        for (name, value) in &spec.consts {
            text.push_str(&format!("const {name}: u32 = {value}u;\n"));
        }
        let mut body = String::from(COMMON);
        body.push('\n');
        for extra in spec.extra {
            body.push_str(extra);
            body.push('\n');
        }
        body.push_str(spec.source);
        let body = preprocess(&body, &flags)
            .map_err(|e| BackendError::Device(format!("kernel {}: {e}", spec.key)))?;
        // `hf` names the arithmetic type of f16-capable kernels (substituted rather than aliased:
        // naga does not treat an aliased vector type as equal to the vector it names).
        text.push_str(&replace_ident(
            &body,
            "hf",
            if spec.f16 { "f16" } else { "f32" },
        ));
        Ok(text)
    }
}

/// Keeps or drops the lines between `//#if FLAG` (or `//#if !FLAG`), `//#else` and `//#endif`.
pub(crate) fn preprocess(src: &str, flags: &[&str]) -> Result<String, String> {
    let mut out = String::with_capacity(src.len());
    // (this section is kept, the enclosing one is kept)
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &[(bool, bool)]| stack.last().is_none_or(|&(on, outer)| on && outer);
    for (n, line) in src.lines().enumerate() {
        let t = line.trim();
        if let Some(cond) = t.strip_prefix("//#if ") {
            let cond = cond.trim();
            let (neg, name) = match cond.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, cond),
            };
            let on = flags.contains(&name) != neg;
            let outer = active(&stack);
            stack.push((on, outer));
        } else if t == "//#else" {
            let top = stack
                .last_mut()
                .ok_or_else(|| format!("line {}: //#else without //#if", n + 1))?;
            top.0 = !top.0;
        } else if t == "//#endif" {
            stack
                .pop()
                .ok_or_else(|| format!("line {}: //#endif without //#if", n + 1))?;
        } else if active(&stack) {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !stack.is_empty() {
        return Err("unterminated //#if".into());
    }
    Ok(out)
}

/// Replaces every whole identifier `from` in `src` with `to`.
fn replace_ident(src: &str, from: &str, to: &str) -> String {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(at) = rest.find(from) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + from.len()..].chars().next();
        out.push_str(&rest[..at]);
        if before.is_some_and(is_ident) || after.is_some_and(is_ident) {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        rest = &rest[at + from.len()..];
    }
    out.push_str(rest);
    out
}

/// Polls a future once: native wgpu resolves error scopes at once; on the web the result comes
/// later and `None` is returned (errors then reach the device's uncaptured-error handler).
pub(crate) fn poll_now<F: Future>(f: F) -> Option<F::Output> {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::preprocess;

    #[test]
    fn sections_follow_flags() {
        let src = "a\n//#if X\nb\n//#if !Y\nc\n//#else\nd\n//#endif\n//#else\ne\n//#endif\nf\n";
        assert_eq!(preprocess(src, &["X"]).unwrap(), "a\nb\nc\nf\n");
        assert_eq!(preprocess(src, &["X", "Y"]).unwrap(), "a\nb\nd\nf\n");
        assert_eq!(preprocess(src, &["Y"]).unwrap(), "a\ne\nf\n");
        assert!(preprocess("//#if X\n", &[]).is_err());
        assert!(preprocess("//#endif\n", &[]).is_err());
    }

    #[test]
    fn identifiers_are_replaced_whole() {
        assert_eq!(
            super::replace_ident("vec4<hf>(hf(1.0)) + hfx + x_hf", "hf", "f16"),
            "vec4<f16>(f16(1.0)) + hfx + x_hf"
        );
    }
}
