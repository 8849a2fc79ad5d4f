//! Adam with PyTorch's update rule (`torch.optim.Adam`, no weight decay), with its state
//! exposed so that a checkpoint can carry it and a resumed run continues exactly. (candle-nn's
//! `AdamW` keeps its moments private.)

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

/// First and second moments of one parameter.
#[derive(Debug, Clone)]
struct Moments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

#[derive(Debug)]
pub struct Adam {
    pub config: AdamConfig,
    /// Optimised parameters by state-dict name (prefixed per network, e.g. `G.fc.weight`).
    params: Vec<(String, Var)>,
    moments: HashMap<String, Moments>,
    /// Steps taken (PyTorch's per-parameter `step`, equal for all of them here).
    step: u64,
}

impl Adam {
    pub fn new(params: Vec<(String, Var)>, config: AdamConfig) -> Self {
        Self {
            config,
            params,
            moments: HashMap::new(),
            step: 0,
        }
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One update from the gradients in `grads` (parameters without a gradient are skipped,
    /// as PyTorch skips parameters whose `.grad` is None).
    pub fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        self.step += 1;
        let AdamConfig {
            lr,
            beta1,
            beta2,
            eps,
        } = self.config;
        let t = self.step as i32;
        let bias_correction1 = 1.0 - beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        let step_size = lr / bias_correction1;
        for (name, var) in &self.params {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            // A parameter's gradient can still carry the graph of the forward (candle
            // detaches the gradients it propagates, not the sums it hands back); moments
            // built on it would chain every step's graph to the next and never be freed.
            let grad = grad.detach();
            let grad = &grad;
            let moments = match self.moments.remove(name) {
                Some(m) => m,
                None => Moments {
                    exp_avg: grad.zeros_like()?,
                    exp_avg_sq: grad.zeros_like()?,
                },
            };
            let exp_avg = ((moments.exp_avg * beta1)? + (grad * (1.0 - beta1))?)?;
            let exp_avg_sq = ((moments.exp_avg_sq * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;
            let denom = ((exp_avg_sq.sqrt()? / bias_correction2_sqrt)? + eps)?;
            let update = ((&exp_avg / denom)? * step_size)?;
            var.set(&(var.as_tensor().detach() - update)?)?;
            self.moments.insert(
                name.clone(),
                Moments {
                    exp_avg,
                    exp_avg_sq,
                },
            );
        }
        Ok(())
    }

    /// The state as named tensors (`<param>.exp_avg`, `<param>.exp_avg_sq`) and the step.
    pub fn state(&self) -> (u64, HashMap<String, Tensor>) {
        let mut tensors = HashMap::new();
        for (name, m) in &self.moments {
            tensors.insert(format!("{name}.exp_avg"), m.exp_avg.clone());
            tensors.insert(format!("{name}.exp_avg_sq"), m.exp_avg_sq.clone());
        }
        (self.step, tensors)
    }

    /// Restores what [`state`](Self::state) returned; every moment must belong to a
    /// parameter of this optimiser and have its shape.
    pub fn load_state(&mut self, step: u64, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let mut moments = HashMap::new();
        for (name, var) in &self.params {
            let fetch = |suffix: &str| -> Result<Option<Tensor>> {
                let key = format!("{name}.{suffix}");
                match tensors.get(&key) {
                    None => Ok(None),
                    Some(t) if t.dims() == var.dims() => {
                        Ok(Some(t.to_device(var.device())?.to_dtype(var.dtype())?))
                    }
                    Some(t) => Err(Error::input(
                        "optimizer state",
                        format!(
                            "`{key}` has shape {:?}, the parameter {:?}",
                            t.dims(),
                            var.dims()
                        ),
                    )),
                }
            };
            match (fetch("exp_avg")?, fetch("exp_avg_sq")?) {
                (Some(exp_avg), Some(exp_avg_sq)) => {
                    moments.insert(
                        name.clone(),
                        Moments {
                            exp_avg,
                            exp_avg_sq,
                        },
                    );
                }
                (None, None) => {}
                _ => {
                    return Err(Error::input(
                        "optimizer state",
                        format!("`{name}` has only one of exp_avg / exp_avg_sq"),
                    ))
                }
            }
        }
        // Every tensor was taken by a parameter above, or belongs to none.
        if let Some(unknown) = tensors
            .keys()
            .find(|k| !moments.keys().any(|n| k.starts_with(&format!("{n}."))))
        {
            return Err(Error::input(
                "optimizer state",
                format!("`{unknown}` belongs to no parameter of this optimiser"),
            ));
        }
        self.moments = moments;
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn adam() -> (Adam, Var) {
        let var =
            Var::from_tensor(&Tensor::new(&[1f32, -2.0, 3.0], &Device::Cpu).unwrap()).unwrap();
        let config = AdamConfig {
            lr: 0.1,
            beta1: 0.5,
            beta2: 0.9,
            eps: 1e-8,
        };
        (
            Adam::new(vec![("G.w".to_string(), var.clone())], config),
            var,
        )
    }

    fn step(adam: &mut Adam, var: &Var) {
        let loss = var.as_tensor().sqr().unwrap().sum_all().unwrap();
        adam.step(&loss.backward().unwrap()).unwrap();
    }

    /// The first step moves each weight by lr against its gradient's sign (PyTorch's bias
    /// correction makes m / sqrt(v) = sign(g)); a restored state continues like the original.
    #[test]
    fn steps_like_pytorch_and_resumes_from_its_state() {
        let (mut original, w) = adam();
        step(&mut original, &w);
        assert_eq!(w.as_tensor().to_vec1::<f32>().unwrap(), [0.9, -1.9, 2.9]);
        let (steps, state) = original.state();
        let (mut resumed, w2) = adam();
        w2.set(w.as_tensor()).unwrap();
        resumed.load_state(steps, &state).unwrap();
        step(&mut original, &w);
        step(&mut resumed, &w2);
        assert_eq!(
            w.as_tensor().to_vec1::<f32>().unwrap(),
            w2.as_tensor().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn foreign_or_misshapen_state_is_refused() {
        let (mut adam, w) = adam();
        let zeros = w.as_tensor().zeros_like().unwrap();
        let foreign = HashMap::from([("D.x.exp_avg".to_string(), zeros.clone())]);
        let err = adam.load_state(1, &foreign).unwrap_err().to_string();
        assert!(err.contains("D.x.exp_avg"), "{err}");
        let short = Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap();
        let misshapen = HashMap::from([
            ("G.w.exp_avg".to_string(), short.clone()),
            ("G.w.exp_avg_sq".to_string(), short),
        ]);
        let err = adam.load_state(1, &misshapen).unwrap_err().to_string();
        assert!(err.contains("G.w.exp_avg") && err.contains("[2]"), "{err}");
        let half = HashMap::from([("G.w.exp_avg".to_string(), zeros)]);
        assert!(adam.load_state(1, &half).is_err());
    }
}
