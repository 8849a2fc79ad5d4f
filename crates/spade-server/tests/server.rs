//! The real server on an ephemeral port, driven over HTTP.

#[path = "../../spade-model/tests/common/mod.rs"]
mod common;

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use reqwest::{header, Client, StatusCode};
use spade_server::engine::{Engine, ModelEngine};
use spade_server::error::ApiError;
use spade_server::job::{Outcome, Task};
use spade_server::{RunningServer, ServerConfig};

fn config(models: &[(&str, &str)]) -> ServerConfig {
    let mut args = vec![
        "spade-server".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    for (name, case) in models {
        args.push("--model".into());
        args.push(format!("{name}={}", common::case(case).display()));
    }
    <ServerConfig as clap::Parser>::parse_from(args)
}

/// The VAE model running one request at a time (about a second each), `max_queue` waiting.
fn one_at_a_time(max_queue: usize) -> ServerConfig {
    let mut cfg = config(&[("vae", "vae_eval")]);
    cfg.max_batch_size = 1;
    cfg.max_batch_delay_ms = 0;
    cfg.max_queue = max_queue;
    cfg
}

/// The COCO fixture model served through `wrap(engine)`: failures injected into the engine.
async fn start_wrapped<E: Engine + 'static>(wrap: impl FnOnce(ModelEngine) -> E) -> RunningServer {
    start_wrapped_with(config(&[("coco", "gen_coco_eval")]), wrap).await
}

/// The models of `cfg` served through `wrap(engine)`.
async fn start_wrapped_with<E: Engine + 'static>(
    cfg: ServerConfig,
    wrap: impl FnOnce(ModelEngine) -> E,
) -> RunningServer {
    let specs = cfg.model_specs().unwrap();
    let (infos, weights) =
        spade_server::models::load(&specs, &[Device::Cpu], candle_core::DType::F32).unwrap();
    let engine: Arc<dyn Engine> = Arc::new(wrap(ModelEngine::new(weights)));
    spade_server::start_with_engine(cfg, infos, engine, 1)
        .await
        .unwrap()
}

/// Every batch takes at least `SLOW_BATCH` more: the overload tests need a worker that stays
/// busy for a known time, however fast the machine and the kernels are.
struct Slow(ModelEngine);

const SLOW_BATCH: Duration = Duration::from_secs(1);

impl Engine for Slow {
    fn run(&self, device: usize, model: usize, tasks: Vec<Task>) -> Vec<Result<Outcome, ApiError>> {
        std::thread::sleep(SLOW_BATCH);
        self.0.run(device, model, tasks)
    }
    fn warm_up(&self, device: usize) -> Result<(), ApiError> {
        self.0.warm_up(device)
    }
}

/// [`one_at_a_time`] on the [`Slow`] engine, ready.
async fn start_slow(
    max_queue: usize,
    adjust: impl FnOnce(&mut ServerConfig),
) -> (RunningServer, String) {
    let mut cfg = one_at_a_time(max_queue);
    adjust(&mut cfg);
    let server = start_wrapped_with(cfg, Slow).await;
    let base = format!("http://{}", server.addr);
    wait_ready(&base).await;
    (server, base)
}

async fn start(config: ServerConfig) -> (RunningServer, String) {
    let server = spade_server::start(config).await.expect("server starts");
    let base = format!("http://{}", server.addr);
    wait_ready(&base).await;
    (server, base)
}

async fn wait_ready(base: &str) {
    for _ in 0..600 {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await {
            if r.status() == StatusCode::OK {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server never became ready");
}

fn fixture(case: &str, file: &str) -> Vec<u8> {
    common::read(&common::case(case), file)
}

fn coco_label() -> Vec<u8> {
    fixture("gen_coco_eval", "label_0.png")
}

async fn post_png(client: &Client, url: &str, body: Vec<u8>) -> reqwest::Response {
    client
        .post(url)
        .header(header::CONTENT_TYPE, "image/png")
        .body(body)
        .send()
        .await
        .expect("request sent")
}

async fn healthy(base: &str) {
    let r = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

async fn metric(base: &str, line_prefix: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn png_bytes(img: image::DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn served_png_matches_the_reference_output() {
    let (server, base) = start(config(&[("coco", "gen_coco_eval")])).await;
    let client = Client::new();
    let form = reqwest::multipart::Form::new()
        .part("label", reqwest::multipart::Part::bytes(coco_label()))
        .part(
            "instance",
            reqwest::multipart::Part::bytes(fixture("gen_coco_eval", "instance_0.png")),
        );
    let r = client
        .post(format!("{base}/v1/synthesize"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["x-model"], "coco");
    assert!(r.headers()["server-timing"]
        .to_str()
        .unwrap()
        .contains("inference;dur="));
    let served = image::load_from_memory(&r.bytes().await.unwrap())
        .unwrap()
        .to_rgb8();

    let dir = common::case("gen_coco_eval");
    let expected = common::npy(&dir, "output.npy").narrow(0, 0, 1).unwrap();
    let expected = spade_model::io::preprocess::to_rgb8(&expected)
        .unwrap()
        .remove(0);
    assert_eq!(
        (served.width() as usize, served.height() as usize),
        (expected.width, expected.height)
    );
    let worst = served
        .as_raw()
        .iter()
        .zip(&expected.data)
        .map(|(a, b)| (i16::from(*a) - i16::from(*b)).abs())
        .max()
        .unwrap();
    assert!(
        worst <= 1,
        "served image differs from the reference by {worst} levels"
    );

    // The same mask as JSON with base64, answered as JSON.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({"label": b64.encode(coco_label()), "instance": b64.encode(fixture("gen_coco_eval", "instance_0.png"))});
    let r = client
        .post(format!("{base}/v1/synthesize"))
        .header(header::ACCEPT, "application/json")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let json: serde_json::Value = r.json().await.unwrap();
    let png = b64.decode(json["image"].as_str().unwrap()).unwrap();
    assert_eq!(image::load_from_memory(&png).unwrap().to_rgb8(), served);
    server.shutdown().await;
}

/// Sends `n` identical-shape requests at once and returns their batch sizes and bodies.
async fn burst(base: &str, bodies: Vec<(Vec<u8>, String)>) -> Vec<(usize, Vec<u8>)> {
    let client = Client::new();
    let futures = bodies.into_iter().map(|(body, query)| {
        let client = client.clone();
        let url = format!("{base}/v1/synthesize?{query}");
        async move {
            let r = post_png(&client, &url, body).await;
            assert_eq!(r.status(), StatusCode::OK);
            let batch: usize = r.headers()["x-batch-size"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (batch, r.bytes().await.unwrap().to_vec())
        }
    });
    futures::future::join_all(futures).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_share_batches_and_stay_deterministic() {
    let mut cfg = config(&[("coco", "gen_coco_eval"), ("vae", "vae_eval")]);
    cfg.max_batch_size = 4;
    cfg.max_batch_delay_ms = 400;
    let (server, base) = start(cfg).await;

    let alone = burst(&base, vec![(coco_label(), "seed=1".into())])
        .await
        .remove(0);
    assert_eq!(alone.0, 1);
    let other = fixture("vae_eval", "label_0.png");
    let mixed = burst(
        &base,
        vec![
            (other.clone(), "seed=9".into()),
            (coco_label(), "seed=1".into()),
            (other, "seed=2".into()),
        ],
    )
    .await;
    assert!(
        mixed.iter().all(|(batch, _)| *batch == 3),
        "batch sizes {:?}",
        mixed.iter().map(|m| m.0).collect::<Vec<_>>()
    );
    assert_eq!(
        mixed[1].1, alone.1,
        "the same mask must give the same bytes in any batch"
    );
    assert!(metric(&base, "spade_batch_size_sum").await >= 4.0);

    // VAE model: the seed decides the style, whatever shares the batch.
    let vae = fixture("vae_eval", "label_1.png");
    let single = burst(&base, vec![(vae.clone(), "model=vae&seed=5".into())])
        .await
        .remove(0);
    let pair = burst(
        &base,
        vec![
            (vae.clone(), "model=vae&seed=5".into()),
            (vae, "model=vae&seed=6".into()),
        ],
    )
    .await;
    assert_eq!(pair[0].0, 2);
    assert_eq!(pair[0].1, single.1);
    assert_ne!(pair[1].1, single.1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_timeout_and_cancellation() {
    let (server, base) = start_slow(2, |cfg| cfg.request_timeout = 0.25).await;
    let client = Client::new();
    let label = fixture("vae_eval", "label_0.png");
    let url = format!("{base}/v1/synthesize?model=vae");

    // One running (over a second), two queued, the rest refused at once.
    let requests = (0..8).map(|_| post_png(&client, &url, label.clone()));
    let responses = futures::future::join_all(requests).await;
    let statuses: Vec<StatusCode> = responses.iter().map(|r| r.status()).collect();
    let full: Vec<_> = responses
        .iter()
        .filter(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(full.len() >= 4, "statuses {statuses:?}");
    assert_eq!(full[0].headers()["retry-after"], "1");
    assert_eq!(
        full[0].headers()["content-type"],
        "application/problem+json"
    );
    // Queued work that could not start within 0.25 s.
    assert!(
        statuses.contains(&StatusCode::GATEWAY_TIMEOUT),
        "statuses {statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::OK), "statuses {statuses:?}");

    // A client that gives up: its queued job is dropped, not run.
    let busy = tokio::spawn({
        let (client, url, label) = (client.clone(), url.clone(), label.clone());
        async move { post_png(&client, &url, label).await.status() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let impatient = client
        .post(&url)
        .header(header::CONTENT_TYPE, "image/png")
        .body(label.clone())
        .timeout(Duration::from_millis(150))
        .send()
        .await;
    assert!(impatient.is_err());
    assert_eq!(busy.await.unwrap(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(metric(&base, "spade_rejections_total{reason=\"cancelled\"}").await >= 1.0);
    assert!(metric(&base, "spade_rejections_total{reason=\"queue_full\"}").await >= 4.0);
    healthy(&base).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_guard_v1_only() {
    let mut cfg = config(&[("coco", "gen_coco_eval")]);
    cfg.api_keys = vec!["s3cret".into()];
    let (server, base) = start(cfg).await;
    let client = Client::new();
    let url = format!("{base}/v1/models");
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = client.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client.get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .get(&url)
        .header("x-api-key", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Every credential presented must hold: a right token beside a wrong key (or a
    // credential of another scheme) is refused, not half-checked.
    for (name, value) in [("x-api-key", "wrong"), ("authorization", "Basic czNjcmV0")] {
        let r = client
            .get(&url)
            .bearer_auth("s3cret")
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}: {value}");
    }
    let r = client
        .get(&url)
        .bearer_auth("s3cret")
        .header("x-api-key", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = post_png(&client, &format!("{base}/v1/synthesize"), coco_label()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.yaml"] {
        assert_eq!(
            client
                .get(format!("{base}{open}"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK,
            "{open}"
        );
    }
    server.shutdown().await;
}

/// A PNG whose header claims `w x h` grey pixels, with no pixel data behind it.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32fast::hash(&ihdr).to_be_bytes());
    png.extend_from_slice(&[0, 0, 0, 0]);
    png.extend_from_slice(b"IEND");
    png.extend_from_slice(&crc32fast::hash(b"IEND").to_be_bytes());
    png
}

enum Body {
    Png(Vec<u8>),
    Typed(&'static str, Vec<u8>),
    Json(serde_json::Value),
    Form(Vec<(&'static str, Vec<u8>)>),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_inputs_get_clear_4xx_and_the_server_stays_healthy() {
    let mut cfg = config(&[("coco", "gen_coco_eval"), ("vae", "vae_eval")]);
    cfg.max_body_bytes = 1 << 20;
    let (server, base) = start(cfg).await;
    // The server closes a connection whose body it refused (413) without reading it, so
    // this test does not reuse connections.
    let client = Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let label = coco_label();
    let grey = |w, h, v: u8| {
        png_bytes(image::DynamicImage::ImageLuma8(
            image::GrayImage::from_pixel(w, h, image::Luma([v])),
        ))
    };
    let sixteen = png_bytes(image::DynamicImage::ImageLuma16(
        image::ImageBuffer::from_pixel(8, 8, image::Luma([3u16])),
    ));
    let grey_alpha = png_bytes(image::DynamicImage::ImageLumaA8(
        image::ImageBuffer::from_pixel(8, 8, image::LumaA([3u8, 255])),
    ));
    let odd_colour = png_bytes(image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
        8,
        8,
        image::Rgb([1, 2, 3]),
    )));
    let jpeg = fixture("preprocess_coco", "raw/val_img/000000000139.jpg");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&label);

    let cases: Vec<(&str, &str, Body, StatusCode, &str)> = vec![
        (
            "not a PNG",
            "",
            Body::Png(b"hello, world".to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a readable PNG",
        ),
        (
            "truncated PNG",
            "",
            Body::Png(label[..label.len() / 2].to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "label",
        ),
        (
            "16-bit label",
            "",
            Body::Png(sixteen),
            StatusCode::UNPROCESSABLE_ENTITY,
            "16-bit",
        ),
        (
            "grey+alpha label",
            "",
            Body::Png(grey_alpha),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expected a greyscale or palette PNG of ids",
        ),
        (
            "giant dimensions",
            "",
            Body::Png(png_header_only(100_000, 100_000)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "exceeds",
        ),
        (
            "empty body",
            "",
            Body::Png(Vec::new()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty",
        ),
        (
            "JPEG as label",
            "",
            Body::Typed("image/jpeg", jpeg.clone()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "PNG",
        ),
        (
            "unknown model",
            "model=nope",
            Body::Png(label.clone()),
            StatusCode::NOT_FOUND,
            "nope",
        ),
        (
            "out-of-range id",
            "",
            Body::Png(grey(8, 8, 200)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "id 200",
        ),
        (
            "colour not in palette",
            "",
            Body::Png(odd_colour),
            StatusCode::UNPROCESSABLE_ENTITY,
            "#010203",
        ),
        (
            "text body",
            "",
            Body::Typed("text/plain", b"sky".to_vec()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain",
        ),
        (
            "bad base64",
            "",
            Body::Json(serde_json::json!({"label": "@@@not base64@@@"})),
            StatusCode::BAD_REQUEST,
            "base64",
        ),
        (
            "invalid JSON",
            "",
            Body::Typed("application/json", b"{\"label\":".to_vec()),
            StatusCode::BAD_REQUEST,
            "JSON",
        ),
        (
            "JSON without label",
            "",
            Body::Json(serde_json::json!({"seed": 1})),
            StatusCode::BAD_REQUEST,
            "label",
        ),
        (
            "unknown JSON field",
            "",
            Body::Json(serde_json::json!({"label": b64, "colour": 1})),
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            "form without label",
            "",
            Body::Form(vec![("seed", b"1".to_vec())]),
            StatusCode::BAD_REQUEST,
            "label",
        ),
        (
            "negative seed",
            "seed=-1",
            Body::Png(label.clone()),
            StatusCode::BAD_REQUEST,
            "seed",
        ),
        (
            "bad format",
            "format=gif",
            Body::Png(label.clone()),
            StatusCode::BAD_REQUEST,
            "gif",
        ),
        (
            "width without height",
            "width=64",
            Body::Png(label.clone()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "height",
        ),
        (
            "huge output",
            "width=100000&height=10",
            Body::Png(label.clone()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "output size",
        ),
        (
            "latent on a non-VAE model",
            "latent=0.1,0.2",
            Body::Png(label.clone()),
            StatusCode::CONFLICT,
            "VAE",
        ),
        (
            "latent of wrong length",
            "model=vae&latent=0.1,0.2",
            Body::Png(grey(8, 8, 1)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "256",
        ),
        (
            "style photo not an image",
            "model=vae",
            Body::Form(vec![("label", grey(8, 8, 1)), ("style", b"nope".to_vec())]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "style",
        ),
        (
            "body over the limit",
            "",
            Body::Png(vec![0; 2 << 20]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large",
        ),
    ];
    assert!(cases.len() >= 20);
    println!("| input | status |\n|---|---|");
    for (name, query, body, status, needle) in cases {
        let url = format!("{base}/v1/synthesize?{query}");
        let request = match body {
            Body::Png(b) => client
                .post(&url)
                .header(header::CONTENT_TYPE, "image/png")
                .body(b),
            Body::Typed(t, b) => client.post(&url).header(header::CONTENT_TYPE, t).body(b),
            Body::Json(v) => client.post(&url).json(&v),
            Body::Form(parts) => {
                let form = parts
                    .into_iter()
                    .fold(reqwest::multipart::Form::new(), |f, (n, b)| {
                        f.part(n, reqwest::multipart::Part::bytes(b))
                    });
                client.post(&url).multipart(form)
            }
        };
        let r = request.send().await.unwrap();
        println!("| {name} | {} |", r.status().as_u16());
        assert_eq!(r.status(), status, "{name}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{name}"
        );
        let problem: serde_json::Value = r.json().await.unwrap();
        assert!(problem["type"]
            .as_str()
            .unwrap()
            .starts_with("https://spade.dev/problems/"));
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(needle),
            "{name}: `{detail}` should mention `{needle}`"
        );
        healthy(&base).await;
    }

    let r = client
        .post(format!("{base}/v1/encode-style?model=coco"))
        .header(header::CONTENT_TYPE, "image/jpeg")
        .body(jpeg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("no style encoder"));
    let r = client
        .get(format!("{base}/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // And it still serves.
    let r = post_png(&client, &format!("{base}/v1/synthesize"), grey(16, 16, 3)).await;
    assert_eq!(r.status(), StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn style_encoding_round_trips_into_synthesis() {
    let (server, base) = start(config(&[("vae", "vae_eval")])).await;
    let client = Client::new();
    let jpeg = fixture("preprocess_coco", "raw/val_img/000000000139.jpg");
    let r = client
        .post(format!("{base}/v1/encode-style?seed=4"))
        .header(header::CONTENT_TYPE, "image/jpeg")
        .body(jpeg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let style: serde_json::Value = r.json().await.unwrap();
    let latent: Vec<f32> = serde_json::from_value(style["latent"].clone()).unwrap();
    assert_eq!(latent.len(), 256);
    assert_eq!(style["mu"].as_array().unwrap().len(), 256);

    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({"label": b64.encode(fixture("vae_eval", "label_0.png")), "latent": latent, "fit": "mask", "format": "jpeg"});
    let r = client
        .post(format!("{base}/v1/synthesize"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    let img = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (256, 256));
    server.shutdown().await;
}

/// Delegates to the real engine, but panics on masks whose first pixel is id 7.
struct Flaky(ModelEngine);

impl Engine for Flaky {
    fn run(&self, device: usize, model: usize, tasks: Vec<Task>) -> Vec<Result<Outcome, ApiError>> {
        if let Some(Task::Synthesize(t)) = tasks.first() {
            assert_ne!(t.label.data[0], 7, "injected failure");
        }
        self.0.run(device, model, tasks)
    }
    fn warm_up(&self, device: usize) -> Result<(), ApiError> {
        self.0.warm_up(device)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_batch_fails_alone_and_the_worker_is_replaced() {
    let server = start_wrapped(Flaky).await;
    let base = format!("http://{}", server.addr);
    wait_ready(&base).await;
    let client = Client::new();
    let grey = |v: u8| {
        png_bytes(image::DynamicImage::ImageLuma8(
            image::GrayImage::from_pixel(16, 16, image::Luma([v])),
        ))
    };
    let url = format!("{base}/v1/synthesize");
    let r = post_png(&client, &url, grey(7)).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    for _ in 0..2 {
        assert_eq!(
            post_png(&client, &url, grey(3)).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(metric(&base, "spade_worker_restarts_total").await, 1.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_drains_in_flight_work() {
    let (server, base) = start(config(&[("vae", "vae_eval")])).await;
    let client = Client::new();
    let url = format!("{base}/v1/synthesize");
    let in_flight = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move {
            post_png(&client, &url, fixture("vae_eval", "label_0.png"))
                .await
                .status()
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = server.addr;
    server.shutdown().await;
    assert_eq!(in_flight.await.unwrap(), StatusCode::OK);
    assert!(Client::new()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openapi_spec_matches_the_served_routes() {
    let (server, base) = start(config(&[("coco", "gen_coco_eval")])).await;
    let served = reqwest::get(format!("{base}/openapi.yaml"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let file = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi.yaml"),
    )
    .unwrap();
    assert_eq!(served, file);

    // Every operation in the spec exists (no 404/405), and every route we serve is in it.
    let mut operations = Vec::new();
    let mut path = None;
    for line in file.lines() {
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = Some(format!("/{p}"));
        } else if let (Some(p), Some(m)) = (
            &path,
            line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')),
        ) {
            if ["get", "post"].contains(&m) {
                operations.push((p.clone(), m.to_string()));
            }
        } else if !line.starts_with(' ') {
            path = None;
        }
    }
    let expected = [
        ("/v1/synthesize", "post"),
        ("/v1/encode-style", "post"),
        ("/v1/models", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.yaml", "get"),
        ("/", "get"),
        ("/static/{file}", "get"),
    ];
    let mut listed: Vec<_> = operations
        .iter()
        .map(|(p, m)| (p.as_str(), m.as_str()))
        .collect();
    listed.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(listed, want);
    let client = Client::new();
    for (p, m) in expected {
        let p = p.replace("{file}", "app.js");
        let r = match m {
            "get" => client.get(format!("{base}{p}")).send().await.unwrap(),
            _ => client.post(format!("{base}{p}")).send().await.unwrap(),
        };
        assert!(
            ![StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&r.status()),
            "{m} {p}: {}",
            r.status()
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_flags_the_bundled_landscapes_model_is_served() {
    let (server, base) = start(config(&[])).await;
    let client = Client::new();
    let models: serde_json::Value = client
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let model = &models["models"][0];
    assert_eq!(model["name"], "landscapes");
    assert_eq!(model["default"], true);
    assert_eq!(model["has_encoder"], true);
    let classes = model["classes"].as_array().unwrap();
    let names: Vec<&str> = classes
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(&names[..3], ["sky", "cloud", "mountain"]);
    assert_eq!(classes[8]["color"], "#363ea7");

    // A colour-coded painting (the page's palette): sky above sea.
    let sky = [95, 219, 255];
    let sea = [54, 62, 167];
    let painted =
        image::RgbImage::from_fn(64, 64, |_, y| image::Rgb(if y < 32 { sky } else { sea }));
    let png = png_bytes(image::DynamicImage::ImageRgb8(painted));
    let url = format!("{base}/v1/synthesize?seed=3");
    let r = post_png(&client, &url, png.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-model"], "landscapes");
    let out = image::load_from_memory(&r.bytes().await.unwrap())
        .unwrap()
        .to_rgb8();
    assert_eq!(out.dimensions(), (256, 256));
    // Another style seed, another picture of the same map.
    let other = post_png(&client, &format!("{base}/v1/synthesize?seed=4"), png).await;
    let other = image::load_from_memory(&other.bytes().await.unwrap())
        .unwrap()
        .to_rgb8();
    assert_ne!(out.as_raw(), other.as_raw());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_origin_bearer_clients_and_router_errors_are_served_properly() {
    let mut cfg = config(&[("coco", "gen_coco_eval")]);
    cfg.api_keys = vec!["s3cret".into()];
    cfg.cors_origins = vec!["https://paint.example".into()];
    let (server, base) = start(cfg).await;
    let client = Client::new();
    let url = format!("{base}/v1/models");

    // A browser's preflight for a Bearer request from another origin.
    let r = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://paint.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");

    // The scheme is case-insensitive; the response headers are readable cross-origin.
    let r = client
        .get(&url)
        .header("origin", "https://paint.example")
        .header("authorization", "bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for name in ["x-seed", "x-model", "x-batch-size", "server-timing"] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
    let r = client
        .get(&url)
        .header("authorization", "Basic s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Router-level errors are problem+json too.
    let r = client
        .delete(&url)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], 405);
    let r = client
        .get(format!("{base}/static/%FF"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversize_declared_body_is_refused_before_it_is_sent() {
    use std::io::{Read, Write};
    let (server, base) = start(config(&[("coco", "gen_coco_eval")])).await;
    let addr = base.trim_start_matches("http://").to_string();
    for expect in ["", "Expect: 100-continue\r\n"] {
        let addr = addr.clone();
        let reply = tokio::task::spawn_blocking(move || {
            let mut socket = std::net::TcpStream::connect(&addr).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let head = format!(
                "POST /v1/synthesize HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n\
                 Content-Length: 1000000000\r\n{expect}\r\n"
            );
            socket.write_all(head.as_bytes()).unwrap();
            let mut reply = vec![0u8; 4096];
            let n = socket
                .read(&mut reply)
                .expect("answered without waiting for the body");
            String::from_utf8_lossy(&reply[..n]).to_string()
        })
        .await
        .unwrap();
        assert!(reply.starts_with("HTTP/1.1 413"), "{expect:?}: {reply}");
        assert!(!reply.contains("100 Continue"), "{reply}");
        assert!(reply.contains("application/problem+json"), "{reply}");
    }
    healthy(&base).await;
    server.shutdown().await;
}

/// A full queue refuses a request before its input is decoded: an undecodable body gets
/// 503 (queue full), not 422, while the queue is full, and 422 once it has room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admission_comes_before_decoding() {
    let (server, base) = start_slow(1, |_| ()).await;
    let client = Client::new();
    let label = fixture("vae_eval", "label_0.png");
    let url = format!("{base}/v1/synthesize?model=vae");
    let send = |body: Vec<u8>| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { post_png(&client, &url, body).await.status() })
    };
    // One running, one queued: the queue is full.
    let running = send(label.clone());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let queued = send(label.clone());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let garbage = b"\x89PNG\r\n\x1a\nnot really".to_vec();
    assert_eq!(
        send(garbage.clone()).await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(running.await.unwrap(), StatusCode::OK);
    assert_eq!(queued.await.unwrap(), StatusCode::OK);
    assert_eq!(
        send(garbage).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    server.shutdown().await;
}

/// Without a valid key no body is read or buffered: a request that declares 1000 bytes and
/// sends 10 is answered 401 at once, not after the body deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_are_read_only_after_the_key_check() {
    use std::io::{Read, Write};
    let mut cfg = config(&[("coco", "gen_coco_eval")]);
    cfg.api_keys = vec!["secret".into()];
    cfg.body_timeout = 30.0;
    let (server, base) = start(cfg).await;
    let addr = base.trim_start_matches("http://").to_string();
    let (reply, waited) = tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(&addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = std::time::Instant::now();
        let head = "POST /v1/synthesize HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n\
                    Content-Length: 1000\r\n\r\n0123456789";
        socket.write_all(head.as_bytes()).unwrap();
        let mut reply = vec![0u8; 4096];
        let n = socket
            .read(&mut reply)
            .expect("answered before the body is complete");
        (
            String::from_utf8_lossy(&reply[..n]).to_string(),
            started.elapsed(),
        )
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    server.shutdown().await;
}

/// Slow and idle clients are dropped: a socket that sends nothing or half a request line is
/// closed after `--header-timeout`, and a body that stalls gets 408 after `--body-timeout`;
/// meanwhile the server keeps answering others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_idle_clients_are_dropped() {
    use std::io::{Read, Write};
    let mut cfg = config(&[("coco", "gen_coco_eval")]);
    cfg.header_timeout = 0.5;
    cfg.body_timeout = 0.5;
    let (server, base) = start(cfg).await;
    let addr = base.trim_start_matches("http://").to_string();
    let cases = [
        ("idle", String::new()),
        ("half a request line", "POST /v1/synth".to_string()),
        (
            "stalled body",
            "POST /v1/synthesize HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n\
             Content-Length: 1000\r\n\r\n0123456789"
                .to_string(),
        ),
    ];
    for (what, sent) in cases {
        let addr = addr.clone();
        let (reply, waited) = tokio::task::spawn_blocking(move || {
            let mut socket = std::net::TcpStream::connect(&addr).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let started = std::time::Instant::now();
            socket.write_all(sent.as_bytes()).unwrap();
            let mut reply = Vec::new();
            // Ends when the server closes the connection (or the 10 s read timeout fails it).
            socket
                .read_to_end(&mut reply)
                .expect("the server closes the connection");
            (
                String::from_utf8_lossy(&reply).to_string(),
                started.elapsed(),
            )
        })
        .await
        .unwrap();
        assert!(
            waited < Duration::from_secs(5),
            "{what}: open for {waited:?}"
        );
        if what == "stalled body" {
            assert!(reply.starts_with("HTTP/1.1 408"), "{what}: {reply}");
            assert!(reply.contains("body-timeout"), "{what}: {reply}");
        } else {
            assert!(!reply.starts_with("HTTP/1.1 2"), "{what}: {reply}");
        }
        healthy(&base).await;
    }
    server.shutdown().await;
}

/// An engine whose warm-up fails, as a model that cannot run on its device does.
struct BrokenWarmUp(ModelEngine);

impl Engine for BrokenWarmUp {
    fn run(&self, device: usize, model: usize, tasks: Vec<Task>) -> Vec<Result<Outcome, ApiError>> {
        self.0.run(device, model, tasks)
    }
    fn warm_up(&self, _device: usize) -> Result<(), ApiError> {
        Err(ApiError::Internal("injected warm-up failure".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_warm_up_is_never_ready_and_start_up_reports_it() {
    let server = start_wrapped(BrokenWarmUp).await;
    let err = server.warmed_up().await.unwrap_err().to_string();
    assert!(err.contains("warm-up"), "{err}");
    let base = format!("http://{}", server.addr);
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "warm-up failed");
    healthy(&base).await;
    server.shutdown().await;
}
