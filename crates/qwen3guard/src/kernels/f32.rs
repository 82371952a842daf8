//! f32 weight matrices and their product kernel.
//!
//! candle's general matrix product packs the right-hand matrix on every call, which
//! dominates when only a few positions run (a 20-token prompt, a chunk of 16, one
//! appended token). Here the weights are stored once as [`Panels`] (one input feature of
//! 64 rows per four vectors), and each step broadcasts one activation per row and adds
//! 64 outputs with fused multiply-adds, reading the weights strictly in order. The tiling
//! and threading are shared with the bf16 and 8-bit formats.

use std::ops::{Deref, Range};

#[cfg(target_arch = "aarch64")]
use crate::kernels::neon;
use crate::kernels::packed::tiled;
use crate::kernels::panels::{Panels, GROUP};
#[cfg(target_arch = "x86_64")]
use crate::kernels::{avx2, avx512};
use crate::kernels::{isa, Isa};

/// A `(rows, cols)` f32 matrix in the grouped layout.
#[derive(Debug)]
pub struct F32Matrix(Panels<f32>);

impl Deref for F32Matrix {
    type Target = Panels<f32>;

    fn deref(&self) -> &Panels<f32> {
        &self.0
    }
}

impl F32Matrix {
    /// Builds from row-major values.
    pub fn from_f32(values: &[f32], rows: usize, cols: usize) -> Self {
        Self::from_fn(rows, cols, |i| values[i])
    }

    /// Builds from `value(i)`, the `i`-th element of the row-major matrix.
    pub fn from_fn(rows: usize, cols: usize, value: impl Fn(usize) -> f32 + Sync) -> Self {
        F32Matrix(Panels::build(rows, cols, 1, 1, value))
    }

    /// The rows of `parts` one after another (all with the same number of columns).
    pub fn stack(parts: Vec<Self>) -> Self {
        F32Matrix(Panels::stack(parts.into_iter().map(|p| p.0).collect()))
    }

    /// `x (m, cols) @ self^T -> (m, rows)`, all row-major f32.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.product(x, m, 0..self.rows())
    }

    /// The columns `rows` of `x @ self^T` (`rows.start` a multiple of 64): `(m, rows.len())`.
    pub fn product(&self, x: &[f32], m: usize, rows: Range<usize>) -> Vec<f32> {
        let depth = self.depth;
        tiled(m, rows.len(), |m0, mb, n0, nb, out, ld| {
            let group = self.group(rows.start + n0);
            block(&x[m0 * depth..][..mb * depth], depth, group, nb, out, ld);
        })
    }
}

/// `out[r * ld + c] = dot(x row r, weight row c)` for every activation row of `x` (rows
/// `depth` long) and the first `n` rows of one group of 64 in the [`Panels`] layout with
/// `pack` 1 (weights, or a page of cached keys).
pub(crate) fn block(x: &[f32], depth: usize, group: &[f32], n: usize, out: &mut [f32], ld: usize) {
    block_on(isa(), x, depth, group, n, out, ld);
}

/// [`block`] on the kernels of `level` (at most what the processor has).
fn block_on(
    level: Isa,
    x: &[f32],
    depth: usize,
    group: &[f32],
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `level` is at most the detected instruction set (`isa()`, or a lower
        // level in tests); the slices are whole rows and one whole group, checked by the
        // asserts inside.
        if level >= Isa::Avx512 {
            unsafe { avx512::f32::block(x, depth, group, n, out, ld) };
            return;
        }
        if level >= Isa::Avx2 {
            unsafe { avx2::f32::block(x, depth, group, n, out, ld) };
            return;
        }
    }
    #[cfg(target_arch = "aarch64")]
    if level >= Isa::Neon {
        // SAFETY: as above; NEON is part of every aarch64 processor `detected` reports.
        unsafe { neon::f32::block(x, depth, group, n, out, ld) };
        return;
    }
    let _ = level;
    portable_block(x, depth, group, n, out, ld);
}

/// The reference loop: for each row, the 64 outputs of the group accumulate one input
/// feature at a time, reading the weights in order (a form compilers vectorize for the
/// processor's baseline, e.g. NEON).
fn portable_block(x: &[f32], depth: usize, group: &[f32], n: usize, out: &mut [f32], ld: usize) {
    for (r, xr) in x.chunks_exact(depth).enumerate() {
        let mut acc = [0f32; GROUP];
        for (&v, w) in xr.iter().zip(group.chunks_exact(GROUP)) {
            for (a, &w) in acc.iter_mut().zip(w) {
                *a += v * w;
            }
        }
        out[r * ld..][..n].copy_from_slice(&acc[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::packed::{sample_operands, test_shapes};

    #[test]
    fn every_path_matches_a_wide_reference_for_odd_shapes() {
        eprintln!("f32 paths: {:?}", Isa::supported());
        let shapes = test_shapes(&[
            (1, 7, 33),
            (5, 130, 70),
            (3, 3, 16),
            (67, 9, 40),
            (13, 200, 64),
            (300, 70, 40),
            // Row runs of 4 and 2 after full tiles of 6; depths off the unrolled step
            // of 4.
            (10, 50, 37),
            (8, 64, 22),
            // Depths past the AVX2 kernel's pass of 384 features, the last pass partial and
            // off the unrolled step.
            (10, 70, 1000),
            (7, 64, 770),
        ]);
        for &(m, n, k) in shapes {
            let (x, w) = sample_operands(m, n, k);
            let matrix = F32Matrix::from_f32(&w, n, k);
            let ours = matrix.matmul(&x, m);
            let paths: Vec<Vec<f32>> = Isa::supported()
                .into_iter()
                .map(|level| {
                    let mut out = vec![0f32; m * n];
                    for g in (0..n).step_by(GROUP) {
                        let cols = (n - g).min(GROUP);
                        block_on(level, &x, k, matrix.group(g), cols, &mut out[g..], n);
                    }
                    out
                })
                .collect();
            for r in 0..m {
                for c in 0..n {
                    let exact: f64 = (0..k)
                        .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                        .sum();
                    let close = |v: f32| (v as f64 - exact).abs() < 1e-4 * (1.0 + exact.abs());
                    assert!(close(ours[r * n + c]), "{m}x{n}x{k} [{r},{c}]");
                    for (level, out) in Isa::supported().iter().zip(&paths) {
                        assert!(close(out[r * n + c]), "{level} {m}x{n}x{k} [{r},{c}]");
                    }
                }
            }
        }
    }

    /// The products of a 512-token prefill and a 115-token verdict (the MLP's down projection
    /// and the gate), on the detected kernels (`QWEN3GUARD_ISA` caps them) in rounds, printing
    /// each product's rate; each result is checked against the portable loop. A benchmark run
    /// by hand, as the kernels' passes over the depth were tuned:
    /// `QWEN3GUARD_ISA=avx2 cargo test --release -p qwen3guard --lib prefill_products -- --ignored --nocapture`
    #[test]
    #[ignore = "a benchmark: run by hand, see its doc"]
    fn prefill_products_agree_and_print_rates() {
        let shapes = [(512, 1024, 3072), (115, 1024, 3072), (512, 3072, 1024)];
        for round in 0..3 {
            let mut line = format!("{} round {round}:", isa());
            for &(m, n, k) in &shapes {
                let (x, w) = sample_operands(m, n, k);
                let matrix = F32Matrix::from_f32(&w, n, k);
                let mut ours = matrix.matmul(&x, m);
                let t = std::time::Instant::now();
                for _ in 0..5 {
                    ours = std::hint::black_box(matrix.matmul(&x, m));
                }
                let gflops = 5.0 * 2.0 * (m * n * k) as f64 / t.elapsed().as_secs_f64() / 1e9;
                line += &format!(" {m}x{n}x{k} {gflops:.0} GFLOP/s;");
                if round == 0 {
                    let mut portable = vec![0f32; m * n];
                    for g in (0..n).step_by(GROUP) {
                        let cols = (n - g).min(GROUP);
                        block_on(
                            Isa::Portable,
                            &x,
                            k,
                            matrix.group(g),
                            cols,
                            &mut portable[g..],
                            n,
                        );
                    }
                    for (i, (a, b)) in ours.iter().zip(&portable).enumerate() {
                        assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{m}x{n}x{k} [{i}]");
                    }
                }
            }
            eprintln!("{line}");
        }
    }
}
