//! Turns one tensor's memory-mapped bytes into its loaded form on the CPU, splitting the work
//! *within* the tensor so that every core takes part even when a few large tensors dominate:
//! dense conversion in chunks written straight into the final buffer (one pass over the
//! mapped bytes, no intermediate tensor), ggml quantization in runs of whole blocks. Both
//! give exactly what candle's `to_dtype` and `QTensor::quantize` give for the same tensor.

use candle_core::quantized::k_quants::{BlockQ2K, BlockQ4K, BlockQ4_0, BlockQ8_0, GgmlType};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use half::vec::HalfBitsVecExt;
use half::{bf16, f16};
use rayon::prelude::*;
use safetensors::Dtype;

/// Elements one parallel task converts: large enough to amortise the task, small enough that a
/// tensor of a few MiB still splits across the cores and cancellation is noticed quickly.
const CHUNK: usize = 1 << 16;
/// Elements decoded at a time into a stack buffer (fits in L1 with its output).
const STRIP: usize = 1024;

/// Why a tensor could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("stored as {0:?}, which is not a float type")]
    NotFloat(Dtype),
    #[error("holds {got} bytes where its shape needs {want}")]
    Size { got: usize, want: usize },
    #[error("{0:?} is not a quantization the loader makes")]
    Unsupported(GgmlDType),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// `keep_going` answered false.
    #[error("stopped")]
    Stopped,
}

/// One float tensor as stored: its element type, shape and little-endian bytes.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

impl<'a> Source<'a> {
    pub fn new(dtype: Dtype, shape: &'a [usize], bytes: &'a [u8]) -> Result<Self, ConvertError> {
        let size = match dtype {
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
            other => return Err(ConvertError::NotFloat(other)),
        };
        let want = shape.iter().product::<usize>() * size;
        if bytes.len() != want {
            return Err(ConvertError::Size {
                got: bytes.len(),
                want,
            });
        }
        Ok(Source {
            dtype,
            shape,
            bytes,
        })
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn elem_size(&self) -> usize {
        self.bytes.len() / self.numel().max(1)
    }

    /// The bytes of elements `start..start + len`.
    fn range(&self, start: usize, len: usize) -> &'a [u8] {
        let size = self.elem_size();
        &self.bytes[start * size..(start + len) * size]
    }
}

/// Decodes little-endian stored elements into f32 (exact for f16 and bf16, rounded for f64, as
/// candle's `to_dtype(F32)` does). The mapped bytes need not be aligned, so they are read
/// through `from_le_bytes`, which compiles to plain (vectorised) loads.
fn decode_f32(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
            }
        }
        Dtype::F16 => {
            let mut bits = [0u16; STRIP];
            for (o, b) in out.chunks_mut(STRIP).zip(bytes.chunks(STRIP * 2)) {
                let bits = &mut bits[..o.len()];
                for (h, b) in bits.iter_mut().zip(b.chunks_exact(2)) {
                    *h = u16::from_le_bytes([b[0], b[1]]);
                }
                bits.reinterpret_cast::<f16>().convert_to_f32_slice(o);
            }
        }
        Dtype::F64 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                *o = f64::from_le_bytes(a) as f32;
            }
        }
        // `Source::new` admits float types only.
        _ => unreachable!("decode_f32 of a non-float type"),
    }
}

/// Writes `src`'s bytes, converted, into a 16-bit output chunk.
fn encode_16(src: Dtype, bytes: &[u8], out: &mut [u16], to: DType) {
    if (src == Dtype::F16 && to == DType::F16) || (src == Dtype::BF16 && to == DType::BF16) {
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *o = u16::from_le_bytes([b[0], b[1]]);
        }
        return;
    }
    let size = bytes.len() / out.len().max(1);
    let mut wide = [0f32; STRIP];
    for (o, b) in out.chunks_mut(STRIP).zip(bytes.chunks(STRIP * size)) {
        let wide = &mut wide[..o.len()];
        decode_f32(src, b, wide);
        match to {
            // F16C's rounding (to nearest, ties to even) is the same as `f16::from_f32`.
            DType::F16 => o.reinterpret_cast_mut::<f16>().convert_from_f32_slice(wide),
            _ => o
                .reinterpret_cast_mut::<bf16>()
                .convert_from_f32_slice(wide),
        }
    }
}

/// Asks Linux to back a large, still untouched buffer with 2 MiB pages. The buffer's first
/// writes fault its pages in; with 4 KiB pages that is one fault (and one zeroed page) per
/// 4 KiB, which costs more than the conversion itself — the load bench measured a plain copy
/// from the mapped file at about 0.45× a `read` of it with 4 KiB pages and 0.7× with huge
/// pages. The default `transparent_hugepage=madvise` gives them only to regions that ask.
fn prefer_huge_pages<T>(buf: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buf.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(buf);
        let (first, last) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if last > first {
            // SAFETY: the range lies inside `buf`, which this function borrows mutably;
            // MADV_HUGEPAGE only changes how the kernel backs the pages, never their contents.
            // Its result is ignored on purpose: without huge pages the load is only slower.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// Converts `src` into a dense CPU tensor of `to` (f32, f16 or bf16), chunks in parallel.
/// `keep_going(elements)` is called after each chunk with the elements it converted; once it
/// answers false the conversion stops.
pub fn to_dense(
    src: Source<'_>,
    to: DType,
    keep_going: &(dyn Fn(u64) -> bool + Sync),
) -> Result<Tensor, ConvertError> {
    let n = src.numel();
    let shape = src.shape.to_vec();
    let step = |len: usize| -> Result<(), ConvertError> {
        if keep_going(len as u64) {
            Ok(())
        } else {
            Err(ConvertError::Stopped)
        }
    };
    let t = match to {
        DType::F32 => {
            // `vec![0.0; n]` is a zeroed allocation: fresh pages, first written by the workers.
            let mut out = vec![0f32; n];
            prefer_huge_pages(&mut out);
            out.par_chunks_mut(CHUNK)
                .enumerate()
                .try_for_each(|(i, o)| {
                    decode_f32(src.dtype, src.range(i * CHUNK, o.len()), o);
                    step(o.len())
                })?;
            Tensor::from_vec(out, shape, &Device::Cpu)?
        }
        DType::F16 | DType::BF16 => {
            let mut out = vec![0u16; n];
            prefer_huge_pages(&mut out);
            out.par_chunks_mut(CHUNK)
                .enumerate()
                .try_for_each(|(i, o)| {
                    encode_16(src.dtype, src.range(i * CHUNK, o.len()), o, to);
                    step(o.len())
                })?;
            if to == DType::F16 {
                Tensor::from_vec(out.reinterpret_into::<f16>(), shape, &Device::Cpu)?
            } else {
                Tensor::from_vec(out.reinterpret_into::<bf16>(), shape, &Device::Cpu)?
            }
        }
        other => {
            return Err(candle_core::Error::Msg(format!("no dense conversion to {other:?}")).into())
        }
    };
    Ok(t)
}

/// Quantizes `src` (whose last dimension is a whole number of `dtype` blocks) into a CPU
/// `QTensor`, runs of whole blocks in parallel. Blocks never straddle rows and each block is
/// quantized from its own 32 or 256 values, so the result is bit for bit that of
/// `QTensor::quantize`. `keep_going` is as for [`to_dense`].
pub fn quantize(
    src: Source<'_>,
    dtype: GgmlDType,
    keep_going: &(dyn Fn(u64) -> bool + Sync),
) -> Result<QTensor, ConvertError> {
    let storage: Box<dyn candle_core::quantized::QuantizedType> = match dtype {
        GgmlDType::Q8_0 => Box::new(quantize_blocks::<BlockQ8_0>(src, keep_going)?),
        GgmlDType::Q4_0 => Box::new(quantize_blocks::<BlockQ4_0>(src, keep_going)?),
        GgmlDType::Q4K => Box::new(quantize_blocks::<BlockQ4K>(src, keep_going)?),
        GgmlDType::Q2K => Box::new(quantize_blocks::<BlockQ2K>(src, keep_going)?),
        other => return Err(ConvertError::Unsupported(other)),
    };
    Ok(QTensor::new(QStorage::Cpu(storage), src.shape)?)
}

fn quantize_blocks<T: GgmlType>(
    src: Source<'_>,
    keep_going: &(dyn Fn(u64) -> bool + Sync),
) -> Result<Vec<T>, ConvertError> {
    let n = src.numel();
    let inner = src.shape.last().copied().unwrap_or(0);
    if inner == 0 || inner % T::BLCK_SIZE != 0 {
        return Err(candle_core::Error::Msg(format!(
            "rows of {inner} do not divide into blocks of {}",
            T::BLCK_SIZE
        ))
        .into());
    }
    let per_task = (CHUNK / T::BLCK_SIZE).max(1);
    let mut blocks = vec![T::zeros(); n / T::BLCK_SIZE];
    blocks
        .par_chunks_mut(per_task)
        .enumerate()
        .try_for_each_init(
            || vec![0f32; per_task * T::BLCK_SIZE],
            |wide, (i, ys)| {
                let start = i * per_task * T::BLCK_SIZE;
                let len = ys.len() * T::BLCK_SIZE;
                let xs = &mut wide[..len];
                decode_f32(src.dtype, src.range(start, len), xs);
                T::from_float(xs, ys);
                if keep_going(len as u64) {
                    Ok(())
                } else {
                    Err(ConvertError::Stopped)
                }
            },
        )?;
    Ok(blocks)
}

/// Copies a CPU `QTensor` onto `device` (the same bytes; CUDA pads them as its kernels need).
pub fn quantized_onto(q: QTensor, device: &Device) -> Result<QTensor, ConvertError> {
    if device.is_cpu() {
        return Ok(q);
    }
    let storage = QStorage::from_data(q.data()?, device, q.dtype())?;
    Ok(QTensor::new(storage, q.shape().clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn always(_: u64) -> bool {
        true
    }

    /// Values with a spread of magnitudes, signs and a few exact zeros, so every block has
    /// its own scale.
    fn values(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = ((i * 7919) % 1013) as f32 / 1013.0 - 0.5;
                if i % 97 == 0 {
                    0.0
                } else {
                    x * (1.0 + (i % 13) as f32)
                }
            })
            .collect()
    }

    fn bytes_of(t: &Tensor) -> Vec<u8> {
        match t.dtype() {
            DType::F32 => t
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            DType::F16 => t
                .flatten_all()
                .unwrap()
                .to_vec1::<f16>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            DType::BF16 => t
                .flatten_all()
                .unwrap()
                .to_vec1::<bf16>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    fn stored(dtype: DType, shape: &[usize]) -> (Tensor, Vec<u8>) {
        let n = shape.iter().product();
        let t = Tensor::from_vec(values(n), shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let bytes = bytes_of(&t);
        (t, bytes)
    }

    fn st(dtype: DType) -> Dtype {
        match dtype {
            DType::F32 => Dtype::F32,
            DType::F16 => Dtype::F16,
            DType::BF16 => Dtype::BF16,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dense_conversion_matches_candles_to_dtype_for_every_pair() {
        // More than one chunk, and a ragged last chunk and strip.
        let shape = [3, CHUNK / 2 + 77];
        for from in [DType::F32, DType::F16, DType::BF16] {
            let (t, bytes) = stored(from, &shape);
            for to in [DType::F32, DType::F16, DType::BF16] {
                let src = Source::new(st(from), &shape, &bytes).unwrap();
                let got = to_dense(src, to, &always).unwrap();
                let want = t.to_dtype(to).unwrap();
                assert_eq!(got.dims(), &shape);
                assert_eq!(got.dtype(), to);
                assert_eq!(bytes_of(&got), bytes_of(&want), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn row_block_quantization_is_bit_identical_to_qtensor_quantize() {
        // Q8_0 and Q4_0 over 32-wide blocks, the k-quants over 256: rows of 512 hold whole
        // blocks of both, and 300 rows make several tasks with a short last one.
        let shape = [300, 512];
        for from in [DType::F32, DType::BF16, DType::F16] {
            let (t, bytes) = stored(from, &shape);
            for q in [
                GgmlDType::Q8_0,
                GgmlDType::Q4_0,
                GgmlDType::Q4K,
                GgmlDType::Q2K,
            ] {
                let src = Source::new(st(from), &shape, &bytes).unwrap();
                let got = quantize(src, q, &always).unwrap();
                let want = QTensor::quantize(&t, q).unwrap();
                assert_eq!(got.shape(), want.shape());
                assert_eq!(got.dtype(), want.dtype());
                assert!(
                    got.data().unwrap() == want.data().unwrap(),
                    "{from:?} -> {q:?} differs"
                );
            }
        }
    }

    #[test]
    fn a_stop_request_ends_the_conversion() {
        let shape = [4, CHUNK];
        let (_, bytes) = stored(DType::BF16, &shape);
        let src = Source::new(Dtype::BF16, &shape, &bytes).unwrap();
        let stop = |_: u64| false;
        assert!(matches!(
            to_dense(src, DType::F16, &stop),
            Err(ConvertError::Stopped)
        ));
        assert!(matches!(
            quantize(src, GgmlDType::Q4K, &stop),
            Err(ConvertError::Stopped)
        ));
    }

    #[test]
    fn sizes_that_disagree_with_the_shape_are_refused() {
        let bytes = [0u8; 10];
        assert!(matches!(
            Source::new(Dtype::F32, &[3], &bytes),
            Err(ConvertError::Size { got: 10, want: 12 })
        ));
        assert!(matches!(
            Source::new(Dtype::I64, &[1], &bytes[..8]),
            Err(ConvertError::NotFloat(Dtype::I64))
        ));
    }

    #[test]
    fn rows_that_miss_the_block_are_refused() {
        let shape = [2, 96];
        let (_, bytes) = stored(DType::F32, &shape);
        let src = Source::new(Dtype::F32, &shape, &bytes).unwrap();
        assert!(quantize(src, GgmlDType::Q4K, &always).is_err());
        assert!(quantize(src, GgmlDType::Q4_0, &always).is_ok());
    }
}
