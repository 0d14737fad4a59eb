//! Fused attention kernels in CubeCL for the GPU backends (wgpu, CUDA): the same maths as
//! [`crate::flash_cpu`] (causal, grouped-query, packed documents, f32 scores, saved
//! log-sum-exp), as three kernels launched through a burn backend extension.
//!
//! - forward: one cube per (query tile, query head, batch row), one unit per query. Key and
//!   value tiles go through shared memory; each unit keeps its query, its output accumulator
//!   and its tile of scores in registers, with an online softmax across key tiles.
//! - dQ: the same grid; each unit recomputes its probabilities from the saved log-sum-exp.
//! - dK and dV: one cube per (key tile, key head, batch row), one unit per key, sweeping the
//!   query tiles of every query head of the group (so K and V are never repeated and no
//!   atomics are needed).
//!
//! Only key tiles some query of the tile may see are visited: from the document start of the
//! tile's first query up to the tile itself. wgpu allows 8 storage buffers per kernel (one
//! holds the metadata), so the backward takes the log-sum-exp and the softmax correction term
//! in one `[B, H, S, 2]` tensor and writes dK and dV into one `[B, K, S, 2, D]` tensor.

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{backend_extension, Backend, Dispatch};
use burn::tensor::{DType, FloatDType, Int, Shape, Tensor, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeBackend;
use cubecl::{CubeCount, CubeDim};

use crate::flash::FlashOutput;
use crate::layout::SequenceLayout;

/// Largest head dimension the kernels take: each unit holds up to four rows of it in
/// registers.
pub const MAX_HEAD_DIM: usize = 256;

/// Positions per tile (and units per cube): two `[tile, D]` f32 tiles take 16 KiB of shared
/// memory (the dK/dV kernel adds 12 bytes a position for per-query statistics), within what
/// desktop GPUs and lavapipe offer.
fn tile_for(head_dim: usize) -> usize {
    (2048 / head_dim).min(64)
}

/// Whether the kernels take attention over q `[B, H, S, D]` with `kv` key heads: a head
/// dimension up to [`MAX_HEAD_DIM`], and every tensor under 2³² elements (the kernels index
/// with 32-bit integers).
pub fn supports(q: [usize; 4], kv: usize) -> bool {
    let [b, h, s, d] = q;
    let largest = (b * h.max(2 * kv) * s * d) as u64;
    (1..=MAX_HEAD_DIM).contains(&d) && largest > 0 && largest < 1 << 32
}

mod kernels {
    use cubecl::prelude::*;

    /// Score of a key no query may see: large and negative but finite, so that a tile whose
    /// keys are all hidden from a query weighs exactly 0 once the query's real maximum is
    /// known, instead of turning into NaN.
    const MASKED: f32 = -1.0e30;

    /// The document start of position `i` of batch row `b`.
    #[cube]
    fn start_of(starts: &Tensor<i32>, b: usize, s_len: usize, i: usize) -> usize {
        u32::cast_from(starts[b * s_len + i]) as usize
    }

    /// Copies rows `first..first + tile` of the `[rows, dim]` matrix at element `base` of
    /// `src` into a shared tile, zeros for rows past the end (shared memory starts with
    /// whatever an earlier kernel left, and a masked key's zero weight times a NaN left there
    /// would still be NaN). The cube's `tile` units read consecutive elements, so that the
    /// loads coalesce.
    #[cube]
    fn load_tile(
        src: &Tensor<f32>,
        base: usize,
        first: usize,
        rows: usize,
        shared: &mut Shared<[f32]>,
        #[comptime] tile: usize,
        #[comptime] dim: usize,
    ) {
        let start = base + first * dim;
        let mut e = UNIT_POS_X as usize;
        while e < tile * dim {
            if first + e / dim < rows {
                shared[e] = src[start + e];
            } else {
                shared[e] = 0.0;
            }
            e += tile;
        }
    }

    /// Where the unit of a query cube (one per query tile, query head and batch row) works.
    #[derive(CubeType)]
    struct QueryUnit {
        s_len: usize,
        /// Whether the unit has a query of its own: units past the end work on the last
        /// query (so every unit reaches every barrier) and write nothing.
        own: bool,
        /// The query, as a position.
        qi: usize,
        /// The query, as a row of `[B·H·S, ·]`.
        row: usize,
        /// The first element of its key head in `[B, K, S, D]`.
        kv_base: usize,
        /// Its document's first position.
        first_key: usize,
        /// The cube's query tile, and the first key tile any of its queries may see.
        tile: usize,
        first_tile: usize,
    }

    #[cube]
    fn query_unit(
        q: &Tensor<f32>,
        k: &Tensor<f32>,
        starts: &Tensor<i32>,
        #[comptime] tile: usize,
        #[comptime] dim: usize,
    ) -> QueryUnit {
        let heads = q.shape(1);
        let s_len = q.shape(2);
        let group = heads / k.shape(1);
        let b = CUBE_POS_Z as usize;
        let h = CUBE_POS_Y as usize;
        let qt = CUBE_POS_X as usize;
        let i = qt * tile + UNIT_POS_X as usize;
        let qi = min(i, s_len - 1);
        QueryUnit {
            s_len,
            own: i < s_len,
            qi,
            row: (b * heads + h) * s_len + qi,
            kv_base: (b * k.shape(1) + h / group) * s_len * dim,
            first_key: start_of(starts, b, s_len, qi),
            tile: qt,
            first_tile: start_of(starts, b, s_len, qt * tile) / tile,
        }
    }

    /// q `[B, H, S, D]`, k and v `[B, K, S, D]`, starts `[B, S]` → out `[B, H, S, D]`,
    /// lse `[B, H, S]`.
    #[cube(launch)]
    pub fn forward(
        q: &Tensor<f32>,
        k: &Tensor<f32>,
        v: &Tensor<f32>,
        starts: &Tensor<i32>,
        out: &mut Tensor<f32>,
        lse: &mut Tensor<f32>,
        scale: f32,
        #[comptime] tile: usize,
        #[comptime] dim: usize,
    ) {
        let u = query_unit(q, k, starts, tile, dim);
        let s_len = u.s_len;
        let qi = u.qi;
        let first_key = u.first_key;
        let q_base = u.row * dim;

        let mut q_row = Array::<f32>::new(dim);
        let mut acc = Array::<f32>::new(dim);
        for d in 0..dim {
            q_row[d] = q[q_base + d] * scale;
            acc[d] = 0.0;
        }
        let mut scores = Array::<f32>::new(tile);
        let mut k_tile = Shared::<[f32]>::new_slice(comptime!(tile * dim));
        let mut v_tile = Shared::<[f32]>::new_slice(comptime!(tile * dim));
        let mut m = f32::new(MASKED);
        let mut l = f32::new(0.0);

        for kt in u.first_tile..u.tile + 1 {
            let k0 = kt * tile;
            load_tile(k, u.kv_base, k0, s_len, &mut k_tile, tile, dim);
            load_tile(v, u.kv_base, k0, s_len, &mut v_tile, tile, dim);
            sync_cube();
            let mut tile_max = f32::new(MASKED);
            for c in 0..tile {
                let j = k0 + c;
                let mut score = f32::new(MASKED);
                if j <= qi && j >= first_key {
                    let mut dot = f32::new(0.0);
                    for d in 0..dim {
                        dot += q_row[d] * k_tile[c * dim + d];
                    }
                    score = dot;
                }
                scores[c] = score;
                tile_max = max(tile_max, score);
            }
            let m_new = max(m, tile_max);
            let decay = (m - m_new).exp();
            l *= decay;
            for d in 0..dim {
                acc[d] *= decay;
            }
            for c in 0..tile {
                let p = (scores[c] - m_new).exp();
                l += p;
                for d in 0..dim {
                    acc[d] += p * v_tile[c * dim + d];
                }
            }
            m = m_new;
            sync_cube();
        }
        if u.own {
            for d in 0..dim {
                out[q_base + d] = acc[d] / l;
            }
            lse[u.row] = m + l.ln();
        }
    }

    /// dQ: q and dout `[B, H, S, D]`, k and v `[B, K, S, D]`, stats `[B, H, S, 2]` (lse,
    /// Σ dout·out), starts `[B, S]` → dq `[B, H, S, D]`.
    #[cube(launch)]
    pub fn backward_dq(
        q: &Tensor<f32>,
        k: &Tensor<f32>,
        v: &Tensor<f32>,
        dout: &Tensor<f32>,
        stats: &Tensor<f32>,
        starts: &Tensor<i32>,
        dq: &mut Tensor<f32>,
        scale: f32,
        #[comptime] tile: usize,
        #[comptime] dim: usize,
    ) {
        let u = query_unit(q, k, starts, tile, dim);
        let s_len = u.s_len;
        let qi = u.qi;
        let first_key = u.first_key;
        let q_base = u.row * dim;
        let lse = stats[u.row * 2];
        let delta = stats[u.row * 2 + 1];

        let mut q_row = Array::<f32>::new(dim);
        let mut do_row = Array::<f32>::new(dim);
        let mut acc = Array::<f32>::new(dim);
        for d in 0..dim {
            q_row[d] = q[q_base + d] * scale;
            do_row[d] = dout[q_base + d];
            acc[d] = 0.0;
        }
        let mut k_tile = Shared::<[f32]>::new_slice(comptime!(tile * dim));
        let mut v_tile = Shared::<[f32]>::new_slice(comptime!(tile * dim));

        for kt in u.first_tile..u.tile + 1 {
            let k0 = kt * tile;
            load_tile(k, u.kv_base, k0, s_len, &mut k_tile, tile, dim);
            load_tile(v, u.kv_base, k0, s_len, &mut v_tile, tile, dim);
            sync_cube();
            for c in 0..tile {
                let j = k0 + c;
                if j <= qi && j >= first_key {
                    let mut score = f32::new(0.0);
                    let mut dp = f32::new(0.0);
                    for d in 0..dim {
                        score += q_row[d] * k_tile[c * dim + d];
                        dp += do_row[d] * v_tile[c * dim + d];
                    }
                    let ds = (score - lse).exp() * (dp - delta) * scale;
                    for d in 0..dim {
                        acc[d] += ds * k_tile[c * dim + d];
                    }
                }
            }
            sync_cube();
        }
        if u.own {
            for d in 0..dim {
                dq[q_base + d] = acc[d];
            }
        }
    }

    /// dK and dV: the inputs of [`backward_dq`] → dkv `[B, K, S, 2, D]` (dK, then dV);
    /// `tiles` is the number of query tiles, ⌈S / tile⌉.
    #[cube(launch)]
    pub fn backward_dkv(
        q: &Tensor<f32>,
        k: &Tensor<f32>,
        v: &Tensor<f32>,
        dout: &Tensor<f32>,
        stats: &Tensor<f32>,
        starts: &Tensor<i32>,
        dkv: &mut Tensor<f32>,
        scale: f32,
        tiles: u32,
        #[comptime] tile: usize,
        #[comptime] dim: usize,
    ) {
        let heads = q.shape(1);
        let kv_heads = k.shape(1);
        let s_len = q.shape(2);
        let group = heads / kv_heads;
        let b = CUBE_POS_Z as usize;
        let kh = CUBE_POS_Y as usize;
        let kt = CUBE_POS_X as usize;
        let unit = UNIT_POS_X as usize;
        let j = kt * tile + unit;
        let kj = min(j, s_len - 1);
        let k_base = ((b * kv_heads + kh) * s_len + kj) * dim;
        let last_key = min(kt * tile + tile, s_len) - 1;

        let mut k_row = Array::<f32>::new(dim);
        let mut v_row = Array::<f32>::new(dim);
        let mut dk = Array::<f32>::new(dim);
        let mut dv = Array::<f32>::new(dim);
        for d in 0..dim {
            k_row[d] = k[k_base + d];
            v_row[d] = v[k_base + d];
            dk[d] = 0.0;
            dv[d] = 0.0;
        }
        let mut q_tile = Shared::<[f32]>::new_slice(comptime!(tile * dim));
        let mut do_tile = Shared::<[f32]>::new_slice(comptime!(tile * dim));
        let mut lse_tile = Shared::<[f32]>::new_slice(tile);
        let mut delta_tile = Shared::<[f32]>::new_slice(tile);
        let mut start_tile = Shared::<[u32]>::new_slice(tile);

        for g in 0..group {
            let h = kh * group + g;
            let q_base = (b * heads + h) * s_len * dim;
            let stat_base = (b * heads + h) * s_len;
            for qt in kt..tiles as usize {
                let q0 = qt * tile;
                // Document starts never decrease along a row: once a tile's first query
                // starts after this key tile, so do all later ones.
                if start_of(starts, b, s_len, q0) > last_key {
                    break;
                }
                let i = q0 + unit;
                load_tile(q, q_base, q0, s_len, &mut q_tile, tile, dim);
                load_tile(dout, q_base, q0, s_len, &mut do_tile, tile, dim);
                if i < s_len {
                    lse_tile[unit] = stats[(stat_base + i) * 2];
                    delta_tile[unit] = stats[(stat_base + i) * 2 + 1];
                    start_tile[unit] = u32::cast_from(starts[b * s_len + i]);
                }
                sync_cube();
                for c in 0..tile {
                    let i = q0 + c;
                    if i < s_len && kj <= i && kj >= start_tile[c] as usize {
                        let mut score = f32::new(0.0);
                        let mut dp = f32::new(0.0);
                        for d in 0..dim {
                            score += q_tile[c * dim + d] * k_row[d];
                            dp += do_tile[c * dim + d] * v_row[d];
                        }
                        let p = (score * scale - lse_tile[c]).exp();
                        let ds = p * (dp - delta_tile[c]) * scale;
                        for d in 0..dim {
                            dv[d] += p * do_tile[c * dim + d];
                            dk[d] += ds * q_tile[c * dim + d];
                        }
                    }
                }
                sync_cube();
            }
        }
        if j < s_len {
            let out = ((b * kv_heads + kh) * s_len + j) * 2 * dim;
            for d in 0..dim {
                dkv[out + d] = dk[d];
                dkv[out + dim + d] = dv[d];
            }
        }
    }
}

fn forward_meta(
    q: &TensorSpec,
    _k: &TensorSpec,
    _v: &TensorSpec,
    _starts: &TensorSpec,
) -> (TensorSpec, TensorSpec) {
    let [b, h, s, _] = q.shape.dims::<4>();
    (
        TensorSpec::new(q.shape.clone(), DType::F32),
        TensorSpec::new(Shape::new([b, h, s]), DType::F32),
    )
}

fn backward_meta(
    q: &TensorSpec,
    k: &TensorSpec,
    _v: &TensorSpec,
    _dout: &TensorSpec,
    _stats: &TensorSpec,
    _starts: &TensorSpec,
) -> (TensorSpec, TensorSpec) {
    let [b, kv, s, d] = k.shape.dims::<4>();
    (
        TensorSpec::new(q.shape.clone(), DType::F32),
        TensorSpec::new(Shape::new([b, kv, s, 2, d]), DType::F32),
    )
}

/// The attention kernels as backend operations: f32 tensors (the wrappers below cast) and
/// i32 document starts, contiguous or not, shapes that [`supports`] takes.
#[backend_extension(Cube, Fusion)]
pub trait FlashKernels: Backend {
    /// q `[B, H, S, D]`, k and v `[B, K, S, D]`, starts `[B, S]` → out `[B, H, S, D]`, lse
    /// `[B, H, S]`.
    #[fusion(meta = forward_meta)]
    fn flash_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        starts: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The forward's inputs, dout `[B, H, S, D]` and stats `[B, H, S, 2]` → dq `[B, H, S, D]`,
    /// dkv `[B, K, S, 2, D]`.
    #[fusion(meta = backward_meta)]
    fn flash_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        starts: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// An uninitialised f32 tensor beside `like`.
fn empty(like: &CubeTensor, shape: Shape) -> CubeTensor {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, DType::F32)
}

struct Launch {
    tile: usize,
    dim: usize,
    scale: f32,
}

impl Launch {
    fn new(q: &CubeTensor) -> Self {
        let dim = q.meta.shape()[3];
        Self {
            tile: tile_for(dim),
            dim,
            scale: 1.0 / (dim as f32).sqrt(),
        }
    }

    /// One cube per (tile of `s` positions, head, batch row).
    fn grid(&self, s: usize, heads: usize, b: usize) -> (CubeCount, CubeDim) {
        (
            CubeCount::Static(s.div_ceil(self.tile) as u32, heads as u32, b as u32),
            CubeDim::new_1d(self.tile as u32),
        )
    }
}

impl FlashKernels for CubeBackend {
    fn flash_forward(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        starts: CubeTensor,
    ) -> (CubeTensor, CubeTensor) {
        let (q, k, v, starts) = (
            into_contiguous(q),
            into_contiguous(k),
            into_contiguous(v),
            into_contiguous(starts),
        );
        let [b, h, s, _] = q.meta.shape().dims::<4>();
        let launch = Launch::new(&q);
        let out = empty(&q, q.meta.shape().clone());
        let lse = empty(&q, Shape::new([b, h, s]));
        let (count, cube_dim) = launch.grid(s, h, b);
        kernels::forward::launch(
            &q.client,
            count,
            cube_dim,
            q.clone().into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            starts.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            launch.scale,
            launch.tile,
            launch.dim,
        );
        (out, lse)
    }

    fn flash_backward(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        dout: CubeTensor,
        stats: CubeTensor,
        starts: CubeTensor,
    ) -> (CubeTensor, CubeTensor) {
        let (q, k, v, dout, stats, starts) = (
            into_contiguous(q),
            into_contiguous(k),
            into_contiguous(v),
            into_contiguous(dout),
            into_contiguous(stats),
            into_contiguous(starts),
        );
        let [b, h, s, d] = q.meta.shape().dims::<4>();
        let kv = k.meta.shape()[1];
        let launch = Launch::new(&q);
        let dq = empty(&q, q.meta.shape().clone());
        let dkv = empty(&q, Shape::new([b, kv, s, 2, d]));
        let (count, cube_dim) = launch.grid(s, h, b);
        kernels::backward_dq::launch(
            &q.client,
            count,
            cube_dim,
            q.clone().into_tensor_arg(),
            k.clone().into_tensor_arg(),
            v.clone().into_tensor_arg(),
            dout.clone().into_tensor_arg(),
            stats.clone().into_tensor_arg(),
            starts.clone().into_tensor_arg(),
            dq.clone().into_tensor_arg(),
            launch.scale,
            launch.tile,
            launch.dim,
        );
        let (count, cube_dim) = launch.grid(s, kv, b);
        kernels::backward_dkv::launch(
            &q.client,
            count,
            cube_dim,
            q.clone().into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            dout.into_tensor_arg(),
            stats.into_tensor_arg(),
            starts.into_tensor_arg(),
            dkv.clone().into_tensor_arg(),
            launch.scale,
            s.div_ceil(launch.tile) as u32,
            launch.tile,
            launch.dim,
        );
        (dq, dkv)
    }
}

/// The per-row document starts as an `[B, S]` i32 tensor on `device`.
fn starts_tensor(
    layout: &SequenceLayout,
    b: usize,
    s: usize,
    device: &burn::tensor::Device,
) -> Tensor<2, Int> {
    let starts: Vec<i32> = layout.starts.iter().map(|&x| x as i32).collect();
    Tensor::from_data(TensorData::new(starts, [b, s]), (device, DType::I32))
}

/// Kernel inputs: f32, without autodiff (the kernels record nothing; [`crate::step`] wires
/// the backward in).
fn plain(x: Tensor<4>) -> Tensor<4> {
    x.without_autodiff().cast(FloatDType::F32)
}

/// Gives `x` autodiff back when the inputs had it, so that it mixes with the caller's tensors.
fn like<const D: usize>(x: Tensor<D>, autodiff: bool) -> Tensor<D> {
    if autodiff {
        x.autodiff()
    } else {
        x
    }
}

/// [`crate::flash::forward`] on a CubeCL device.
pub fn forward(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, layout: &SequenceLayout) -> FlashOutput {
    let autodiff = q.is_autodiff();
    let [b, h, s, _] = q.dims();
    let kv = k.dims()[1];
    let device = q.device().inner();
    let starts = starts_tensor(layout, b, s, &device);
    let (out, lse) = Dispatch::flash_forward(
        plain(q).into_dispatch(),
        plain(k).into_dispatch(),
        plain(v).into_dispatch(),
        starts.into_dispatch(),
    );
    let lse: Tensor<3> = Tensor::from_dispatch(lse);
    FlashOutput {
        out: like(Tensor::from_dispatch(out), autodiff),
        lse: like(lse.reshape([b, kv, h / kv, s, 1]), autodiff),
    }
}

/// [`crate::flash::backward`] on a CubeCL device.
pub fn backward(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    forward: &FlashOutput,
    dout: Tensor<4>,
    layout: &SequenceLayout,
) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let autodiff = q.is_autodiff();
    let [b, h, s, d] = q.dims();
    let kv = k.dims()[1];
    let device = q.device().inner();
    let dout = plain(dout);
    let out = plain(forward.out.clone());
    // Dᵢ = Σ_d dOᵢ·Oᵢ, the softmax's correction term per query.
    let delta = dout.clone().mul(out).sum_dim(3);
    let lse = forward.lse.clone().without_autodiff().reshape([b, h, s, 1]);
    let stats = Tensor::cat(vec![lse, delta], 3);
    let starts = starts_tensor(layout, b, s, &device);
    let (dq, dkv) = Dispatch::flash_backward(
        plain(q).into_dispatch(),
        plain(k).into_dispatch(),
        plain(v).into_dispatch(),
        dout.into_dispatch(),
        stats.into_dispatch(),
        starts.into_dispatch(),
    );
    let dkv: Tensor<5> = Tensor::from_dispatch(dkv);
    let part = |i: usize| like(dkv.clone().narrow(3, i, 1).reshape([b, kv, s, d]), autodiff);
    (like(Tensor::from_dispatch(dq), autodiff), part(0), part(1))
}
