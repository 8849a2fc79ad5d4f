//! Helpers of the unit tests.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

/// `max |a - b|`, computed in float64.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// A float32 tensor of standard-normal values from a seeded generator, so that a test sees
/// the same inputs on every run (candle's `randn` on the CPU cannot be seeded).
pub fn seeded_randn(seed: u64, shape: &[usize]) -> Tensor {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| rand_distr::StandardNormal.sample(&mut rng))
        .collect();
    Tensor::from_vec(values, shape, &candle_core::Device::Cpu).unwrap()
}

/// The gradients of `sum(y * probe)`: for a random `probe`, every gradient of `y` at once.
pub fn probed_gradients(y: &Tensor, probe: &Tensor) -> GradStore {
    (y * probe).unwrap().sum_all().unwrap().backward().unwrap()
}
