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
        let known = self.params.len() * 2;
        if tensors.len() > moments.len() * 2 || moments.len() * 2 > known {
            let unknown = tensors
                .keys()
                .find(|k| !moments.keys().any(|n| k.starts_with(&format!("{n}."))))
                .cloned()
                .unwrap_or_default();
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
