//! The layout of one landscape: which class every pixel is, and what the renderer needs to
//! know about it (distance, haze, which way it faces). Everything lives in one frame: a
//! pinhole camera one unit above flat ground looking at the horizon; mountains and hills
//! are silhouettes above the horizon, trees and bushes are sprites standing on the ground,
//! drawn far to near so nearer things occlude farther ones.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::classes::*;
use crate::noise::Noise;
use crate::style::Style;

/// What lies below the horizon.
#[derive(Debug, Clone, Copy)]
pub enum Ground {
    /// Sea on one side of a shoreline that runs to the horizon, a beach along it.
    Coast {
        side: f32,
        shore: f32,
        beach: f32,
    },
    /// Land in front, a beach, then open sea to the horizon.
    Beach {
        shore_depth: f32,
        beach: f32,
    },
    /// Meadow with lakes (noise blobs above `threshold`), sometimes with sandy banks.
    Lake {
        threshold: f32,
        bank: f32,
    },
    /// Meadow with a river winding toward the horizon.
    River {
        centre: f32,
        width: f32,
    },
    Meadow,
}

/// A mountain range: a ridged silhouette above the horizon.
#[derive(Debug, Clone)]
pub struct Range {
    /// Height of the highest peaks above the horizon, in pixels.
    pub amplitude: f32,
    pub frequency: f32,
    pub offset: f32,
    /// Aerial perspective: how much of the haze colour covers it.
    pub haze: f32,
    /// Fraction of `amplitude` above which there is snow (above 1: none).
    pub snow_line: f32,
    /// Rock outcrops: the noise threshold above which the slope is bare rock.
    pub rock_threshold: f32,
    pub tint: [f32; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpriteKind {
    Conifer,
    Broadleaf,
    Bush,
}

/// A tree or bush standing on the ground.
#[derive(Debug, Clone, Copy)]
pub struct Sprite {
    pub kind: SpriteKind,
    /// Screen position of the foot, pixels.
    pub x: f32,
    pub foot: f32,
    pub height: f32,
    pub width: f32,
    /// Distance from the camera, camera heights.
    pub depth: f32,
    pub seed: u32,
}

/// Per-pixel facts the renderer uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Aux {
    /// Ground distance (camera heights) for ground and sprites; 0 above the horizon.
    pub depth: f32,
    /// How much haze covers the pixel, in [0, 1].
    pub haze: f32,
    /// Facing toward the sun in [-1, 1] (sprites: which side of the crown).
    pub shade: f32,
    /// Class-specific: cloud density, mountain range index, sprite kind and seed.
    pub misc: f32,
}

pub struct Scene {
    pub size: usize,
    /// Horizon row, pixels from the top.
    pub horizon: f32,
    pub style: Style,
    pub ground: Ground,
    pub ranges: Vec<Range>,
    /// Height of rolling hills above the horizon, pixels (0: none).
    pub hills: f32,
    /// 0: lush green grass, 1: dry yellow.
    pub dryness: f32,
    pub dirt_threshold: f32,
    pub rock_threshold: f32,
    pub sprites: Vec<Sprite>,
    pub seed: u32,
}

/// The farthest ground distance considered; rows closer to the horizon alias anyway.
const MAX_DEPTH: f32 = 300.0;

impl Scene {
    pub fn sample(rng: &mut ChaCha8Rng, size: usize) -> Self {
        let s = size as f32;
        let style = Style::sample(rng);
        let seed: u32 = rng.random();
        let ground = match rng.random_range(0..100) {
            0..22 => Ground::Coast {
                side: if rng.random_bool(0.5) { 1.0 } else { -1.0 },
                shore: rng.random_range(-2.5..2.5),
                beach: rng.random_range(0.3..1.5),
            },
            22..42 => Ground::Beach {
                shore_depth: rng.random_range(5.0..30.0),
                beach: rng.random_range(1.0..6.0),
            },
            42..62 => Ground::Lake {
                threshold: rng.random_range(0.15..0.35),
                bank: if rng.random_bool(0.5) {
                    rng.random_range(0.03..0.08)
                } else {
                    0.0
                },
            },
            62..80 => Ground::River {
                centre: rng.random_range(-2.0..2.0),
                width: rng.random_range(0.4..1.2),
            },
            _ => Ground::Meadow,
        };
        let n_ranges = match rng.random_range(0..10) {
            0..2 => 0,
            2..6 => 1,
            _ => 2,
        };
        let mut ranges: Vec<Range> = (0..n_ranges)
            .map(|i| {
                let far = i == 0 && n_ranges == 2;
                let amplitude = s * if far {
                    rng.random_range(0.12..0.3)
                } else {
                    rng.random_range(0.06..0.22)
                };
                let brown = rng.random_range(0.0..1.0f32);
                Range {
                    amplitude,
                    frequency: rng.random_range(1.5..4.0),
                    offset: rng.random_range(0.0..100.0),
                    haze: if far {
                        rng.random_range(0.45..0.7)
                    } else {
                        rng.random_range(0.15..0.45)
                    },
                    snow_line: if rng.random_bool(0.65) {
                        rng.random_range(0.45..0.85)
                    } else {
                        1.5
                    },
                    rock_threshold: if rng.random_bool(0.6) {
                        rng.random_range(0.15..0.45)
                    } else {
                        2.0
                    },
                    tint: [0.3 + 0.12 * brown, 0.3 + 0.04 * brown, 0.36 - 0.08 * brown],
                }
            })
            .collect();
        // Nearer ranges are lower on screen; keep far first.
        ranges.sort_by(|a, b| b.haze.total_cmp(&a.haze));
        let hills = match ground {
            Ground::Beach { .. } => 0.0,
            _ if rng.random_bool(0.55) => s * rng.random_range(0.02..0.08),
            _ => 0.0,
        };
        let mut scene = Scene {
            size,
            horizon: s * rng.random_range(0.35..0.6),
            style,
            ground,
            ranges,
            hills,
            dryness: rng.random_range(0.0..0.7f32).powi(2),
            dirt_threshold: rng.random_range(0.25..0.7),
            rock_threshold: if rng.random_bool(0.3) {
                rng.random_range(0.45..0.65)
            } else {
                2.0
            },
            sprites: Vec::new(),
            seed,
        };
        scene.sprites = scene.sample_sprites(rng);
        scene
    }

    fn noise(&self, k: u32) -> Noise {
        Noise::new(self.seed.wrapping_add(k.wrapping_mul(0x632b_e5ab)))
    }

    /// Ground distance and lateral position of pixel (x, y) below the horizon.
    pub fn ground_point(&self, x: f32, y: f32) -> (f32, f32) {
        let f = self.size as f32;
        let depth = (f / (y - self.horizon).max(f / MAX_DEPTH)).min(MAX_DEPTH);
        ((x - f / 2.0) / f * depth, depth)
    }

    /// The class of the ground at lateral position `u`, distance `z`.
    pub fn ground_class(&self, u: f32, z: f32) -> u8 {
        match self.ground {
            Ground::Coast { side, shore, beach } => {
                let c = shore + 3.0 * self.noise(1).fbm1(z / 8.0, 3);
                let d = side * (u - c);
                if d < 0.0 {
                    SEA
                } else if d < beach * (1.0 + 0.5 * self.noise(2).fbm(u, z, 2)) {
                    SAND
                } else {
                    self.land(u, z)
                }
            }
            Ground::Beach { shore_depth, beach } => {
                let shore = shore_depth * (1.0 + 0.3 * self.noise(1).fbm1(u / 6.0, 3));
                if z > shore {
                    SEA
                } else if z > shore - beach * (1.0 + 0.4 * self.noise(2).fbm(u / 2.0, z, 2)) {
                    SAND
                } else {
                    self.land(u, z)
                }
            }
            Ground::Lake { threshold, bank } => {
                let v = self.noise(1).fbm(u / 5.0, z / 5.0, 3);
                if v > threshold {
                    WATER
                } else if v > threshold - bank {
                    SAND
                } else {
                    self.land(u, z)
                }
            }
            Ground::River { centre, width } => {
                let r = centre + 4.0 * self.noise(1).fbm1(z / 10.0, 3);
                if (u - r).abs() < width * (1.0 + 0.2 * self.noise(2).fbm1(z, 2)) {
                    WATER
                } else {
                    self.land(u, z)
                }
            }
            Ground::Meadow => self.land(u, z),
        }
    }

    fn land(&self, u: f32, z: f32) -> u8 {
        if self.noise(3).fbm(u / 3.0, z / 3.0, 3) > self.dirt_threshold {
            DIRT
        } else if self.noise(4).fbm(u * 0.8, z * 0.8, 2) > self.rock_threshold {
            ROCK
        } else {
            GRASS
        }
    }

    fn sample_sprites(&self, rng: &mut ChaCha8Rng) -> Vec<Sprite> {
        let s = self.size as f32;
        let clusters = match self.ground {
            Ground::Beach { .. } | Ground::Coast { .. } => rng.random_range(0..4),
            _ => rng.random_range(1..8),
        };
        let mut sprites = Vec::new();
        for _ in 0..clusters {
            let kind = match rng.random_range(0..100) {
                0..40 => SpriteKind::Conifer,
                40..85 => SpriteKind::Broadleaf,
                _ => SpriteKind::Bush,
            };
            let zc = (rng.random_range(3.0f32.ln()..60.0f32.ln())).exp();
            let uc = rng.random_range(-0.45..0.45) * zc;
            let spread = rng.random_range(0.5..2.5) * (1.0 + zc / 20.0);
            let tall = match kind {
                SpriteKind::Conifer => rng.random_range(1.0..2.2),
                SpriteKind::Broadleaf => rng.random_range(0.7..1.6),
                SpriteKind::Bush => rng.random_range(0.2..0.45),
            };
            for _ in 0..rng.random_range(3..16) {
                let u = uc + spread * (rng.random::<f32>() * 2.0 - 1.0);
                let z = (zc + spread * (rng.random::<f32>() * 2.0 - 1.0)).max(2.2);
                let under = self.ground_class(u, z);
                let fits =
                    matches!(under, GRASS | DIRT) || (kind == SpriteKind::Bush && under == SAND);
                let height = s * tall * rng.random_range(0.8..1.2) / z;
                if !fits || height < 2.0 {
                    continue;
                }
                let width = height
                    * match kind {
                        SpriteKind::Conifer => rng.random_range(0.35..0.55),
                        SpriteKind::Broadleaf => rng.random_range(0.6..0.95),
                        SpriteKind::Bush => rng.random_range(1.3..2.0),
                    };
                sprites.push(Sprite {
                    kind,
                    x: s / 2.0 + s * u / z,
                    foot: self.horizon + s / z,
                    height,
                    width,
                    depth: z,
                    seed: rng.random(),
                });
            }
        }
        sprites.sort_by(|a, b| b.depth.total_cmp(&a.depth));
        sprites
    }

    fn ridge(&self, range: usize, x: f32) -> f32 {
        let r = &self.ranges[range];
        let xn = x / self.size as f32;
        self.horizon
            - r.amplitude
                * (0.2
                    + 0.8
                        * self
                            .noise(10 + range as u32)
                            .ridged1(xn * r.frequency + r.offset, 5))
    }

    fn ground_haze(&self, depth: f32) -> f32 {
        1.0 - (-depth / self.style.haze_distance).exp()
    }

    /// The top row of the rolling hills in each column. The hills stand on land: where the
    /// ground just below the horizon is sea they are absent, rising over `0.08 * size`
    /// columns from the nearest sea column.
    fn hill_tops(&self) -> Vec<f32> {
        let n = self.size;
        let s = n as f32;
        let sea_at_horizon: Vec<bool> = (0..n)
            .map(|x| {
                let (u, z) = self.ground_point(x as f32 + 0.5, self.horizon + 1.5);
                self.ground_class(u, z) == SEA
            })
            .collect();
        // Distance to the nearest sea column: one pass from each side.
        let mut sea_distance = vec![f32::INFINITY; n];
        let mut last = None;
        for x in 0..n {
            if sea_at_horizon[x] {
                last = Some(x);
            }
            if let Some(l) = last {
                sea_distance[x] = (x - l) as f32;
            }
        }
        last = None;
        for x in (0..n).rev() {
            if sea_at_horizon[x] {
                last = Some(x);
            }
            if let Some(l) = last {
                sea_distance[x] = sea_distance[x].min((l - x) as f32);
            }
        }
        let ramp = (0.08 * s).max(1.0);
        let hill_noise = self.noise(21);
        (0..n)
            .map(|x| {
                let xc = x as f32 + 0.5;
                let scale = (sea_distance[x] / ramp).min(1.0);
                self.horizon
                    - self.hills
                        * scale
                        * (0.3 + 0.7 * (0.5 + 0.5 * hill_noise.fbm1(xc / s * 2.5, 4)))
            })
            .collect()
    }

    /// Labels (row-major, `size * size`) and the facts behind each pixel.
    pub fn layout(&self) -> (Vec<u8>, Vec<Aux>) {
        let n = self.size;
        let s = n as f32;
        let mut labels = vec![SKY; n * n];
        let mut aux = vec![Aux::default(); n * n];
        let clouds = self.noise(20);
        let snow_noise = self.noise(22);
        let rock_noise = self.noise(23);
        let ridges: Vec<Vec<f32>> = (0..self.ranges.len())
            .map(|r| (0..n).map(|x| self.ridge(r, x as f32 + 0.5)).collect())
            .collect();
        let hill_tops = (self.hills > 0.0).then(|| self.hill_tops());
        for y in 0..n {
            let yc = y as f32 + 0.5;
            for x in 0..n {
                let xc = x as f32 + 0.5;
                let i = y * n + x;
                if yc < self.horizon {
                    let hill_top = hill_tops.as_ref().map(|tops| tops[x]);
                    // Clouds only where no mountain or hill will stand in front of them.
                    let covered = ridges.iter().any(|ridge| yc >= ridge[x])
                        || hill_top.is_some_and(|t| yc >= t);
                    let height = (self.horizon - yc) / self.horizon;
                    if !covered {
                        let d = clouds.fbm(xc / s * 2.5, yc / s * 7.0, 5)
                            - self.style.cloud_threshold
                            - 0.3 * (1.0 - height).powi(6);
                        if d > 0.0 {
                            labels[i] = CLOUD;
                            aux[i].misc = d;
                        }
                    }
                    for (r, range) in self.ranges.iter().enumerate() {
                        let top = ridges[r][x];
                        if yc >= top {
                            let above = (self.horizon - yc) / range.amplitude;
                            let snow = above
                                > range.snow_line
                                    + 0.12 * snow_noise.fbm(xc / s * 12.0, yc / s * 12.0, 3);
                            let rock =
                                rock_noise.fbm(xc / s * 6.0 + r as f32 * 5.0, yc / s * 6.0, 4)
                                    > range.rock_threshold;
                            labels[i] = if snow {
                                SNOW
                            } else if rock {
                                ROCK
                            } else {
                                MOUNTAIN
                            };
                            // Slope of the silhouette: which side of a peak faces the sun.
                            let slope = (ridges[r][(x + 1).min(n - 1)]
                                - ridges[r][x.saturating_sub(1)])
                                / 2.0;
                            aux[i] = Aux {
                                depth: 0.0,
                                haze: range.haze
                                    + (1.0 - range.haze)
                                        * 0.35
                                        * (1.0 - above).clamp(0.0, 1.0).powi(3),
                                shade: (-slope * 0.6 * self.style.sun_x.signum()).clamp(-1.0, 1.0),
                                misc: r as f32,
                            };
                        }
                    }
                    if let Some(top) = hill_top {
                        if yc >= top {
                            labels[i] = GRASS;
                            aux[i] = Aux {
                                depth: MAX_DEPTH,
                                haze: self.ground_haze(MAX_DEPTH * 0.6),
                                shade: 0.0,
                                misc: 1.0,
                            };
                        }
                    }
                } else {
                    let (u, z) = self.ground_point(xc, yc);
                    labels[i] = self.ground_class(u, z);
                    aux[i] = Aux {
                        depth: z,
                        haze: self.ground_haze(z),
                        shade: 0.0,
                        misc: 0.0,
                    };
                }
            }
        }
        for sprite in &self.sprites {
            self.draw_sprite(sprite, &mut labels, &mut aux);
        }
        (labels, aux)
    }

    fn draw_sprite(&self, sp: &Sprite, labels: &mut [u8], aux: &mut [Aux]) {
        let n = self.size as i64;
        let edge = Noise::new(sp.seed);
        let half = sp.width / 2.0;
        let x0 = ((sp.x - half).floor() as i64).max(0);
        let x1 = ((sp.x + half).ceil() as i64).min(n - 1);
        let y0 = ((sp.foot - sp.height).floor() as i64).max(0);
        let y1 = (sp.foot.ceil() as i64).min(n - 1);
        let haze = self.ground_haze(sp.depth);
        let tiers = 4.0 + (sp.seed % 4) as f32;
        for y in y0..=y1 {
            let yc = y as f32 + 0.5;
            for x in x0..=x1 {
                let xc = x as f32 + 0.5;
                let dx = (xc - sp.x) / half.max(0.5);
                let up = (sp.foot - yc) / sp.height;
                let (inside, trunk) = match sp.kind {
                    SpriteKind::Conifer => {
                        let trunk_top = 0.12;
                        let t = (up - trunk_top) / (1.0 - trunk_top);
                        let tier = (t * tiers).fract();
                        let hw = (1.0 - t)
                            * (0.75 + 0.25 * (1.0 - tier))
                            * (1.0 + 0.15 * edge.value(yc * 0.7, 0.0));
                        let crown = (0.0..=1.0).contains(&t) && dx.abs() < hw;
                        let trunk =
                            (0.0..trunk_top).contains(&up) && dx.abs() < 0.12_f32.max(1.0 / half);
                        (crown || trunk, trunk && !crown)
                    }
                    SpriteKind::Broadleaf | SpriteKind::Bush => {
                        let (cy, ry, trunk_top) = match sp.kind {
                            SpriteKind::Bush => (0.45, 0.5, 0.0),
                            _ => (0.62, 0.38, 0.3),
                        };
                        let dy = (up - cy) / ry;
                        let angle = dy.atan2(dx);
                        let r = (dx * dx + dy * dy).sqrt();
                        let boundary = 1.0 + 0.2 * edge.fbm1(angle * 1.6 + 3.0, 3);
                        let crown = r < boundary && up >= 0.0;
                        let trunk =
                            (0.0..trunk_top).contains(&up) && dx.abs() < 0.14_f32.max(1.0 / half);
                        (crown || trunk, trunk && !crown)
                    }
                };
                if !inside {
                    continue;
                }
                let i = (y * n + x) as usize;
                labels[i] = if sp.kind == SpriteKind::Bush {
                    BUSH
                } else {
                    TREE
                };
                let kind = if trunk { 3.0 } else { sp.kind as u8 as f32 };
                aux[i] = Aux {
                    depth: sp.depth,
                    haze,
                    shade: if trunk {
                        -0.6
                    } else {
                        (dx * self.style.sun_x.signum()).clamp(-1.0, 1.0)
                    },
                    misc: kind + (sp.seed % 1000) as f32 / 1000.0,
                };
            }
        }
    }
}
