//! One module per subcommand, plus what they share: finding the store and
//! the sweep.

pub mod cancel;
pub mod completions;
pub mod dlq;
pub mod export;
pub mod judge;
pub mod report;
pub mod results;
pub mod resume;
pub mod run;
pub mod status;
pub mod store;
pub mod submit;
pub mod tools;
pub mod validate;
pub mod watch;

use std::path::Path;

use anyhow::Context;
use subliminal_shared::manifest::{inspect, StageState};
use subliminal_shared::plan::Plan;
use subliminal_shared::spec::Source;
use subliminal_shared::store::{keys, Store};
use subliminal_shared::sweep::{self, Sweep};

/// Where artifacts go unless `--store` or SUBLIMINAL_STORE says otherwise.
pub const DEFAULT_STORE: &str = "runs";

/// A sweep named by its file, or by its name for a sweep already run in `store`.
pub async fn find_sweep(arg: &str, store: &Store) -> anyhow::Result<Sweep> {
    Ok(find_sweep_source(arg, store).await?.0)
}

/// [`find_sweep`], with the sweep file's text.
pub async fn find_sweep_source(arg: &str, store: &Store) -> anyhow::Result<(Sweep, Source)> {
    let path = Path::new(arg);
    if path.exists() {
        let source = Source::read(path)?;
        return Ok((sweep::parse(&source)?, source));
    }
    let key = keys::sweep_file(arg);
    match store.get_opt(&key).await? {
        Some(bytes) => {
            let text = String::from_utf8(bytes.to_vec())
                .with_context(|| format!("{key} in store {} is not UTF-8", store.location()))?;
            let source = Source::new(format!("{}/{key}", store.location()), text);
            Ok((sweep::parse(&source)?, source))
        }
        None => anyhow::bail!(
            "{arg:?} is neither a sweep file nor a sweep that was run in store {}; give the .toml path, or the store with --store",
            store.location()
        ),
    }
}

/// Checks that every stage a plan names by key (a stored model or dataset,
/// another sweep's checkpoint) is done in `store`, before any work starts.
pub async fn check_external(store: &Store, plan: &Plan) -> anyhow::Result<()> {
    for &id in &plan.external {
        let key = subliminal_shared::files::key(id);
        match inspect(store, id).await? {
            StageState::Done(_) => {}
            StageState::Missing => anyhow::bail!(
                "the sweep names {key}, which is not in store {}: put the file there with \
                 `subliminal store put FILE --store {}`, or run the sweep whose stage it is",
                store.location(),
                store.location()
            ),
            StageState::Corrupt(reason) => anyhow::bail!(
                "the sweep names {key}, which is corrupt in store {}: {reason}",
                store.location()
            ),
        }
    }
    Ok(())
}

/// Where Redis is, for the commands of distributed mode.
#[derive(clap::Args, Clone)]
pub struct RedisArgs {
    /// Redis URL: redis://[:password@]host:port[/db], or rediss:// for TLS (a password may
    /// also come from REDIS_PASSWORD).
    #[arg(long, env = "SUBLIMINAL_REDIS", hide_env_values = true)]
    pub redis: String,
    /// Key prefix in Redis.
    #[arg(long, default_value = "sl")]
    pub prefix: String,
}

impl RedisArgs {
    pub async fn connect(&self) -> anyhow::Result<subliminal_broker::Broker> {
        subliminal_broker::Broker::connect(&self.redis, &self.prefix).await
    }
}

/// Redis and the store: what every command of distributed mode talks to.
#[derive(clap::Args, Clone)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Store: a folder, file:///path or s3://bucket/prefix (S3 credentials from AWS_* variables
    /// or the AWS credentials file).
    #[arg(long, env = "SUBLIMINAL_STORE")]
    pub store: String,
}

impl ClusterArgs {
    pub async fn open(&self) -> anyhow::Result<(subliminal_broker::Broker, Store)> {
        let store = Store::open(&self.store)?;
        Ok((self.redis.connect().await?, store))
    }
}

/// Marks a sweep active in the store (the source of truth) and registers it
/// with the scheduler through Redis.
pub async fn activate(
    broker: &subliminal_broker::Broker,
    store: &Store,
    sweep: &str,
    priority: i64,
) -> anyhow::Result<()> {
    record_status(store, sweep, "active", priority).await?;
    broker.register_sweep(sweep, priority).await
}

/// Records a sweep's state in the store, where the scheduler rebuilds from.
pub async fn record_status(
    store: &Store,
    sweep: &str,
    state: &str,
    priority: i64,
) -> anyhow::Result<()> {
    let body = serde_json::json!({"state": state, "priority": priority}).to_string();
    store.put(&keys::sweep_status(sweep), body.into()).await
}
