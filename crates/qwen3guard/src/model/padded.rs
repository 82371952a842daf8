//! Row-major matrices whose rows are padded to a multiple of a kernel's vector width, the
//! storage shared by the packed formats.

/// `(rows, cols)` values, each row `stride` long (the tail filled with a neutral value).
#[derive(Debug)]
pub struct Padded<T> {
    pub(crate) data: Vec<T>,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) stride: usize,
}

impl<T: Copy> Padded<T> {
    /// Builds from `value(i)`, the `i`-th element of the unpadded row-major matrix; rows
    /// are padded to a multiple of `align` with `fill`.
    pub(crate) fn build(
        rows: usize,
        cols: usize,
        align: usize,
        fill: T,
        mut value: impl FnMut(usize) -> T,
    ) -> Self {
        let stride = cols.div_ceil(align) * align;
        let mut data = vec![fill; rows * stride];
        for r in 0..rows {
            for c in 0..cols {
                data[r * stride + c] = value(r * cols + c);
            }
        }
        Padded {
            data,
            rows,
            cols,
            stride,
        }
    }

    /// The rows of `parts` one after another (same columns and padding, one load).
    pub(crate) fn stack(parts: Vec<Self>) -> Self {
        let (cols, stride) = parts.first().map_or((0, 0), |p| (p.cols, p.stride));
        let rows = parts.iter().map(|p| p.rows).sum();
        let mut data = Vec::with_capacity(rows * stride);
        for part in parts {
            debug_assert_eq!((part.cols, part.stride), (cols, stride));
            data.extend(part.data);
        }
        Padded {
            data,
            rows,
            cols,
            stride,
        }
    }

    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `r` without its padding.
    pub fn row(&self, r: usize) -> &[T] {
        &self.data[r * self.stride..r * self.stride + self.cols]
    }
}
