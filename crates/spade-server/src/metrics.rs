//! Prometheus metrics of the service, rendered at `GET /metrics`.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub queue_wait: Histogram,
    pub inference: Histogram,
    pub batch_size: Histogram,
    pub queue_depth: IntGaugeVec,
    pub rejections: IntCounterVec,
    pub worker_restarts: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let seconds = || exponential_buckets(0.001, 2.0, 18).expect("valid buckets");
        let requests = IntCounterVec::new(
            Opts::new("spade_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("spade_request_duration_seconds", "HTTP request latency")
                .buckets(seconds()),
            &["route"],
        )
        .expect("valid metric");
        let queue_wait = Histogram::with_opts(
            HistogramOpts::new(
                "spade_queue_wait_seconds",
                "Time from enqueue to batch start",
            )
            .buckets(seconds()),
        )
        .expect("valid metric");
        let inference = Histogram::with_opts(
            HistogramOpts::new("spade_inference_seconds", "Model time per batch")
                .buckets(seconds()),
        )
        .expect("valid metric");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("spade_batch_size", "Requests per batch").buckets(vec![
                1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0,
            ]),
        )
        .expect("valid metric");
        let queue_depth = IntGaugeVec::new(
            Opts::new("spade_queue_depth", "Requests waiting per model"),
            &["model"],
        )
        .expect("valid metric");
        let rejections = IntCounterVec::new(
            Opts::new(
                "spade_rejections_total",
                "Requests not run: queue_full, timeout, cancelled, shutting_down",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let worker_restarts = IntCounter::new(
            "spade_worker_restarts_total",
            "Workers replaced after a panic",
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(queue_wait.clone()),
            Box::new(inference.clone()),
            Box::new(batch_size.clone()),
            Box::new(queue_depth.clone()),
            Box::new(rejections.clone()),
            Box::new(worker_restarts.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self {
            registry,
            requests,
            latency,
            queue_wait,
            inference,
            batch_size,
            queue_depth,
            rejections,
            worker_restarts,
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
