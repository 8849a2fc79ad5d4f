//! spade-server: SPADE inference over HTTP.
//!
//! Request flow: [`request`] reads the body → [`validate`] checks it against the model →
//! [`queue`] holds it → [`worker`] threads take batches → [`engine`] runs the model and
//! encodes the image → [`routes`] answers, sharing the [`state`]. [`app`] wires it together.

pub mod app;
pub mod classes;
pub mod config;
pub mod engine;
pub mod error;
pub mod job;
pub mod metrics;
pub mod models;
pub mod page;
pub mod queue;
pub mod request;
pub mod routes;
pub mod state;
pub mod validate;
pub mod worker;

pub use app::{start, start_with_engine, RunningServer};
pub use config::ServerConfig;
