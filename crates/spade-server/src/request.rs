//! Reading request bodies in the three accepted forms: a raw image body with options in
//! the query string, `multipart/form-data`, or JSON with base64-encoded images.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine as _;
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;
use crate::job::ImageFormat;

/// How the output is sized when no explicit `width`/`height` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// The model's resolution (default).
    Model,
    /// Scaled back to the uploaded mask's size.
    Mask,
}

/// Options shared by every form (query string, form fields, JSON fields).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub model: Option<String>,
    pub seed: Option<u64>,
    #[serde(default, deserialize_with = "latent_list")]
    pub latent: Option<Vec<f32>>,
    #[serde(default, deserialize_with = "image_format")]
    pub format: Option<ImageFormat>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Option<Fit>,
}

#[derive(Debug)]
pub struct SynthesizeUpload {
    pub label: Bytes,
    pub instance: Option<Bytes>,
    pub style: Option<Bytes>,
    pub options: Options,
}

#[derive(Debug)]
pub struct StyleUpload {
    pub image: Bytes,
    pub options: Options,
}

/// Parsed body: named images and the options.
struct Parts {
    label: Option<Bytes>,
    instance: Option<Bytes>,
    style: Option<Bytes>,
    options: Options,
}

pub fn parse_query(query: Option<&str>) -> Result<Options, ApiError> {
    let query = query.unwrap_or("");
    let pairs = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    options_from_pairs(pairs)
}

pub async fn read_synthesize(req: Request) -> Result<SynthesizeUpload, ApiError> {
    let parts = read_parts(req, "label").await?;
    let label = parts
        .label
        .ok_or_else(|| ApiError::BadRequest("missing the `label` mask".into()))?;
    Ok(SynthesizeUpload {
        label,
        instance: parts.instance,
        style: parts.style,
        options: parts.options,
    })
}

pub async fn read_style(req: Request) -> Result<StyleUpload, ApiError> {
    let parts = read_parts(req, "image").await?;
    let image = parts
        .label
        .or(parts.style)
        .ok_or_else(|| ApiError::BadRequest("missing the `image` to encode".into()))?;
    Ok(StyleUpload {
        image,
        options: parts.options,
    })
}

async fn read_parts(req: Request, main_part: &str) -> Result<Parts, ApiError> {
    let query = parse_query(req.uri().query())?;
    let content_type = content_type(req.headers());
    let mut parts = match content_type.as_str() {
        "multipart/form-data" => read_multipart(req, main_part).await?,
        "application/json" => read_json(&body_bytes(req).await?, main_part)?,
        t if t.starts_with("image/") || t == "application/octet-stream" => Parts {
            label: Some(body_bytes(req).await?),
            instance: None,
            style: None,
            options: Options::default(),
        },
        "" => {
            return Err(ApiError::UnsupportedMediaType(
                "missing Content-Type: send image/png, multipart/form-data or application/json"
                    .into(),
            ))
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type `{other}` is not accepted: send image/png, multipart/form-data or \
                 application/json"
            )))
        }
    };
    merge(&mut parts.options, query);
    Ok(parts)
}

/// Query parameters fill what the body did not set.
fn merge(body: &mut Options, query: Options) {
    body.model = body.model.take().or(query.model);
    body.seed = body.seed.or(query.seed);
    body.latent = body.latent.take().or(query.latent);
    body.format = body.format.or(query.format);
    body.width = body.width.or(query.width);
    body.height = body.height.or(query.height);
    body.fit = body.fit.or(query.fit);
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

async fn body_bytes(req: Request) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(format!("cannot read the body: {e}"))
        }
    })
}

async fn read_multipart(req: Request<Body>, main_part: &str) -> Result<Parts, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(format!("invalid multipart body: {e}"))
        }
    };
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::BadRequest(format!("invalid multipart body: {e}")))?;
    let mut parts = Parts {
        label: None,
        instance: None,
        style: None,
        options: Options::default(),
    };
    let mut fields = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        let data = field.bytes().await.map_err(bad)?;
        match name.as_str() {
            n if n == main_part || n == "label" => parts.label = Some(data),
            "instance" => parts.instance = Some(data),
            "style" => parts.style = Some(data),
            _ => {
                let value = String::from_utf8(data.to_vec()).map_err(|_| {
                    ApiError::BadRequest(format!("form field `{name}` is not UTF-8 text"))
                })?;
                fields.push((name, value));
            }
        }
    }
    parts.options = options_from_pairs(fields)?;
    Ok(parts)
}

/// JSON form: images as base64 strings next to the options.
fn read_json(body: &[u8], main_part: &str) -> Result<Parts, ApiError> {
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| {
            ApiError::BadRequest(format!("invalid JSON body (expected an object): {e}"))
        })?;
    let mut image = |field: &str| match object.remove(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) => base64_image(field, &text).map(Some),
        Some(_) => Err(ApiError::BadRequest(format!(
            "`{field}` must be a base64 string"
        ))),
    };
    let label = match image(main_part)? {
        Some(bytes) => Some(bytes),
        None => image("label")?,
    };
    let instance = image("instance")?;
    let style = image("style")?;
    let options = serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| ApiError::BadRequest(format!("invalid option: {e}")))?;
    Ok(Parts {
        label,
        instance,
        style,
        options,
    })
}

fn base64_image(field: &str, text: &str) -> Result<Bytes, ApiError> {
    let text = text.split_once(";base64,").map_or(text, |(_, data)| data);
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map(Bytes::from)
        .map_err(|e| ApiError::BadRequest(format!("`{field}` is not valid base64: {e}")))
}

/// Options from `name=value` pairs (query string or form fields), via the same serde
/// definition as JSON so every form accepts and rejects the same fields.
fn options_from_pairs(pairs: Vec<(String, String)>) -> Result<Options, ApiError> {
    let mut map = serde_json::Map::new();
    for (key, value) in pairs {
        let json = match key.as_str() {
            "seed" | "width" | "height" => serde_json::from_str(&value)
                .ok()
                .filter(serde_json::Value::is_u64)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "`{key}` must be a non-negative integer, got `{value}`"
                    ))
                })?,
            _ => serde_json::Value::String(value),
        };
        map.insert(key, json);
    }
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| ApiError::BadRequest(format!("invalid option: {e}")))
}

/// `latent` as a JSON array, or a comma-separated list in a query or form field.
fn latent_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f32>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Latent {
        List(Vec<f32>),
        Text(String),
    }
    match Option::<Latent>::deserialize(d)? {
        None => Ok(None),
        Some(Latent::List(v)) => Ok(Some(v)),
        Some(Latent::Text(text)) => {
            let text = text.trim().trim_start_matches('[').trim_end_matches(']');
            text.split(',')
                .map(|v| v.trim().parse::<f32>())
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("latent: {e}")))
        }
    }
}

fn image_format<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ImageFormat>, D::Error> {
    match Option::<String>::deserialize(d)?.as_deref() {
        None => Ok(None),
        Some("png") => Ok(Some(ImageFormat::Png)),
        Some("jpeg") | Some("jpg") => Ok(Some(ImageFormat::Jpeg)),
        Some(other) => Err(serde::de::Error::custom(format!(
            "format `{other}`: expected png or jpeg"
        ))),
    }
}
