//! Training: everything only training needs — the losses, Adam, the data-parallel
//! transports, the official options and dataset layouts, one iteration ([`step::Trainer`])
//! and the `train.py` loop around it. Uses `nets`, `ops` and `io`; nothing else uses it.

pub mod collective;
pub mod dataset;
pub mod loss;
pub mod network;
pub mod optim;
pub mod options;
pub mod report;
pub mod run;
pub mod step;
