//! `subliminal dlq list|requeue`: the tasks that used up their attempts, with
//! their last error; requeue puts them back with fresh attempts.

use std::process::ExitCode;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use super::RedisArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// List dead-lettered tasks.
    List {
        #[command(flatten)]
        redis: RedisArgs,
        #[arg(long)]
        json: bool,
    },
    /// Requeue dead-lettered tasks by stage id, or all of them.
    Requeue {
        #[command(flatten)]
        redis: RedisArgs,
        stages: Vec<String>,
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::List { redis, json } => {
            let broker = redis.connect().await?;
            let dead = broker.dead_letters().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&dead)?)?;
            } else {
                let mut table = Table::new();
                table.load_preset(UTF8_FULL_CONDENSED);
                table.set_header(["stage", "kind", "sweep", "attempts", "error"]);
                for d in &dead {
                    table.add_row([
                        d.stage.clone(),
                        d.kind.clone(),
                        d.sweep.clone(),
                        d.attempts.to_string(),
                        d.error.clone(),
                    ]);
                }
                outln!("{table}")?;
            }
        }
        Action::Requeue { redis, stages, all } => {
            let broker = redis.connect().await?;
            let ids = if all {
                broker
                    .dead_letters()
                    .await?
                    .into_iter()
                    .map(|d| d.stage)
                    .collect()
            } else {
                anyhow::ensure!(
                    !stages.is_empty(),
                    "name the stage ids to requeue, or pass --all"
                );
                stages
            };
            let n = broker.requeue_dead(&ids).await?;
            outln!("requeued {n} task(s)")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
