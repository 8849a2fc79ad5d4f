//! Everything the server is told at start, from flags or `SPADE_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use spade_model::Checkpoint;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "spade-server",
    version,
    about = "SPADE / GauGAN inference server"
)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = "SPADE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A model to serve, NAME=PATH (checkpoint folder with opt.txt, or converted
    /// .safetensors). Repeat for several; the first is the default. Without it the bundled
    /// landscapes model (built into the binary) is served as `landscapes`.
    #[arg(long = "model", env = "SPADE_MODELS", value_delimiter = ',')]
    pub models: Vec<String>,

    /// Devices to run workers on: `cpu`, or GPUs such as `cuda:0,cuda:1`.
    #[arg(
        long,
        env = "SPADE_DEVICES",
        value_delimiter = ',',
        default_value = "cpu"
    )]
    pub devices: Vec<String>,

    /// Compute precision of the models: f32; bf16 (GPUs, and CPUs with AMX or AVX512-BF16:
    /// products in bfloat16, the rest float32); f16 (half the memory; meant for GPUs).
    #[arg(long, env = "SPADE_DTYPE", default_value = "f32")]
    pub dtype: String,

    /// Worker threads per device, each running whole batches.
    #[arg(long, env = "SPADE_WORKERS_PER_DEVICE", default_value_t = 1)]
    pub workers_per_device: usize,

    /// Most requests of one model run together in one batch.
    #[arg(long, env = "SPADE_MAX_BATCH_SIZE", default_value_t = 8)]
    pub max_batch_size: usize,

    /// How long a batch waits for more requests after its first one.
    #[arg(long, env = "SPADE_MAX_BATCH_DELAY_MS", default_value_t = 10)]
    pub max_batch_delay_ms: u64,

    /// Requests waiting per model before new ones are refused with 503.
    #[arg(long, env = "SPADE_MAX_QUEUE", default_value_t = 64)]
    pub max_queue: usize,

    /// Seconds a request may wait for its work to start before it fails with 504.
    #[arg(long, env = "SPADE_REQUEST_TIMEOUT", default_value_t = 60.0)]
    pub request_timeout: f64,

    /// API key required on /v1/* (repeatable). Health, readiness and metrics stay open.
    #[arg(
        long = "api-key",
        env = "SPADE_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// File with one API key per line (blank lines and `#` comments ignored).
    #[arg(long, env = "SPADE_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Largest request body in bytes.
    #[arg(long, env = "SPADE_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Requests decoded and validated at once (each may take up to a few hundred MiB at
    /// --max-pixels); the others wait, holding their queue place.
    #[arg(long, env = "SPADE_MAX_DECODING", default_value_t = 4)]
    pub max_decoding: usize,

    /// Largest decoded input image (width x height) in pixels.
    #[arg(long, env = "SPADE_MAX_PIXELS", default_value_t = 4096 * 4096)]
    pub max_pixels: u64,

    /// Origins allowed by CORS (`*` for any). None by default.
    #[arg(
        long = "cors-origin",
        env = "SPADE_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Seconds a client has to send a request's headers; also how long an idle keep-alive
    /// connection stays open. Slower connections are closed.
    #[arg(long, env = "SPADE_HEADER_TIMEOUT", default_value_t = 10.0)]
    pub header_timeout: f64,

    /// Seconds a client has to send a whole request body; slower ones get 408.
    #[arg(long, env = "SPADE_BODY_TIMEOUT", default_value_t = 30.0)]
    pub body_timeout: f64,

    /// Seconds to finish in-flight work after SIGTERM before exiting.
    #[arg(long, env = "SPADE_SHUTDOWN_GRACE", default_value_t = 30.0)]
    pub shutdown_grace: f64,
}

/// One model to serve.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    pub source: ModelSource,
}

#[derive(Debug, Clone)]
pub enum ModelSource {
    /// `--model NAME=PATH`: a checkpoint folder or a converted file.
    Path(PathBuf),
    /// The landscapes model compiled into the binary.
    Bundled,
}

impl ModelSpec {
    pub fn open(&self) -> Result<Checkpoint> {
        let checkpoint = match &self.source {
            ModelSource::Path(path) => Checkpoint::open(path),
            ModelSource::Bundled => spade_landscapes::bundled::checkpoint(),
        };
        checkpoint.with_context(|| format!("model `{}`", self.name))
    }

    /// Where it comes from, for logs.
    pub fn location(&self) -> String {
        match &self.source {
            ModelSource::Path(path) => path.display().to_string(),
            ModelSource::Bundled => spade_landscapes::bundled::SOURCE.to_string(),
        }
    }
}

impl ServerConfig {
    /// The `--model`s, or the bundled landscapes model when there are none.
    pub fn model_specs(&self) -> Result<Vec<ModelSpec>> {
        if self.models.is_empty() {
            return Ok(vec![ModelSpec {
                name: spade_landscapes::bundled::NAME.to_string(),
                source: ModelSource::Bundled,
            }]);
        }
        let specs = self
            .models
            .iter()
            .map(|spec| {
                let (name, path) = spec
                    .split_once('=')
                    .with_context(|| format!("--model `{spec}`: expected NAME=PATH"))?;
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    bail!("--model `{spec}`: the name may use letters, digits, '-', '_' and '.'");
                }
                Ok(ModelSpec {
                    name: name.to_string(),
                    source: ModelSource::Path(PathBuf::from(path)),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for (i, spec) in specs.iter().enumerate() {
            if specs[..i].iter().any(|s| s.name == spec.name) {
                bail!("--model: the name `{}` is given twice", spec.name);
            }
        }
        Ok(specs)
    }

    /// Keys from `--api-key` and `--api-key-file` together.
    pub fn all_api_keys(&self) -> Result<Vec<String>> {
        let mut keys: Vec<String> = self
            .api_keys
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        if let Some(path) = &self.api_key_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading API keys from {}", path.display()))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        Ok(keys)
    }

    pub fn validate(&self) -> Result<()> {
        if self.workers_per_device == 0 || self.max_batch_size == 0 || self.max_queue == 0 {
            bail!("--workers-per-device, --max-batch-size and --max-queue must be at least 1");
        }
        if !(self.request_timeout > 0.0 && self.shutdown_grace >= 0.0) {
            bail!("--request-timeout must be positive and --shutdown-grace not negative");
        }
        if self.max_decoding == 0 {
            bail!("--max-decoding must be at least 1");
        }
        if !(self.header_timeout > 0.0 && self.body_timeout > 0.0) {
            bail!("--header-timeout and --body-timeout must be positive");
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout)
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.header_timeout)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.body_timeout)
    }

    pub fn max_batch_delay(&self) -> Duration {
        Duration::from_millis(self.max_batch_delay_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServerConfig {
        ServerConfig::parse_from(std::iter::once("spade-server").chain(args.iter().copied()))
    }

    #[test]
    fn model_specs_are_checked() {
        let ok = parse(&[
            "--model",
            "coco=/m/coco",
            "--model",
            "ade=/m/ade.safetensors",
        ]);
        let specs = ok.model_specs().unwrap();
        assert_eq!(
            (specs[0].name.as_str(), specs[1].name.as_str()),
            ("coco", "ade")
        );
        let bundled = parse(&[]).model_specs().unwrap();
        assert_eq!(bundled.len(), 1);
        assert_eq!(bundled[0].name, "landscapes");
        assert!(matches!(bundled[0].source, ModelSource::Bundled));
        for (bad, why) in [
            (vec!["--model", "/m/coco"], "NAME=PATH"),
            (vec!["--model", "co co=/m"], "letters"),
            (vec!["--model", "a=/x", "--model", "a=/y"], "twice"),
        ] {
            let err = parse(&bad).model_specs().unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn api_keys_come_from_flags_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "# team keys\nalpha\n\n  beta  \n").unwrap();
        let config = parse(&[
            "--api-key",
            "gamma",
            "--api-key-file",
            file.to_str().unwrap(),
        ]);
        assert_eq!(config.all_api_keys().unwrap(), ["gamma", "alpha", "beta"]);
        let missing = parse(&["--api-key-file", "/nonexistent/keys"]);
        assert!(missing
            .all_api_keys()
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/keys"));
    }

    #[test]
    fn zero_sizes_are_refused() {
        assert!(parse(&["--max-batch-size", "0"]).validate().is_err());
        assert!(parse(&["--request-timeout", "0"]).validate().is_err());
        assert!(parse(&["--max-decoding", "0"]).validate().is_err());
        assert!(parse(&["--header-timeout", "0"]).validate().is_err());
        assert!(parse(&["--body-timeout", "0"]).validate().is_err());
        assert!(parse(&[]).validate().is_ok());
    }
}
