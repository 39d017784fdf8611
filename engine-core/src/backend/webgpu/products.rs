//! Matrix products: which kernel computes `out = w . x` for how many activation rows, and its
//! dispatch over each row part of the matrix.

use super::pipelines::KernelSpec;
use super::recorder::Bind;
use super::{
    GpuBuffer, GpuMatrix, MATVEC_MAX_ROWS, R, RW, S_MATMUL, S_MATVEC, S_QUANT, S_ROWWISE,
    WebGpuBackend, bind,
};
use crate::backend::BackendError;

impl WebGpuBackend {
    /// Records `out[r][col0..] = w . x[r]` for `rows` rows.
    pub(super) fn record_matmul(
        &self,
        w: &GpuMatrix,
        x: &GpuBuffer,
        rows: usize,
        out: &mut GpuBuffer,
    ) {
        if rows == 0 || w.rows == 0 {
            return;
        }
        if x.len() < rows * w.cols || out.len() < rows * w.rows {
            self.fail(BackendError::Device(format!(
                "matmul of {rows} rows by a {}x{} matrix with buffers of {} and {} floats",
                w.rows,
                w.cols,
                x.len(),
                out.len()
            )));
            return;
        }
        let f16 = self.report.using_f16;
        let flag = w.layout.flag;
        let nb = w.blocks_per_row() as u32;
        if self.cpu_kernels && rows <= MATVEC_MAX_ROWS {
            let r = rows.next_power_of_two() as u32;
            let spec = KernelSpec {
                source: S_ROWWISE,
                key: format!("rw:{flag}:{r}:{f16}"),
                flags: vec![flag],
                consts: vec![("R", r)],
                extra: &[S_QUANT],
                bindings: &[R, R, RW],
                f16,
            };
            let Some(kernel) = self.kernel(spec) else {
                return;
            };
            for part in &w.parts {
                let params = [
                    w.cols as u32,
                    part.rows as u32,
                    w.rows as u32,
                    part.row0 as u32,
                    rows as u32,
                    nb,
                    part.scale_offset,
                    0,
                ];
                let binds = [
                    Bind {
                        id: part.id,
                        buf: &part.buf,
                    },
                    bind(x),
                    bind(out),
                ];
                self.dispatch(
                    &kernel,
                    &params,
                    &binds,
                    [part.rows.div_ceil(64) as u32, 1, 1],
                );
            }
            return;
        }
        let (kernel, per_wg) = if rows <= MATVEC_MAX_ROWS {
            let r = rows.next_power_of_two() as u32;
            let nr: u32 = if r >= 8 { 2 } else { 4 };
            let spec = KernelSpec {
                source: S_MATVEC,
                key: format!("mv:{flag}:{r}:{nr}:{f16}"),
                flags: vec![flag],
                consts: vec![("R", r), ("NR", nr)],
                extra: &[S_QUANT],
                bindings: &[R, R, RW],
                f16,
            };
            (self.kernel(spec), nr as usize)
        } else {
            let spec = KernelSpec {
                source: S_MATMUL,
                key: format!("mm:{flag}:{f16}"),
                flags: vec![flag],
                consts: Vec::new(),
                extra: &[S_QUANT],
                bindings: &[R, R, RW],
                f16,
            };
            (self.kernel(spec), 0)
        };
        let Some(kernel) = kernel else {
            return;
        };
        for part in &w.parts {
            let params = [
                w.cols as u32,
                part.rows as u32,
                w.rows as u32,
                part.row0 as u32,
                rows as u32,
                nb,
                part.scale_offset,
                0,
            ];
            let groups = if per_wg > 0 {
                self.grid(part.rows.div_ceil(per_wg))
            } else {
                [part.rows.div_ceil(64) as u32, rows.div_ceil(64) as u32, 1]
            };
            let binds = [
                Bind {
                    id: part.id,
                    buf: &part.buf,
                },
                bind(x),
                bind(out),
            ];
            self.dispatch(&kernel, &params, &binds, groups);
        }
    }
}
