//! The CPU kernel of memory-linear attention: the same algorithm as [`crate::flash`] (tiles,
//! online softmax, saved log-sum-exp, recomputation in the backward), written on host
//! slices so that a tile's scores, mask, exponentials and rescaling happen in one pass over
//! cache-resident memory instead of as a dozen tensor ops, each allocating a tile. The tile
//! products go through `gemm` (the matrix kernel flex itself uses), and the tiles are spread
//! over rayon's threads.
//!
//! Layouts: q, out and dout `[B, H, S, D]`, k and v `[B, K, S, D]`, lse `[B, H, S]`, all
//! row-major f32; query head `h` reads key head `h / (H/K)`. `starts[b·S + t]` is the first
//! key query `t` of row `b` may see (the start of its document); it sees keys
//! `starts[t]..=t`.

use rayon::prelude::*;

/// Positions per tile, for queries and keys: a `[G·64, 64]` score tile stays in L2.
pub const TILE: usize = 64;

/// Problem sizes. `h` is a multiple of `kv`.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub b: usize,
    pub h: usize,
    pub kv: usize,
    pub s: usize,
    pub d: usize,
}

impl Dims {
    fn group(&self) -> usize {
        self.h / self.kv
    }

    fn scale(&self) -> f32 {
        1.0 / (self.d as f32).sqrt()
    }

    fn blocks(&self) -> usize {
        self.s.div_ceil(TILE)
    }

    /// Offset of row `t` of head `head` of batch row `b` in a `[B, heads, S, D]` tensor.
    fn row(&self, heads: usize, b: usize, head: usize, t: usize) -> usize {
        ((b * heads + head) * self.s + t) * self.d
    }
}

/// A strided f32 matrix: element (i, j) at `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// The first `rows × cols` elements of `data`, row-major.
    fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// `dst = a · b`, or `dst += a · b` when `accumulate`; `dst` row-major `[a.rows, b.cols]`.
fn matmul(dst: &mut [f32], a: View, b: View, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions");
    assert!(dst.len() >= m * n, "destination too small");
    for v in [&a, &b] {
        assert!(
            v.rows == 0 || v.cols == 0 || (v.rows - 1) * v.rs + (v.cols - 1) * v.cs < v.data.len(),
            "view out of bounds"
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts keep every element gemm reads or writes inside its slice.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// e^x to about 2e-7 relative, 0 below e^-87, written without branches or calls so that
/// loops over it vectorise: e^x = 2^n · e^y with n = round(x·log₂e), 2^n from the exponent
/// bits, y = x − n·ln2 (ln2 split in two so the product stays exact) and e^y by Taylor.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    let x = x.clamp(-88.0, 88.0);
    // Adding and removing 1.5·2²³ rounds to the nearest integer.
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let y = (x - n * LN2_HIGH) - n * LN2_LOW;
    let p = 1.0
        + y * (1.0
            + y * (1.0 / 2.0
                + y * (1.0 / 6.0
                    + y * (1.0 / 24.0 + y * (1.0 / 120.0 + y * (1.0 / 720.0 + y / 5040.0))))));
    // n + 127 + 2²³ has n + 127 (0..=254) as the low bits of its mantissa: shifted to the
    // exponent field they make 2^n (0 for n = −127), without a float-to-int conversion.
    f32::from_bits((n + 8_388_735.0).to_bits() << 23) * p
}

/// The keys `lo..hi` of a tile starting at `ks` with `bk` keys that query `t` may see.
fn visible(t: usize, start: usize, ks: usize, bk: usize) -> (usize, usize) {
    let lo = start.max(ks).min(ks + bk) - ks;
    let hi = (t + 1).clamp(ks, ks + bk) - ks;
    (lo, hi.max(lo))
}

/// The `G·bq` query rows of one tile, grouped by head: `[G·bq, D]`.
fn gather_rows(x: &[f32], dims: &Dims, b: usize, kv: usize, qs: usize, bq: usize) -> Vec<f32> {
    let (g, d) = (dims.group(), dims.d);
    let mut rows = Vec::with_capacity(g * bq * d);
    for head in kv * g..(kv + 1) * g {
        let at = dims.row(dims.h, b, head, qs);
        rows.extend_from_slice(&x[at..at + bq * d]);
    }
    rows
}

/// Per-query values `[B, H, S]` of the `G·bq` rows of one tile.
fn gather_scalars(x: &[f32], dims: &Dims, b: usize, kv: usize, qs: usize, bq: usize) -> Vec<f32> {
    let g = dims.group();
    (kv * g..(kv + 1) * g)
        .flat_map(|head| {
            let at = (b * dims.h + head) * dims.s + qs;
            x[at..at + bq].iter().copied()
        })
        .collect()
}

/// The key blocks query block `qi` of batch row `b` needs (its documents' keys, causal).
fn key_blocks(dims: &Dims, starts: &[usize], b: usize, qi: usize) -> std::ops::Range<usize> {
    let qs = qi * TILE;
    let last = (qs + TILE).min(dims.s) - 1;
    starts[b * dims.s + qs] / TILE..last / TILE + 1
}

/// One tile's probabilities in place: `scores` `[G·bq, bk]` of raw `q·k` becomes
/// `exp(q·k·scale − shift[r])` where visible, 0 elsewhere.
fn probabilities(
    scores: &mut [f32],
    shift: &[f32],
    scale: f32,
    tile: (usize, usize, usize, usize),
    starts: &[usize],
) {
    // The exponentials are a third of the kernel's time: use AVX2 and FMA where the CPU
    // has them (the crate is built for baseline x86-64, SSE2).
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { probabilities_avx2(scores, shift, scale, tile, starts) };
    }
    probabilities_portable(scores, shift, scale, tile, starts)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn probabilities_avx2(
    scores: &mut [f32],
    shift: &[f32],
    scale: f32,
    tile: (usize, usize, usize, usize),
    starts: &[usize],
) {
    probabilities_portable(scores, shift, scale, tile, starts)
}

#[inline(always)]
fn probabilities_portable(
    scores: &mut [f32],
    shift: &[f32],
    scale: f32,
    (qs, bq, ks, bk): (usize, usize, usize, usize),
    starts: &[usize],
) {
    for (r, row) in scores.chunks_mut(bk).enumerate() {
        let t = qs + r % bq;
        let (lo, hi) = visible(t, starts[t], ks, bk);
        row[..lo].fill(0.0);
        row[hi..].fill(0.0);
        let m = shift[r];
        for x in &mut row[lo..hi] {
            *x = exp(*x * scale - m);
        }
    }
}

/// Outputs `[B, H, S, D]` and log-sum-exps `[B, H, S]`.
pub fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: Dims,
    starts: &[usize],
) -> (Vec<f32>, Vec<f32>) {
    let (g, d, scale) = (dims.group(), dims.d, dims.scale());
    let tasks: Vec<(usize, usize, usize)> = (0..dims.b)
        .flat_map(|b| {
            (0..dims.kv).flat_map(move |kv| (0..dims.blocks()).map(move |qi| (b, kv, qi)))
        })
        .collect();
    let tiles: Vec<(Vec<f32>, Vec<f32>)> = tasks
        .par_iter()
        .map(|&(b, kv, qi)| {
            let qs = qi * TILE;
            let bq = TILE.min(dims.s - qs);
            let rows = g * bq;
            let row_starts = &starts[b * dims.s..(b + 1) * dims.s];
            let qt = gather_rows(q, &dims, b, kv, qs, bq);
            let mut m = vec![f32::NEG_INFINITY; rows];
            let mut l = vec![0.0f32; rows];
            let mut acc = vec![0.0f32; rows * d];
            let mut scores = vec![0.0f32; rows * TILE];
            let mut shift = vec![0.0f32; rows];
            for kj in key_blocks(&dims, starts, b, qi) {
                let ks = kj * TILE;
                let bk = TILE.min(dims.s - ks);
                let at = dims.row(dims.kv, b, kv, ks);
                let (kt, vt) = (&k[at..at + bk * d], &v[at..at + bk * d]);
                let scores = &mut scores[..rows * bk];
                matmul(
                    scores,
                    View::new(&qt, rows, d),
                    View::new(kt, bk, d).t(),
                    false,
                );
                // Online softmax: the new running maximum, the old sums rescaled to it.
                for (r, row) in scores.chunks(bk).enumerate() {
                    let t = qs + r % bq;
                    let (lo, hi) = visible(t, row_starts[t], ks, bk);
                    let tile_max = row[lo..hi]
                        .iter()
                        .fold(f32::NEG_INFINITY, |a, &x| a.max(x * scale));
                    let m_new = m[r].max(tile_max);
                    // A row that sees nothing yet keeps shift −∞ → probabilities exp(−∞) = 0.
                    shift[r] = if m_new.is_finite() { m_new } else { 0.0 };
                    let decay = if m[r].is_finite() {
                        exp(m[r] - m_new)
                    } else {
                        0.0
                    };
                    l[r] *= decay;
                    acc[r * d..(r + 1) * d].iter_mut().for_each(|a| *a *= decay);
                    m[r] = m_new;
                }
                probabilities(scores, &shift, scale, (qs, bq, ks, bk), row_starts);
                for (r, row) in scores.chunks(bk).enumerate() {
                    l[r] += row.iter().sum::<f32>();
                }
                matmul(
                    &mut acc,
                    View::new(scores, rows, bk),
                    View::new(vt, bk, d),
                    true,
                );
            }
            for (r, out) in acc.chunks_mut(d).enumerate() {
                out.iter_mut().for_each(|o| *o /= l[r]);
            }
            let lse = m.iter().zip(&l).map(|(m, l)| m + l.ln()).collect();
            (acc, lse)
        })
        .collect();
    let mut out = vec![0.0f32; q.len()];
    let mut lse = vec![0.0f32; dims.b * dims.h * dims.s];
    for (&(b, kv, qi), (acc, tile_lse)) in tasks.iter().zip(tiles) {
        let qs = qi * TILE;
        let bq = TILE.min(dims.s - qs);
        for gi in 0..g {
            let head = kv * g + gi;
            let at = dims.row(dims.h, b, head, qs);
            out[at..at + bq * d].copy_from_slice(&acc[gi * bq * d..(gi + 1) * bq * d]);
            let at = (b * dims.h + head) * dims.s + qs;
            lse[at..at + bq].copy_from_slice(&tile_lse[gi * bq..(gi + 1) * bq]);
        }
    }
    (out, lse)
}

/// What the backward of one (query tile, key tile) pair shares between its products.
struct Pair {
    /// `[G·bq, bk]` probabilities.
    p: Vec<f32>,
    /// `[G·bq, bk]` score gradients, already multiplied by the scale.
    ds: Vec<f32>,
}

/// Probabilities and score gradients of one tile pair, recomputed from the saved lse.
#[allow(clippy::too_many_arguments)]
fn pair(
    qt: &[f32],
    dot: &[f32],
    lse: &[f32],
    delta: &[f32],
    (kt, vt): (&[f32], &[f32]),
    dims: &Dims,
    (qs, bq, ks, bk): (usize, usize, usize, usize),
    row_starts: &[usize],
) -> Pair {
    let (d, scale) = (dims.d, dims.scale());
    let rows = dims.group() * bq;
    let mut p = vec![0.0f32; rows * bk];
    matmul(
        &mut p,
        View::new(qt, rows, d),
        View::new(kt, bk, d).t(),
        false,
    );
    probabilities(&mut p, lse, scale, (qs, bq, ks, bk), row_starts);
    let mut ds = vec![0.0f32; rows * bk];
    matmul(
        &mut ds,
        View::new(dot, rows, d),
        View::new(vt, bk, d).t(),
        false,
    );
    for (r, (ds, p)) in ds.chunks_mut(bk).zip(p.chunks(bk)).enumerate() {
        for (x, &p) in ds.iter_mut().zip(p) {
            *x = p * (*x - delta[r]) * scale;
        }
    }
    Pair { p, ds }
}

/// How many parts [`backward`] splits each key head into: enough for every thread to have
/// one when there are fewer key heads than threads (each part costs a `[G, S, D]` buffer).
pub fn backward_parts(dims: &Dims) -> usize {
    rayon::current_num_threads()
        .div_ceil(dims.b * dims.kv)
        .min(dims.blocks())
        .max(1)
}

/// Gradients with respect to q `[B, H, S, D]`, k and v `[B, K, S, D]`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    dims: Dims,
    starts: &[usize],
    parts: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (g, d) = (dims.group(), dims.d);
    // Δ = Σ_d dO·O per query: the softmax's correction term.
    let delta: Vec<f32> = dout
        .chunks(d)
        .zip(out.chunks(d))
        .map(|(a, b)| a.iter().zip(b).map(|(a, b)| a * b).sum())
        .collect();
    let tile = |b: usize, kv: usize, qi: usize| {
        let qs = qi * TILE;
        let bq = TILE.min(dims.s - qs);
        (
            gather_rows(q, &dims, b, kv, qs, bq),
            gather_rows(dout, &dims, b, kv, qs, bq),
            gather_scalars(lse, &dims, b, kv, qs, bq),
            gather_scalars(&delta, &dims, b, kv, qs, bq),
        )
    };
    let keys = |b: usize, kv: usize, ks: usize, bk: usize| {
        let at = dims.row(dims.kv, b, kv, ks);
        (&k[at..at + bk * d], &v[at..at + bk * d])
    };
    // Tasks are (batch row, key head, part): a part takes every `parts`-th key tile, sums
    // dK and dV over the query tiles that see each of its key tiles, and adds the dQ terms
    // into its own `[G, S, D]` buffer, so that no two threads write the same memory.
    let parts = parts.max(1);
    let tasks: Vec<(usize, usize, usize)> = (0..dims.b)
        .flat_map(|b| (0..dims.kv).flat_map(move |kv| (0..parts).map(move |p| (b, kv, p))))
        .collect();
    type KeyTile = (usize, Vec<f32>, Vec<f32>);
    let results: Vec<(Vec<KeyTile>, Vec<f32>)> = tasks
        .par_iter()
        .map(|&(b, kv, part)| {
            let row_starts = &starts[b * dims.s..(b + 1) * dims.s];
            let mut dq = vec![0.0f32; g * dims.s * d];
            let mut key_tiles = Vec::new();
            for kj in (part..dims.blocks()).step_by(parts) {
                let ks = kj * TILE;
                let bk = TILE.min(dims.s - ks);
                let (kt, vt) = keys(b, kv, ks, bk);
                let (mut dk, mut dv) = (vec![0.0f32; bk * d], vec![0.0f32; bk * d]);
                // Starts never decrease along a row: once a query tile's first query starts
                // after this key tile, every later one does too.
                for qi in (kj..dims.blocks()).take_while(|&qi| row_starts[qi * TILE] < ks + bk) {
                    let qs = qi * TILE;
                    let bq = TILE.min(dims.s - qs);
                    let rows = g * bq;
                    let (qt, dot, tile_lse, tile_delta) = tile(b, kv, qi);
                    let pr = pair(
                        &qt,
                        &dot,
                        &tile_lse,
                        &tile_delta,
                        (kt, vt),
                        &dims,
                        (qs, bq, ks, bk),
                        row_starts,
                    );
                    let (p, ds) = (View::new(&pr.p, rows, bk), View::new(&pr.ds, rows, bk));
                    matmul(&mut dv, p.t(), View::new(&dot, rows, d), true);
                    matmul(&mut dk, ds.t(), View::new(&qt, rows, d), true);
                    for gi in 0..g {
                        let at = (gi * dims.s + qs) * d;
                        let ds_head = View::new(&pr.ds[gi * bq * bk..], bq, bk);
                        matmul(
                            &mut dq[at..at + bq * d],
                            ds_head,
                            View::new(kt, bk, d),
                            true,
                        );
                    }
                }
                key_tiles.push((kj, dk, dv));
            }
            (key_tiles, dq)
        })
        .collect();

    let mut dq = vec![0.0f32; q.len()];
    let (mut dk, mut dv) = (vec![0.0f32; k.len()], vec![0.0f32; v.len()]);
    for (&(b, kv, _), (key_tiles, part_dq)) in tasks.iter().zip(results) {
        // A key head's query heads are contiguous in dq: [G, S, D] at head kv·G.
        let at = dims.row(dims.h, b, kv * g, 0);
        for (x, y) in dq[at..at + part_dq.len()].iter_mut().zip(&part_dq) {
            *x += y;
        }
        for (kj, tk, tv) in key_tiles {
            let at = dims.row(dims.kv, b, kv, kj * TILE);
            dk[at..at + tk.len()].copy_from_slice(&tk);
            dv[at..at + tv.len()].copy_from_slice(&tv);
        }
    }
    (dq, dk, dv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_the_range_softmax_uses() {
        for i in 0..=20_000 {
            let x = -100.0 + i as f32 * 0.0055;
            let (ours, exact) = (exp(x), (x as f64).exp());
            if x < -87.0 {
                assert!(ours < 1e-37, "exp({x}) = {ours}");
            } else {
                let tolerance = 5e-7;
                let err = ((ours as f64 - exact) / exact).abs();
                assert!(err < tolerance, "exp({x}): {ours} vs {exact} ({err:e})");
            }
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    /// Splitting key heads into parts (as on machines with more threads than key heads)
    /// changes only the order of the dQ sums.
    #[test]
    fn backward_is_the_same_whatever_the_parts() {
        let dims = Dims {
            b: 1,
            h: 4,
            kv: 2,
            s: 3 * TILE + 5,
            d: 8,
        };
        let values = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
                .collect()
        };
        let (q, k, v) = (
            values(dims.h * dims.s * dims.d, 1),
            values(dims.kv * dims.s * dims.d, 2),
            values(dims.kv * dims.s * dims.d, 3),
        );
        let dout = values(q.len(), 4);
        // Two documents, the second starting inside the second tile.
        let starts: Vec<usize> = (0..dims.s).map(|t| if t < 100 { 0 } else { 100 }).collect();
        let (out, lse) = forward(&q, &k, &v, dims, &starts);
        let one = backward(&q, &k, &v, &out, &lse, &dout, dims, &starts, 1);
        let three = backward(&q, &k, &v, &out, &lse, &dout, dims, &starts, 3);
        for (name, a, b) in [
            ("dq", &one.0, &three.0),
            ("dk", &one.1, &three.1),
            ("dv", &one.2, &three.2),
        ] {
            let worst = a
                .iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-5, "{name}: parts 1 and 3 differ by {worst}");
            assert!(a.iter().any(|&x| x != 0.0), "{name}: all zero");
        }
    }
}
