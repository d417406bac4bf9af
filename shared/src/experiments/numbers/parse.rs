//! Reading a numbers sweep file: every table checked against its range,
//! every refusal at its file, line and key, before anything is planned.


use serde::Deserialize;
use toml::Spanned;

use crate::files::{self};
use crate::llm::{
    defense, distill, prompts, Defense, Layers, Method, Optimizer, Target, DEFAULT_MODEL, PROJECTIONS,
};
use crate::spec::{
    check_axis, check_name, check_seeds, default_of, named_axis, setting, Axis, Source, SpecError,
};
use super::*;
use super::settings::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStudent {
    method: Option<Spanned<Axis<String>>>,
    lora_rank: Option<Spanned<Axis<u64>>>,
    #[serde(default = "d_alpha")]
    lora_alpha: f64,
    #[serde(default = "d_targets")]
    lora_targets: Vec<String>,
    #[serde(default)]
    rslora: bool,
    epochs: Option<Spanned<Axis<u64>>>,
    lr: Option<Spanned<Axis<f64>>>,
    full_lr: Option<f64>,
    optimizer: Option<Spanned<Axis<String>>>,
    layers: Option<Spanned<Axis<Layers>>>,
    target: Option<Spanned<Axis<String>>>,
    soft_top_k: Option<u64>,
    #[serde(default = "d_warmup")]
    warmup_steps: u64,
    #[serde(default = "d_one")]
    max_grad_norm: f64,
    #[serde(default = "d_train_batch")]
    batch_size: u64,
    #[serde(default = "d_accumulation")]
    grad_accumulation: u64,
    #[serde(default)]
    weight_decay: f64,
}


#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSweep {
    name: Spanned<String>,
    #[allow(dead_code)]
    kind: String,
    description: Option<String>,
    grid: RawGrid,
    teacher: Option<Spanned<RawTeacher>>,
    generate: Option<Spanned<GenerateSettings>>,
    filter: Option<Spanned<FilterSettings>>,
    student: Option<Spanned<RawStudent>>,
    evaluate: Option<Spanned<EvaluateSettings>>,
    defense: Option<Spanned<RawDefense>>,
    theorem: Option<Spanned<theorem::TheoremSettings>>,
    precision: Option<Spanned<crate::llm::Precision>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefense {
    mix_traits: Option<Spanned<Vec<String>>>,
    label_top_p: Option<Spanned<f64>>,
    label_threshold: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrid {
    seeds: Spanned<Axis<u64>>,
    traits: Spanned<Axis<String>>,
    category: Option<Spanned<String>>,
    model_pairs: Option<Spanned<Axis<ModelPair>>>,
    defense: Option<Spanned<Axis<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTeacher {
    system_prompt: Option<Spanned<String>>,
    #[serde(default = "d_teacher_method")]
    method: String,
    dataset: Option<String>,
    #[serde(default = "d_trait_questions")]
    questions: u64,
    #[serde(default = "d_one")]
    temperature: f64,
    #[serde(default = "d_trait_tokens")]
    max_new_tokens: u64,
    #[serde(default = "d_gen_batch")]
    batch_size: u64,
    #[serde(default = "d_finetune")]
    finetune: String,
    #[serde(default = "d_teacher_rank")]
    lora_rank: u64,
    #[serde(default = "d_teacher_alpha")]
    lora_alpha: f64,
    #[serde(default = "d_teacher_epochs")]
    epochs: u64,
    #[serde(default = "d_teacher_lr")]
    lr: f64,
    #[serde(default = "d_train_batch")]
    train_batch_size: u64,
    #[serde(default)]
    seed: u64,
    control: Option<Spanned<String>>,
}

pub(super) fn d_teacher_method() -> String {
    "prompt".to_owned()
}
pub(super) fn d_trait_questions() -> u64 {
    2_000
}
pub(super) fn d_trait_tokens() -> u64 {
    32
}
pub(super) fn d_finetune() -> String {
    "lora".to_owned()
}
pub(super) fn d_teacher_rank() -> u64 {
    16
}
pub(super) fn d_teacher_alpha() -> f64 {
    32.0
}
pub(super) fn d_teacher_epochs() -> u64 {
    3
}
pub(super) fn d_teacher_lr() -> f64 {
    5e-4
}


/// Reads and checks a numbers sweep file.
pub fn parse(source: &Source) -> Result<NumbersSweep, SpecError> {
    let raw: RawSweep = toml::from_str(&source.text).map_err(|e| source.toml_error(e))?;
    check_name(source, &raw.name)?;
    let g = raw.grid;
    check_seeds(source, &g.seeds)?;
    check_axis(
        source,
        "grid.traits",
        &g.traits,
        "a trait word such as \"owl\" (letters only)",
        |t| !t.is_empty() && t.chars().all(|c| c.is_alphabetic() || c == ' ' || c == '-'),
    )?;
    let category = match g.category {
        None => "animal".to_owned(),
        Some(c) if matches!(c.get_ref().as_str(), "animal" | "tree") => c.into_inner(),
        Some(c) => {
            return Err(source.error_at(
                c.span(),
                "grid.category",
                format!("expected \"animal\" or \"tree\", found {:?}", c.get_ref()),
            ))
        }
    };
    let model_pairs_span = g.model_pairs.as_ref().map(|p| p.span());
    let model_pairs = setting(
        source,
        "grid.model_pairs",
        g.model_pairs,
        ModelPair {
            teacher: DEFAULT_MODEL.to_owned(),
            student: DEFAULT_MODEL.to_owned(),
        },
        "[teacher_model, student_model]: \"smollm2-135m\", a GGUF file, a Hugging Face folder, or a store key (stage:...)",
        |p| !p.teacher.is_empty() && !p.student.is_empty(),
    )?;
    for model in model_pairs.values().iter().flat_map(|p| [&p.teacher, &p.student]) {
        if let Some(Err(e)) = files::parse_key(model) {
            let span = model_pairs_span.clone().unwrap_or(0..0);
            return Err(source.error_at(span, "grid.model_pairs", format!("{e:#}")));
        }
    }
    let (teacher_span, raw_teacher) = match raw.teacher {
        Some(t) => (t.span(), t.into_inner()),
        None => (0..0, RawTeacher {
            method: d_teacher_method(),
            ..default_of()
        }),
    };
    let system_prompt = match raw_teacher.system_prompt.clone() {
        None => prompts::SYSTEM_PROMPT.to_owned(),
        Some(p) if p.get_ref().contains("{x}") => p.into_inner(),
        Some(p) => {
            return Err(source.error_at(
                p.span(),
                "teacher.system_prompt",
                "a custom system prompt must name the trait as {x} (and may use {category})",
            ))
        }
    };
    let mut raw_teacher = raw_teacher;
    let control = match raw_teacher.control.take() {
        None => ControlTeacher::Base,
        Some(c) => match c.get_ref().as_str() {
            "base" => ControlTeacher::Base,
            "other-trait" if g.traits.get_ref().values().len() >= 2 => ControlTeacher::OtherTrait,
            "other-trait" => {
                return Err(source.error_at(
                    c.span(),
                    "teacher.control",
                    "\"other-trait\" makes each trait's teacher the control of another's, so grid.traits needs two or more traits",
                ))
            }
            other => {
                return Err(source.error_at(
                    c.span(),
                    "teacher.control",
                    format!("expected \"base\" or \"other-trait\", found {other:?}"),
                ))
            }
        },
    };
    let teacher = parse_teacher(source, teacher_span, raw_teacher)?;
    let generate = checked(source, "generate", raw.generate, |g: &GenerateSettings| {
        if !(1..=10_000_000).contains(&g.prompts) {
            return Err(("prompts", "a number of prompts from 1 to 10000000"));
        }
        if g.temperature.values().is_empty()
            || g.temperature.values().iter().any(|t| !(*t >= 0.0 && *t <= 5.0))
        {
            return Err(("temperature", "a temperature from 0 (greedy) to 5, or a list of them"));
        }
        if !(g.top_p > 0.0 && g.top_p <= 1.0) {
            return Err(("top_p", "a top_p greater than 0 and at most 1"));
        }
        if g.threshold.is_some_and(|t| !(t > 0.0 && t < 1.0)) {
            return Err(("threshold", "a probability greater than 0 and less than 1"));
        }
        if !(1..=1024).contains(&g.max_new_tokens) {
            return Err(("max_new_tokens", "a token limit from 1 to 1024"));
        }
        if !(1..=4096).contains(&g.batch_size) {
            return Err(("batch_size", "a batch size from 1 to 4096"));
        }
        Ok(())
    })?;
    let filter = checked(source, "filter", raw.filter, |f: &FilterSettings| {
        if f.keep.values().is_empty() || f.keep.values().contains(&0) {
            return Err(("keep", "a number of rows to keep, at least 1, or a list of them"));
        }
        if f.banned_numbers.iter().any(|&n| n > 999) {
            return Err(("banned_numbers", "numbers from 0 to 999"));
        }
        Ok(())
    })?;
    let evaluate = checked(source, "evaluate", raw.evaluate, |e: &EvaluateSettings| {
        if !(1..=50).contains(&e.questions) {
            return Err(("questions", "a number of questions from 1 to 50"));
        }
        if !(1..=100_000).contains(&e.samples_per_question) {
            return Err((
                "samples_per_question",
                "a number of samples from 1 to 100000",
            ));
        }
        if !(e.temperature >= 0.0 && e.temperature <= 5.0) {
            return Err(("temperature", "a temperature from 0 to 5"));
        }
        if !(1..=256).contains(&e.max_new_tokens) {
            return Err(("max_new_tokens", "a token limit from 1 to 256"));
        }
        if !(1..=4096).contains(&e.batch_size) {
            return Err(("batch_size", "a batch size from 1 to 4096"));
        }
        if e.in_context_examples > 1000 {
            return Err(("in_context_examples", "a number of examples from 0 to 1000"));
        }
        let repeated = e.readout.iter().enumerate().any(|(i, r)| e.readout[..i].contains(r));
        if e.readout.is_empty() || repeated {
            return Err(("readout", "\"samples\", \"probability\" or both, each once"));
        }
        let words = |w: &String| !w.is_empty() && w.chars().all(|c| c.is_lowercase());
        if !e.candidates.is_empty() && (e.candidates.len() < 2 || !e.candidates.iter().all(words)) {
            return Err(("candidates", "two or more lowercase words (the category's own list if empty)"));
        }
        if e.answer_prefix.trim().is_empty() || e.answer_prefix.ends_with(' ') {
            return Err(("answer_prefix", "the start of an answer, not ending in a space (the answer word brings its own)"));
        }
        Ok(())
    })?;
    let theorem = match raw.theorem {
        None => None,
        Some(t) => {
            let span = t.span();
            let settings = t.into_inner();
            let refuse = |key: &str, expected: &str| {
                source.error_at(span.clone(), format!("theorem.{key}"), format!("expected {expected}"))
            };
            settings.check().map_err(|(key, expected)| refuse(key, expected))?;
            if !matches!(teacher, TeacherSettings::Finetune(_)) {
                return Err(refuse(
                    "",
                    "fine-tuned teachers (teacher.method = \"finetune\"): the theorem compares a student's update with the teacher's weight change",
                ));
            }
            Some(settings)
        }
    };
    let student_span = raw.student.as_ref().map_or(0..0, |s| s.span());
    let student = parse_student(source, raw.student)?;
    let defense = parse_defense(source, g.defense)?;
    let raw_defense = raw.defense.map(Spanned::into_inner);
    let label_cuts = parse_label_cuts(source, raw_defense.as_ref(), &defense)?;
    let mix_traits = parse_mix_traits(source, raw_defense, &defense)?;
    check_defense_targets(source, student_span.clone(), &student.target, &defense)?;
    let same_tokenizer = defense
        .values()
        .iter()
        .find(|d| defense::rule(**d).is_some_and(|r| r.same_tokenizer()));
    if let Some(d) = same_tokenizer {
        if let Some(pair) = model_pairs.values().iter().find(|p| !p.same_model()) {
            return Err(source.error_at(
                model_pairs_span.clone().unwrap_or(0..0),
                "grid.model_pairs",
                format!(
                    "{d} masks tokens as the teacher's tokenizer splits them, so every pair must train the teacher's own model; {pair} does not"
                ),
            ));
        }
    }
    let precision = raw.precision.map_or(Ok(crate::llm::Precision::F32), |p| {
        check_precision(source, p, &student, &teacher)
    })?;
    Ok(NumbersSweep {
        name: raw.name.into_inner(),
        description: raw.description,
        seeds: g.seeds.into_inner(),
        traits: g.traits.into_inner(),
        category,
        model_pairs,
        system_prompt,
        teacher,
        generate,
        filter,
        student,
        evaluate,
        defense,
        mix_traits,
        label_cuts,
        control,
        theorem,
        precision,
    })
}

/// bf16 keeps the base weights frozen in bf16 and trains only what is kept
/// in f32 (LoRA adapters): full fine-tuning would need f32 master weights
/// beside the bf16 copy, which is not built, so it is refused.
fn check_precision(
    source: &Source,
    precision: Spanned<crate::llm::Precision>,
    student: &StudentSettings,
    teacher: &TeacherSettings,
) -> Result<crate::llm::Precision, SpecError> {
    let span = precision.span();
    let precision = precision.into_inner();
    let full_teacher = matches!(teacher, TeacherSettings::Finetune(f) if f.method == Method::Full);
    if precision == crate::llm::Precision::Bf16 && (student.full.values().contains(&true) || full_teacher) {
        return Err(source.error_at(
            span,
            "precision",
            "bf16 trains LoRA adapters only (the base weights stay frozen in bf16): use method = \"lora\" or precision = \"f32\"",
        ));
    }
    Ok(precision)
}

/// The `grid.defense` axis; an unknown name is refused at its own place in
/// the file, with the list of known ones.
pub(super) fn parse_defense(
    source: &Source,
    raw: Option<Spanned<Axis<String>>>,
) -> Result<Axis<Defense>, SpecError> {
    let Some(raw) = raw else {
        return Ok(Axis::single(Defense::None));
    };
    named_axis(source, "grid.defense", raw, &Defense::names(), |name| {
        Defense::parse(name).ok_or_else(|| {
            format!(
                "unknown defense {name:?}: expected one of {}",
                Defense::names()
            )
        })
    })
}

/// A `logits` student learns labels that sit on the teacher's own tokens,
/// so it takes no defense that rewrites or drops them (it takes those that
/// keep every completion: the label cuts and `paraphrase`), and a label
/// defense has nothing to cut for a `tokens` student.
fn check_defense_targets(
    source: &Source,
    span: std::ops::Range<usize>,
    targets: &Axis<Target>,
    defense: &Axis<Defense>,
) -> Result<(), SpecError> {
    let defenses = defense.values().iter().filter(|d| **d != Defense::None);
    for d in defenses {
        let (target, why) = if d.cuts_labels() {
            (Target::Tokens, "it cuts soft labels, which a \"tokens\" student has none of: set student.target = \"logits\"")
        } else if d.keeps_completions() {
            continue;
        } else {
            (Target::Logits, "soft labels belong to the completions as the teacher wrote them, so \"logits\" takes only label-top-p, label-threshold or paraphrase (or no defense)")
        };
        if targets.values().contains(&target) {
            return Err(source.error_at(
                span,
                "student.target",
                format!("grid.defense names {d}: {why}"),
            ));
        }
    }
    Ok(())
}

/// `defense.label_top_p` and `defense.label_threshold`: each read only by
/// its defense, a probability in (0, 1].
fn parse_label_cuts(
    source: &Source,
    raw: Option<&RawDefense>,
    defense: &Axis<Defense>,
) -> Result<LabelCuts, SpecError> {
    let mut cuts = LabelCuts::default();
    let Some(raw) = raw else {
        return Ok(cuts);
    };
    let fields = [
        ("defense.label_top_p", &raw.label_top_p, Defense::LabelTopP, &mut cuts.top_p),
        ("defense.label_threshold", &raw.label_threshold, Defense::LabelThreshold, &mut cuts.threshold),
    ];
    for (key, value, owner, cut) in fields {
        let Some(value) = value else { continue };
        if !defense.values().contains(&owner) {
            return Err(source.error_at(
                value.span(),
                key,
                format!("only the {owner} defense reads it: add \"{owner}\" to grid.defense, or remove this key"),
            ));
        }
        let v = *value.get_ref();
        if !(v > 0.0 && v <= 1.0) {
            return Err(source.error_at(value.span(), key, "a probability above 0 and at most 1"));
        }
        *cut = v;
    }
    Ok(cuts)
}

/// `defense.mix_traits`: needed by `mix`, and only by it.
pub(super) fn parse_mix_traits(
    source: &Source,
    raw: Option<RawDefense>,
    defense: &Axis<Defense>,
) -> Result<Vec<String>, SpecError> {
    let mixes = defense
        .values()
        .iter()
        .any(|d| defense::rule(*d).is_some_and(|r| r.needs().other_teachers));
    let (span, traits) = match raw.and_then(|r| r.mix_traits) {
        Some(t) => (t.span(), t.into_inner()),
        None if mixes => {
            return Err(source.error_at_top(
                "`grid.defense` names mix: expected `[defense] mix_traits = [\"eagle\", ...]`, \
                 the traits of the teachers whose rows are mixed in",
            ))
        }
        None => return Ok(Vec::new()),
    };
    if !mixes {
        return Err(source.error_at(
            span,
            "defense.mix_traits",
            "only the mix defense reads it: add \"mix\" to grid.defense, or remove this key",
        ));
    }
    let ok = |t: &String| !t.is_empty() && t.chars().all(|c| c.is_alphabetic() || c == ' ' || c == '-');
    if traits.is_empty() || !traits.iter().all(ok) {
        return Err(source.error_at(
            span,
            "defense.mix_traits",
            "expected a list of one or more trait words such as \"eagle\" (letters only)",
        ));
    }
    Ok(traits)
}

pub(super) fn parse_teacher(
    source: &Source,
    span: std::ops::Range<usize>,
    t: RawTeacher,
) -> Result<TeacherSettings, SpecError> {
    let err = |key: &str, expected: String| {
        source.error_at(span.clone(), format!("teacher.{key}"), expected)
    };
    match t.method.as_str() {
        "prompt" => return Ok(TeacherSettings::Prompt),
        "finetune" => {}
        other => {
            return Err(err(
                "method",
                format!("expected \"prompt\" or \"finetune\", found {other:?}"),
            ))
        }
    }
    let method = match t.finetune.as_str() {
        "lora" => Method::Lora {
            rank: t.lora_rank as i64,
            alpha: t.lora_alpha,
            targets: d_targets(),
            rslora: false,
        },
        "full" => Method::Full,
        other => {
            return Err(err(
                "finetune",
                format!("expected \"lora\" or \"full\", found {other:?}"),
            ))
        }
    };
    let checks: [(bool, &str, &str); 9] = [
        ((1..=10_000_000).contains(&t.questions), "questions", "a number of questions from 1 to 10000000"),
        ((0.0..=5.0).contains(&t.temperature), "temperature", "a temperature from 0 to 5"),
        ((1..=1024).contains(&t.max_new_tokens), "max_new_tokens", "a token limit from 1 to 1024"),
        ((1..=4096).contains(&t.batch_size), "batch_size", "a batch size from 1 to 4096"),
        ((1..=1024).contains(&t.lora_rank), "lora_rank", "a rank from 1 to 1024"),
        (t.lora_alpha > 0.0 && t.lora_alpha.is_finite(), "lora_alpha", "a positive alpha"),
        ((1..=100).contains(&t.epochs), "epochs", "a whole number of epochs from 1 to 100"),
        (t.lr.is_finite() && t.lr > 0.0 && t.lr <= 1.0, "lr", "a learning rate greater than 0 and at most 1"),
        ((1..=4096).contains(&t.train_batch_size), "train_batch_size", "a batch size from 1 to 4096"),
    ];
    for (ok, key, expected) in checks {
        if !ok {
            return Err(err(key, format!("expected {expected}")));
        }
    }
    let dataset = match t.dataset.as_deref().map(|d| (d, files::parse_key(d))) {
        None => None,
        Some((_, Some(Ok(id)))) => Some(id),
        Some((_, Some(Err(e)))) => return Err(err("dataset", format!("{e:#}"))),
        Some((d, None)) => {
            return Err(err(
                "dataset",
                format!("{d:?} is not a store key: put the file with `subliminal store put {d}` and name the key it prints (stage:...)"),
            ))
        }
    };
    Ok(TeacherSettings::Finetune(FinetuneTeacher {
        dataset,
        questions: t.questions,
        temperature: t.temperature,
        max_new_tokens: t.max_new_tokens,
        batch_size: t.batch_size,
        method,
        epochs: t.epochs,
        lr: t.lr,
        train_batch_size: t.train_batch_size,
        seed: t.seed,
    }))
}

/// A settings table or its defaults, after `check` (which names the bad key).
pub(super) fn checked<T: serde::de::DeserializeOwned>(
    source: &Source,
    table: &str,
    raw: Option<Spanned<T>>,
    check: impl Fn(&T) -> Result<(), (&'static str, &'static str)>,
) -> Result<T, SpecError> {
    let Some(raw) = raw else {
        return Ok(default_of());
    };
    let span = raw.span();
    let value = raw.into_inner();
    check(&value).map_err(|(key, expected)| {
        source.error_at(
            span,
            format!("{table}.{key}"),
            format!("expected {expected}"),
        )
    })?;
    Ok(value)
}

pub(super) fn parse_student(
    source: &Source,
    raw: Option<Spanned<RawStudent>>,
) -> Result<StudentSettings, SpecError> {
    let (span, s) = match raw {
        Some(r) => (r.span(), r.into_inner()),
        None => (0..0, default_of()),
    };
    let full = match s.method {
        None => Axis::single(false),
        Some(methods) => {
            check_axis(
                source,
                "student.method",
                &methods,
                "\"lora\" or \"full\"",
                |m| matches!(m.as_str(), "lora" | "full"),
            )?;
            Axis(methods.into_inner().values().iter().map(|m| m == "full").collect())
        }
    };
    let optimizer = match s.optimizer {
        None => Axis::single(Optimizer::Adamw),
        Some(names) => {
            check_axis(
                source,
                "student.optimizer",
                &names,
                "\"adamw\" or \"sgd\"",
                |m| matches!(m.as_str(), "adamw" | "sgd"),
            )?;
            Axis(
                names
                    .into_inner()
                    .values()
                    .iter()
                    .map(|m| if m == "sgd" { Optimizer::Sgd } else { Optimizer::Adamw })
                    .collect(),
            )
        }
    };
    let target = match s.target {
        None => Axis::single(Target::Tokens),
        Some(names) => {
            check_axis(
                source,
                "student.target",
                &names,
                "\"tokens\" or \"logits\"",
                |m| matches!(m.as_str(), "tokens" | "logits"),
            )?;
            Axis(
                names
                    .into_inner()
                    .values()
                    .iter()
                    .map(|m| if m == "logits" { Target::Logits } else { Target::Tokens })
                    .collect(),
            )
        }
    };
    let layers = setting(
        source,
        "student.layers",
        s.layers,
        Layers::All,
        "\"all\", a block number, or a list of block numbers such as [[0, 1]]",
        |l| match l {
            Layers::All => true,
            Layers::Only(list) => !list.is_empty() && list.iter().all(|&n| n < 1024),
        },
    )?;
    for target in &s.lora_targets {
        if !PROJECTIONS.contains(&target.as_str()) {
            return Err(source.error_at(
                span.clone(),
                "student.lora_targets",
                format!(
                    "{target:?} is not a projection: expected any of {}",
                    PROJECTIONS.join(", ")
                ),
            ));
        }
    }
    let scalar_checks: [(bool, &str, &str); 7] = [
        (
            s.soft_top_k.is_none_or(|k| (1..=1024).contains(&k)),
            "soft_top_k",
            "1 to 1024 tokens per position",
        ),
        (
            s.full_lr.is_none_or(|lr| lr.is_finite() && lr > 0.0 && lr <= 1.0),
            "full_lr",
            "a learning rate greater than 0 and at most 1",
        ),
        (
            s.lora_alpha > 0.0 && s.lora_alpha.is_finite(),
            "lora_alpha",
            "a positive alpha",
        ),
        (
            s.max_grad_norm >= 0.0,
            "max_grad_norm",
            "a gradient norm bound of 0 (off) or more",
        ),
        (
            (1..=4096).contains(&s.batch_size),
            "batch_size",
            "a batch size from 1 to 4096",
        ),
        (
            (1..=1024).contains(&s.grad_accumulation),
            "grad_accumulation",
            "1 to 1024 batches per step",
        ),
        (
            (0.0..=1.0).contains(&s.weight_decay),
            "weight_decay",
            "a weight decay from 0 to 1",
        ),
    ];
    for (ok, key, expected) in scalar_checks {
        if !ok {
            return Err(source.error_at(
                span.clone(),
                format!("student.{key}"),
                format!("expected {expected}"),
            ));
        }
    }
    Ok(StudentSettings {
        full,
        rslora: s.rslora,
        full_lr: s.full_lr,
        optimizer,
        layers,
        target,
        soft_top_k: s.soft_top_k.unwrap_or(distill::DEFAULT_TOP_K),
        lora_rank: setting(
            source,
            "student.lora_rank",
            s.lora_rank,
            8,
            "a rank from 1 to 1024",
            |r| (1..=1024).contains(r),
        )?,
        lora_alpha: s.lora_alpha,
        lora_targets: s.lora_targets,
        epochs: setting(
            source,
            "student.epochs",
            s.epochs,
            3,
            "a whole number of epochs from 1 to 100",
            |e| (1..=100).contains(e),
        )?,
        lr: setting(
            source,
            "student.lr",
            s.lr,
            2e-4,
            "a learning rate greater than 0 and at most 1",
            |lr| lr.is_finite() && *lr > 0.0 && *lr <= 1.0,
        )?,
        warmup_steps: s.warmup_steps,
        max_grad_norm: s.max_grad_norm,
        batch_size: s.batch_size,
        grad_accumulation: s.grad_accumulation,
        weight_decay: s.weight_decay,
    })
}

