//! Colours for a laid-out scene: sky gradients, lit and shaded relief, textures from
//! fractal noise per class, water that mirrors what stands above the horizon, aerial
//! perspective toward the haze colour and a little film grain.

use crate::classes::*;
use crate::noise::Noise;
use crate::scene::{Aux, Scene};
use crate::style::{lerp, mul, scale, Rgb, TimeOfDay};

/// RGB bytes, row-major, for `labels` / `aux` from [`Scene::layout`].
pub fn render(scene: &Scene, labels: &[u8], aux: &[Aux]) -> Vec<u8> {
    let n = scene.size;
    let s = n as f32;
    let st = &scene.style;
    let tex = Noise::new(scene.seed ^ 0x5bd1_e995);
    let fine = Noise::new(scene.seed ^ 0x1b87_3593);
    let grain = Noise::new(scene.seed ^ 0xcc9e_2d51);
    let lush: Rgb = [0.2, 0.42, 0.12];
    let dry: Rgb = [0.58, 0.54, 0.26];
    let grass_base = lerp(lush, dry, scene.dryness);
    let mut colour = vec![[0f32; 3]; n * n];
    // Rows top to bottom: every water pixel mirrors a row above the horizon, done by then.
    for y in 0..n {
        let yc = y as f32 + 0.5;
        let height = ((scene.horizon - yc) / scene.horizon).max(0.0);
        for x in 0..n {
            let xc = x as f32 + 0.5;
            let xn = xc / s * 2.0 - 1.0;
            let i = y * n + x;
            let a = aux[i];
            let (u, z) = if a.depth > 0.0 {
                scene.ground_point(xc, yc)
            } else {
                (0.0, 0.0)
            };
            let texture_octaves = if z < 8.0 {
                4
            } else if z < 40.0 {
                3
            } else {
                2
            };
            let lit = match labels[i] {
                SKY => st.sky(height, xn),
                CLOUD => {
                    let (cx, cy) = (xc / s * 2.5, yc / s * 7.0);
                    let toward = tex.fbm(cx + 0.03 * st.sun_x, cy - 0.05, 3) - tex.fbm(cx, cy, 3);
                    let light = (0.45 + 6.0 * toward + 1.5 * a.misc).clamp(0.0, 1.0);
                    let cloud = lerp(st.cloud_shadow, st.cloud_lit, light);
                    // Thin cloud lets the sky through.
                    lerp(st.sky(height, xn), cloud, (a.misc * 8.0).clamp(0.35, 1.0))
                }
                MOUNTAIN | SNOW | ROCK if a.depth == 0.0 => {
                    let range = &scene.ranges[a.misc as usize];
                    let (mx, my) = (xc / s * 9.0, yc / s * 9.0);
                    let m = tex.fbm(mx, my, 4);
                    let bump = (tex.fbm(mx + 0.02, my, 4) - m) * 40.0 * st.sun_x.signum();
                    let facing = (a.shade + bump).clamp(-1.0, 1.0);
                    let albedo = match labels[i] {
                        SNOW => scale([0.9, 0.92, 0.97], 0.92 + 0.08 * m),
                        ROCK => scale([0.44, 0.42, 0.4], strata(&fine, xc / s, yc / s)),
                        _ => scale(range.tint, 0.85 + 0.3 * m),
                    };
                    mul(albedo, st.light(facing))
                }
                GRASS => {
                    let (patch, blades) = if a.misc > 0.0 {
                        (tex.fbm(xc / s * 6.0, yc / s * 20.0, 3), 0.0)
                    } else {
                        (
                            tex.fbm(u * 0.7, z * 0.7, 3),
                            fine.fbm(u * 6.0, z * 6.0, texture_octaves),
                        )
                    };
                    let base = lerp(grass_base, dry, (0.3 * patch).max(0.0));
                    mul(
                        scale(base, 0.8 + 0.25 * patch + 0.2 * blades),
                        st.light(0.3 * blades),
                    )
                }
                DIRT => {
                    let t = tex.fbm(u * 2.0, z * 2.0, texture_octaves);
                    mul(scale([0.38, 0.27, 0.17], 0.8 + 0.3 * t), st.light(0.4 * t))
                }
                ROCK => {
                    let t = tex.fbm(u * 3.0, z * 3.0, texture_octaves);
                    let albedo = scale(
                        [0.46, 0.44, 0.41],
                        strata(&fine, u * 0.3, z * 0.3) * (0.85 + 0.2 * t),
                    );
                    mul(albedo, st.light(t))
                }
                SAND => {
                    let ripples = (z * 9.0 + 3.0 * tex.fbm(u, z, 2)).sin();
                    let t = fine.fbm(u * 8.0, z * 8.0, texture_octaves);
                    mul(
                        scale([0.84, 0.74, 0.54], 0.9 + 0.05 * ripples + 0.08 * t),
                        st.light(0.2 * ripples),
                    )
                }
                TREE | BUSH => {
                    let kind = a.misc as u32;
                    let albedo: Rgb = match (labels[i], kind) {
                        (_, 3) => [0.22, 0.15, 0.1],
                        (BUSH, _) => [0.26, 0.38, 0.12],
                        (_, 0) => [0.08, 0.2, 0.11],
                        _ => [0.16, 0.3, 0.09],
                    };
                    let leaves = fine.fbm(xc * 0.45 + a.misc * 50.0, yc * 0.45, 3);
                    let facing = (0.8 * a.shade + 0.5 * leaves).clamp(-1.0, 1.0);
                    mul(scale(albedo, 0.8 + 0.4 * leaves), st.light(facing))
                }
                SEA | WATER => water(scene, &colour, labels[i], xc, yc, u, z, &tex, &fine),
                _ => [1.0, 0.0, 1.0],
            };
            colour[i] = lerp(lit, st.sky_horizon, a.haze);
        }
    }
    let mut out = vec![0u8; n * n * 3];
    for (i, c) in colour.iter().enumerate() {
        let grey = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
        for k in 0..3 {
            let v = (grey + (c[k] - grey) * st.saturation) * st.exposure;
            let g = grain.grain(i % n, i / n * 3 + k) - 0.5;
            out[i * 3 + k] = (v * 255.0 + 3.0 * g).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Layered rock: bands along the slope with noisy edges.
fn strata(noise: &Noise, x: f32, y: f32) -> f32 {
    0.8 + 0.2 * (y * 120.0 + 4.0 * noise.fbm(x * 8.0, y * 8.0, 3) + x * 10.0).sin()
}

/// Water: the scene above the horizon mirrored about it, broken by ripples, over the water's
/// own colour, more mirror toward the horizon (Fresnel), waves and sun glitter on the sea.
#[allow(clippy::too_many_arguments)]
fn water(
    scene: &Scene,
    done: &[[f32; 3]],
    class: u8,
    xc: f32,
    yc: f32,
    u: f32,
    z: f32,
    tex: &Noise,
    fine: &Noise,
) -> Rgb {
    let n = scene.size;
    let st = &scene.style;
    let sea = class == SEA;
    let calm = if sea { 1.0 } else { 0.4 };
    let ripple = tex.fbm(u * 0.8, z * 4.0, 3) * calm * 8.0 / z.sqrt();
    let mx = (xc + ripple).clamp(0.0, n as f32 - 1.0) as usize;
    let my = (2.0 * scene.horizon - yc).clamp(0.0, scene.horizon.max(1.0) - 1.0) as usize;
    let mirrored = done[my * n + mx];
    let below = ((yc - scene.horizon) / (n as f32 - scene.horizon)).clamp(0.0, 1.0);
    let fresnel = 0.2 + 0.7 * (1.0 - below).powi(3);
    let deep: Rgb = if sea {
        [0.04, 0.14, 0.26]
    } else {
        [0.06, 0.17, 0.18]
    };
    let waves = if sea {
        fine.fbm(u * 0.7, z * 5.0, 3)
    } else {
        0.3 * fine.fbm(u * 2.0, z * 8.0, 2)
    };
    let body = mul(scale(deep, 0.85 + 0.4 * waves), st.light(waves));
    let mut c = lerp(body, mirrored, fresnel * (0.85 + 0.15 * waves));
    let xn = xc / n as f32 * 2.0 - 1.0;
    let under_sun = 1.0 - ((xn - st.sun_x).abs() / 0.2).min(1.0);
    if under_sun > 0.0 && st.time != TimeOfDay::Overcast {
        let glitter = fine.fbm(u * 3.0, z * 14.0, 2).max(0.0).powi(2) * 2.0 * under_sun * calm;
        c = lerp(c, st.sun, glitter.min(0.8));
    }
    c
}
