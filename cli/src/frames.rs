//! Parquet files for data-frame tools (pandas, polars, DuckDB).
//!
//! Two tables: one row per measurement of a sweep, with every swept setting
//! as a column of its own (what `results --format parquet` writes); and one
//! row per answer of an evaluation, for a researcher who wants to check how
//! answers were parsed (what `export --answers` writes). Both go through the
//! arrow and parquet crates, so any Parquet reader takes them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use subliminal_results::{outcome, Outcome, Outcomes};
use subliminal_shared::experiments::AnswerRecord;
use subliminal_shared::plan::{Measurement, Plan};

/// Columns that every row has; a setting of the same name gets a `setting:` prefix.
const FIXED: &[&str] = &[
    "sweep",
    "experiment",
    "arm",
    "metric",
    "seed",
    "teacher_init",
    "student_init",
    "teacher_model",
    "student_model",
    "teacher_family",
    "student_family",
    "stage",
    "status",
    "value",
    "samples",
    "error",
];

/// The columns of an answer row besides the measurement's.
const ANSWER_COLUMNS: &[&str] = &["question_index", "question", "sample", "answer", "matched"];

/// Builds a table column by column: each column is named once, with its type.
#[derive(Default)]
struct Columns {
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
}

impl Columns {
    fn strings<'a>(&mut self, name: &str, values: impl Iterator<Item = Option<&'a str>>) {
        let mut b = StringBuilder::new();
        values.for_each(|v| b.append_option(v));
        self.push(name, DataType::Utf8, Arc::new(b.finish()));
    }

    fn u64s(&mut self, name: &str, values: impl Iterator<Item = Option<u64>>) {
        let mut b = UInt64Builder::new();
        values.for_each(|v| b.append_option(v));
        self.push(name, DataType::UInt64, Arc::new(b.finish()));
    }

    fn f64s(&mut self, name: &str, values: impl Iterator<Item = Option<f64>>) {
        let mut b = Float64Builder::new();
        values.for_each(|v| b.append_option(v));
        self.push(name, DataType::Float64, Arc::new(b.finish()));
    }

    fn bools(&mut self, name: &str, values: impl Iterator<Item = Option<bool>>) {
        let mut b = BooleanBuilder::new();
        values.for_each(|v| b.append_option(v));
        self.push(name, DataType::Boolean, Arc::new(b.finish()));
    }

    fn push(&mut self, name: &str, data_type: DataType, array: ArrayRef) {
        self.fields.push(Field::new(name, data_type, true));
        self.arrays.push(array);
    }

    /// The Parquet file's bytes.
    fn parquet(self) -> anyhow::Result<Vec<u8>> {
        let schema = Arc::new(Schema::new(self.fields));
        let batch = RecordBatch::try_new(schema.clone(), self.arrays)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema, Some(props))?;
        writer.write(&batch)?;
        writer.close()?;
        Ok(bytes)
    }
}

/// The setting keys of `measurements`, in order, each with its column name.
fn setting_columns<'a>(
    measurements: impl Iterator<Item = &'a Measurement>,
) -> Vec<(String, String)> {
    let keys: BTreeSet<&str> = measurements
        .flat_map(|m| m.settings.keys().map(String::as_str))
        .collect();
    keys.into_iter()
        .map(|k| {
            let column = if FIXED.contains(&k) || ANSWER_COLUMNS.contains(&k) {
                format!("setting:{k}")
            } else {
                k.to_owned()
            };
            (k.to_owned(), column)
        })
        .collect()
}

/// One row per measurement of `plan`: what it measured, where (its stage),
/// its outcome, and each swept setting as a column (empty where a
/// measurement does not depend on it).
pub fn measurements(
    plan: &Plan,
    outcomes: &Outcomes,
    families: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<u8>> {
    let ms = &plan.measurements;
    let done = |m: &Measurement| match outcome(outcomes, m) {
        Outcome::Done { value, samples, .. } => Some((*value, *samples)),
        _ => None,
    };
    let mut c = Columns::default();
    c.strings("sweep", ms.iter().map(|_| Some(plan.sweep.as_str())));
    c.strings(
        "experiment",
        ms.iter().map(|_| Some(plan.experiment.as_str())),
    );
    c.strings("arm", ms.iter().map(|m| Some(m.arm.as_str())));
    c.strings("metric", ms.iter().map(|m| Some(m.metric.as_str())));
    c.u64s("seed", ms.iter().map(|m| Some(m.seed)));
    c.u64s("teacher_init", ms.iter().map(|m| m.teacher_init));
    c.u64s("student_init", ms.iter().map(|m| m.student_init));
    c.strings(
        "teacher_model",
        ms.iter()
            .map(|m| m.models.as_ref().map(|(t, _)| t.as_str())),
    );
    c.strings(
        "student_model",
        ms.iter()
            .map(|m| m.models.as_ref().map(|(_, s)| s.as_str())),
    );
    let family = |name: &String| families.get(name).map(String::as_str);
    c.strings(
        "teacher_family",
        ms.iter()
            .map(|m| m.models.as_ref().and_then(|(t, _)| family(t))),
    );
    c.strings(
        "student_family",
        ms.iter()
            .map(|m| m.models.as_ref().and_then(|(_, s)| family(s))),
    );
    let stages: Vec<String> = ms.iter().map(|m| m.stage.to_string()).collect();
    c.strings("stage", stages.iter().map(|s| Some(s.as_str())));
    c.strings(
        "status",
        ms.iter().map(|m| {
            Some(match outcome(outcomes, m) {
                Outcome::Done { .. } => "done",
                Outcome::Failed(_) => "failed",
                Outcome::Pending => "pending",
            })
        }),
    );
    c.f64s("value", ms.iter().map(|m| done(m).map(|(v, _)| v)));
    c.u64s("samples", ms.iter().map(|m| done(m).and_then(|(_, n)| n)));
    c.strings(
        "error",
        ms.iter().map(|m| match outcome(outcomes, m) {
            Outcome::Failed(e) => Some(e.as_str()),
            _ => None,
        }),
    );
    for (key, column) in setting_columns(ms.iter()) {
        c.strings(
            &column,
            ms.iter().map(|m| m.settings.get(&key).map(String::as_str)),
        );
    }
    c.parquet()
}

/// The answers behind one measurement.
pub struct AnswersOf<'a> {
    pub measurement: &'a Measurement,
    pub answers: Vec<AnswerRecord>,
}

/// One row per answer: the question, which sample of it, the answer's text,
/// whether it counted for the measurement's figure, and the measurement's
/// arm, seed, stage and settings.
pub fn answers(plan: &Plan, of: &[AnswersOf]) -> anyhow::Result<Vec<u8>> {
    let rows: Vec<(&Measurement, &AnswerRecord)> = of
        .iter()
        .flat_map(|o| o.answers.iter().map(move |a| (o.measurement, a)))
        .collect();
    let mut c = Columns::default();
    c.strings("sweep", rows.iter().map(|_| Some(plan.sweep.as_str())));
    c.strings("arm", rows.iter().map(|(m, _)| Some(m.arm.as_str())));
    c.strings("metric", rows.iter().map(|(m, _)| Some(m.metric.as_str())));
    c.u64s("seed", rows.iter().map(|(m, _)| Some(m.seed)));
    let stages: Vec<String> = rows.iter().map(|(m, _)| m.stage.to_string()).collect();
    c.strings("stage", stages.iter().map(|s| Some(s.as_str())));
    c.u64s(
        "question_index",
        rows.iter().map(|(_, a)| Some(a.question_index)),
    );
    c.strings(
        "question",
        rows.iter().map(|(_, a)| Some(a.question.as_str())),
    );
    c.u64s("sample", rows.iter().map(|(_, a)| Some(a.sample)));
    c.strings("answer", rows.iter().map(|(_, a)| Some(a.answer.as_str())));
    c.bools("matched", rows.iter().map(|(_, a)| Some(a.matched)));
    for (key, column) in setting_columns(of.iter().map(|o| o.measurement)) {
        c.strings(
            &column,
            rows.iter()
                .map(|(m, _)| m.settings.get(&key).map(String::as_str)),
        );
    }
    c.parquet()
}
