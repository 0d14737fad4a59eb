//! Memory-linear attention in blocks (the FlashAttention scheme written with tensor ops, so
//! it runs on every backend): the forward walks key blocks with an online softmax and keeps
//! only the output and each query's log-sum-exp; the backward recomputes each block's
//! probabilities from them. Neither ever holds more than one `[block, block]` score tile per
//! head, and key blocks that no query of a query block may see (later tokens, earlier
//! documents) are skipped, so packed rows cost what their documents cost.
//!
//! Causal, grouped-query (query head `h` reads key head `h / (H/K)`, K and V never repeated),
//! packed documents; scores are `q·kᵀ/√D` in f32 (YaRN's factor is already in q and k).
//! Inputs are plain tensors without autodiff; [`crate::step`] wires the backward in.
//!
//! Both passes run as fused kernels: on the CPU (flex) in [`crate::flash_cpu`], on host
//! memory; on wgpu and CUDA in `flash_cube` (CubeCL, built with the `cube` feature). The
//! tensor-op version here is the GPU fallback for shapes the CubeCL kernels do not take
//! (head dimensions over 256, tensors of 2³² elements or more).

use burn::tensor::{Bool, DType, Device, FloatDType, Int, Tensor, TensorData};

use crate::flash_cpu;
#[cfg(feature = "cube")]
use crate::flash_cube;
use crate::layout::SequenceLayout;

/// Large and negative but finite: a fully masked tile row then weighs exactly 0 once the
/// row's real maximum is known, instead of turning into NaN.
const MASKED: f32 = -1.0e30;

/// The forward's results the backward needs.
#[derive(Debug, Clone)]
pub struct FlashOutput {
    /// `[B, H, S, D]`, f32.
    pub out: Tensor<4>,
    /// Log-sum-exp of every query's scores, `[B, K, G, S, 1]` (G = H/K), f32.
    pub lse: Tensor<5>,
}

struct Shapes {
    b: usize,
    kv: usize,
    g: usize,
    s: usize,
    d: usize,
    scale: f64,
}

fn shapes(q: &Tensor<4>, k: &Tensor<4>) -> Shapes {
    let [b, h, s, d] = q.dims();
    let kv = k.dims()[1];
    Shapes {
        b,
        kv,
        g: h / kv,
        s,
        d,
        scale: 1.0 / (d as f64).sqrt(),
    }
}

/// The key blocks query block `qi` needs: from the block of the earliest key any of its
/// queries may see, up to its own (causality).
fn key_blocks(layout: &SequenceLayout, qi: usize, block: usize) -> std::ops::Range<usize> {
    layout.earliest_key(qi * block) / block..qi + 1
}

/// True where query `qs + i` may not see key `ks + j`: later, or in another document.
/// `[B, 1, 1, bq, bk]`.
fn tile_mask(
    layout: &SequenceLayout,
    qs: usize,
    bq: usize,
    ks: usize,
    bk: usize,
) -> Tensor<5, Bool> {
    let b = layout.dims()[0];
    let device = layout.documents.device();
    let q_doc = layout
        .documents
        .clone()
        .narrow(1, qs, bq)
        .reshape([b, 1, 1, bq, 1]);
    let k_doc = layout
        .documents
        .clone()
        .narrow(1, ks, bk)
        .reshape([b, 1, 1, 1, bk]);
    let q_index =
        Tensor::<1, Int>::arange(qs as i64..(qs + bq) as i64, &device).reshape([1, 1, 1, bq, 1]);
    let k_index =
        Tensor::<1, Int>::arange(ks as i64..(ks + bk) as i64, &device).reshape([1, 1, 1, 1, bk]);
    k_index.greater(q_index).bool_or(k_doc.not_equal(q_doc))
}

/// `x` `[B, H, S, D]` → `[B, K, G, S, D]`.
fn grouped(x: Tensor<4>, sh: &Shapes) -> Tensor<5> {
    x.cast(FloatDType::F32)
        .reshape([sh.b, sh.kv, sh.g, sh.s, sh.d])
}

/// Scaled, masked scores of one tile, `[B, K, G, bq, bk]`.
fn tile_scores(qb: &Tensor<5>, kb: &Tensor<4>, mask: Tensor<5, Bool>, sh: &Shapes) -> Tensor<5> {
    let [_, _, _, bq, _] = qb.dims();
    let bk = kb.dims()[2];
    let scores = qb
        .clone()
        .reshape([sh.b, sh.kv, sh.g * bq, sh.d])
        .matmul(kb.clone().swap_dims(2, 3))
        .mul_scalar(sh.scale)
        .reshape([sh.b, sh.kv, sh.g, bq, bk]);
    scores.mask_fill(mask.expand([sh.b, sh.kv, sh.g, bq, bk]), MASKED)
}

/// `[B, K, G, bq, n]` · `[B, K, n, D]` → `[B, K, G, bq, D]`, the group folded into rows.
fn grouped_matmul(a: Tensor<5>, b: Tensor<4>) -> Tensor<5> {
    let [bs, kv, g, bq, n] = a.dims();
    let d = b.dims()[3];
    a.reshape([bs, kv, g * bq, n])
        .matmul(b)
        .reshape([bs, kv, g, bq, d])
}

/// `[B, K, G, bq, n]`ᵀ · `[B, K, G, bq, D]` → `[B, K, n, D]`, summed over the group.
fn grouped_transpose_matmul(a: Tensor<5>, b: Tensor<5>) -> Tensor<4> {
    let [bs, kv, g, bq, n] = a.dims();
    let d = b.dims()[4];
    a.reshape([bs, kv, g * bq, n])
        .swap_dims(2, 3)
        .matmul(b.reshape([bs, kv, g * bq, d]))
}

/// Whether the tensors live in host memory (flex, with or without autodiff), where the
/// fused CPU kernel runs.
fn on_host(device: &Device) -> bool {
    *device == Device::flex()
}

fn host_values<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    x.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 values")
}

fn host_dims(q: &Tensor<4>, k: &Tensor<4>) -> flash_cpu::Dims {
    let [b, h, s, d] = q.dims();
    flash_cpu::Dims {
        b,
        h,
        kv: k.dims()[1],
        s,
        d,
    }
}

fn from_host<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), (device, DType::F32))
}

/// # Shapes
/// - q: `[B, H, S, D]`, k and v: `[B, K, S, D]` → out `[B, H, S, D]`
///
/// `block` is the tile of the tensor-op version; the kernels pick their own.
pub fn forward(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    layout: &SequenceLayout,
    block: usize,
) -> FlashOutput {
    let device = q.device();
    if !on_host(&device) {
        #[cfg(feature = "cube")]
        if flash_cube::supports(q.dims(), k.dims()[1]) {
            return flash_cube::forward(q, k, v, layout);
        }
        return tiled_forward(q, k, v, layout, block);
    }
    let dims = host_dims(&q, &k);
    let (out, lse) = flash_cpu::forward(
        &host_values(q),
        &host_values(k),
        &host_values(v),
        dims,
        &layout.starts,
    );
    let (b, kv, s) = (dims.b, dims.kv, dims.s);
    FlashOutput {
        out: from_host(out, [b, dims.h, s, dims.d], &device),
        lse: from_host(lse, [b, kv, dims.h / kv, s, 1], &device),
    }
}

/// [`forward`] in tensor ops, tiles of `block` positions.
fn tiled_forward(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    layout: &SequenceLayout,
    block: usize,
) -> FlashOutput {
    let sh = shapes(&q, &k);
    let (q, k, v) = (
        grouped(q, &sh),
        k.cast(FloatDType::F32),
        v.cast(FloatDType::F32),
    );
    let (mut outs, mut lses) = (Vec::new(), Vec::new());
    for qi in 0..sh.s.div_ceil(block) {
        let qs = qi * block;
        let bq = block.min(sh.s - qs);
        let qb = q.clone().narrow(3, qs, bq);
        let mut m: Option<Tensor<5>> = None;
        let mut l: Option<Tensor<5>> = None;
        let mut acc: Option<Tensor<5>> = None;
        for kj in key_blocks(layout, qi, block) {
            let ks = kj * block;
            let bk = block.min(sh.s - ks);
            let kb = k.clone().narrow(2, ks, bk);
            let vb = v.clone().narrow(2, ks, bk);
            let scores = tile_scores(&qb, &kb, tile_mask(layout, qs, bq, ks, bk), &sh);
            let tile_max = scores.clone().max_dim(4);
            let m_new = match &m {
                Some(m) => m.clone().max_pair(tile_max),
                None => tile_max,
            };
            let p = scores.sub(m_new.clone()).exp();
            let row_sum = p.clone().sum_dim(4);
            let pv = grouped_matmul(p, vb);
            (l, acc) = match (m.take(), l.take(), acc.take()) {
                (Some(m_old), Some(l_old), Some(acc_old)) => {
                    let decay = m_old.sub(m_new.clone()).exp();
                    (
                        Some(l_old.mul(decay.clone()).add(row_sum)),
                        Some(acc_old.mul(decay).add(pv)),
                    )
                }
                _ => (Some(row_sum), Some(pv)),
            };
            m = Some(m_new);
        }
        let (m, l, acc) = (
            m.expect("a query sees itself"),
            l.expect("a query sees itself"),
            acc.expect("a query sees itself"),
        );
        outs.push(acc.div(l.clone()));
        lses.push(m.add(l.log()));
    }
    let [b, kv, g, s, d] = [sh.b, sh.kv, sh.g, sh.s, sh.d];
    FlashOutput {
        out: Tensor::cat(outs, 3).reshape([b, kv * g, s, d]),
        lse: Tensor::cat(lses, 3),
    }
}

/// Gradients of the attention output `dout` with respect to q, k and v (f32).
///
/// # Shapes
/// - q, dout: `[B, H, S, D]`, k and v: `[B, K, S, D]` → `[B, H, S, D]`, `[B, K, S, D]` ×2
pub fn backward(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    forward: &FlashOutput,
    dout: Tensor<4>,
    layout: &SequenceLayout,
    block: usize,
) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let device = q.device();
    if !on_host(&device) {
        #[cfg(feature = "cube")]
        if flash_cube::supports(q.dims(), k.dims()[1]) {
            return flash_cube::backward(q, k, v, forward, dout, layout);
        }
        return tiled_backward(q, k, v, forward, dout, layout, block);
    }
    let dims = host_dims(&q, &k);
    let (dq, dk, dv) = flash_cpu::backward(
        &host_values(q),
        &host_values(k),
        &host_values(v),
        &host_values(forward.out.clone()),
        &host_values(forward.lse.clone()),
        &host_values(dout),
        dims,
        &layout.starts,
        flash_cpu::backward_parts(&dims),
    );
    let kv_shape = [dims.b, dims.kv, dims.s, dims.d];
    (
        from_host(dq, [dims.b, dims.h, dims.s, dims.d], &device),
        from_host(dk, kv_shape, &device),
        from_host(dv, kv_shape, &device),
    )
}

/// [`backward`] in tensor ops, tiles of `block` positions.
fn tiled_backward(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    forward: &FlashOutput,
    dout: Tensor<4>,
    layout: &SequenceLayout,
    block: usize,
) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let sh = shapes(&q, &k);
    let q = grouped(q, &sh);
    let (k, v) = (k.cast(FloatDType::F32), v.cast(FloatDType::F32));
    let dout = grouped(dout, &sh);
    let out = grouped(forward.out.clone(), &sh);
    // Dᵢ = Σ_d dOᵢ·Oᵢ, the softmax's correction term per query.
    let delta = dout.clone().mul(out).sum_dim(4);
    let blocks = sh.s.div_ceil(block);
    let mut dq: Vec<Option<Tensor<5>>> = vec![None; blocks];
    let (mut dks, mut dvs) = (Vec::new(), Vec::new());
    for kj in 0..blocks {
        let ks = kj * block;
        let bk = block.min(sh.s - ks);
        let kb = k.clone().narrow(2, ks, bk);
        let vb = v.clone().narrow(2, ks, bk);
        let mut dk: Option<Tensor<4>> = None;
        let mut dv: Option<Tensor<4>> = None;
        for qi in (kj..blocks).filter(|&qi| key_blocks(layout, qi, block).contains(&kj)) {
            let qs = qi * block;
            let bq = block.min(sh.s - qs);
            let qb = q.clone().narrow(3, qs, bq);
            let dob = dout.clone().narrow(3, qs, bq);
            let scores = tile_scores(&qb, &kb, tile_mask(layout, qs, bq, ks, bk), &sh);
            let p = scores.sub(forward.lse.clone().narrow(3, qs, bq)).exp();
            let dp = grouped_matmul(dob.clone(), vb.clone().swap_dims(2, 3));
            let ds = p
                .clone()
                .mul(dp.sub(delta.clone().narrow(3, qs, bq)))
                .mul_scalar(sh.scale);
            let add4 =
                |acc: Option<Tensor<4>>, x: Tensor<4>| Some(acc.map_or(x.clone(), |a| a.add(x)));
            dv = add4(dv, grouped_transpose_matmul(p, dob));
            dk = add4(dk, grouped_transpose_matmul(ds.clone(), qb));
            let dqb = grouped_matmul(ds, kb.clone());
            dq[qi] = Some(dq[qi].take().map_or(dqb.clone(), |a| a.add(dqb)));
        }
        let zeros = || Tensor::zeros([sh.b, sh.kv, bk, sh.d], &k.device());
        dks.push(dk.unwrap_or_else(zeros));
        dvs.push(dv.unwrap_or_else(zeros));
    }
    let dq: Vec<Tensor<5>> = dq
        .into_iter()
        .map(|t| t.expect("every query block sees its own keys"))
        .collect();
    (
        Tensor::cat(dq, 3).reshape([sh.b, sh.kv * sh.g, sh.s, sh.d]),
        Tensor::cat(dks, 2),
        Tensor::cat(dvs, 2),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::attend;
    use burn::tensor::{Device, Distribution};

    fn close(what: &str, ours: Tensor<4>, reference: Tensor<4>) {
        let values = |t: Tensor<4>| -> Vec<f32> {
            t.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap()
        };
        crate::model::tests::assert_close(what, &values(ours), &values(reference), 1e-5);
    }

    /// Checks blockwise attention (the tensor-op version at each of `blocks`, and the CPU
    /// kernel) against the materialising one with autodiff: output and q/k/v gradients,
    /// causal and packed, with grouped queries.
    fn check_against_materialising(s: usize, packed: [Vec<usize>; 2], blocks: &[usize]) {
        let device = Device::flex().autodiff();
        let (b, h, kv, d) = (2, 4, 2, 8);
        let layouts = [
            ("causal", SequenceLayout::contiguous(b, s, 0, &device)),
            (
                "packed",
                SequenceLayout::from_document_lengths(&packed, s, &device).unwrap(),
            ),
        ];
        for (name, layout) in &layouts {
            let normal = |heads| {
                Tensor::<4>::random([b, heads, s, d], Distribution::Normal(0.0, 1.0), &device)
            };
            let (q, k, v, dout) = crate::model::tests::seeded(&device, 9, || {
                (normal(h), normal(kv), normal(kv), normal(h))
            });
            let (qt, kt, vt) = (
                q.clone().require_grad(),
                k.clone().require_grad(),
                v.clone().require_grad(),
            );
            let reference = attend(
                qt.clone(),
                kt.clone(),
                vt.clone(),
                &layout.attention_mask(0),
            );
            let grads = reference.clone().mul(dout.clone()).sum().backward();
            let mut runs: Vec<(String, FlashOutput, (Tensor<4>, Tensor<4>, Tensor<4>))> =
                Vec::new();
            let (q, k, v) = (&q, &k, &v);
            for &block in blocks {
                let fwd = tiled_forward(q.clone(), k.clone(), v.clone(), layout, block);
                let grads = tiled_backward(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    &fwd,
                    dout.clone(),
                    layout,
                    block,
                );
                runs.push((format!("{name}, tensor ops, block {block}"), fwd, grads));
            }
            let fwd = forward(q.clone(), k.clone(), v.clone(), layout, 0);
            let grads_host = backward(
                q.clone(),
                k.clone(),
                v.clone(),
                &fwd,
                dout.clone(),
                layout,
                0,
            );
            runs.push((format!("{name}, CPU kernel"), fwd, grads_host));
            for (what, fwd, (dq, dk, dv)) in runs {
                close(&format!("{what}: out"), fwd.out, reference.clone().detach());
                close(&format!("{what}: dq"), dq, qt.grad(&grads).unwrap());
                close(&format!("{what}: dk"), dk, kt.grad(&grads).unwrap());
                close(&format!("{what}: dv"), dv, vt.grad(&grads).unwrap());
            }
        }
    }

    /// Block sizes that do and do not divide S.
    #[test]
    fn blockwise_attention_matches_the_materialising_one() {
        check_against_materialising(11, [vec![4, 7], vec![2, 6, 3]], &[3, 4, 16]);
    }

    /// Longer than the CPU kernel's tile, with documents and rows that end inside tiles.
    #[test]
    fn blockwise_attention_matches_over_many_tiles() {
        let s = 2 * flash_cpu::TILE + 22;
        check_against_materialising(s, [vec![70, s - 70], vec![10, 100, s - 110]], &[48]);
    }
}
