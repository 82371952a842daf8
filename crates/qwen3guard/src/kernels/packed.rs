//! Weight matrices in a compact format with their own CPU product kernel.
//!
//! On the CPU every weight matrix lives here, in the precision's format: f32
//! ([`F32Matrix`]), bf16 ([`Bf16Matrix`]) or 8-bit ([`Q8Matrix`]), each with a kernel that
//! reads weight rows directly (candle's CPU backend has no bf16 or int8 product, and its f32
//! product repacks the weights on every call). Activations stay f32 between products.

use rayon::prelude::*;

use crate::kernels::{Bf16Matrix, F32Matrix, Q8Matrix};

/// A `(rows, cols)` weight matrix in one of the compact formats.
#[derive(Debug)]
pub enum PackedMatrix {
    /// f32, multiplied with fused multiply-adds.
    F32(F32Matrix),
    /// bfloat16, multiplied with the bf16 dot-product instruction.
    Bf16(Bf16Matrix),
    /// int8 per row, multiplied with the VNNI byte dot-product instruction.
    Q8(Q8Matrix),
}

impl PackedMatrix {
    /// The rows of `parts` one after another; all parts have one format (they come from
    /// one load) and the same number of columns.
    pub fn stack(parts: Vec<Self>) -> Self {
        let (mut f32s, mut bf16s, mut q8s) = (Vec::new(), Vec::new(), Vec::new());
        for part in parts {
            match part {
                PackedMatrix::F32(m) => f32s.push(m),
                PackedMatrix::Bf16(m) => bf16s.push(m),
                PackedMatrix::Q8(m) => q8s.push(m),
            }
        }
        if !q8s.is_empty() {
            PackedMatrix::Q8(Q8Matrix::stack(q8s))
        } else if !bf16s.is_empty() {
            PackedMatrix::Bf16(Bf16Matrix::stack(bf16s))
        } else {
            PackedMatrix::F32(F32Matrix::stack(f32s))
        }
    }

    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        match self {
            PackedMatrix::F32(m) => m.rows(),
            PackedMatrix::Bf16(m) => m.rows(),
            PackedMatrix::Q8(m) => m.rows(),
        }
    }

    /// Number of columns (input features).
    pub fn cols(&self) -> usize {
        match self {
            PackedMatrix::F32(m) => m.cols(),
            PackedMatrix::Bf16(m) => m.cols(),
            PackedMatrix::Q8(m) => m.cols(),
        }
    }

    /// Output features `ids` of one input row `x`, each computed by the same kernel as in
    /// [`Self::matmul`] (on the group of 64 rows holding it), so that the values are
    /// identical to the full product's. An id past the last row gives `f32::MIN`.
    pub fn select(&self, x: &[f32], ids: &[usize]) -> Vec<f32> {
        ids.iter()
            .map(|&id| {
                if id >= self.rows() {
                    return f32::MIN;
                }
                let start = id / COLUMN_BLOCK * COLUMN_BLOCK;
                let rows = start..(start + COLUMN_BLOCK).min(self.rows());
                let outputs = match self {
                    PackedMatrix::F32(w) => w.product(x, 1, rows),
                    PackedMatrix::Bf16(w) => w.product(x, 1, rows),
                    PackedMatrix::Q8(w) => w.product(x, 1, rows),
                };
                outputs[id - start]
            })
            .collect()
    }

    /// `x (m, cols) @ self^T -> (m, rows)`, row-major f32.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        match self {
            PackedMatrix::F32(w) => w.matmul(x, m),
            PackedMatrix::Bf16(w) => w.matmul(x, m),
            PackedMatrix::Q8(w) => w.matmul(x, m),
        }
    }
}

/// Output columns handled by one parallel task.
pub(crate) const COLUMN_BLOCK: usize = 64;
/// Activation rows handled together, so one pass over a weight block serves them all.
const ROW_BLOCK: usize = 64;
/// Rows of the kernels' register tiles; a task's share of rows is a multiple of it.
const TILE_ROWS: usize = 6;
/// Below this many rows per core, tasks split the columns too (each reading only part of
/// the weights), rather than every core reading all of them for a few rows.
const MIN_ROWS_PER_TASK: usize = 24;

/// Runs a product `(m, k) x (n, k)^T -> (m, n)` tile by tile on the thread pool.
/// `tile(m0, mb, n0, nb, out, ld)` fills `out[r * ld + c]` for activation rows
/// `m0..m0 + mb` and weight rows `n0..n0 + nb`.
pub(crate) fn tiled<F>(m: usize, n: usize, tile: F) -> Vec<f32>
where
    F: Fn(usize, usize, usize, usize, &mut [f32], usize) + Sync,
{
    let mut out = vec![0f32; m * n];
    if m == 1 {
        // Decoding: one output row, split across threads directly.
        out.par_chunks_mut(COLUMN_BLOCK)
            .enumerate()
            .for_each(|(b, chunk)| {
                let len = chunk.len();
                tile(0, 1, b * COLUMN_BLOCK, len, chunk, len);
            });
        return out;
    }
    let threads = rayon::current_num_threads();
    if m >= MIN_ROWS_PER_TASK * threads {
        // Enough rows for every core: each task owns whole rows of the output (about an
        // equal share, in whole register tiles, at most a row block) and writes them in
        // place, column block after column block; every weight block is read once per
        // task, as it is once per row block below.
        let tasks = threads.max(m.div_ceil(ROW_BLOCK));
        let share = m.div_ceil(tasks).div_ceil(TILE_ROWS) * TILE_ROWS;
        out.par_chunks_mut(share * n)
            .enumerate()
            .for_each(|(b, rows)| {
                let mb = rows.len() / n;
                for n0 in (0..n).step_by(COLUMN_BLOCK) {
                    let nb = (n - n0).min(COLUMN_BLOCK);
                    tile(b * share, mb, n0, nb, &mut rows[n0..], n);
                }
            });
        return out;
    }
    // A few rows: the work is split by column blocks too, each tile in its own buffer.
    let tiles: Vec<(usize, usize)> = (0..m)
        .step_by(ROW_BLOCK)
        .flat_map(|m0| (0..n).step_by(COLUMN_BLOCK).map(move |n0| (m0, n0)))
        .collect();
    let results: Vec<(usize, usize, usize, usize, Vec<f32>)> = tiles
        .into_par_iter()
        .map(|(m0, n0)| {
            let (mb, nb) = ((m - m0).min(ROW_BLOCK), (n - n0).min(COLUMN_BLOCK));
            let mut buf = vec![0f32; mb * nb];
            tile(m0, mb, n0, nb, &mut buf, nb);
            (m0, n0, mb, nb, buf)
        })
        .collect();
    for (m0, n0, mb, nb, buf) in results {
        for r in 0..mb {
            out[(m0 + r) * n + n0..(m0 + r) * n + n0 + nb]
                .copy_from_slice(&buf[r * nb..(r + 1) * nb]);
        }
    }
    out
}

/// The `(m, n, k)` shapes a product test runs: `full`, or under Miri, which interprets
/// every operation, two that keep the edges (a lone row and a partial row tile, a partial
/// group of columns, depths off every unrolled step) for a fraction of the work.
#[cfg(test)]
pub(crate) fn test_shapes(
    full: &'static [(usize, usize, usize)],
) -> &'static [(usize, usize, usize)] {
    if cfg!(miri) {
        &[(1, 7, 33), (7, 70, 37)]
    } else {
        full
    }
}

/// Deterministic test operands for the kernels: `(m, k)` activations and `(n, k)`
/// weights, spread over positive and negative values with no two rows alike.
#[cfg(test)]
pub(crate) fn sample_operands(m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
    let x = (0..m * k)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 37.0)
        .collect();
    let w = (0..n * k)
        .map(|i| ((i * 53 % 97) as f32 - 48.0) / 61.0)
        .collect();
    (x, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selected_outputs_equal_the_full_product() {
        let (rows, cols) = (130, 70);
        let (x, w) = sample_operands(1, rows, cols);
        for matrix in [
            PackedMatrix::F32(F32Matrix::from_f32(&w, rows, cols)),
            PackedMatrix::Bf16(Bf16Matrix::from_f32(&w, rows, cols)),
            PackedMatrix::Q8(Q8Matrix::from_f32(&w, rows, cols)),
        ] {
            let full = matrix.matmul(&x, 1);
            let ids = [0, 63, 64, 129, 5];
            let picked: Vec<f32> = ids.iter().map(|&i| full[i]).collect();
            assert_eq!(matrix.select(&x, &ids), picked);
            assert_eq!(matrix.select(&x, &[130]), vec![f32::MIN]);
        }
    }
}
