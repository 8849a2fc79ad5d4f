//! Training: the official `train.py` loop around [`step::Trainer`], with the official
//! options, dataset layouts and checkpoint folders.

pub mod network;
pub mod options;
pub mod step;
