//! A request body as the server reads it (raw image, JSON with base64 images, or multipart
//! form) and its validation against a model: decoding of label, instance, colour and style
//! images included.
//!
//! Input layout: byte 0 picks the content type and the model, the bytes up to the first
//! newline are the query string, the rest is the body. Multipart bodies use the boundary
//! `fuzz`.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::LazyLock;

use axum::body::Body;
use axum::http::Request;
use common::LIMITS;
use libfuzzer_sys::fuzz_target;
use spade_model::io::preprocess::Preprocessor;
use spade_model::Config;
use spade_server::classes::ClassTable;
use spade_server::models::ModelInfo;
use spade_server::{request, validate};

const CONTENT_TYPES: [&str; 4] = [
    "image/png",
    "application/json",
    "multipart/form-data; boundary=fuzz",
    "application/octet-stream",
];

fn info(name: &str, config: Config) -> ModelInfo {
    ModelInfo {
        name: name.to_string(),
        classes: ClassTable::for_config(&config),
        has_encoder: config.use_vae,
        preprocessor: Preprocessor::new(&config),
        config,
    }
}

/// COCO-Stuff's architecture (instance maps, 182 classes + dontcare) and a small VAE model
/// without instance maps (latents and style images accepted).
static MODELS: LazyLock<[ModelInfo; 2]> = LazyLock::new(|| {
    let coco = Config::official("coco").expect("coco config");
    let vae = Config {
        label_nc: 12,
        contain_dontcare_label: false,
        no_instance: true,
        use_vae: true,
        z_dim: 8,
        crop_size: 64,
        load_size: 64,
        ..coco.clone()
    };
    vae.validate().expect("a valid VAE config");
    [info("coco", coco), info("vae", vae)]
});

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime")
});

fuzz_target!(|bytes: &[u8]| {
    let Some((&selector, rest)) = bytes.split_first() else {
        return;
    };
    let (query, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector & 3)];
    let model = &MODELS[usize::from(selector >> 2 & 1)];
    let encode = selector & 8 != 0;
    let path = if encode {
        "/v1/encode-style"
    } else {
        "/v1/synthesize"
    };
    let Ok(req) = Request::post(format!("{path}?{query}"))
        .header("content-type", content_type)
        .body(Body::from(body.to_vec()))
    else {
        return;
    };
    RUNTIME.block_on(async {
        if encode {
            if let Ok(upload) = request::read_style(req).await {
                let _ = validate::encode_style(model, &upload.image, 1, &LIMITS);
            }
        } else if let Ok(upload) = request::read_synthesize(req).await {
            let _ = validate::synthesize(model, upload, 1, &LIMITS);
        }
    });
});
