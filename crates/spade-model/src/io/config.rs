//! The options of the official code that shape the networks and the test-time input
//! pipeline, read from an official `opt.txt` or from JSON.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Network and preprocessing options, named as in the official `opt.txt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub label_nc: usize,
    pub contain_dontcare_label: bool,
    pub no_instance: bool,
    pub ngf: usize,
    pub z_dim: usize,
    pub use_vae: bool,
    pub crop_size: usize,
    pub load_size: usize,
    pub aspect_ratio: f64,
    pub num_upsampling_layers: Upsampling,
    #[serde(rename = "norm_G")]
    pub norm_g: GeneratorNorm,
    #[serde(rename = "norm_E")]
    pub norm_e: ConvNorm,
    pub preprocess_mode: PreprocessMode,
    pub dataset_mode: String,
    /// Derived from the fields above; when given it must agree with them.
    #[serde(skip_serializing)]
    pub semantic_nc: Option<usize>,
}

impl Default for Config {
    /// The official defaults for a COCO-Stuff SPADE model.
    fn default() -> Self {
        Self {
            label_nc: 182,
            contain_dontcare_label: true,
            no_instance: false,
            ngf: 64,
            z_dim: 256,
            use_vae: false,
            crop_size: 256,
            load_size: 256,
            aspect_ratio: 1.0,
            num_upsampling_layers: Upsampling::Normal,
            norm_g: "spectralspadesyncbatch3x3".parse().expect("valid default"),
            norm_e: "spectralinstance".parse().expect("valid default"),
            preprocess_mode: PreprocessMode::ResizeAndCrop,
            dataset_mode: "coco".to_string(),
            semantic_nc: None,
        }
    }
}

impl Config {
    /// Input channels of the generator: labels, then dontcare, then the instance edge.
    pub fn semantic_nc(&self) -> usize {
        self.label_nc + usize::from(self.contain_dontcare_label) + usize::from(!self.no_instance)
    }

    /// Channels of the one-hot label part (labels plus the dontcare class).
    pub fn label_channels(&self) -> usize {
        self.label_nc + usize::from(self.contain_dontcare_label)
    }

    /// Width and height of the generator's first feature map (`sw`, `sh`).
    pub fn latent_size(&self) -> (usize, usize) {
        let sw = self.crop_size >> self.num_upsampling_layers.count();
        let sh = round_half_even(sw as f64 / self.aspect_ratio);
        (sw, sh)
    }

    /// Height and width of the generated image.
    pub fn output_size(&self) -> (usize, usize) {
        let (sw, sh) = self.latent_size();
        let scale = 1 << self.num_upsampling_layers.count();
        (sh * scale, sw * scale)
    }

    /// The published architecture of an official pretrained model: `coco`, `ade20k` or
    /// `cityscapes` (the options of their released `opt.txt`).
    pub fn official(dataset: &str) -> Result<Self> {
        let base = Config {
            dataset_mode: dataset.to_string(),
            ..Config::default()
        };
        match dataset {
            "coco" => Ok(base),
            "ade20k" => Ok(Config {
                label_nc: 150,
                no_instance: true,
                ..base
            }),
            "cityscapes" => Ok(Config {
                label_nc: 35,
                contain_dontcare_label: false,
                crop_size: 512,
                load_size: 512,
                aspect_ratio: 2.0,
                num_upsampling_layers: Upsampling::More,
                preprocess_mode: PreprocessMode::Fixed,
                ..base
            }),
            other => Err(Error::config(
                "dataset_mode",
                format!("no official architecture named `{other}` (coco, ade20k, cityscapes)"),
            )),
        }
    }

    pub fn from_json_str(text: &str) -> Result<Self> {
        let config: Config =
            serde_json::from_str(text).map_err(|e| Error::config(json_field(&e), e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("config serialises")
    }

    /// Reads an official `opt.txt` (one `name: value` line per option, sorted by name).
    ///
    /// Options that do not shape the networks are ignored; options the file lacks keep the
    /// official defaults. The training `load_size` is replaced by `crop_size`: at test time
    /// the official datasets resize straight to the network's resolution.
    pub fn from_opt_txt(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse_opt_txt(&text)
    }

    pub fn parse_opt_txt(text: &str) -> Result<Self> {
        let options = parse_option_lines(text)?;
        let mut config = Config::default();
        let get = |key: &str| options.get(key).map(String::as_str);

        if let Some(mode) = get("dataset_mode") {
            config.dataset_mode = mode.to_string();
        }
        set_parsed(&mut config.label_nc, "label_nc", get("label_nc"))?;
        set_bool(
            &mut config.contain_dontcare_label,
            "contain_dontcare_label",
            get("contain_dontcare_label"),
        )?;
        set_bool(&mut config.no_instance, "no_instance", get("no_instance"))?;
        set_bool(&mut config.use_vae, "use_vae", get("use_vae"))?;
        set_parsed(&mut config.ngf, "ngf", get("ngf"))?;
        set_parsed(&mut config.z_dim, "z_dim", get("z_dim"))?;
        set_parsed(&mut config.crop_size, "crop_size", get("crop_size"))?;
        set_parsed(
            &mut config.aspect_ratio,
            "aspect_ratio",
            get("aspect_ratio"),
        )?;
        set_parsed(
            &mut config.num_upsampling_layers,
            "num_upsampling_layers",
            get("num_upsampling_layers"),
        )?;
        set_parsed(&mut config.norm_g, "norm_G", get("norm_G"))?;
        set_parsed(&mut config.norm_e, "norm_E", get("norm_E"))?;
        set_parsed(
            &mut config.preprocess_mode,
            "preprocess_mode",
            get("preprocess_mode"),
        )?;
        config.load_size = config.crop_size;
        if let Some(netg) = get("netG") {
            if netg != "spade" {
                return Err(Error::config(
                    "netG",
                    format!("only the `spade` generator is supported, got `{netg}`"),
                ));
            }
        }
        if let Some(nc) = get("output_nc") {
            if nc != "3" {
                return Err(Error::config(
                    "output_nc",
                    format!("expected 3 (RGB), got `{nc}`"),
                ));
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Rejects values the official networks cannot be built with, and sizes far beyond any
    /// published model (an `opt.txt` is as untrusted as the weights beside it: a huge
    /// `crop_size` or a tiny `aspect_ratio` would otherwise be an allocation of any size).
    pub fn validate(&self) -> Result<()> {
        let at_most = |field: &str, value: usize, max: usize| {
            if value > max {
                Err(Error::config(
                    field,
                    format!("{value} is more than the largest supported, {max}"),
                ))
            } else {
                Ok(())
            }
        };
        at_most("label_nc", self.label_nc, MAX_LABEL_NC)?;
        at_most("ngf", self.ngf, MAX_NGF)?;
        at_most("z_dim", self.z_dim, MAX_Z_DIM)?;
        at_most("crop_size", self.crop_size, MAX_SIDE)?;
        at_most("load_size", self.load_size, MAX_SIDE)?;
        if !(self.aspect_ratio.is_finite() && ASPECT_RATIO_RANGE.contains(&self.aspect_ratio)) {
            return Err(Error::config(
                "aspect_ratio",
                format!(
                    "must be a number from {} to {}, got {}",
                    ASPECT_RATIO_RANGE.start(),
                    ASPECT_RATIO_RANGE.end(),
                    self.aspect_ratio
                ),
            ));
        }
        if self.label_nc == 0 {
            return Err(Error::config("label_nc", "must be at least 1"));
        }
        if self.ngf == 0 {
            return Err(Error::config("ngf", "must be at least 1"));
        }
        if self.num_upsampling_layers == Upsampling::Most && self.ngf < 2 {
            return Err(Error::config(
                "ngf",
                "`most` upsampling halves ngf in its last block, so ngf must be at least 2",
            ));
        }
        if self.z_dim == 0 {
            return Err(Error::config("z_dim", "must be at least 1"));
        }
        let (sw, sh) = self.latent_size();
        if sw == 0 || sh == 0 {
            return Err(Error::config(
                "crop_size",
                format!(
                    "{} is too small for `{}` upsampling ({} doublings) at aspect ratio {}: \
                     the first feature map would be {sw}x{sh}",
                    self.crop_size,
                    self.num_upsampling_layers,
                    self.num_upsampling_layers.count(),
                    self.aspect_ratio
                ),
            ));
        }
        if self.load_size == 0 {
            return Err(Error::config("load_size", "must be at least 1"));
        }
        if let Some(given) = self.semantic_nc {
            if given != self.semantic_nc() {
                return Err(Error::config(
                    "semantic_nc",
                    format!(
                        "given as {given}, but label_nc {} + dontcare {} + instance {} = {}",
                        self.label_nc,
                        usize::from(self.contain_dontcare_label),
                        usize::from(!self.no_instance),
                        self.semantic_nc()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Largest `label_nc`: COCO-Stuff has 182, ADE20K 150.
pub const MAX_LABEL_NC: usize = 4096;
/// Largest `ngf`: the official models use 64; the weights grow with its square.
pub const MAX_NGF: usize = 1024;
pub const MAX_Z_DIM: usize = 4096;
/// Largest `crop_size` and `load_size`: the official models are 256 to 1024 wide.
pub const MAX_SIDE: usize = 4096;
/// Width over height: Cityscapes is 2.
pub const ASPECT_RATIO_RANGE: std::ops::RangeInclusive<f64> = 0.0625..=16.0;

/// Python's `round`: halves go to the even neighbour.
pub(crate) fn round_half_even(x: f64) -> usize {
    let r = x.round();
    let r = if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    };
    r.max(0.0) as usize
}

/// `name: value  [default: x]` lines into a map; the header and footer lines are skipped.
pub fn parse_option_lines(text: &str) -> Result<HashMap<String, String>> {
    let mut options = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('\t').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with("----") {
            continue;
        }
        let (key, value) = line.split_once(':').ok_or_else(|| {
            Error::config(
                format!("opt.txt line {}", number + 1),
                format!("expected `name: value`, got `{line}`"),
            )
        })?;
        options.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(options)
}

fn set_parsed<T: FromStr>(slot: &mut T, field: &str, value: Option<&str>) -> Result<()>
where
    T::Err: fmt::Display,
{
    if let Some(value) = value {
        *slot = value
            .parse()
            .map_err(|e| Error::config(field, format!("cannot parse `{value}`: {e}")))?;
    }
    Ok(())
}

fn set_bool(slot: &mut bool, field: &str, value: Option<&str>) -> Result<()> {
    match value {
        None => Ok(()),
        Some("True") | Some("true") => {
            *slot = true;
            Ok(())
        }
        Some("False") | Some("false") => {
            *slot = false;
            Ok(())
        }
        Some(other) => Err(Error::config(
            field,
            format!("expected True or False, got `{other}`"),
        )),
    }
}

/// The field a serde_json error is about, when its message names one.
fn json_field(error: &serde_json::Error) -> String {
    let message = error.to_string();
    message
        .split('`')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| "json".to_string())
}

/// Declares a string-valued option enum with its official spellings.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub enum $name { $($variant),+ }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(
                        "unknown value `{other}`, expected one of: {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$variant => $text),+ })
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> std::result::Result<Self, String> { s.parse() }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String { v.to_string() }
        }
    };
}

string_enum!(
    /// `num_upsampling_layers`: how many times the first feature map is doubled.
    Upsampling { Normal = "normal", More = "more", Most = "most" }
);

impl Upsampling {
    pub fn count(self) -> usize {
        match self {
            Upsampling::Normal => 5,
            Upsampling::More => 6,
            Upsampling::Most => 7,
        }
    }
}

string_enum!(
    /// `preprocess_mode` of the official data loaders.
    PreprocessMode {
        ResizeAndCrop = "resize_and_crop",
        Crop = "crop",
        ScaleWidth = "scale_width",
        ScaleWidthAndCrop = "scale_width_and_crop",
        ScaleShortside = "scale_shortside",
        ScaleShortsideAndCrop = "scale_shortside_and_crop",
        Fixed = "fixed",
        None = "none",
    }
);

/// Parameter-free normalisation inside SPADE and the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    Instance,
    /// `batch`, `syncbatch` and `sync_batch` compute the same on one device.
    Batch,
}

/// `norm_G`, e.g. `spectralspadesyncbatch3x3`: spectral norm on the residual convs, the
/// SPADE normalisation and the SPADE kernel size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GeneratorNorm {
    text: String,
    pub spectral: bool,
    pub norm: NormKind,
    pub kernel_size: usize,
}

impl FromStr for GeneratorNorm {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let spectral = s.contains("spectral");
        let spade = s.replace("spectral", "");
        let rest = spade.strip_prefix("spade").ok_or_else(|| {
            format!("`{s}`: expected [spectral]spade<norm><k>x<k>, e.g. spectralspadesyncbatch3x3")
        })?;
        let digits = rest
            .find(|c: char| c.is_ascii_digit())
            .ok_or_else(|| format!("`{s}`: no kernel size such as 3x3"))?;
        let (norm, kernel) = rest.split_at(digits);
        let norm = match norm {
            "instance" => NormKind::Instance,
            "batch" | "syncbatch" => NormKind::Batch,
            other => {
                return Err(format!(
                    "`{s}`: unknown SPADE normalisation `{other}` (instance, batch, syncbatch)"
                ))
            }
        };
        let kernel_size = match kernel.split_once('x') {
            Some((a, b)) if a == b && matches!(a, "1" | "3" | "5" | "7") => a.parse().unwrap(),
            _ => {
                return Err(format!(
                    "`{s}`: kernel `{kernel}` must be an odd square size such as 3x3"
                ))
            }
        };
        Ok(Self {
            text: s.to_string(),
            spectral,
            norm,
            kernel_size,
        })
    }
}

/// `norm_E` / `norm_D`, e.g. `spectralinstance`: spectral norm on the plain convs of the
/// encoder or discriminator and the norm after them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConvNorm {
    text: String,
    pub spectral: bool,
    /// `None` for `spectral` / `spectralnone`: the convs keep their bias.
    pub norm: Option<NormKind>,
}

impl FromStr for ConvNorm {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (spectral, sub) = match s.strip_prefix("spectral") {
            Some(sub) => (true, sub),
            None => (false, s),
        };
        let norm = match sub {
            "" | "none" => None,
            "instance" => Some(NormKind::Instance),
            "batch" | "sync_batch" => Some(NormKind::Batch),
            other => {
                return Err(format!(
                    "`{s}`: unknown normalisation `{other}` (instance, batch, sync_batch, none)"
                ))
            }
        };
        Ok(Self {
            text: s.to_string(),
            spectral,
            norm,
        })
    }
}

macro_rules! text_conversions {
    ($($name:ident),+) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.text)
            }
        }
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> std::result::Result<Self, String> { s.parse() }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String { v.text }
        }
    )+};
}

text_conversions!(GeneratorNorm, ConvNorm);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_round_is_half_even() {
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(3.5), 4);
        assert_eq!(round_half_even(2.4), 2);
        assert_eq!(round_half_even(0.5), 0);
    }

    #[test]
    fn norm_strings_parse_like_the_official_code() {
        let g: GeneratorNorm = "spectralspadesyncbatch3x3".parse().unwrap();
        assert!(g.spectral);
        assert_eq!((g.norm, g.kernel_size), (NormKind::Batch, 3));
        let g: GeneratorNorm = "spadeinstance5x5".parse().unwrap();
        assert!(!g.spectral);
        assert_eq!((g.norm, g.kernel_size), (NormKind::Instance, 5));
        assert!("spectralspadegroup3x3".parse::<GeneratorNorm>().is_err());
        assert!("spectralinstance".parse::<GeneratorNorm>().is_err());
        assert!("spadebatch3x5".parse::<GeneratorNorm>().is_err());
        let e: ConvNorm = "spectralinstance".parse().unwrap();
        assert_eq!((e.spectral, e.norm), (true, Some(NormKind::Instance)));
        assert_eq!("spectral".parse::<ConvNorm>().unwrap().norm, None);
        assert!("spectralgroup".parse::<ConvNorm>().is_err());
    }

    #[test]
    fn unknown_norm_in_opt_txt_names_the_field() {
        let err = Config::parse_opt_txt("norm_G: spectralspadelayer3x3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("norm_G") && text.contains("layer"), "{text}");
    }

    #[test]
    fn json_rejects_unknown_and_contradictory_fields() {
        let err = Config::from_json_str(r#"{"label_nc": 10, "colour": 3}"#).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = Config::from_json_str(r#"{"label_nc": 10, "semantic_nc": 10}"#).unwrap_err();
        assert!(err.to_string().contains("semantic_nc"), "{err}");
        let err = Config::from_json_str(r#"{"num_upsampling_layers": "many"}"#).unwrap_err();
        assert!(err.to_string().contains("many"), "{err}");
        let ok = Config::from_json_str(r#"{"label_nc": 10, "semantic_nc": 12}"#).unwrap();
        assert_eq!(ok.semantic_nc(), 12);
    }

    #[test]
    fn json_round_trips() {
        let config = Config {
            use_vae: true,
            norm_g: "spadeinstance5x5".parse().unwrap(),
            ..Config::default()
        };
        assert_eq!(Config::from_json_str(&config.to_json()).unwrap(), config);
    }

    #[test]
    fn too_small_crop_is_rejected() {
        let err = Config::parse_opt_txt("crop_size: 16\n").unwrap_err();
        assert!(err.to_string().contains("crop_size"), "{err}");
    }

    #[test]
    fn sizes_beyond_any_model_are_refused_before_allocating() {
        for (opt, field) in [
            ("crop_size: 100000000\n", "crop_size"),
            ("label_nc: 1000000\n", "label_nc"),
            ("ngf: 100000\n", "ngf"),
            ("z_dim: 99999999\n", "z_dim"),
            ("aspect_ratio: 0.0000001\n", "aspect_ratio"),
            ("aspect_ratio: 1e300\n", "aspect_ratio"),
            ("aspect_ratio: nan\n", "aspect_ratio"),
        ] {
            let err = Config::parse_opt_txt(opt).unwrap_err().to_string();
            assert!(err.contains(field), "{opt:?}: {err}");
        }
        // The largest official shape still loads.
        let city = Config::official("cityscapes").unwrap();
        city.validate().unwrap();
    }
}
