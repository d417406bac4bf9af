//! The theorem stage: a student's first step measured against the
//! teacher's update (cosine and inner product), same-init against cross-init.


use serde_json::json;
use subliminal_shared::experiments::mnist::TheoremParams;
use subliminal_shared::manifest::VerifiedStage;
use tch::{Kind, Tensor};

use super::model::{Mlp, MlpConfig};
use crate::stages::{Artifact, StageEnv};
use crate::tensor_rng::batch_order;
use super::train::*;
use super::{METRICS, MODEL};

/// The first step of gradient descent on the student's loss, against the
/// teacher's update: the paper's theorem says their inner product is ≥ 0 to
/// first order when the student starts where the teacher did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Alignment {
    /// ⟨−∇L_student(θ_student), θ_teacher − θ_teacher_init⟩.
    pub inner_product: f64,
    pub cosine: f64,
    /// Adam's first update (−g/(|g| + ε) elementwise, per unit learning
    /// rate) against the teacher's update: what the student's optimiser
    /// actually does first.
    pub adam_inner_product: f64,
    pub adam_cosine: f64,
    pub gradient_norm: f64,
    pub teacher_update_norm: f64,
    pub loss: f64,
}

/// The alignment of `student`'s first gradient with `teacher_update` (flat,
/// in [`Mlp::flat`] order), for the loss `loss(student)`.
pub fn alignment(
    student: &Mlp,
    teacher_update: &Tensor,
    loss: impl Fn(&Mlp) -> Tensor,
) -> anyhow::Result<Alignment> {
    let l = loss(student);
    let params: Vec<Tensor> = student
        .named_tensors()
        .iter()
        .map(|(_, t)| t.shallow_clone())
        .collect();
    let grads = Tensor::run_backward(&[&l], &params, false, false);
    let g = Tensor::cat(
        &grads.iter().map(|g| g.flatten(0, -1)).collect::<Vec<_>>(),
        0,
    )
    .to_kind(Kind::Double);
    let delta = teacher_update.to_kind(Kind::Double);
    anyhow::ensure!(
        g.size() == delta.size(),
        "the teacher's update has {:?} values, the student {:?}",
        delta.size(),
        g.size()
    );
    let dot = |a: &Tensor, b: &Tensor| (a * b).sum(Kind::Double).double_value(&[]);
    let norm = |a: &Tensor| a.norm().double_value(&[]);
    let adam = -(&g / (g.abs() + 1e-8));
    let inner_product = -dot(&g, &delta);
    let (gn, dn, an) = (norm(&g), norm(&delta), norm(&adam));
    let cos = |x: f64, a: f64| if a * dn > 0.0 { x / (a * dn) } else { 0.0 };
    let adam_inner_product = dot(&adam, &delta);
    Ok(Alignment {
        inner_product,
        cosine: cos(inner_product, gn),
        adam_inner_product,
        adam_cosine: cos(adam_inner_product, an),
        gradient_norm: gn,
        teacher_update_norm: dn,
        loss: l.double_value(&[]),
    })
}

pub(super) fn theorem(
    p: &TheoremParams,
    teacher: &VerifiedStage,
    dataset: &VerifiedStage,
    env: &StageEnv,
) -> anyhow::Result<Vec<Artifact>> {
    let s = &p.student;
    let trained = Mlp::from_safetensors(teacher.artifact(MODEL)?, env.device)?;
    let config = MlpConfig::with_width(s.aux_logits, s.hidden);
    anyhow::ensure!(
        trained.config == config,
        "the teacher has shape {:?}, the student {:?}",
        trained.config,
        config
    );
    let init = Mlp::init(config, p.teacher_init, env.device);
    let init_weights = init.flat();
    let update = trained.flat() - &init_weights;
    let data = Dataset::read(s, dataset, env.device)?;
    let noise = data.noise.draw(env.device);
    let n = data.noise.samples;
    // The student's first batch: what its first step sees.
    let rows = batch_order(s.seed, 0, n, env.device).narrow(0, 0, (s.batch_size as i64).min(n));
    let batch = noise.index_select(0, &rows);
    let student = student_init(s, env.device);
    let found = alignment(&student, &update, |m| data.loss(&m.forward(&batch), &rows))?;
    let init_distance = (student.flat() - &init_weights).norm().double_value(&[]);
    Ok(vec![Artifact::json(
        METRICS,
        &json!({
            "inner_product": found.inner_product,
            "cosine": found.cosine,
            "adam_inner_product": found.adam_inner_product,
            "adam_cosine": found.adam_cosine,
            "gradient_norm": found.gradient_norm,
            "teacher_update_norm": found.teacher_update_norm,
            "loss": found.loss,
            "init_distance": init_distance,
            "batch": rows.size()[0],
        }),
    )?])
}
