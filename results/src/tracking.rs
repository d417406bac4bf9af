//! Experiment tracking with MLflow, through its REST API.
//!
//! A sweep becomes an MLflow experiment of the same name, and each trial one
//! run: its parameters are the trial's settings (seed, inits, models, swept
//! settings), its metrics the figures its measurements read (one per arm and
//! metric), its tags the sweep and the stage id behind every figure, so a
//! reader in MLflow's UI can find the artifact in the store.
//!
//! Logging is idempotent: a run carries a tag with a hash of its trial, and
//! a second logging finds that run and updates it rather than add another.
//! MLflow keeps a metric's history, so an update whose figure is unchanged
//! adds a point at the same step; the run count never changes.
//!
//! A trial here is one combination of a measurement's settings, seed, inits
//! and models: the arms that share them are one run.
//!
//! On a cluster, `subliminal submit --track URL` records the server with the
//! sweep ([`record`]); each worker then logs the figures of every evaluation
//! it finishes ([`log_stage`]) to the same runs the CLI would log them to.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{outcome, Outcome, Outcomes};
use subliminal_shared::manifest::sha256_hex;
use subliminal_shared::plan::{Measurement, Plan};
use subliminal_shared::spec::Source;
use subliminal_shared::stage::StageId;
use subliminal_shared::store::{keys, Store};

/// The tag that names a run's trial.
pub const TRIAL_TAG: &str = "subliminal_trial";
/// The tag that names a run's sweep.
pub const SWEEP_TAG: &str = "subliminal_sweep";

/// MLflow's limits on one `log-batch` request.
const BATCH_METRICS: usize = 1000;
const BATCH_PARAMS: usize = 100;
const BATCH_TAGS: usize = 100;

/// An MLflow tracking server.
#[derive(Debug, Clone)]
pub struct Tracker {
    base: String,
    http: reqwest::Client,
}

/// What one logging did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    pub created: usize,
    pub updated: usize,
}

/// One run to log: its identity, parameters, metrics and tags.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRun {
    pub name: String,
    pub key: String,
    pub params: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, f64>,
    pub tags: BTreeMap<String, String>,
}

/// What `submit --track` records beside a sweep.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct Tracking {
    /// The MLflow tracking server.
    pub mlflow: String,
}

/// Records that `sweep`'s figures go to the MLflow server at `url`.
pub async fn record(store: &Store, sweep: &str, url: &str) -> anyhow::Result<()> {
    Tracker::new(url)?;
    let body = serde_json::to_vec(&Tracking {
        mlflow: url.to_owned(),
    })?;
    store.put(&keys::sweep_tracking(sweep), body.into()).await
}

/// Logs the figures that finished stage `stage` of `sweep` holds, if the
/// sweep was submitted with `--track`; `None` when there was nothing to log.
pub async fn log_stage(
    store: &Store,
    sweep: &str,
    stage: StageId,
) -> anyhow::Result<Option<Logged>> {
    let Some(bytes) = store.get_opt(&keys::sweep_tracking(sweep)).await? else {
        return Ok(None);
    };
    let tracking: Tracking = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is malformed", keys::sweep_tracking(sweep)))?;
    let key = keys::sweep_file(sweep);
    let text = String::from_utf8(store.get(&key).await?.to_vec())
        .with_context(|| format!("{key} is not UTF-8"))?;
    let mut plan = subliminal_shared::sweep::parse(&Source::new(key, text))?.plan();
    plan.measurements.retain(|m| m.stage == stage);
    if plan.measurements.is_empty() {
        return Ok(None);
    }
    let outcomes = crate::collect(store, &plan).await?;
    let logged = Tracker::new(&tracking.mlflow)?
        .log_sweep(&plan, &outcomes)
        .await?;
    Ok(Some(logged))
}

/// The runs of a sweep: one per trial, with the figures finished so far.
pub fn trial_runs(plan: &Plan, outcomes: &Outcomes) -> Vec<TrialRun> {
    let mut runs: BTreeMap<String, TrialRun> = BTreeMap::new();
    for m in &plan.measurements {
        let params = trial_params(m);
        let identity = serde_json::to_string(&params).unwrap_or_default();
        let key = sha256_hex(format!("{}\n{identity}", plan.sweep).as_bytes())[..16].to_owned();
        let run = runs.entry(key.clone()).or_insert_with(|| TrialRun {
            name: run_name(&params),
            key: key.clone(),
            tags: BTreeMap::from([
                (SWEEP_TAG.to_owned(), plan.sweep.clone()),
                (TRIAL_TAG.to_owned(), key.clone()),
                ("subliminal_experiment".to_owned(), plan.experiment.clone()),
            ]),
            params: params.clone(),
            metrics: BTreeMap::new(),
        });
        let name = metric_name(&m.arm, &m.metric);
        run.tags
            .insert(format!("stage/{name}"), m.stage.to_string());
        if let Outcome::Done { value, .. } = outcome(outcomes, m) {
            if value.is_finite() {
                run.metrics.insert(name, *value);
            }
        }
    }
    runs.into_values().collect()
}

/// A trial's parameters: every setting a measurement depends on.
fn trial_params(m: &Measurement) -> BTreeMap<String, String> {
    let mut params: BTreeMap<String, String> = m
        .settings
        .iter()
        .map(|(k, v)| (key_name(k), v.clone()))
        .collect();
    params.insert("seed".into(), m.seed.to_string());
    if let Some(init) = m.teacher_init {
        params.insert("teacher_init".into(), init.to_string());
    }
    if let Some(init) = m.student_init {
        params.insert("student_init".into(), init.to_string());
    }
    if let Some((teacher, student)) = &m.models {
        params.insert("teacher_model".into(), teacher.clone());
        params.insert("student_model".into(), student.clone());
    }
    params
}

fn run_name(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A metric's name in MLflow: the arm and the figure.
pub fn metric_name(arm: &str, metric: &str) -> String {
    key_name(&format!("{arm}/{metric}"))
}

/// MLflow takes letters, digits, `_ - . / ` and spaces in a key; anything
/// else becomes `_` (`share:owl` is `share_owl`).
fn key_name(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-./ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct ExperimentReply {
    experiment: ExperimentInfo,
}

#[derive(Deserialize)]
struct ExperimentInfo {
    experiment_id: String,
}

#[derive(Deserialize)]
struct CreatedExperiment {
    experiment_id: String,
}

#[derive(Deserialize, Default)]
struct SearchReply {
    #[serde(default)]
    runs: Vec<RunReply>,
}

#[derive(Deserialize)]
struct RunReply {
    info: RunInfo,
}

#[derive(Deserialize)]
struct RunInfo {
    run_id: String,
}

#[derive(Deserialize)]
struct CreatedRun {
    run: RunReply,
}

/// MLflow's error body.
#[derive(Deserialize)]
struct ErrorReply {
    #[serde(default)]
    error_code: String,
    #[serde(default)]
    message: String,
}

impl Tracker {
    /// A tracker for the server at `url` (`http://HOST:PORT`, with or without a path prefix).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).with_context(|| {
            format!("--track {url:?} is not a URL: give the MLflow server as http://HOST:PORT")
        })?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "http" | "https"),
            "--track {url:?}: MLflow's tracking server is reached over http:// or https://"
        );
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// Logs every trial of `plan` with the figures finished so far.
    pub async fn log_sweep(&self, plan: &Plan, outcomes: &Outcomes) -> anyhow::Result<Logged> {
        let experiment = self.experiment_id(&plan.sweep).await?;
        let mut logged = Logged::default();
        for run in trial_runs(plan, outcomes) {
            let id = match self.find_run(&experiment, &run.key).await? {
                Some(id) => {
                    logged.updated += 1;
                    id
                }
                None => {
                    logged.created += 1;
                    self.create_run(&experiment, &run).await?
                }
            };
            self.log_run(&id, &run).await?;
        }
        Ok(logged)
    }

    /// The experiment named `name`, created if there is none.
    async fn experiment_id(&self, name: &str) -> anyhow::Result<String> {
        if let Some(id) = self.find_experiment(name).await? {
            return Ok(id);
        }
        match self
            .post::<CreatedExperiment>("experiments/create", json!({ "name": name }))
            .await
        {
            Ok(created) => Ok(created.experiment_id),
            // Another logger created it first.
            Err(e) if format!("{e:#}").contains("RESOURCE_ALREADY_EXISTS") => {
                self.find_experiment(name).await?.with_context(|| {
                    format!("MLflow says experiment {name:?} exists but cannot find it")
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn find_experiment(&self, name: &str) -> anyhow::Result<Option<String>> {
        let url = format!("{}/api/2.0/mlflow/experiments/get-by-name", self.base);
        let reply = self
            .http
            .get(&url)
            .query(&[("experiment_name", name)])
            .send()
            .await
            .with_context(|| format!("cannot reach MLflow at {}", self.base))?;
        if reply.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let found: ExperimentReply = Self::read(reply, "experiments/get-by-name").await?;
        Ok(Some(found.experiment.experiment_id))
    }

    async fn find_run(&self, experiment: &str, key: &str) -> anyhow::Result<Option<String>> {
        let found: SearchReply = self
            .post(
                "runs/search",
                json!({
                    "experiment_ids": [experiment],
                    "filter": format!("tags.{TRIAL_TAG} = '{key}'"),
                    "max_results": 1,
                }),
            )
            .await?;
        Ok(found.runs.into_iter().next().map(|r| r.info.run_id))
    }

    async fn create_run(&self, experiment: &str, run: &TrialRun) -> anyhow::Result<String> {
        let tags: Vec<Value> = [(TRIAL_TAG, run.key.as_str()), ("mlflow.runName", &run.name)]
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let created: CreatedRun = self
            .post(
                "runs/create",
                json!({
                    "experiment_id": experiment,
                    "run_name": run.name,
                    "start_time": now_ms(),
                    "tags": tags,
                }),
            )
            .await?;
        Ok(created.run.info.run_id)
    }

    /// Parameters, metrics and tags in batches within MLflow's limits, then
    /// the run marked finished.
    async fn log_run(&self, id: &str, run: &TrialRun) -> anyhow::Result<()> {
        let now = now_ms();
        let params: Vec<Value> = run
            .params
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let metrics: Vec<Value> = run
            .metrics
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v, "timestamp": now, "step": 0}))
            .collect();
        let tags: Vec<Value> = run
            .tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        for chunk in params.chunks(BATCH_PARAMS) {
            self.post::<Value>("runs/log-batch", json!({"run_id": id, "params": chunk}))
                .await?;
        }
        for chunk in metrics.chunks(BATCH_METRICS) {
            self.post::<Value>("runs/log-batch", json!({"run_id": id, "metrics": chunk}))
                .await?;
        }
        for chunk in tags.chunks(BATCH_TAGS) {
            self.post::<Value>("runs/log-batch", json!({"run_id": id, "tags": chunk}))
                .await?;
        }
        self.post::<Value>(
            "runs/update",
            json!({"run_id": id, "status": "FINISHED", "end_time": now}),
        )
        .await?;
        Ok(())
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        body: Value,
    ) -> anyhow::Result<T> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let reply = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("cannot reach MLflow at {}", self.base))?;
        Self::read(reply, endpoint).await
    }

    async fn read<T: serde::de::DeserializeOwned>(
        reply: reqwest::Response,
        endpoint: &str,
    ) -> anyhow::Result<T> {
        let status = reply.status();
        let bytes = reply.bytes().await?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<ErrorReply>(&bytes)
                .map(|e| format!("{}: {}", e.error_code, e.message))
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(300).collect());
            anyhow::bail!("MLflow refused {endpoint} ({status}): {detail}");
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "MLflow's reply to {endpoint} is not what its REST API documents: {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(300)
                    .collect::<String>()
            )
        })
    }
}

fn now_ms() -> i64 {
    (subliminal_shared::manifest::now() * 1000.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use subliminal_shared::stage::StageId;

    fn measurement(arm: &str, seed: u64, trait_name: &str) -> Measurement {
        Measurement {
            arm: arm.into(),
            order: 0,
            settings: BTreeMap::from([("trait".to_owned(), trait_name.to_owned())]),
            seed,
            teacher_init: None,
            student_init: None,
            stage: sha256_hex(arm.as_bytes()).parse::<StageId>().unwrap(),
            metric: format!("share:{trait_name}"),
            panel: None,
            models: None,
        }
    }

    #[test]
    fn one_run_per_trial_with_each_arm_a_metric() {
        let plan = Plan {
            sweep: "s".into(),
            experiment: "numbers".into(),
            trials: 4,
            stages: vec![],
            measurements: vec![
                measurement("student", 0, "owl"),
                measurement("control", 0, "owl"),
                measurement("student", 1, "owl"),
                measurement("student", 0, "eagle"),
            ],
            external: vec![],
        };
        let mut outcomes = Outcomes::new();
        let m = &plan.measurements[0];
        outcomes.insert(
            (m.stage, m.metric.clone()),
            Outcome::Done {
                value: 0.25,
                samples: Some(8),
                items: None,
            },
        );
        let runs = trial_runs(&plan, &outcomes);
        assert_eq!(runs.len(), 3);
        let owl0 = runs
            .iter()
            .find(|r| r.params["seed"] == "0" && r.params["trait"] == "owl")
            .unwrap();
        assert_eq!(owl0.metrics.get("student/share_owl"), Some(&0.25));
        assert!(owl0.tags.contains_key("stage/control/share_owl"));
        assert_eq!(owl0.name, "seed=0 trait=owl");
        // The key depends on the trial only: the same plan gives the same keys.
        assert_eq!(
            runs.iter().map(|r| &r.key).collect::<Vec<_>>(),
            trial_runs(&plan, &Outcomes::new())
                .iter()
                .map(|r| &r.key)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn keys_are_what_mlflow_accepts() {
        assert_eq!(
            metric_name("defense: rows kept", "share:owl"),
            "defense_ rows kept/share_owl"
        );
        assert!(Tracker::new("localhost:5000").is_err());
        assert!(Tracker::new("ftp://h/").is_err());
    }
}
