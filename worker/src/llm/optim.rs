//! The fine-tuning optimisers, AdamW and SGD (both with decoupled or plain
//! weight decay, as PyTorch defines them), with their state in tensors the
//! tool owns, so that a training stage can save that state in a progress
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
                        let _ = var.g_mul_scalar_(1.0 - lr * wd);
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
