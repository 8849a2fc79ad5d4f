//! CPU custom ops that make the networks fast, one file per op or family, each a candle
//! `CustomOp` with its own tests. Nothing here knows SPADE's networks; it uses only `error`.
//!
//! Inference: [`conv::CpuConv2d`] (im2col + GEMM, or [`winograd`] for 3 x 3 kernels),
//! [`segmap::SegmapConv`] (`mlp_shared` on one-hot maps), [`modulate::Modulate`] (SPADE's
//! normalisation + modulation + leaky ReLU). Training: [`trainable_conv::TrainableConv`],
//! [`segmap_train::SegmapTrain`] (`mlp_shared` with its weight gradient by scatter),
//! [`modulate_train::ModulateTrain`] (SPADE's modulation with its gradient),
//! [`spectral::SpectralNormalize`] (spectral norm's division with its gradient), [`fused`]
//! (leaky ReLU and normalisations with hand-written gradients), [`all_reduce`]. Pooling with
//! padding left out of the window: [`pool`]; nearest upsampling by 2: [`upsample`] (both
//! with gradients).
//! Shared machinery: [`gemm`], [`gemm_bf16`] (bfloat16 products on AMX / AVX512-BF16), [`im2col`], [`scratch`], [`layout`], [`reduce`]; [`profile`] times them.

pub mod all_reduce;
pub mod conv;
pub mod fused;
pub mod gemm;
pub mod gemm_bf16;
pub mod im2col;
pub mod layout;
pub mod modulate;
pub mod modulate_train;
pub mod pool;
pub mod profile;
pub(crate) mod reduce;
pub mod scratch;
pub mod segmap;
pub mod segmap_train;
pub mod spectral;
pub mod trainable_conv;
pub mod upsample;
pub mod winograd;
