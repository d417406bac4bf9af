//! The training optimisers, AdamW (Adam when its weight decay is 0) and SGD
//! (both with decoupled or plain weight decay, as PyTorch defines them),
//! with their state in tensors the tool owns, so that a training stage (an
//! LLM fine-tune, an MNIST model) can save that state in a progress
//! checkpoint and resume bit for bit (libtorch's optimisers keep theirs out
//! of reach).
//!
//! The update is PyTorch's single-tensor one, step for step: one LoRA step
//! agrees with PEFT + `torch.optim.AdamW` (`worker/tests/llm_parity.rs`).

use subliminal_shared::llm::Optimizer;
use tch::{nn, Tensor};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// The trainable variables of a var store, by name, and their optimiser state.
pub struct Optim {
    kind: Optimizer,
    weight_decay: f64,
    lr: f64,
    /// Steps taken (AdamW's bias correction counts them).
    pub steps: u64,
    /// (name, variable, first moment, second moment), sorted by name.
    vars: Vec<(String, Tensor, Tensor, Tensor)>,
}

impl Optim {
    /// Every variable of `vs` that requires a gradient, moments at zero.
    pub fn new(vs: &nn::VarStore, kind: Optimizer, lr: f64, weight_decay: f64) -> Self {
        let mut vars: Vec<(String, Tensor, Tensor, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, t)| {
                let (m, v) = (t.zeros_like(), t.zeros_like());
                (name, t, m, v)
            })
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Self {
            kind,
            weight_decay,
            lr,
            steps: 0,
            vars,
        }
    }

    /// Adam as PyTorch defines it (AdamW without weight decay).
    pub fn adam(vs: &nn::VarStore, lr: f64) -> Self {
        Self::new(vs, Optimizer::Adamw, lr, 0.0)
    }

    /// Where the variables live.
    pub fn device(&self) -> tch::Device {
        self.vars
            .first()
            .map_or(tch::Device::Cpu, |(_, v, _, _)| v.device())
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    pub fn zero_grad(&mut self) {
        for (_, var, _, _) in &mut self.vars {
            var.zero_grad();
        }
    }

    /// Scales the gradients so that their global norm is at most `max`, as
    /// `torch.nn.utils.clip_grad_norm_` does.
    pub fn clip_grad_norm(&self, max: f64) {
        tch::no_grad(|| {
            let norms: Vec<Tensor> = self
                .vars
                .iter()
                .map(|(_, v, _, _)| v.grad())
                .filter(Tensor::defined)
                .map(|g| g.norm())
                .collect();
            if norms.is_empty() {
                return;
            }
            let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
            let coef = max / (total + 1e-6);
            if coef < 1.0 {
                for (_, v, _, _) in &self.vars {
                    let mut g = v.grad();
                    if g.defined() {
                        let _ = g.g_mul_scalar_(coef);
                    }
                }
            }
        })
    }

    /// One update of every variable that has a gradient.
    pub fn step(&mut self) {
        self.steps += 1;
        let (lr, wd, t) = (self.lr, self.weight_decay, self.steps as i32);
        tch::no_grad(|| {
            for (_, var, m, v) in &mut self.vars {
                let g = var.grad();
                if !g.defined() {
                    continue;
                }
                match self.kind {
                    Optimizer::Adamw => {
                        if wd != 0.0 {
                            let _ = var.g_mul_scalar_(1.0 - lr * wd);
                        }
                        let _ = m.lerp_(&g, 1.0 - BETA1);
                        let _ = v.g_mul_scalar_(BETA2);
                        let _ = v.addcmul_(&g, &(&g * (1.0 - BETA2)));
                        let correction1 = 1.0 - BETA1.powi(t);
                        let correction2 = 1.0 - BETA2.powi(t);
                        let denom = (v.sqrt() / correction2.sqrt()) + EPS;
                        let _ = var.addcdiv_(&(&*m * (-lr / correction1)), &denom);
                    }
                    Optimizer::Sgd => {
                        let step = if wd != 0.0 { &g + &*var * wd } else { g };
                        let _ = var.g_add_(&(step * -lr));
                    }
                }
            }
        })
    }

    /// The state to save: each variable's value and moments, by name
    /// (`param/`, `m/`, `v/`).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.vars.len() * 3);
        for (name, var, m, v) in &self.vars {
            out.push((format!("param/{name}"), var.detach()));
            out.push((format!("m/{name}"), m.shallow_clone()));
            out.push((format!("v/{name}"), v.shallow_clone()));
        }
        out
    }

    /// Restores what [`Optim::state`] saved. Every variable must be there,
    /// with its shape, or nothing is changed.
    pub fn restore(
        &mut self,
        steps: u64,
        get: &dyn Fn(&str) -> anyhow::Result<Tensor>,
    ) -> anyhow::Result<()> {
        let mut saved = Vec::with_capacity(self.vars.len() * 3);
        for (name, var, _, _) in &self.vars {
            for prefix in ["param", "m", "v"] {
                let tensor = get(&format!("{prefix}/{name}"))?;
                anyhow::ensure!(
                    tensor.size() == var.size(),
                    "the checkpoint's {prefix}/{name} is {:?}, the model's {:?}",
                    tensor.size(),
                    var.size()
                );
                saved.push(tensor);
            }
        }
        tch::no_grad(|| {
            let targets = self.vars.iter_mut().flat_map(|(_, var, m, v)| [var, m, v]);
            for (target, tensor) in targets.zip(&saved) {
                target.copy_(tensor);
            }
        });
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{Module, OptimizerConfig};
    use tch::Device;

    /// A two-layer MLP of fixed weights and its training batch.
    fn net(vs: &nn::VarStore) -> (impl Module, Tensor, Tensor) {
        let root = vs.root();
        let net = nn::seq()
            .add(nn::linear(&root / "a", 8, 16, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(&root / "b", 16, 3, Default::default()));
        let x = Tensor::from_slice(&(0..64).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>())
            .view([8, 8]);
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1]);
        (net, x, y)
    }

    #[test]
    fn adam_follows_libtorchs_adam_to_float_rounding() {
        tch::manual_seed(5);
        let ours = nn::VarStore::new(Device::Cpu);
        let (ours_net, x, y) = net(&ours);
        let mut theirs = nn::VarStore::new(Device::Cpu);
        let (theirs_net, _, _) = net(&theirs);
        theirs.copy(&ours).unwrap();
        let start: Vec<(String, Tensor)> = ours
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        let mut opt = Optim::adam(&ours, 1e-2);
        let mut reference = nn::Adam::default().build(&theirs, 1e-2).unwrap();
        for _ in 0..50 {
            opt.zero_grad();
            ours_net.forward(&x).cross_entropy_for_logits(&y).backward();
            opt.step();
            reference.backward_step(&theirs_net.forward(&x).cross_entropy_for_logits(&y));
        }
        let (a, b) = (ours.variables(), theirs.variables());
        for (name, before) in &start {
            let difference = (&a[name] - &b[name]).abs().max().double_value(&[]);
            assert!(
                difference < 1e-5,
                "{name} differs from libtorch's Adam by {difference}"
            );
            let moved = (&a[name] - before).abs().max().double_value(&[]);
            assert!(moved > 0.1, "{name} moved by {moved} only");
        }
    }
}
