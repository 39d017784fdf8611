// Shared by every kernel: invocation ids, workgroup reductions (subgroup operations when the
// adapter has them, workgroup memory otherwise) and float helpers that do not rely on NaN or
// infinity arithmetic.

struct Ids {
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
//#if SG
    @builtin(subgroup_invocation_id) sgi: u32,
    @builtin(subgroup_id) sgid: u32,
    @builtin(num_subgroups) nsg: u32,
//#endif
}

var<private> LI: u32;
var<private> SGI: u32;
var<private> SGID: u32;
var<private> NSG: u32;

var<workgroup> WG_INDEX: u32;
// The workgroup id, for kernels that read its parts: `workgroupUniformLoad(&WG_ID)` after `init`.
var<workgroup> WG_ID: vec3<u32>;

// Records the invocation's ids; returns the workgroup's linear index over a 2-D grid. The index
// goes through workgroup memory so that shader compilers see it as uniform (`ids` also holds
// per-invocation values, and browsers' uniformity analysis does not look into structs). Call
// first, from uniform control flow.
fn init(ids: Ids) -> u32 {
    LI = ids.li;
//#if SG
    SGI = ids.sgi;
    SGID = ids.sgid;
    NSG = ids.nsg;
//#endif
    if (ids.li == 0u) {
        WG_INDEX = ids.wg.x + ids.wg.y * ids.nwg.x;
        WG_ID = ids.wg;
    }
    return workgroupUniformLoad(&WG_INDEX);
}

var<workgroup> RED: array<f32, 256>;
var<workgroup> TOT: f32;

// Sum of `v` over the workgroup's `n` invocations (a power of two), returned to all of them as a
// uniform value. Call from uniform control flow.
fn wg_sum(v: f32, n: u32) -> f32 {
//#if SG
    let s = subgroupAdd(v);
    if (SGI == 0u) {
        RED[SGID] = s;
    }
    workgroupBarrier();
    if (LI == 0u) {
        var t = 0.0;
        for (var i = 0u; i < NSG; i++) {
            t += RED[i];
        }
        TOT = t;
    }
    return workgroupUniformLoad(&TOT);
//#else
    RED[LI] = v;
    workgroupBarrier();
    for (var s = n / 2u; s > 0u; s >>= 1u) {
        if (LI < s) {
            RED[LI] += RED[LI + s];
        }
        workgroupBarrier();
    }
    if (LI == 0u) {
        TOT = RED[0];
    }
    return workgroupUniformLoad(&TOT);
//#endif
}

// Maximum of `v` over the workgroup's `n` invocations (a power of two), as a uniform value.
fn wg_max(v: f32, n: u32) -> f32 {
//#if SG
    let s = subgroupMax(v);
    if (SGI == 0u) {
        RED[SGID] = s;
    }
    workgroupBarrier();
    if (LI == 0u) {
        var t = RED[0];
        for (var i = 1u; i < NSG; i++) {
            t = max(t, RED[i]);
        }
        TOT = t;
    }
    return workgroupUniformLoad(&TOT);
//#else
    RED[LI] = v;
    workgroupBarrier();
    for (var s = n / 2u; s > 0u; s >>= 1u) {
        if (LI < s) {
            RED[LI] = max(RED[LI], RED[LI + s]);
        }
        workgroupBarrier();
    }
    if (LI == 0u) {
        TOT = RED[0];
    }
    return workgroupUniformLoad(&TOT);
//#endif
}

// Layout of the step buffer's header (word offsets of its sections and counts).
const HDR_ROWS: u32 = 0u;
const HDR_NSEQ: u32 = 1u;
const HDR_NLOGIT: u32 = 2u;
const HDR_TOKENS: u32 = 3u;
const HDR_POS: u32 = 4u;
const HDR_SLOTS: u32 = 5u;
const HDR_ROWSEQ: u32 = 6u;
const HDR_LOGIT_ROWS: u32 = 7u;
const HDR_ANGLES: u32 = 8u;
const HDR_ROPE_DIMS: u32 = 9u;
const HDR_SEQS: u32 = 10u;
const HDR_TILES: u32 = 11u;
const HDR_NTILES: u32 = 12u;
const HDR_ROPE_LAYOUT: u32 = 13u;
const HDR_MAX_CTX: u32 = 14u;

const NEG_INF_BITS: u32 = 0xff800000u;
// The largest f32, written exactly (browsers' compilers reject a decimal that rounds to it).
const F32_MAX: f32 = 0x1.fffffep+127f;
// Read at run time: a constant bitcast to -inf is rejected by browsers' shader compilers.
var<private> NEG_INF_WORD: u32 = NEG_INF_BITS;

fn neg_inf() -> f32 {
    return bitcast<f32>(NEG_INF_WORD);
}

// Whether `x` is NaN, by its bits.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}
