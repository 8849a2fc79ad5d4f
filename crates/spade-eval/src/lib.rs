//! Scores synthesized images the way the SPADE paper does (Table 1).
//! * [`fid`] — the Fréchet Inception Distance exactly as pytorch-fid 0.3.0 computes it:
//!   file listing, decoding, resize, the FID Inception-v3, statistics and the distance.
//! * [`seg_metrics`] — mIoU, pixel accuracy and mean class accuracy of predicted label maps
//!   against the ground truth, accumulated over a whole set.

pub mod fid;
pub mod seg_metrics;
