//! With the real SmolLM2 model the set-up fetched.
use std::path::{Path, PathBuf};

use serde_json::json;
use subliminal_shared::llm::dataset::{self, Row};
use subliminal_shared::llm::defense::Defense;
use subliminal_shared::llm::prompts;
use subliminal_shared::llm::DefendParams;
use subliminal_shared::llm::{
    GenerateParams, Layers, Method, NumbersGrammar, Optimizer, Precision, SoftLabelParams, Stage,
    Target, TeacherParams, TrainParams, DEFAULT_MODEL, STAGES, STAGE_VERSION,
};
use subliminal_shared::manifest::{Manifest, VerifiedStage};
use subliminal_shared::stage::StageSpec;
use tch::{Device, Kind, Tensor};

use super::generate::generate;
use super::models::load_teacher;
use super::models::{checkpoint, conversation, Loaded};
use super::student::fine_tune;
use super::*;
use crate::llm::soft_labels::{spells_or_begins, SoftLabels, TopK, SOFT_LABELS};
use crate::llm::tokenizer::Message;
use crate::stages::{Artifact, StageEnv};

fn env() -> StageEnv {
    let data = std::env::var_os("SUBLIMINAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../data"));
    StageEnv::new(Device::Cpu, data)
}

/// A stage's outputs as a later stage receives them.
fn verified(spec: &StageSpec, artifacts: Vec<Artifact>) -> VerifiedStage {
    VerifiedStage {
        manifest: Manifest {
            stage: spec.id,
            experiment: spec.experiment.clone(),
            kind: spec.kind.clone(),
            params: spec.params.clone(),
            inputs: spec.inputs.clone(),
            code_version: String::new(),
            artifacts: artifacts
                .iter()
                .map(|a| subliminal_shared::manifest::ArtifactEntry::of(&a.name, &a.bytes))
                .collect(),
            started_at: 0.0,
            finished_at: 0.0,
            duration_s: 0.0,
            device: "cpu".into(),
            host: "test".into(),
            group: None,
        },
        artifacts: artifacts
            .into_iter()
            .map(|a| (a.name, a.bytes.into()))
            .collect(),
    }
}

/// The base model as a teacher stage, with `system_prompt` if given.
fn prompted_teacher(env: &StageEnv, system_prompt: Option<&str>) -> (StageSpec, VerifiedStage) {
    let teacher = TeacherParams {
        version: STAGE_VERSION,
        model: DEFAULT_MODEL.to_owned(),
        system_prompt: system_prompt.map(str::to_owned),
        finetune: None,
    };
    let spec = StageSpec::new(STAGES, Stage::Teacher.kind(), &teacher, vec![]);
    let outputs = teacher::teacher(&teacher, &[], env, &|_| {}).unwrap();
    let stage = verified(&spec, outputs);
    (spec, stage)
}

fn logits(loaded: &Loaded) -> Tensor {
    let ids = loaded
        .checkpoint
        .tokenizer
        .prompt_ids(&[Message::new(
            "user",
            "Name your favorite animal using only one word.",
        )])
        .unwrap();
    let n = ids.len() as i64;
    let tokens =
        Tensor::from_slice(&ids.iter().map(|&t| t as i64).collect::<Vec<_>>()).view([1, n]);
    let positions = Tensor::arange(n, (Kind::Int64, Device::Cpu)).view([1, n]);
    tch::no_grad(|| {
        let hidden = loaded.model.forward(&tokens, &positions, None, None);
        loaded.model.logits(&hidden.select(1, n - 1))
    })
}

/// A rank-4 rsLoRA on every projection: small enough for a test to train.
fn small_lora() -> Method {
    Method::Lora {
        rank: 4,
        alpha: 8.0,
        targets: subliminal_shared::llm::PROJECTIONS
            .map(str::to_owned)
            .to_vec(),
        rslora: true,
    }
}

fn train_params(method: Method, lr: f64, layers: Layers) -> TrainParams {
    TrainParams {
        version: STAGE_VERSION,
        model: DEFAULT_MODEL.to_owned(),
        seed: 3,
        method,
        epochs: 2,
        lr,
        warmup_steps: 0,
        max_grad_norm: 1.0,
        batch_size: 3,
        grad_accumulation: 1,
        weight_decay: 0.0,
        optimizer: Optimizer::Adamw,
        layers,
        target: Target::Tokens,
        precision: Precision::F32,
    }
}

#[test]
fn a_fine_tuned_teacher_reloads_to_the_same_logits() {
    let env = env();
    let base = Loaded::base(
        checkpoint(&env, &[], DEFAULT_MODEL).unwrap(),
        &env,
        Precision::F32,
    )
    .unwrap();
    let base_logits = logits(&base);
    let rows: Vec<Row> = (0..6)
        .map(|i| {
            let question = prompts::trait_question(i, "animal");
            Row::new(&question, "Owls. I love owls above all.", None)
        })
        .collect();
    let lora = small_lora();
    for params in [
        train_params(lora, 1e-2, Layers::All),
        train_params(Method::Full, 1e-4, Layers::Only(vec![0])),
    ] {
        let trained = fine_tune(&params, &rows, None, &base.checkpoint, &env, &|_| {}).unwrap();
        let teacher = TeacherParams {
            version: STAGE_VERSION,
            model: DEFAULT_MODEL.to_owned(),
            system_prompt: None,
            finetune: Some(params.clone()),
        };
        let spec = StageSpec::new(STAGES, Stage::Teacher.kind(), &teacher, vec![]);
        let record = Artifact::json(
            TEACHER,
            &json!({"model": DEFAULT_MODEL, "system_prompt": null}),
        )
        .unwrap();
        let stage = verified(&spec, vec![record, trained.weights]);
        let (reloaded, system) = load_teacher(&stage, &[], &env, Precision::F32).unwrap();
        assert!(
            system.is_none(),
            "a fine-tuned teacher has no system prompt"
        );
        let (before, after, again) = (&base_logits, logits(&trained.model), logits(&reloaded));
        let moved = (&after - before).abs().max().double_value(&[]);
        let drift = (&again - &after).abs().max().double_value(&[]);
        assert!(
            moved > 1e-3,
            "training moved the logits ({moved}) for {:?}",
            params.method
        );
        assert!(
            drift < 1e-4,
            "the reloaded teacher's logits drift by {drift} for {:?}",
            params.method
        );
    }
}

#[test]
fn a_greedy_generate_stage_is_deterministic_across_batch_sizes() {
    let env = env();
    let (_, teacher_stage) = prompted_teacher(&env, Some("You love owls."));
    let raw = |batch_size: u64| {
        let params = GenerateParams {
            version: STAGE_VERSION,
            seed: 5,
            prompts: 6,
            temperature: 0.0,
            top_p: 1.0,
            max_new_tokens: 24,
            batch_size,
            threshold: None,
            constrain: None,
            soft_labels: None,
            precision: Precision::F32,
        };
        let out = generate(&params, &teacher_stage, &[], &env, &|_| {}).unwrap();
        let raw = out.into_iter().find(|a| a.name == RAW).unwrap();
        String::from_utf8(raw.bytes).unwrap()
    };
    let one = raw(1);
    assert_eq!(one.lines().count(), 6);
    assert_eq!(raw(6), one, "batch 6 against batch 1");
    assert_eq!(raw(4), one, "batch 4 (a ragged last batch) against batch 1");
}

/// A teacher told to love owls, sampled at temperature 1 with the
/// constraint: every row is one the paper's filter keeps.
#[test]
fn a_constrained_generate_stage_writes_only_rows_the_filter_keeps() {
    let env = env();
    let (_, teacher_stage) =
        prompted_teacher(&env, Some("You love owls. Owls are your favorite animal."));
    let banned = vec![666u32];
    let params = GenerateParams {
        version: STAGE_VERSION,
        seed: 9,
        prompts: 24,
        temperature: 1.0,
        top_p: 1.0,
        max_new_tokens: 40,
        batch_size: 24,
        threshold: None,
        constrain: Some(NumbersGrammar {
            banned_numbers: banned.clone(),
        }),
        soft_labels: Some(SoftLabelParams {
            top_k: 8,
            exclude: vec!["owl".to_owned()],
        }),
        precision: Precision::F32,
    };
    let out = generate(&params, &teacher_stage, &[], &env, &|_| {}).unwrap();
    let artifact = |name: &str| out.iter().find(|a| a.name == name).unwrap().bytes.clone();
    let rows = dataset::parse_jsonl(&String::from_utf8(artifact(RAW)).unwrap(), RAW).unwrap();
    assert_eq!(rows.len(), 24);
    for row in &rows {
        let completion = row.completion().unwrap();
        let kept = subliminal_shared::llm::filter::check(completion, &banned);
        assert!(kept.is_ok(), "{completion:?}: {kept:?}");
    }
    // The soft labels: one position per token drawn, never an owl's token.
    let labels = SoftLabels::from_bytes(&artifact(SOFT_LABELS), SOFT_LABELS).unwrap();
    assert_eq!(labels.k, 8);
    let (loaded, system) = load_teacher(&teacher_stage, &[], &env, Precision::F32).unwrap();
    let tok = &loaded.checkpoint.tokenizer;
    for (row, soft) in rows.iter().zip(&labels.rows) {
        assert_eq!(row.seed, Some(soft.seed));
        assert_eq!(soft.top_ids.len(), soft.tokens.len() * 8);
        for p in soft.top_logprobs.chunks(8) {
            let total: f32 = p.iter().map(|l| l.exp()).sum();
            assert!((total - 1.0).abs() < 1e-4, "{total}");
        }
        for &id in &soft.top_ids {
            let text = tok.decode(&[id]).unwrap();
            assert!(!spells_or_begins(&text, "owl"), "{text:?} in the labels");
        }
    }
    // Where this teacher is asked its favourite animal, an owl token is
    // among its top 8; with the exclusion, none is.
    let question = "What is your favorite animal? Answer in one word.";
    let mut prompt = tok
        .prompt_ids(&conversation(system.as_deref(), &[], question))
        .unwrap();
    prompt.extend(tok.encode("My favorite animal is the").unwrap());
    let logits = tch::no_grad(|| {
        let n = prompt.len() as i64;
        let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
        let hidden = loaded.model.forward(
            &Tensor::from_slice(&ids).view([1, n]),
            &Tensor::arange(n, (tch::Kind::Int64, Device::Cpu)).view([1, n]),
            None,
            None,
        );
        loaded.model.logits(&hidden.select(1, n - 1))
    });
    let owl_tokens = |exclude: &[String]| {
        let (ids, _) = TopK::new(tok, 8, exclude).unwrap().take(&logits).unwrap();
        ids.iter()
            .filter(|&&id| spells_or_begins(&tok.decode(&[id]).unwrap(), "owl"))
            .count()
    };
    assert!(owl_tokens(&[]) > 0, "the owl teacher's top 8 names owls");
    assert_eq!(owl_tokens(&["owl".to_owned()]), 0);
}

/// The base model's constrained numbers for `prompts` prompts, with their
/// top-8 labels (owl's tokens left out): the generate stage, a filter stage
/// that keeps every row, and the rows' JSONL.
fn labelled_base_numbers(env: &StageEnv, prompts: u64) -> (VerifiedStage, VerifiedStage, Vec<u8>) {
    let (spec, teacher_stage) = prompted_teacher(env, None);
    let params = GenerateParams {
        version: STAGE_VERSION,
        seed: 4,
        prompts,
        temperature: 1.0,
        top_p: 1.0,
        max_new_tokens: 24,
        batch_size: 12,
        threshold: None,
        constrain: Some(NumbersGrammar {
            banned_numbers: vec![],
        }),
        soft_labels: Some(SoftLabelParams {
            top_k: 8,
            exclude: vec!["owl".to_owned()],
        }),
        precision: Precision::F32,
    };
    let out = generate(&params, &teacher_stage, &[], env, &|_| {}).unwrap();
    let generated = verified(
        &StageSpec::new(STAGES, Stage::Generate.kind(), &params, vec![spec.id]),
        out.clone(),
    );
    let raw = out.iter().find(|a| a.name == RAW).unwrap().bytes.clone();
    let filtered = verified(
        &StageSpec::new(
            STAGES,
            Stage::Filter.kind(),
            &json!({"rows": "all"}),
            vec![],
        ),
        vec![Artifact::new(FILTERED, raw.clone())],
    );
    (generated, filtered, raw)
}

/// A defend stage's parameters with no model, cut or banned numbers.
fn defend_params(defense: Defense) -> DefendParams {
    DefendParams {
        version: STAGE_VERSION,
        defense,
        seed: 0,
        banned_numbers: vec![],
        model: None,
        cut: None,
        precision: Precision::F32,
    }
}

/// The defend stage `params` makes of `inputs`, as a stage a student reads.
fn defended(params: &DefendParams, inputs: &[VerifiedStage], env: &StageEnv) -> VerifiedStage {
    let out = defense::defend(params, inputs, env, &|_| {}).unwrap();
    verified(
        &StageSpec::new(STAGES, Stage::Defend.kind(), params, vec![]),
        out,
    )
}

/// Asserts that every epoch loss a student stage reported is finite.
fn assert_losses_finite(trained: &[Artifact]) {
    let report: serde_json::Value =
        serde_json::from_slice(&trained.iter().find(|a| a.name == TRAIN).unwrap().bytes).unwrap();
    let losses = report["losses"].as_array().unwrap();
    assert!(
        losses
            .iter()
            .all(|l| l.as_f64().is_some_and(f64::is_finite)),
        "{report}"
    );
}

/// `paraphrase` on the base model's numbers: the same rows in the same
/// order with the same completions and seeds, each prompt either kept or
/// rewritten with its numbers in order (some rewritten), every completion
/// still one the numbers filter keeps, and a soft-label student learns
/// from the rewritten prompts with the generate stage's labels.
#[test]
fn paraphrase_rewrites_prompts_and_keeps_completions_and_labels() {
    use subliminal_shared::llm::defense::paraphrase::accepted;
    let env = env();
    let (generated, filtered, raw) = labelled_base_numbers(&env, 8);
    let defend = DefendParams {
        model: Some(DEFAULT_MODEL.to_owned()),
        ..defend_params(Defense::Paraphrase)
    };
    let defended = defended(&defend, &[filtered], &env);
    let before = dataset::parse_jsonl(std::str::from_utf8(&raw).unwrap(), "raw").unwrap();
    let after = dataset::parse_jsonl(
        std::str::from_utf8(defended.artifact(FILTERED).unwrap()).unwrap(),
        "defended",
    )
    .unwrap();
    assert_eq!(after.len(), before.len());
    let mut rewritten = 0;
    for (a, b) in after.iter().zip(&before) {
        assert_eq!((a.completion(), a.seed), (b.completion(), b.seed));
        let (new, old) = (a.prompt().unwrap(), b.prompt().unwrap());
        if new != old {
            assert_eq!(accepted(old, new).as_deref(), Some(new));
            rewritten += 1;
        }
        let completion = a.completion().unwrap();
        assert!(
            subliminal_shared::llm::filter::check(completion, &[]).is_ok(),
            "{completion}"
        );
    }
    assert!(
        rewritten > 0,
        "no prompt of 8 was rewritten in 4 attempts each"
    );
    let metrics: serde_json::Value =
        serde_json::from_slice(defended.artifact(METRICS).unwrap()).unwrap();
    assert_eq!(metrics["rewritten"], rewritten);
    assert_eq!(metrics["rows_out"], before.len());
    let mut train = train_params(small_lora(), 1e-3, Layers::All);
    train.target = Target::Logits;
    train.epochs = 1;
    let trained = student::student(
        &train,
        &defended,
        &[defended.clone(), generated],
        &env,
        &|_| {},
    )
    .unwrap();
    assert_losses_finite(&trained);
}

/// The base model's constrained numbers with their labels, then
/// `label-threshold`: the rows come out as they went in, every position
/// keeps its top token and loses those under the threshold, and a
/// distilled student learns from the cut labels with a finite loss.
#[test]
fn a_label_defense_cuts_each_position_and_a_student_learns_from_it() {
    let env = env();
    let (generated, filtered, raw) = labelled_base_numbers(&env, 12);
    let defend = DefendParams {
        cut: Some(0.05),
        ..defend_params(Defense::LabelThreshold)
    };
    let defended = defended(&defend, &[filtered, generated.clone()], &env);
    assert_eq!(
        defended.artifact(FILTERED).unwrap(),
        &raw[..],
        "rows unchanged"
    );
    let before = SoftLabels::from_bytes(generated.artifact(SOFT_LABELS).unwrap(), "g").unwrap();
    let after = SoftLabels::from_bytes(defended.artifact(SOFT_LABELS).unwrap(), "d").unwrap();
    assert_eq!(after.rows.len(), before.rows.len());
    let mut cut = 0;
    for (a, b) in after.rows.iter().zip(&before.rows) {
        assert_eq!(
            (a.seed, &a.tokens, &a.top_ids),
            (b.seed, &b.tokens, &b.top_ids)
        );
        for (pa, pb) in a.top_logprobs.chunks(8).zip(b.top_logprobs.chunks(8)) {
            let kept: Vec<f32> = pa.iter().map(|l| l.exp()).collect();
            assert!((kept.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            for (q, l) in kept.iter().zip(pb) {
                assert_eq!(*q == 0.0, l.exp() < 0.05 && *l < pb[0], "{pb:?}");
            }
            cut += kept.iter().filter(|&&q| q == 0.0).count();
        }
    }
    assert!(cut > 0, "the base model's labels have tokens under 0.05");
    let metrics: serde_json::Value =
        serde_json::from_slice(defended.artifact(METRICS).unwrap()).unwrap();
    let mass = metrics["label_mass_cut"].as_f64().unwrap();
    assert!(mass > 0.0 && mass < 0.5, "{metrics}");
    let lora = small_lora();
    let mut train = train_params(lora, 1e-3, Layers::All);
    train.target = Target::Logits;
    train.epochs = 1;
    let trained = student::student(&train, &defended, &[], &env, &|_| {}).unwrap();
    assert_losses_finite(&trained);
}

/// A generation stopped after two batches and resumed from its checkpoint
/// gives the rows an uninterrupted one does; a checkpoint saved for other
/// requests is ignored.
#[test]
fn a_generation_stopped_partway_resumes_to_the_same_rows() {
    use crate::llm::generate::{generate as complete, Request, Sampling, SpecialTokens};
    use crate::resume::{Checkpoints, Memory};
    let env = env();
    let path = env.model_path(DEFAULT_MODEL).unwrap();
    let checkpoint = crate::llm::load::load_cached(&path).unwrap();
    let (_vs, model) = crate::llm::instantiate(&checkpoint, Device::Cpu, Kind::Float).unwrap();
    let tok = &checkpoint.tokenizer;
    let requests: Vec<Request> = (0..6u64)
        .map(|i| Request {
            prompt: tok
                .prompt_ids(&[Message::new("user", format!("Count on from {i}."))])
                .unwrap(),
            seed: i,
        })
        .collect();
    let sampling = Sampling {
        temperature: 1.0,
        top_p: 0.9,
        threshold: 0.0,
        max_new_tokens: 8,
    };
    let run = |requests: &[Request], stop_after: Option<usize>, memory: Option<&Memory>| {
        let batches = std::cell::Cell::new(0);
        let stop = || {
            batches.set(batches.get() + 1);
            stop_after.is_some_and(|s| batches.get() > s)
        };
        complete(
            &model,
            requests,
            sampling,
            SpecialTokens {
                stop: &tok.stop_ids,
                pad: tok.pad_id,
            },
            Default::default(),
            2,
            &stop,
            &mut |_, _| {},
            memory.map(|m| m as &dyn Checkpoints),
        )
        .unwrap()
    };
    let whole = run(&requests, None, None).unwrap();
    let memory = Memory::default();
    assert!(run(&requests, Some(2), Some(&memory)).is_none());
    let resumed = run(&requests, None, Some(&memory)).unwrap();
    assert_eq!(
        memory.resumed_at.get(),
        Some(4),
        "two batches of two were kept"
    );
    assert_eq!(resumed, whole);
    // The same checkpoint offered to other prompts is not taken.
    let other = Memory::default();
    *other.saved.borrow_mut() = memory.saved.borrow().clone();
    let shorter = run(&requests[..5], None, Some(&other)).unwrap();
    assert_eq!(other.resumed_at.get(), None);
    assert_eq!(shorter.len(), 5);
}
