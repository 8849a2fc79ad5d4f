//! Training: the official `train.py` loop around [`step::Trainer`], with the official
//! options, dataset layouts and checkpoint folders.

pub mod dataset;
pub mod network;
pub mod options;
pub mod report;
pub mod run;
pub mod step;
