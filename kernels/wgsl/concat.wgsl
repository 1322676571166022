// Concatenation along one axis, and its backward, as strided block copies. Seen around the axis,
// a part is [outer, block] with block = (its length on the axis) · inner, and the output is
// [outer, total] with total = Σ blocks; the part's columns start at `offset` in each output row.
//
// Launch: workgroup 256; the flat invocation index is (wid.y · nwg.x + wid.x) · 256 + lid, the
// host folding more than 65535 workgroups into y. One invocation per element of the part
// (len = outer · block), one launch per part.
//   concat_fwd  dst[o·total + offset + r] = src[o·block + r]   (src: the part, dst: the output)
//   concat_bwd  dst[o·block + r] = src[o·total + offset + r]   (src: dY, dst: the part's dX)

// Storage type of tensors: the host builds an f16 variant of this file by replacing this
// alias (and enabling f16); arithmetic stays f32.
alias stored = f32;

struct Params {
    len: u32,
    block: u32,
    total: u32,
    offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<stored>;
@group(0) @binding(2) var<storage, read_write> dst: array<stored>;

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid;
}

// Index in the output of element t of the part.
fn in_output(t: u32) -> u32 {
    return (t / p.block) * p.total + p.offset + t % p.block;
}

@compute @workgroup_size(256)
fn concat_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let t = flat_index(wid, nwg, lid);
    if t < p.len {
        dst[in_output(t)] = src[t];
    }
}

@compute @workgroup_size(256)
fn concat_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let t = flat_index(wid, nwg, lid);
    if t < p.len {
        dst[t] = src[in_output(t)];
    }
}
