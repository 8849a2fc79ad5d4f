//! Adam with PyTorch's update rule (`torch.optim.Adam`, no weight decay), with its state
//! exposed so that a checkpoint can carry it and a resumed run continues exactly. (candle-nn's
//! `AdamW` keeps its moments private.)

use std::collections::HashMap;

use std::cell::RefCell;

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Storage, Tensor, Var};

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
        let rule = Rule {
            beta1,
            beta2,
            eps,
            step_size,
            bias_correction2_sqrt,
        };
        // One parameter after the other, each on this thread: the update is memory-bound, and
        // across the rayon pool it ran slower (the parameters in parallel: 49 ms against 45 ms
        // per generator step at the bundled model's shape; each parameter split in 1 MiB
        // chunks: 42-62 ms against 26-27 ms).
        let work: Vec<_> = self
            .params
            .iter()
            .filter_map(|(name, var)| {
                let grad = grads.get(var.as_tensor())?;
                Some((name, var, grad, self.moments.remove(name)))
            })
            .collect();
        let updated = work
            .into_iter()
            .map(|(name, var, grad, moments)| -> Result<(String, Moments)> {
                // A parameter's gradient can still carry the graph of the forward (candle
                // detaches the gradients it propagates, not the sums it hands back); moments
                // built on it would chain every step's graph to the next and never be freed.
                let grad = &grad.detach();
                let moments = match moments {
                    Some(m) => m,
                    None => Moments {
                        exp_avg: grad.zeros_like()?,
                        exp_avg_sq: grad.zeros_like()?,
                    },
                };
                let moments = if grad.device().is_cpu() && grad.dtype() == DType::F32 {
                    rule.fused(var, grad, moments)?
                } else {
                    rule.by_ops(var, grad, moments)?
                };
                Ok((name.clone(), moments))
            })
            .collect::<Result<Vec<_>>>()?;
        self.moments.extend(updated);
        Ok(())
    }

    /// The state as named tensors (`<param>.exp_avg`, `<param>.exp_avg_sq`) and the step.
    /// The tensors share the optimiser's storage, which the next step updates in place:
    /// write them out before stepping again.
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
                        // A copy of its own: the steps update the moments in place.
                        Ok(Some(
                            t.to_device(var.device())?.to_dtype(var.dtype())?.copy()?,
                        ))
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

/// One Adam update of one parameter, with this step's constants.
struct Rule {
    beta1: f64,
    beta2: f64,
    eps: f64,
    step_size: f64,
    bias_correction2_sqrt: f64,
}

impl Rule {
    /// The update as tensor ops, on any device and precision.
    fn by_ops(&self, var: &Var, grad: &Tensor, m: Moments) -> Result<Moments> {
        let exp_avg = ((m.exp_avg * self.beta1)? + (grad * (1.0 - self.beta1))?)?;
        let exp_avg_sq = ((m.exp_avg_sq * self.beta2)? + (grad.sqr()? * (1.0 - self.beta2))?)?;
        let denom = ((exp_avg_sq.sqrt()? / self.bias_correction2_sqrt)? + self.eps)?;
        let update = ((&exp_avg / denom)? * self.step_size)?;
        var.set(&(var.as_tensor().detach() - update)?)?;
        Ok(Moments {
            exp_avg,
            exp_avg_sq,
        })
    }

    /// The same update in one pass over float32 CPU values instead of eleven tensor ops,
    /// each allocating its result: parameter and moments are updated where they lie (fresh
    /// copies of every parameter each step cost more in page faults than the arithmetic).
    /// It rounds as [`by_ops`](Self::by_ops) does (candle multiplies by scalars in float32
    /// and divides by one as a multiplication by its reciprocal), so both give the same bits.
    fn fused(&self, var: &Var, grad: &Tensor, m: Moments) -> Result<Moments> {
        let [beta1, keep1, beta2, keep2, inv_bc2, eps, step_size] = [
            self.beta1,
            1.0 - self.beta1,
            self.beta2,
            1.0 - self.beta2,
            1.0 / self.bias_correction2_sqrt,
            self.eps,
            self.step_size,
        ]
        .map(|c| c as f32);
        let grad = grad.contiguous()?;
        let (storage, layout) = grad.storage_and_layout();
        let (Storage::Cpu(CpuStorage::F32(g)), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        else {
            return Err(Error::input(
                "gradients",
                "the fused Adam update takes f32 CPU tensors",
            ));
        };
        let g = &g[start..end];
        // Three write locks held at once: parameter and moments must have storages of their
        // own (the moments are made by `zeros_like`, and copied when loaded), as a shared one
        // would wait on its own lock.
        with_values_mut(var.as_tensor(), |param| {
            with_values_mut(&m.exp_avg, |exp_avg| {
                with_values_mut(&m.exp_avg_sq, |exp_avg_sq| {
                    let lengths = [param.len(), exp_avg.len(), exp_avg_sq.len()];
                    if lengths.iter().any(|&l| l != g.len()) {
                        return Err(Error::input(
                            "optimizer state",
                            format!(
                                "parameter and moments hold {lengths:?} values, the gradient {}",
                                g.len()
                            ),
                        ));
                    }
                    for (((p, a), s), &g) in param.iter_mut().zip(exp_avg).zip(exp_avg_sq).zip(g) {
                        *a = *a * beta1 + g * keep1;
                        *s = *s * beta2 + g * g * keep2;
                        let denom = s.sqrt() * inv_bc2 + eps;
                        *p -= *a / denom * step_size;
                    }
                    Ok(())
                })?
            })?
        })??;
        Ok(m)
    }
}

/// Runs `f` on the values of the contiguous float32 CPU tensor `t`, in place: every tensor
/// that shares `t`'s storage sees the change.
fn with_values_mut<R>(t: &Tensor, f: impl FnOnce(&mut [f32]) -> R) -> Result<R> {
    /// candle hands out a tensor's storage for writing only to an in-place op.
    struct Update<F, R> {
        f: RefCell<Option<F>>,
        result: RefCell<Option<R>>,
    }
    impl<F: FnOnce(&mut [f32]) -> R, R> InplaceOp1 for Update<F, R> {
        fn name(&self) -> &'static str {
            "adam-update"
        }

        fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
            let (CpuStorage::F32(values), Some((start, end))) =
                (storage, layout.contiguous_offsets())
            else {
                candle_core::bail!("the fused Adam update takes contiguous f32 tensors");
            };
            if let Some(f) = self.f.borrow_mut().take() {
                *self.result.borrow_mut() = Some(f(&mut values[start..end]));
            }
            Ok(())
        }
    }
    let update = Update {
        f: RefCell::new(Some(f)),
        result: RefCell::new(None),
    };
    t.inplace_op1(&update)?;
    update
        .result
        .into_inner()
        .ok_or_else(|| Error::input("optimizer state", "a parameter is not on the CPU"))
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

    /// The one-pass float32 update gives the bits of the tensor-op sequence, step after
    /// step, on values where rounding differences would show.
    #[test]
    fn fused_update_matches_the_tensor_ops_bit_for_bit() {
        let dev = Device::Cpu;
        let start = Tensor::randn(0f32, 1.0, (4, 33), &dev).unwrap();
        let (a, b) = (
            Var::from_tensor(&start).unwrap(),
            Var::from_tensor(&start.copy().unwrap()).unwrap(),
        );
        let zeros = || Moments {
            exp_avg: start.zeros_like().unwrap(),
            exp_avg_sq: start.zeros_like().unwrap(),
        };
        let (mut ma, mut mb) = (zeros(), zeros());
        for t in 1..=5 {
            let rule = Rule {
                beta1: 0.5,
                beta2: 0.999,
                eps: 1e-8,
                step_size: 2e-4 / (1.0 - 0.5f64.powi(t)),
                bias_correction2_sqrt: (1.0 - 0.999f64.powi(t)).sqrt(),
            };
            let grad = (Tensor::randn(0f32, 1.0, (4, 33), &dev).unwrap() * 1e-3).unwrap();
            ma = rule.fused(&a, &grad, ma).unwrap();
            mb = rule.by_ops(&b, &grad, mb).unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                v.into_iter().map(f32::to_bits).collect()
            };
            assert_eq!(
                bits(a.as_tensor()),
                bits(b.as_tensor()),
                "weights, step {t}"
            );
            assert_eq!(bits(&ma.exp_avg), bits(&mb.exp_avg), "exp_avg, step {t}");
            assert_eq!(
                bits(&ma.exp_avg_sq),
                bits(&mb.exp_avg_sq),
                "exp_avg_sq, step {t}"
            );
        }
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

    /// The in-place update refuses moments that do not fit the parameter instead of
    /// writing past or short of them.
    #[test]
    fn moments_of_another_size_are_refused_in_place() {
        let (_, w) = adam();
        let short = || Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap();
        let moments = Moments {
            exp_avg: short(),
            exp_avg_sq: short(),
        };
        let rule = Rule {
            beta1: 0.5,
            beta2: 0.9,
            eps: 1e-8,
            step_size: 0.1,
            bias_correction2_sqrt: 1.0,
        };
        let grad = w.as_tensor().ones_like().unwrap();
        let err = rule.fused(&w, &grad, moments).unwrap_err().to_string();
        assert!(
            err.contains("[3, 2, 2]") && err.contains("gradient 3"),
            "{err}"
        );
        assert_eq!(w.as_tensor().to_vec1::<f32>().unwrap(), [1.0, -2.0, 3.0]);
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
