//! Seeded value noise and its fractal sums: the one source of shape and texture.

/// Value noise on an integer lattice with a quintic fade; `seed` picks the lattice.
#[derive(Debug, Clone, Copy)]
pub struct Noise {
    seed: u32,
}

fn hash(seed: u32, x: i32, y: i32) -> u32 {
    let mut h = seed ^ (x as u32).wrapping_mul(0x27d4_eb2d) ^ (y as u32).wrapping_mul(0x1656_67b1);
    h ^= h >> 15;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

fn lattice(seed: u32, x: i32, y: i32) -> f32 {
    hash(seed, x, y) as f32 * (2.0 / u32::MAX as f32) - 1.0
}

/// `f32::floor` without the libm call (baseline x86-64 has no rounding instruction); the
/// same result for every coordinate the generator uses (|x| < 2^24).
fn floor(x: f32) -> f32 {
    let t = x as i32 as f32;
    if t > x {
        t - 1.0
    } else {
        t
    }
}

fn fade(t: f32) -> f32 {
    t * t * t * (t * (t * 6.0 - 15.0) + 10.0)
}

impl Noise {
    pub fn new(seed: u32) -> Self {
        Self { seed }
    }

    /// A smooth value in [-1, 1].
    pub fn value(&self, x: f32, y: f32) -> f32 {
        let (xf, yf) = (floor(x), floor(y));
        let (xi, yi) = (xf as i32, yf as i32);
        let (tx, ty) = (fade(x - xf), fade(y - yf));
        let a = lattice(self.seed, xi, yi);
        let b = lattice(self.seed, xi + 1, yi);
        let c = lattice(self.seed, xi, yi + 1);
        let d = lattice(self.seed, xi + 1, yi + 1);
        let top = a + (b - a) * tx;
        let bottom = c + (d - c) * tx;
        top + (bottom - top) * ty
    }

    /// Fractal Brownian motion: `octaves` layers, each twice the frequency and half the
    /// amplitude of the last, normalised back to about [-1, 1].
    pub fn fbm(&self, x: f32, y: f32, octaves: u32) -> f32 {
        let (mut sum, mut norm, mut amp, mut freq) = (0.0, 0.0, 1.0, 1.0);
        for o in 0..octaves {
            // Each octave its own lattice and a shift, so lattice points never line up.
            let layer = Noise::new(self.seed.wrapping_add(o.wrapping_mul(0x9e37_79b9)));
            sum += amp * layer.value(x * freq + o as f32 * 17.3, y * freq - o as f32 * 9.1);
            norm += amp;
            amp *= 0.5;
            freq *= 2.03;
        }
        sum / norm
    }

    /// One-dimensional fractal noise (a row of the 2-D field).
    pub fn fbm1(&self, x: f32, octaves: u32) -> f32 {
        self.fbm(x, 0.5, octaves)
    }

    /// Ridged fractal noise in [0, 1]: sharp crests, the profile of mountain ranges.
    pub fn ridged1(&self, x: f32, octaves: u32) -> f32 {
        let (mut sum, mut norm, mut amp, mut freq) = (0.0, 0.0, 1.0, 1.0);
        for o in 0..octaves {
            let layer = Noise::new(self.seed.wrapping_add(o.wrapping_mul(0x9e37_79b9)));
            let r = 1.0 - layer.value(x * freq + o as f32 * 17.3, 0.5).abs();
            sum += amp * r * r;
            norm += amp;
            amp *= 0.5;
            freq *= 2.1;
        }
        sum / norm
    }

    /// Uniform hash of a pixel in [0, 1) (film grain, per-pixel jitter).
    pub fn grain(&self, x: usize, y: usize) -> f32 {
        hash(self.seed, x as i32, y as i32) as f32 / u32::MAX as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_bounded_smooth_and_seeded() {
        let (a, b) = (Noise::new(1), Noise::new(2));
        let mut differs = false;
        for i in 0..2000 {
            let (x, y) = (i as f32 * 0.173, i as f32 * 0.091);
            let v = a.fbm(x, y, 5);
            assert!((-1.0..=1.0).contains(&v), "fbm out of range: {v}");
            let r = a.ridged1(x, 4);
            assert!((0.0..=1.0).contains(&r), "ridged out of range: {r}");
            // Continuity: a tiny step moves the value a tiny amount.
            assert!((a.value(x, y) - a.value(x + 1e-3, y)).abs() < 0.02);
            differs |= (a.value(x, y) - b.value(x, y)).abs() > 0.1;
        }
        assert!(differs, "two seeds gave the same field");
        assert_eq!(a.fbm(3.3, 4.4, 4), Noise::new(1).fbm(3.3, 4.4, 4));
    }

    #[test]
    fn fast_floor_matches_the_library_floor() {
        for i in -20000..20000 {
            let x = i as f32 * 0.37 + 0.001 * (i % 7) as f32;
            assert_eq!(floor(x), x.floor(), "{x}");
        }
        for x in [-1.0, -0.5, 0.0, -0.0, 0.5, 1.0, 1e6, -1e6 - 0.5] {
            assert_eq!(floor(x), x.floor(), "{x}");
        }
    }
}
