//! Float64 sums of float32 data in eight interleaved partial sums. A single running sum is
//! one chain of dependent additions (several cycles each, in an order the compiler must
//! keep); eight independent ones vectorise and overlap.

/// The sum of `f(v)` over `values`.
pub(crate) fn sum_by(values: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = values.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// The sum of `values`.
pub(crate) fn sum_f64(values: &[f32]) -> f64 {
    sum_by(values, f64::from)
}

/// The sum of `a[i] * b[i]`.
pub(crate) fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += f64::from(x) * f64::from(y);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_match_the_plain_sums_with_tails_of_every_length() {
        for len in [0, 1, 7, 8, 9, 100, 1027] {
            let a: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let b: Vec<f32> = (0..len)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) / 3.0)
                .collect();
            let plain: f64 = a.iter().map(|&v| f64::from(v)).sum();
            let squares: f64 = a.iter().map(|&v| f64::from(v).powi(2)).sum();
            let dot: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum();
            assert!((sum_f64(&a) - plain).abs() < 1e-9, "len {len}");
            assert!(
                (sum_by(&a, |v| f64::from(v).powi(2)) - squares).abs() < 1e-9,
                "len {len}"
            );
            assert!((dot_f64(&a, &b) - dot).abs() < 1e-9, "len {len}");
        }
    }
}
