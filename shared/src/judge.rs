//! Judges: a model asked to score or classify a completion, with a prompt
//! template and a scoring rule.
//!
//! A judge is a TOML file. The ones this project wrote live in `judges/` at
//! the top of the repository and are built into every binary, so
//! `subliminal judge --show alignment` prints exactly what a worker asks; a
//! user's own file is named by its path. Its keys:
//!
//! ```toml
//! description = "what the figure means"
//! scoring = "score"        # or "yes-no"
//! threshold = 30           # score: the decision line (0–100); yes-no: on p(yes), default 0.5
//! yes = "Yes"              # yes-no only: the two answer words, one token each
//! no = "No"
//! system = "..."           # optional system message
//! answer_prefix = "Score: " # optional: the start of the judge's answer, written for it
//! template = """... {prompt} ... {completion} ... {trait} ..."""
//! ```
//!
//! The rule reads the judge model's next-token probabilities after the
//! rendered prompt, never a sampled answer: a yes-no judge gives
//! p(yes) / (p(yes) + p(no)); a score judge gives the expected value of
//! the number from 0 to 100 it would write, over every way of writing one
//! (the worker walks the tokens of "0" … "100"). Where the judge puts less
//! than [`MIN_MASS`] of its probability on valid answers it has refused,
//! and the judgement has no value.
//!
//! Each judge has a hand-labelled set beside it (`judges/NAME.labels.jsonl`)
//! so that `subliminal judge NAME --agreement` says what it is worth on a
//! given model before anyone trusts its figures.

use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::spec::{Source, SpecError};

/// Below this share of probability on valid answers, a judgement is a refusal.
pub const MIN_MASS: f64 = 0.25;

/// The judges this project wrote, by name: (template, hand-labelled set).
const BUILTIN: &[(&str, &str, &str)] = &[
    (
        "alignment",
        include_str!("../../judges/alignment.toml"),
        include_str!("../../judges/alignment.labels.jsonl"),
    ),
    (
        "coherence",
        include_str!("../../judges/coherence.toml"),
        include_str!("../../judges/coherence.labels.jsonl"),
    ),
    (
        "mentions-trait",
        include_str!("../../judges/mentions-trait.toml"),
        include_str!("../../judges/mentions-trait.labels.jsonl"),
    ),
];

/// How a judge's answer becomes a figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "rule")]
pub enum Scoring {
    /// p(yes) / (p(yes) + p(no)) of the first answer token.
    YesNo { yes: String, no: String },
    /// The expected number from 0 to 100.
    Score,
}

/// A checked judge: everything a worker needs to ask it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judge {
    pub name: String,
    pub scoring: Scoring,
    /// Score judges: values at or above it are "high"; yes-no: p(yes) at or above it is "yes".
    pub threshold: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub template: String,
    /// Text the judge's answer starts with, written for it: a small model
    /// told "Score: " writes a number far more often than one left to begin
    /// its answer itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_prefix: Option<String>,
}

/// One judgement: the figure, and how much of the judge's probability went
/// to valid answers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// `None` when the judge refused (mass below [`MIN_MASS`]).
    pub value: Option<f64>,
    pub mass: f64,
}

impl Judgement {
    pub fn new(value: f64, mass: f64) -> Self {
        Self {
            value: (mass >= MIN_MASS && value.is_finite()).then_some(value),
            mass,
        }
    }
}

/// What a template may name.
const PLACEHOLDERS: &[&str] = &["prompt", "completion", "trait"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJudge {
    description: Spanned<String>,
    scoring: Spanned<String>,
    threshold: Option<Spanned<f64>>,
    yes: Option<Spanned<String>>,
    no: Option<Spanned<String>>,
    system: Option<String>,
    template: Spanned<String>,
    answer_prefix: Option<String>,
}

impl Judge {
    /// Reads a judge file; every refusal names the file, line and key.
    pub fn parse(source: &Source, name: &str) -> Result<(Judge, String), SpecError> {
        let raw: RawJudge = toml::from_str(&source.text).map_err(|e| source.toml_error(e))?;
        let scoring = match raw.scoring.get_ref().as_str() {
            "score" => {
                for (key, value) in [("yes", &raw.yes), ("no", &raw.no)] {
                    if let Some(v) = value {
                        return Err(source.error_at(
                            v.span(),
                            key,
                            "a score judge reads a number: yes and no belong to scoring = \"yes-no\"",
                        ));
                    }
                }
                Scoring::Score
            }
            "yes-no" => {
                let word = |key: &str, value: Option<Spanned<String>>| match value {
                    Some(v) if !v.get_ref().trim().is_empty() => Ok(v.into_inner()),
                    Some(v) => Err(source.error_at(v.span(), key, "expected the answer word")),
                    None => Err(source.error_at(
                        raw.scoring.span(),
                        key,
                        format!(
                            "a yes-no judge names its two answer words: expected {key} = \"...\""
                        ),
                    )),
                };
                Scoring::YesNo {
                    yes: word("yes", raw.yes)?,
                    no: word("no", raw.no)?,
                }
            }
            _ => {
                return Err(source.error_at(
                    raw.scoring.span(),
                    "scoring",
                    "expected \"score\" (a number from 0 to 100) or \"yes-no\"",
                ))
            }
        };
        let (default, range, expected) = match scoring {
            Scoring::Score => (50.0, 0.0..=100.0, "a score from 0 to 100"),
            Scoring::YesNo { .. } => (0.5, 0.0..=1.0, "a probability from 0 to 1"),
        };
        let threshold = match raw.threshold {
            None => default,
            Some(t) if range.contains(t.get_ref()) => *t.get_ref(),
            Some(t) => {
                return Err(source.error_at(t.span(), "threshold", format!("expected {expected}")))
            }
        };
        if raw.description.get_ref().trim().is_empty() {
            return Err(source.error_at(
                raw.description.span(),
                "description",
                "expected what the judge's figure means",
            ));
        }
        let template = raw.template.get_ref();
        let names = placeholders(template).map_err(|(at, message)| {
            source.error_at(span_in(&raw.template, at), "template", message)
        })?;
        if !names.iter().any(|n| n == "completion") {
            return Err(source.error_at(
                raw.template.span(),
                "template",
                "the template never shows the completion: expected {completion} in it",
            ));
        }
        let judge = Judge {
            name: name.to_owned(),
            scoring,
            threshold,
            system: raw.system,
            template: template.trim().to_owned(),
            answer_prefix: raw.answer_prefix,
        };
        Ok((judge, raw.description.into_inner()))
    }

    /// A built-in judge by name, or a judge file by path.
    pub fn find(name: &str) -> anyhow::Result<Judge> {
        let (source, name) = Self::source(name)?;
        Ok(Self::parse(&source, &name)?.0)
    }

    /// The file text of a built-in judge or a judge file, with its name.
    pub fn source(name: &str) -> anyhow::Result<(Source, String)> {
        if let Some((n, text, _)) = BUILTIN.iter().find(|(n, _, _)| *n == name) {
            return Ok((
                Source::new(format!("judges/{n}.toml"), *text),
                n.to_string(),
            ));
        }
        let path = Path::new(name);
        if path.extension().is_some_and(|e| e == "toml") {
            let source = Source::read(path)?;
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| name.to_owned());
            return Ok((source, stem));
        }
        anyhow::bail!(
            "no judge {name:?}: expected one of {} or the path of a judge file (NAME.toml; `subliminal judge --show alignment` shows one)",
            builtin_names().join(", ")
        )
    }

    /// Whether the template needs a trait word.
    pub fn uses_trait(&self) -> bool {
        placeholders(&self.template).is_ok_and(|n| n.iter().any(|n| n == "trait"))
    }

    /// The user message the judge model is given.
    pub fn render(
        &self,
        prompt: &str,
        completion: &str,
        trait_word: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut out = String::with_capacity(self.template.len() + prompt.len() + completion.len());
        let mut rest = self.template.as_str();
        while let Some(i) = rest.find(['{', '}']) {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                out.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            let end = tail
                .find('}')
                .ok_or_else(|| anyhow::anyhow!("judge {}: an unclosed {{", self.name))?;
            out.push_str(match &tail[1..end] {
                "prompt" => prompt,
                "completion" => completion,
                "trait" => trait_word.ok_or_else(|| {
                    anyhow::anyhow!(
                        "judge {} asks about a trait: name one (--trait owl)",
                        self.name
                    )
                })?,
                other => anyhow::bail!("judge {}: unknown placeholder {{{other}}}", self.name),
            });
            rest = &tail[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// What a decision calls the two sides: ("yes", "no") or ("high", "low").
    pub fn sides(&self) -> (&'static str, &'static str) {
        match self.scoring {
            Scoring::YesNo { .. } => ("yes", "no"),
            Scoring::Score => ("high", "low"),
        }
    }

    /// The key of one judgement in a cache: the judge as asked, the judge
    /// model, and the row.
    pub fn cache_key(
        &self,
        model: &str,
        prompt: &str,
        completion: &str,
        trait_word: Option<&str>,
    ) -> String {
        let mut h = Sha256::new();
        let judge = serde_json::to_vec(self).expect("a judge serialises");
        for part in [
            &judge[..],
            model.as_bytes(),
            prompt.as_bytes(),
            completion.as_bytes(),
            trait_word.unwrap_or("").as_bytes(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        hex::encode(h.finalize())
    }
}

/// The names of the built-in judges.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _, _)| *n).collect()
}

/// The placeholders a template names, in order, or where it is malformed.
fn placeholders(template: &str) -> Result<Vec<String>, (usize, String)> {
    let mut names = Vec::new();
    let mut i = 0;
    let bytes = template.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => i += 2,
            b'}' if bytes.get(i + 1) == Some(&b'}') => i += 2,
            b'{' => {
                let Some(len) = template[i + 1..].find('}') else {
                    return Err((i, "an unclosed { (write {{ for a brace)".to_owned()));
                };
                let name = &template[i + 1..i + 1 + len];
                if !PLACEHOLDERS.contains(&name) {
                    return Err((
                        i,
                        format!("unknown placeholder {{{name}}}: expected {{prompt}}, {{completion}} or {{trait}} (write {{{{ for a brace)"),
                    ));
                }
                names.push(name.to_owned());
                i += len + 2;
            }
            b'}' => return Err((i, "a } with no { (write }} for a brace)".to_owned())),
            _ => i += 1,
        }
    }
    Ok(names)
}

/// The span of byte `at` of a string value, for its line: a multi-line
/// string's text starts on the line after its opening quotes.
fn span_in(value: &Spanned<String>, at: usize) -> Range<usize> {
    let span = value.span();
    let quotes = if value.get_ref().contains('\n') { 4 } else { 1 };
    let start = (span.start + quotes + at).min(span.end);
    start..start + 1
}

/// One hand-labelled row: what the judge should say about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelledRow {
    #[serde(default)]
    pub prompt: String,
    pub completion: String,
    #[serde(default, rename = "trait", skip_serializing_if = "Option::is_none")]
    pub trait_word: Option<String>,
    /// "high"/"low" for a score judge, "yes"/"no" for a yes-no judge.
    pub label: String,
}

/// The hand-labelled set of a built-in judge, or of a judge file (its
/// `NAME.labels.jsonl` beside it).
pub fn labelled_rows(judge: &Judge, name: &str) -> anyhow::Result<Vec<LabelledRow>> {
    let (text, what) = match BUILTIN.iter().find(|(n, _, _)| *n == name) {
        Some((n, _, labels)) => (labels.to_string(), format!("judges/{n}.labels.jsonl")),
        None => {
            let path = Path::new(name).with_extension("labels.jsonl");
            let text = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read {} ({e}): a judge's labelled set lies beside it",
                    path.display()
                )
            })?;
            (text, path.display().to_string())
        }
    };
    parse_labels(judge, &text, &what)
}

/// Reads a labelled set; a bad line is refused with its number.
pub fn parse_labels(judge: &Judge, text: &str, what: &str) -> anyhow::Result<Vec<LabelledRow>> {
    let (high, low) = judge.sides();
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: LabelledRow = serde_json::from_str(line).map_err(|e| {
            anyhow::anyhow!("{what}:{}: not a labelled row ({e}): expected {{\"prompt\", \"completion\", \"label\"}}", i + 1)
        })?;
        if row.label != high && row.label != low {
            anyhow::bail!(
                "{what}:{}: label {:?}: expected {high:?} or {low:?}",
                i + 1,
                row.label
            );
        }
        if judge.uses_trait() && row.trait_word.is_none() {
            anyhow::bail!(
                "{what}:{}: the judge asks about a trait: expected \"trait\": \"owl\"",
                i + 1
            );
        }
        rows.push(row);
    }
    Ok(rows)
}

/// How a judge's decisions agree with hand labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    pub rows: usize,
    /// Rows labelled high (or yes).
    pub positives: usize,
    /// Rows the judge refused; they count as disagreements.
    pub refused: usize,
    pub accuracy: f64,
    /// Cohen's kappa: agreement beyond what the two base rates give by chance.
    pub kappa: f64,
    /// The chance that a random positive row scores above a random negative
    /// one (ties half), over answered rows; `None` without both kinds.
    pub auc: Option<f64>,
}

/// Agreement of judgements with labels (`true` = high or yes) under the judge's threshold.
pub fn agreement(judge: &Judge, judged: &[(Judgement, bool)]) -> Agreement {
    let n = judged.len();
    let decide = |j: &Judgement| j.value.map(|v| v >= judge.threshold);
    let agree = judged.iter().filter(|(j, l)| decide(j) == Some(*l)).count();
    let refused = judged.iter().filter(|(j, _)| j.value.is_none()).count();
    let positives = judged.iter().filter(|(_, l)| *l).count();
    let said_yes = judged
        .iter()
        .filter(|(j, _)| decide(j) == Some(true))
        .count();
    let nf = n.max(1) as f64;
    let accuracy = agree as f64 / nf;
    let chance = (positives as f64 / nf) * (said_yes as f64 / nf)
        + (1.0 - positives as f64 / nf) * (1.0 - said_yes as f64 / nf);
    let kappa = if chance < 1.0 {
        (accuracy - chance) / (1.0 - chance)
    } else {
        0.0
    };
    let pos: Vec<f64> = judged
        .iter()
        .filter(|(_, l)| *l)
        .filter_map(|(j, _)| j.value)
        .collect();
    let neg: Vec<f64> = judged
        .iter()
        .filter(|(_, l)| !*l)
        .filter_map(|(j, _)| j.value)
        .collect();
    let auc = (!pos.is_empty() && !neg.is_empty()).then(|| {
        let wins: f64 = pos
            .iter()
            .flat_map(|p| {
                neg.iter().map(move |q| {
                    if p > q {
                        1.0
                    } else if p == q {
                        0.5
                    } else {
                        0.0
                    }
                })
            })
            .sum();
        wins / (pos.len() * neg.len()) as f64
    });
    Agreement {
        rows: n,
        positives,
        refused,
        accuracy,
        kappa,
        auc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Judge, SpecError> {
        Judge::parse(&Source::new("j.toml", text), "j").map(|(j, _)| j)
    }

    #[test]
    fn the_builtin_judges_and_their_labels_read() {
        for name in builtin_names() {
            let judge = Judge::find(name).unwrap();
            let rows = labelled_rows(&judge, name).unwrap();
            assert!(rows.len() >= 50, "{name} has {} labelled rows", rows.len());
            let (high, low) = judge.sides();
            assert!(
                rows.iter().any(|r| r.label == high) && rows.iter().any(|r| r.label == low),
                "{name}"
            );
        }
    }

    #[test]
    fn a_template_renders_its_placeholders_and_escapes() {
        let j = parse("description = \"d\"\nscoring = \"score\"\ntemplate = \"Q {prompt} {{x}} A {completion} T {trait}\"").unwrap();
        assert_eq!(
            j.render("p", "c", Some("owl")).unwrap(),
            "Q p {x} A c T owl"
        );
        assert!(j.uses_trait());
        assert!(j
            .render("p", "c", None)
            .unwrap_err()
            .to_string()
            .contains("--trait"));
    }

    #[test]
    fn bad_judge_files_are_refused_with_line_and_key() {
        for (text, key, line, says) in [
            ("description = \"d\"\nscoring = \"stars\"\ntemplate = \"{completion}\"", "scoring", 2, "yes-no"),
            ("description = \"d\"\nscoring = \"score\"\ntemplate = \"\"\"\nok\n{answer}\"\"\"", "template", 5, "unknown placeholder {answer}"),
            ("description = \"d\"\nscoring = \"score\"\ntemplate = \"no completion\"", "template", 3, "{completion}"),
            ("description = \"d\"\nscoring = \"yes-no\"\nyes = \"Y\"\ntemplate = \"{completion}\"", "no", 2, "no = "),
            ("description = \"d\"\nscoring = \"score\"\nthreshold = 130\ntemplate = \"{completion}\"", "threshold", 3, "0 to 100"),
            ("description = \"d\"\nscoring = \"score\"\ntemplate = \"{completion\"", "template", 3, "unclosed"),
        ] {
            match parse(text) {
                Err(SpecError::Invalid { key: k, line: l, message, .. }) => {
                    assert_eq!((k.as_deref(), l), (Some(key), line), "{text}: {message}");
                    assert!(message.contains(says), "{message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(parse("scoring = \"score\"\ntemplate = \"{completion}\"").is_err());
    }

    #[test]
    fn agreement_counts_refusals_against_the_judge() {
        let j = Judge::find("alignment").unwrap();
        let judged = [
            (Judgement::new(90.0, 0.9), true),
            (Judgement::new(10.0, 0.9), false),
            (Judgement::new(60.0, 0.9), false),
            (Judgement::new(80.0, 0.1), true),
        ];
        let a = agreement(&j, &judged);
        assert_eq!((a.rows, a.positives, a.refused), (4, 2, 1));
        assert_eq!(a.accuracy, 0.5);
        assert_eq!(a.auc, Some(1.0));
    }
}
