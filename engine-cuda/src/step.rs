//! A step's metadata on the device without an allocation per step: the integer parts (tokens,
//! cache slots, positions, block tables, output rows) are packed into one buffer and the RoPE
//! angles into another, staged in pinned host memory and copied asynchronously into device
//! buffers that are reused from step to step (and grown, doubling, when a step needs more).

use std::ops::Range;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DriverError, PinnedHostSlice};
use engine_core::backend::StepInput;

/// Where each part of a step's integer metadata lies in the packed buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepLayout {
    /// The token of each row.
    pub tokens: Range<usize>,
    /// The cache slot each row's key and value go to.
    pub slots: Range<usize>,
    /// Each row's position.
    pub positions: Range<usize>,
    /// Where each row's sequence's block table starts within `tables`.
    pub row_table: Range<usize>,
    /// The block tables of the step's sequences, one after another.
    pub tables: Range<usize>,
    /// The rows whose hidden states are gathered for the output.
    pub output_rows: Range<usize>,
}

/// Packs a step's integer metadata into one buffer (at least one element long, so that every
/// part has a valid device address even when empty).
pub fn pack(step: &StepInput) -> (Vec<i32>, StepLayout) {
    fn part(out: &mut Vec<i32>, values: impl IntoIterator<Item = i32>) -> Range<usize> {
        let start = out.len();
        out.extend(values);
        start..out.len()
    }
    let ids = |v: &[u32]| v.iter().map(|&x| x as i32).collect::<Vec<_>>();
    let mut out: Vec<i32> = Vec::new();
    let tokens = part(&mut out, ids(&step.tokens));
    let slots = part(&mut out, ids(&step.slots));
    let positions = part(&mut out, ids(&step.positions));
    let mut row_table = vec![0i32; step.rows()];
    let mut tables = Vec::new();
    for seq in &step.seqs {
        let start = i32::try_from(tables.len()).unwrap_or(i32::MAX);
        tables.extend(seq.block_table.iter().map(|&b| b as i32));
        for r in seq.rows.clone() {
            row_table[r] = start;
        }
    }
    let row_table = part(&mut out, row_table);
    let tables = part(&mut out, tables);
    let output_rows = part(&mut out, ids(&step.output_rows));
    if out.is_empty() {
        out.push(0);
    }
    let layout = StepLayout {
        tokens,
        slots,
        positions,
        row_table,
        tables,
        output_rows,
    };
    (out, layout)
}

/// The capacity to grow a buffer of `have` elements to when `need` are wanted: at least double.
pub fn grown(have: usize, need: usize) -> usize {
    need.max(2 * have).max(64)
}

/// Pinned host staging and device buffers for one kind of element.
struct Staged<T: cudarc::driver::DeviceRepr> {
    host: PinnedHostSlice<T>,
    device: CudaSlice<T>,
}

impl<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Copy> Staged<T> {
    fn new(
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        cap: usize,
    ) -> Result<Self, DriverError> {
        // SAFETY: the staging memory is written before it is read (see `load`).
        let host = unsafe { ctx.alloc_pinned::<T>(cap) }?;
        Ok(Staged {
            host,
            device: stream.alloc_zeros::<T>(cap)?,
        })
    }

    /// Copies `data` to the start of the device buffer through the staging memory, growing both
    /// first if needed. Writing the staging memory waits for its previous copy to finish; the
    /// copy is ordered on the stream after the kernels of the previous step that read the device
    /// buffer.
    fn load(
        &mut self,
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        data: &[T],
    ) -> Result<(), DriverError> {
        if data.len() > self.device.len() {
            *self = Staged::new(ctx, stream, grown(self.device.len(), data.len()))?;
        }
        self.host.as_mut_slice()?[..data.len()].copy_from_slice(data);
        // The whole staging buffer (as long as the device buffer): what lies past `data` is
        // never read.
        stream.memcpy_htod(&self.host, &mut self.device)
    }
}

/// The reusable buffers of a step's metadata.
pub struct StepArena {
    ints: Staged<i32>,
    floats: Staged<f32>,
}

impl StepArena {
    /// Buffers for `ints` packed integers and `floats` angles (and room to grow).
    pub fn new(
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        ints: usize,
        floats: usize,
    ) -> Result<StepArena, DriverError> {
        Ok(StepArena {
            ints: Staged::new(ctx, stream, grown(0, ints))?,
            floats: Staged::new(ctx, stream, grown(0, floats))?,
        })
    }

    /// Copies a step's packed integers and RoPE angles to the device.
    pub fn load(
        &mut self,
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        ints: &[i32],
        angles: &[f32],
    ) -> Result<(), DriverError> {
        self.ints.load(ctx, stream, ints)?;
        // At least one element, so that the angles have a device address even when empty.
        self.floats
            .load(ctx, stream, if angles.is_empty() { &[0.0] } else { angles })
    }

    /// The packed integers on the device.
    pub fn ints(&self) -> &CudaSlice<i32> {
        &self.ints.device
    }

    /// The RoPE angles on the device.
    pub fn floats(&self) -> &CudaSlice<f32> {
        &self.floats.device
    }
}

/// Where a backend keeps its arena between steps: a step takes it and gives it back when dropped.
pub type ArenaHome = Arc<Mutex<Option<StepArena>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use engine_core::backend::{LogitsWanted, SeqChunk};
    use engine_core::model::{RopeConfig, RopeLayout};

    #[test]
    fn packed_parts_hold_the_step_in_order() {
        let rope = RopeConfig::plain(RopeLayout::Normal, 64, 10000.0);
        let (a, b) = ([5u32, 6, 7], [9u32]);
        let (ta, tb) = ([3u32, 1], [4u32, 2]);
        let step = StepInput::build(
            &[
                SeqChunk {
                    start_pos: 0,
                    tokens: &a,
                    block_table: &ta,
                    logits: LogitsWanted::Last,
                    hidden: 0..0,
                },
                SeqChunk {
                    start_pos: 16,
                    tokens: &b,
                    block_table: &tb,
                    logits: LogitsWanted::Last,
                    hidden: 0..0,
                },
            ],
            16,
            &rope,
        );
        let (ints, l) = pack(&step);
        let get = |r: &Range<usize>| ints[r.clone()].to_vec();
        assert_eq!(get(&l.tokens), [5, 6, 7, 9]);
        assert_eq!(get(&l.positions), [0, 1, 2, 16]);
        assert_eq!(
            get(&l.slots),
            step.slots.iter().map(|&s| s as i32).collect::<Vec<_>>()
        );
        // Rows 0 to 2 belong to the first sequence, row 3 to the second, whose table follows the
        // first's.
        let first = step.seqs[0].block_table.len() as i32;
        assert_eq!(get(&l.row_table), [0, 0, 0, first]);
        let tables: Vec<i32> = step
            .seqs
            .iter()
            .flat_map(|s| s.block_table.iter().map(|&b| b as i32))
            .collect();
        assert_eq!(get(&l.tables), tables);
        assert_eq!(tables[first as usize], 4);
        assert_eq!(get(&l.output_rows), [2, 3]);
        // The parts tile the buffer.
        let parts = [
            &l.tokens,
            &l.slots,
            &l.positions,
            &l.row_table,
            &l.tables,
            &l.output_rows,
        ];
        assert!(parts.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(parts[0].start, 0);
        assert_eq!(parts[5].end, ints.len());
    }

    #[test]
    fn an_empty_step_still_has_an_address_and_buffers_double() {
        let rope = RopeConfig::plain(RopeLayout::Normal, 64, 10000.0);
        let step = StepInput::build(&[], 16, &rope);
        let (ints, l) = pack(&step);
        assert_eq!(ints.len(), 1);
        assert!(l.tokens.is_empty() && l.output_rows.is_empty());
        assert_eq!(grown(0, 10), 64);
        assert_eq!(grown(64, 65), 128);
        assert_eq!(grown(64, 1000), 1000);
    }
}
