//! Reading an MNIST sweep file: every setting checked against its range,
//! every refusal at its file, line and key.


use serde::Deserialize;
use toml::Spanned;

use crate::spec::{check_name, check_seeds, named_axis, setting, Axis, Source, SpecError};

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSweep {
    name: Spanned<String>,
    #[allow(dead_code)]
    kind: String,
    description: Option<String>,
    grid: RawGrid,
    #[serde(default)]
    teacher: RawTeacher,
    #[serde(default)]
    student: RawStudent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrid {
    seeds: Spanned<Axis<u64>>,
    init_pairs: Option<Spanned<Axis<InitPair>>>,
    aux_logits: Option<Spanned<Axis<u64>>>,
    targets: Option<Spanned<Axis<Target>>>,
    hidden: Option<Spanned<Axis<u64>>>,
    student_init_noise: Option<Spanned<Axis<f64>>>,
    theorem: Option<bool>,
    defense: Option<Spanned<Axis<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTeacher {
    epochs: Option<Spanned<Axis<u64>>>,
    lr: Option<Spanned<Axis<f64>>>,
    batch_size: Option<Spanned<Axis<u64>>>,
    train_samples: Option<Spanned<Axis<u64>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStudent {
    epochs: Option<Spanned<Axis<u64>>>,
    lr: Option<Spanned<Axis<f64>>>,
    batch_size: Option<Spanned<Axis<u64>>>,
    noise_samples: Option<Spanned<Axis<u64>>>,
}

pub(super) const EPOCHS: &str = "a whole number of epochs from 1 to 1000";
pub(super) const LR: &str = "a learning rate greater than 0 and at most 10";
pub(super) const BATCH: &str = "a batch size from 1 to 1000000";

pub(super) fn epochs_ok(e: &u64) -> bool {
    (1..=1000).contains(e)
}
pub(super) fn lr_ok(lr: &f64) -> bool {
    lr.is_finite() && *lr > 0.0 && *lr <= 10.0
}
pub(super) fn batch_ok(b: &u64) -> bool {
    (1..=1_000_000).contains(b)
}

/// Reads and checks an MNIST sweep file.
pub fn parse(source: &Source) -> Result<MnistSweep, SpecError> {
    let raw: RawSweep = toml::from_str(&source.text).map_err(|e| source.toml_error(e))?;
    check_name(source, &raw.name)?;
    let g = raw.grid;
    check_seeds(source, &g.seeds)?;
    let init_pairs = setting(
        source,
        "grid.init_pairs",
        g.init_pairs,
        InitPair::Same,
        "\"same\", \"cross\" or [teacher_init, student_init]",
        |_| true,
    )?;
    let aux_span = g.aux_logits.as_ref().map_or(0..0, |a| a.span());
    let aux_logits = setting(
        source,
        "grid.aux_logits",
        g.aux_logits,
        3,
        "a number of auxiliary logits from 0 to 1000",
        |m| *m <= 1000,
    )?;
    let targets = setting(
        source,
        "grid.targets",
        g.targets,
        Target::Aux,
        "\"aux\" or \"all\"",
        |_| true,
    )?;
    if targets.values().contains(&Target::Aux) && aux_logits.values().contains(&0) {
        return Err(source.error_at(
            aux_span,
            "grid.aux_logits",
            "0 auxiliary logits leaves an \"aux\" student nothing to distil: expected at least 1, or targets = [\"all\"]",
        ));
    }
    let hidden = setting(
        source,
        "grid.hidden",
        g.hidden,
        PAPER_WIDTH,
        "a hidden-layer width from 1 to 8192",
        |w| (1..=8192).contains(w),
    )?;
    let student_init_noise = setting(
        source,
        "grid.student_init_noise",
        g.student_init_noise,
        0.0,
        "a noise scale ε from 0 to 1000",
        |e| e.is_finite() && (0.0..=1000.0).contains(e),
    )?;
    let defense = parse_defense(source, g.defense)?;
    let t = raw.teacher;
    let teacher = Hyper {
        epochs: setting(source, "teacher.epochs", t.epochs, 5, EPOCHS, epochs_ok)?,
        lr: setting(source, "teacher.lr", t.lr, 3e-4, LR, lr_ok)?,
        batch_size: setting(
            source,
            "teacher.batch_size",
            t.batch_size,
            1024,
            BATCH,
            batch_ok,
        )?,
        samples: setting(
            source,
            "teacher.train_samples",
            t.train_samples,
            TRAIN_IMAGES,
            "a number of training images from 1 to 60000",
            |n| (1..=TRAIN_IMAGES).contains(n),
        )?,
    };
    let s = raw.student;
    let student = Hyper {
        epochs: setting(source, "student.epochs", s.epochs, 5, EPOCHS, epochs_ok)?,
        lr: setting(source, "student.lr", s.lr, 3e-4, LR, lr_ok)?,
        batch_size: setting(
            source,
            "student.batch_size",
            s.batch_size,
            1024,
            BATCH,
            batch_ok,
        )?,
        samples: setting(
            source,
            "student.noise_samples",
            s.noise_samples,
            TRAIN_IMAGES,
            "a number of noise images from 1 to 10000000",
            |n| (1..=10_000_000).contains(n),
        )?,
    };
    Ok(MnistSweep {
        name: raw.name.into_inner(),
        description: raw.description,
        seeds: g.seeds.into_inner(),
        init_pairs,
        aux_logits,
        targets,
        hidden,
        student_init_noise,
        theorem: g.theorem.unwrap_or(true),
        defense,
        teacher,
        student,
    })
}

/// The `grid.defense` axis; a bad value is refused at its own place in the
/// file, with the list of known defenses.
pub(super) fn parse_defense(
    source: &Source,
    raw: Option<Spanned<Axis<String>>>,
) -> Result<Axis<LogitDefense>, SpecError> {
    match raw {
        None => Ok(Axis::single(LogitDefense::None)),
        Some(raw) => named_axis(source, "grid.defense", raw, defense::NAMES, str::parse),
    }
}
