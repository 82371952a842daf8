//! Weight storage laid out for broadcast-style product kernels.
//!
//! A kernel that broadcasts one activation (or a pair of them) and multiplies it by a
//! vector holding that input feature for 16 output rows produces 16 outputs per
//! instruction, with no horizontal sums, and reads the weights strictly in order. This
//! storage serves it: rows in groups of 64 (four vectors of outputs, one register tile),
//! and within a group, for each run of `pack` consecutive input features, the 64 rows'
//! `pack` values side by side (`pack` is 1 for f32 fused multiply-adds, 2 for the bf16
//! pair dot product, 4 for the int8 quad dot product). Rows are padded to a whole group
//! and columns to the format's alignment, with the default value (the activations' own
//! padding is zero, so padded columns add nothing).

use rayon::prelude::*;

use crate::kernels::packed::COLUMN_BLOCK;
use crate::kernels::pages;

/// Weight rows per group: a register tile's outputs, and the column block of the tiling
/// driver, so that a tile never straddles two groups.
pub(crate) const GROUP: usize = COLUMN_BLOCK;

/// A `(rows, cols)` matrix in the grouped layout.
#[derive(Debug)]
pub struct Panels<T> {
    pub(crate) data: Vec<T>,
    rows: usize,
    cols: usize,
    /// `cols` rounded up to the alignment: the stride of a row of activations.
    pub(crate) depth: usize,
    pack: usize,
}

impl<T: Copy + Default + Send + Sync> Panels<T> {
    /// Builds from `value(i)`, the `i`-th element of the row-major `(rows, cols)` matrix;
    /// columns are padded to a multiple of `align` (itself a multiple of `pack`).
    pub(crate) fn build(
        rows: usize,
        cols: usize,
        pack: usize,
        align: usize,
        value: impl Fn(usize) -> T + Sync,
    ) -> Self
    where
        T: Send + Sync,
    {
        debug_assert_eq!(align % pack, 0);
        let depth = cols.div_ceil(align) * align;
        let mut data = pages::zeroed(rows.div_ceil(GROUP) * GROUP * depth);
        // Group by group on the thread pool (a vocabulary-sized matrix has 150 million
        // entries); within a group, row by row, a run of `pack` features at a time.
        data.par_chunks_mut(GROUP * depth)
            .enumerate()
            .for_each(|(g, group)| {
                for r in g * GROUP..rows.min((g + 1) * GROUP) {
                    let slot = (r % GROUP) * pack;
                    for c0 in (0..cols).step_by(pack) {
                        let at = c0 * GROUP + slot;
                        for j in 0..pack.min(cols - c0) {
                            group[at + j] = value(r * cols + c0 + j);
                        }
                    }
                }
            });
        Panels {
            data,
            rows,
            cols,
            depth,
            pack,
        }
    }

    /// Where element `(r, c)` lives in `data`.
    fn index(&self, r: usize, c: usize) -> usize {
        let p = self.pack;
        (r / GROUP) * GROUP * self.depth + (c / p) * p * GROUP + (r % GROUP) * p + c % p
    }

    /// Element `(r, c)`.
    pub(crate) fn get(&self, r: usize, c: usize) -> T {
        self.data[self.index(r, c)]
    }

    /// The rows of `parts` one after another (same columns and packing, one load).
    pub(crate) fn stack(parts: Vec<Self>) -> Self {
        let (cols, pack, depth) = parts
            .first()
            .map_or((0, 1, 0), |p| (p.cols, p.pack, p.depth));
        if parts.iter().all(|p| p.rows % GROUP == 0) {
            // Whole groups: the layouts simply follow each other.
            let rows = parts.iter().map(|p| p.rows).sum();
            let mut data = pages::zeroed(parts.iter().map(|p| p.data.len()).sum());
            let mut at = 0;
            for part in parts {
                data[at..at + part.data.len()].copy_from_slice(&part.data);
                at += part.data.len();
            }
            return Panels {
                data,
                rows,
                cols,
                depth,
                pack,
            };
        }
        let owners: Vec<(&Self, usize)> = parts
            .iter()
            .flat_map(|p| (0..p.rows).map(move |r| (p, r)))
            .collect();
        // Aligning to the parts' depth keeps it.
        Self::build(owners.len(), cols, pack, depth.max(pack), |i| {
            let (part, r) = owners[i / cols];
            part.get(r, i % cols)
        })
    }

    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The group holding rows `first..first + 64` (`first` a multiple of 64).
    pub(crate) fn group(&self, first: usize) -> &[T] {
        &self.data[(first / GROUP) * GROUP * self.depth..][..GROUP * self.depth]
    }

    /// `m` rows of activations `x (m, cols)` converted by `f`, each padded with zeros to
    /// `depth`.
    pub(crate) fn activations<S: Copy + Sync>(
        &self,
        x: &[S],
        m: usize,
        f: impl Fn(S) -> T + Sync,
    ) -> Vec<T>
    where
        T: Send,
    {
        let mut out = vec![T::default(); m * self.depth];
        // Row by row on the thread pool: for a prompt this is a few hundred thousand
        // conversions per product, too many to leave the other cores waiting.
        out.par_chunks_mut(self.depth)
            .zip(x.par_chunks(self.cols))
            .for_each(|(dst, src)| {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = f(s);
                }
            });
        out
    }
}

/// Runs a vector kernel's `$tile::<R, V>(x, depth, group, first, n, out, ld)` over the
/// activation rows of `$x` (rows `$depth` long) against the first `$n` rows of one weight
/// group, for registers of `$lanes` outputs: one row against the whole group (`V` =
/// `$whole`, 64 / `$lanes`), or, for several rows, slice by slice of `$lanes x $v` outputs,
/// each slice against every run of up to the largest of the row counts listed.
/// The slice is the outer loop so that its weights (`$lanes x $v x depth` values, 192 KiB
/// for an f32 slice of 16 at the MLP's depth of 3,072) stay in the core's L2 cache while every row
/// tile reads them; with the rows outside, the whole group went through L2 once per row
/// tile and, at that depth, no longer fitted.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! slice_tiles {
    ($tile:ident, $lanes:literal x $v:literal, whole $whole:literal, [$($r:literal)+], $x:expr, $depth:expr, $group:expr, $n:expr, $out:expr, $ld:expr) => {{
        let (x, depth, group, n, out, ld) = ($x, $depth, $group, $n, $out, $ld);
        let m = x.len() / depth;
        assert!(
            group.len() == crate::kernels::panels::GROUP * depth
                && n <= crate::kernels::panels::GROUP
        );
        assert!(m == 0 || out.len() >= (m - 1) * ld + n);
        let most = *[$($r),+].iter().max().unwrap_or(&1);
        if m == 1 {
            $tile::<1, $whole>(x, depth, group, 0, n, out, ld);
        } else {
            for first in (0..n).step_by($lanes * $v) {
                let mut r = 0;
                while r < m {
                    let rows = (m - r).min(most);
                    let (x, out) = (&x[r * depth..], &mut out[r * ld..]);
                    match rows {
                        $($r => $tile::<$r, $v>(x, depth, group, first, n, out, ld),)+
                        _ => unreachable!("a row run is at most {most}"),
                    }
                    r += rows;
                }
            }
        }
    }};
}
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) use slice_tiles;

/// Defines `store_rows` for one instruction set's vector of `$lanes` f32 values: the store
/// every tile of [`slice_tiles!`] ends with, the same on every instruction set but for the
/// vector type and its store.
macro_rules! store_rows_fn {
    ($vector:ty, $lanes:literal, $store:path, $features:literal) => {
        /// Stores `R` rows of `V` vectors, the outputs `first..first + lanes * V` of a group,
        /// at `out[r * ld + first..]`, keeping only outputs below `n` (the rest are padding
        /// rows).
        ///
        /// # Safety
        /// The instruction set must be available, and `out` must hold `(R - 1) * ld + n`
        /// values.
        #[inline]
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn store_rows<const R: usize, const V: usize>(
            acc: &[[$vector; V]; R],
            first: usize,
            n: usize,
            out: &mut [f32],
            ld: usize,
        ) {
            debug_assert!(R == 0 || out.len() >= (R - 1) * ld + n);
            for (i, row) in acc.iter().enumerate() {
                for (v, a) in row.iter().enumerate() {
                    let at = first + $lanes * v;
                    let lanes = n.saturating_sub(at).min($lanes);
                    if lanes == $lanes {
                        $store(out.as_mut_ptr().add(i * ld + at), *a);
                    } else if lanes > 0 {
                        // A partial vector: through a buffer, so no address past `n` is formed.
                        let mut lanes_out = [0f32; $lanes];
                        $store(lanes_out.as_mut_ptr(), *a);
                        out[i * ld + at..][..lanes].copy_from_slice(&lanes_out[..lanes]);
                    }
                }
            }
        }
    };
}
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) use store_rows_fn;

/// The body of a format's kernel driver: runs `$tile::<R>(x, depth, group, n, out, ld)` over
/// the activation rows of `$x` (rows `$depth` long) in register tiles of up to 6 rows (6 x 4
/// vectors = 24 accumulators, leaving registers for the 4 weight vectors and a broadcast), each
/// against the first `$n` rows of one weight group, writing `$out[r * $ld + c]`. The tile is
/// instantiated per row count, so the row count picks the instance.
#[cfg(target_arch = "x86_64")]
macro_rules! row_tiles {
    ($tile:ident, $x:expr, $depth:expr, $group:expr, $n:expr, $out:expr, $ld:expr) => {{
        let (x, depth, group, n, out, ld) = ($x, $depth, $group, $n, $out, $ld);
        let m = x.len() / depth;
        assert!(group.len() == GROUP * depth && n <= GROUP);
        assert!(m == 0 || out.len() >= (m - 1) * ld + n);
        let mut r = 0;
        while r < m {
            let rows = (m - r).min(6);
            let (x, out) = (&x[r * depth..], &mut out[r * ld..]);
            match rows {
                1 => $tile::<1>(x, depth, group, n, out, ld),
                2 => $tile::<2>(x, depth, group, n, out, ld),
                3 => $tile::<3>(x, depth, group, n, out, ld),
                4 => $tile::<4>(x, depth, group, n, out, ld),
                5 => $tile::<5>(x, depth, group, n, out, ld),
                _ => $tile::<6>(x, depth, group, n, out, ld),
            }
            r += rows;
        }
    }};
}
#[cfg(target_arch = "x86_64")]
pub(crate) use row_tiles;

/// Stores a register tile of `R` rows x 64 outputs at `out[r * ld..]`, keeping only the
/// first `n` outputs of each row (the rest are padding rows of the group).
///
/// # Safety
/// AVX-512F must be available, and `out` must hold `(R - 1) * ld + n` values.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn store_tile<const R: usize>(
    acc: &[[std::arch::x86_64::__m512; 4]; R],
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(out.len() >= (R - 1) * ld + n);
    for (i, row) in acc.iter().enumerate() {
        for (z, a) in row.iter().enumerate() {
            let lanes = n.saturating_sub(16 * z).min(16);
            // The address is formed only for a vector with lanes to write: past `n` it
            // could point beyond `out`, which is undefined even unused.
            if lanes == 16 {
                _mm512_storeu_ps(out.as_mut_ptr().add(i * ld + 16 * z), *a);
            } else if lanes > 0 {
                let mask = ((1u32 << lanes) - 1) as __mmask16;
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(i * ld + 16 * z), mask, *a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacking_keeps_every_element() {
        for (pack, align) in [(1, 1), (2, 2), (4, 64)] {
            let value = |i: usize| i as u32 * 3 + 1;
            let whole = Panels::build(100, 9, pack, align, value);
            let top = Panels::build(30, 9, pack, align, value);
            let bottom = Panels::build(70, 9, pack, align, |i| value(i + 30 * 9));
            let stacked = Panels::stack(vec![top, bottom]);
            assert_eq!(stacked.data, whole.data);
            for (r, c) in [(0, 0), (29, 8), (30, 0), (99, 8), (64, 5)] {
                assert_eq!(stacked.get(r, c), value(r * 9 + c));
            }
            let groups = Panels::stack(vec![
                Panels::build(64, 9, pack, align, value),
                Panels::build(64, 9, pack, align, |i| value(i + 64 * 9)),
            ]);
            assert_eq!(groups.data, Panels::build(128, 9, pack, align, value).data);
        }
    }
}
