//! Memory-mapped safetensors weights, single-file or sharded.
//!
//! Every file is mapped and its header validated when the checkpoint is opened, so a
//! truncated or corrupt download fails there, naming the file. Tensors are then fetched by
//! their checkpoint key with the shape the config implies; a missing or mis-shaped tensor
//! is reported by name rather than surfacing later as a matmul error.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use half::f16;
use memmap2::Mmap;
#[cfg(unix)]
use memmap2::UncheckedAdvice;
use safetensors::tensor::{Dtype as StDtype, Metadata, SafeTensors};
use serde::Deserialize;

use crate::checkpoint::rows::{FileRows, Rounding};
use crate::device::{LoadOptions, Precision};
use crate::error::{Error, Result};
use crate::kernels::{Bf16Matrix, F32Matrix, PackedMatrix, Q8Matrix};
use crate::model::KvPrecision;

/// One mapped weight file.
struct WeightFile {
    path: PathBuf,
    /// The open file, for tensors read row by row ([`FileRows`]).
    file: Arc<File>,
    map: Mmap,
    /// Bytes before the tensor data (8-byte length + JSON header).
    data_start: usize,
    metadata: Metadata,
}

/// All weight files of a checkpoint, indexed by tensor name.
pub struct Weights {
    files: Vec<WeightFile>,
    location: HashMap<String, usize>,
    device: Device,
    dtype: DType,
    /// On CPU: matrices are packed for the crate's own kernels, in this precision.
    packing: Option<Precision>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

impl Weights {
    /// Maps the weights in `dir`: `model.safetensors`, or the shards that
    /// `model.safetensors.index.json` lists, for loading as `options` say.
    ///
    /// On CPU, matrices are packed for the crate's own kernels and everything else (norms,
    /// activations, caches) is f32; elsewhere every tensor takes the precision's dtype.
    pub fn open(dir: &Path, options: &LoadOptions) -> Result<Self> {
        let device = options.device()?;
        let packing = match options.precision {
            other if device.is_cpu() => Some(other),
            Precision::F32 => None,
            Precision::Q8 => {
                return Err(Error::Unsupported(
                    "8-bit weights are implemented for the CPU only".into(),
                ))
            }
            Precision::Bf16 => None,
        };
        let dtype = if packing.is_some() {
            DType::F32
        } else {
            options.precision.dtype()
        };
        Self::open_with(dir, &device, dtype, packing)
    }

    fn open_with(
        dir: &Path,
        device: &Device,
        dtype: DType,
        packing: Option<Precision>,
    ) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let paths = if index_path.is_file() {
            shard_paths(&index_path, dir)?
        } else if single.is_file() {
            vec![single]
        } else {
            return Err(Error::io(
                &single,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model.safetensors or model.safetensors.index.json in the checkpoint directory",
                ),
            ));
        };
        let mut files = Vec::with_capacity(paths.len());
        let mut location = HashMap::new();
        for path in paths {
            let file = map_file(path)?;
            for name in file.metadata.tensors().keys() {
                location.insert(name.clone(), files.len());
            }
            files.push(file);
        }
        Ok(Weights {
            files,
            location,
            device: device.clone(),
            dtype,
            packing,
        })
    }

    /// Whether the checkpoint has a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// The compute dtype tensors are converted to.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// How sequences' key/value caches store their entries: like the weights (f32 for f32,
    /// the reference's precision; bf16 for bf16, as a bf16 reference does; 8 bits for 8-bit
    /// weights).
    pub fn kv_precision(&self) -> KvPrecision {
        match self.packing {
            Some(Precision::Q8) => KvPrecision::Q8,
            _ if self.computes_in_bf16() => KvPrecision::Bf16,
            _ => KvPrecision::F32,
        }
    }

    /// Whether the weights are bf16 (packed for the CPU kernels, or tensors elsewhere).
    fn computes_in_bf16(&self) -> bool {
        match self.packing {
            Some(packing) => packing == Precision::Bf16,
            None => self.dtype == DType::BF16,
        }
    }

    /// Whether matrices are loaded with [`Self::get_packed`] for the crate's kernels.
    pub fn packs_matrices(&self) -> bool {
        self.packing.is_some()
    }

    /// The device tensors are placed on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Fetches `name`, checking that its shape is `shape`, converted to the compute dtype.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (file, bytes, stored) = self.raw(name, shape)?;
        let tensor = Tensor::from_raw_buffer(bytes, stored, shape, &self.device)?;
        let tensor = tensor.to_dtype(self.dtype)?;
        file.release(bytes);
        Ok(tensor)
    }

    /// Fetches the matrix `name` of shape `(rows, cols)` packed for the precision.
    pub fn get_packed(&self, name: &str, rows: usize, cols: usize) -> Result<PackedMatrix> {
        let (file, bytes, stored) = self.raw(name, &[rows, cols])?;
        let matrix = match (self.packing, stored) {
            (Some(Precision::Bf16), DType::BF16) => {
                PackedMatrix::Bf16(Bf16Matrix::from_le_bytes(bytes, rows, cols))
            }
            // Converted element by element from the mapped bytes: no f32 copy of the whole
            // matrix (for the embeddings, more than the whole model in 8 bits) is held.
            (Some(Precision::Q8), _) => {
                PackedMatrix::Q8(Q8Matrix::from_fn(rows, cols, element(bytes, stored)))
            }
            (Some(Precision::F32), _) => {
                PackedMatrix::F32(F32Matrix::from_fn(rows, cols, element(bytes, stored)))
            }
            _ => PackedMatrix::Bf16(Bf16Matrix::from_fn(rows, cols, element(bytes, stored))),
        };
        file.release(bytes);
        Ok(matrix)
    }

    /// The matrix `name` of shape `(rows, cols)`, left in its file and read a row at a time,
    /// rounded as the precision rounds weights.
    pub fn get_rows(&self, name: &str, rows: usize, cols: usize) -> Result<FileRows> {
        let (file, bytes, stored) = self.raw(name, &[rows, cols])?;
        let offset = (bytes.as_ptr() as usize - file.map.as_ptr() as usize) as u64;
        Ok(FileRows::new(
            file.path.clone(),
            file.file.clone(),
            offset,
            (rows, cols),
            stored,
            match self.packing {
                Some(Precision::Q8) => Rounding::Q8,
                _ if self.computes_in_bf16() => Rounding::Bf16,
                _ => Rounding::Exact,
            },
        ))
    }

    /// The stored bytes of `name` after checking its shape and dtype.
    fn raw(&self, name: &str, shape: &[usize]) -> Result<(&WeightFile, &[u8], DType)> {
        let Some(&file_index) = self.location.get(name) else {
            let files = self
                .files
                .iter()
                .map(|f| f.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::MissingTensor {
                name: name.to_string(),
                files,
            });
        };
        let file = &self.files[file_index];
        let info = file
            .metadata
            .info(name)
            .ok_or_else(|| Error::MissingTensor {
                name: name.to_string(),
                files: file.path.display().to_string(),
            })?;
        if info.shape != shape {
            return Err(Error::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        let stored = match info.dtype {
            StDtype::BF16 => DType::BF16,
            StDtype::F16 => DType::F16,
            StDtype::F32 => DType::F32,
            other => {
                return Err(Error::TensorDtype {
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let (start, end) = info.data_offsets;
        Ok((
            file,
            &file.map[file.data_start + start..file.data_start + end],
            stored,
        ))
    }
}

impl WeightFile {
    /// Drops the pages of `bytes` (a slice of this file's map) from memory once they are
    /// copied: the model keeps its own converted copy, and without this the file's pages
    /// would stay resident too, doubling peak memory while loading. Unix only
    /// (`madvise`; memmap2 has no `UncheckedAdvice` elsewhere): on other systems the pages
    /// stay until the map is dropped after loading, which costs memory, not correctness.
    #[cfg(not(unix))]
    fn release(&self, _bytes: &[u8]) {}

    /// See the other `release`.
    #[cfg(unix)]
    fn release(&self, bytes: &[u8]) {
        let page = 4096;
        let offset = bytes.as_ptr() as usize - self.map.as_ptr() as usize;
        let start = offset.div_ceil(page) * page;
        let end = (offset + bytes.len()) / page * page;
        if end > start {
            // SAFETY: the map is a read-only shared mapping of a file; dropped pages are
            // read back from the file if touched again, so no data can be lost.
            let _ = unsafe {
                self.map
                    .unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }
}

/// Element `i` of a little-endian tensor stored as `stored`, widened to f32.
pub(super) fn element(bytes: &[u8], stored: DType) -> impl Fn(usize) -> f32 + Sync + '_ {
    move |i| match stored {
        DType::BF16 => half::bf16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32(),
        DType::F16 => f16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32(),
        _ => f32::from_le_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ]),
    }
}

fn shard_paths(index_path: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index_path).map_err(|e| Error::io(index_path, e))?;
    let index: ShardIndex = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: index_path.to_path_buf(),
        source,
    })?;
    let mut names: Vec<&String> = index.weight_map.values().collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(Error::config(index_path, "`weight_map` lists no files"));
    }
    names
        .into_iter()
        .map(|name| {
            // A shard name with a directory part could point outside the checkpoint.
            if name.contains('/') || name.contains('\\') || name == ".." {
                Err(Error::config(
                    index_path,
                    format!("shard name {name:?} is not a plain file name"),
                ))
            } else {
                Ok(dir.join(name))
            }
        })
        .collect()
}

fn map_file(path: PathBuf) -> Result<WeightFile> {
    let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
    // SAFETY: the map is read-only; the checkpoint files are not expected to change while
    // the model is loaded (the same assumption every mmap-based loader makes).
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
    let (header_len, metadata) =
        SafeTensors::read_metadata(&map).map_err(|e| Error::Safetensors {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    Ok(WeightFile {
        path,
        file: Arc::new(file),
        map,
        data_start: 8 + header_len,
        metadata,
    })
}
