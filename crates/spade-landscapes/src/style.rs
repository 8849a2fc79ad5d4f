//! Times of day and weather: the light, sky and haze a scene is rendered under. They are
//! what the style encoder of a `use_vae` model learns to tell apart.

use rand::Rng;

pub type Rgb = [f32; 3];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeOfDay {
    Noon,
    GoldenHour,
    Overcast,
    Dusk,
}

pub const TIMES_OF_DAY: [TimeOfDay; 4] = [
    TimeOfDay::Noon,
    TimeOfDay::GoldenHour,
    TimeOfDay::Overcast,
    TimeOfDay::Dusk,
];

/// Everything about the light of one scene; colours are linear RGB in [0, 1].
#[derive(Debug, Clone)]
pub struct Style {
    pub time: TimeOfDay,
    pub sky_top: Rgb,
    pub sky_horizon: Rgb,
    /// Sun position in screen terms: x in [-1, 1] (left to right), elevation in [0, 1].
    pub sun_x: f32,
    pub sun_elevation: f32,
    pub sun: Rgb,
    /// Strength of direct light on a surface facing the sun.
    pub diffuse: f32,
    pub ambient: Rgb,
    pub cloud_lit: Rgb,
    pub cloud_shadow: Rgb,
    /// Cloud cover: the noise threshold above which the sky is cloud (lower is cloudier).
    pub cloud_threshold: f32,
    /// Distance at which the ground is 63 % haze, in camera heights.
    pub haze_distance: f32,
    /// 1 keeps colours, 0 is grey.
    pub saturation: f32,
    /// Overall exposure.
    pub exposure: f32,
}

fn jitter(rng: &mut impl Rng, c: Rgb, amount: f32) -> Rgb {
    c.map(|v| (v * (1.0 + rng.random_range(-amount..amount))).clamp(0.0, 1.0))
}

impl Style {
    pub fn sample(rng: &mut impl Rng) -> Self {
        let time = TIMES_OF_DAY[rng.random_range(0..TIMES_OF_DAY.len())];
        let sun_x = rng.random_range(-0.9..0.9f32);
        let mut s = match time {
            TimeOfDay::Noon => Style {
                time,
                sky_top: [0.16, 0.38, 0.82],
                sky_horizon: [0.68, 0.82, 0.95],
                sun_x,
                sun_elevation: rng.random_range(0.6..0.95),
                sun: [1.0, 0.97, 0.9],
                diffuse: 0.65,
                ambient: [0.42, 0.46, 0.55],
                cloud_lit: [0.98, 0.98, 1.0],
                cloud_shadow: [0.66, 0.71, 0.8],
                cloud_threshold: rng.random_range(0.05..0.45),
                haze_distance: rng.random_range(90.0..160.0),
                saturation: 1.0,
                exposure: 1.0,
            },
            TimeOfDay::GoldenHour => Style {
                time,
                sky_top: [0.22, 0.34, 0.62],
                sky_horizon: [0.98, 0.7, 0.42],
                sun_x,
                sun_elevation: rng.random_range(0.05..0.25),
                sun: [1.0, 0.72, 0.42],
                diffuse: 0.75,
                ambient: [0.36, 0.3, 0.36],
                cloud_lit: [1.0, 0.76, 0.52],
                cloud_shadow: [0.48, 0.38, 0.46],
                cloud_threshold: rng.random_range(0.1..0.45),
                haze_distance: rng.random_range(70.0..120.0),
                saturation: 1.05,
                exposure: 0.95,
            },
            TimeOfDay::Overcast => Style {
                time,
                sky_top: [0.56, 0.58, 0.62],
                sky_horizon: [0.8, 0.8, 0.81],
                sun_x,
                sun_elevation: 0.5,
                sun: [1.0, 1.0, 1.0],
                diffuse: 0.12,
                ambient: [0.72, 0.73, 0.76],
                cloud_lit: [0.78, 0.78, 0.8],
                cloud_shadow: [0.5, 0.51, 0.55],
                cloud_threshold: rng.random_range(-0.25..0.0),
                haze_distance: rng.random_range(40.0..80.0),
                saturation: 0.7,
                exposure: 0.92,
            },
            TimeOfDay::Dusk => Style {
                time,
                sky_top: [0.08, 0.1, 0.3],
                sky_horizon: [0.8, 0.45, 0.48],
                sun_x,
                sun_elevation: 0.0,
                sun: [1.0, 0.5, 0.42],
                diffuse: 0.3,
                ambient: [0.2, 0.2, 0.32],
                cloud_lit: [0.8, 0.48, 0.52],
                cloud_shadow: [0.24, 0.2, 0.32],
                cloud_threshold: rng.random_range(0.1..0.5),
                haze_distance: rng.random_range(60.0..110.0),
                saturation: 0.95,
                exposure: 0.85,
            },
        };
        s.sky_top = jitter(rng, s.sky_top, 0.08);
        s.sky_horizon = jitter(rng, s.sky_horizon, 0.06);
        s.ambient = jitter(rng, s.ambient, 0.06);
        s
    }

    /// The sky at `height` above the horizon (0 at the horizon, 1 at the top of the frame)
    /// and horizontal position `x` in [-1, 1]: lighter toward the horizon, a glow round a
    /// low sun.
    pub fn sky(&self, height: f32, x: f32) -> Rgb {
        let t = height.clamp(0.0, 1.0).powf(0.6);
        let mut c = lerp(self.sky_horizon, self.sky_top, t);
        if matches!(
            self.time,
            TimeOfDay::GoldenHour | TimeOfDay::Dusk | TimeOfDay::Noon
        ) {
            let dx = x - self.sun_x;
            let dy = height - self.sun_elevation * 0.8;
            let glow = (-(dx * dx + dy * dy) * 6.0).exp()
                * if self.time == TimeOfDay::Noon {
                    0.15
                } else {
                    0.45
                };
            c = lerp(c, self.sun, glow);
        }
        c
    }

    /// Direct light on a surface with slope `facing` in [-1, 1] toward the sun (0: flat).
    pub fn light(&self, facing: f32) -> Rgb {
        let d = (self.diffuse * (0.55 + 0.45 * facing)).max(0.0);
        [0, 1, 2].map(|i| self.ambient[i] + self.sun[i] * d)
    }
}

pub fn lerp(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [0, 1, 2].map(|i| a[i] + (b[i] - a[i]) * t)
}

pub fn mul(a: Rgb, b: Rgb) -> Rgb {
    [0, 1, 2].map(|i| a[i] * b[i])
}

pub fn scale(a: Rgb, s: f32) -> Rgb {
    a.map(|v| v * s)
}
