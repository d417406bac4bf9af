//! `subliminal store put FILE`: a file (a GGUF model, a chat JSONL dataset,
//! checked line by line) goes into the store as a stage of its own, and the
//! command prints the key a sweep names it by (`stage:<id>`). The key is derived from the file's
//! bytes, so it always means this file; workers fetch it like any stage
//! input and cache it by checksum.
//!
//! `subliminal store get KEY --out FILE` writes a stored file (or one
//! artifact of any stage, with `--artifact`) back out.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use subliminal_shared::files;
use subliminal_shared::manifest::{inspect, StageState};
use subliminal_shared::store::Store;

use super::DEFAULT_STORE;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Put a file into the store and print its key. A `.jsonl` file is
    /// checked as a chat dataset first (every line a conversation with an
    /// answer); a bad line is refused with its number and exit code 2.
    Put {
        file: PathBuf,
        /// Put a `.jsonl` file as it is, without reading it as a chat dataset.
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Write a stored file, or an artifact of a stage, to a file.
    Get {
        /// A key that `store put` printed, or any stage's id as stage:<id>.
        key: String,
        #[arg(long, short)]
        out: PathBuf,
        /// The artifact to write, for a stage that is not a stored file.
        #[arg(long, default_value = files::ARTIFACT)]
        artifact: String,
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(clap::Args)]
struct StoreArg {
    /// Store: a folder, file:///path or s3://bucket/prefix.
    #[arg(long, env = "SUBLIMINAL_STORE", default_value = DEFAULT_STORE)]
    store: String,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Put { file, raw, store } => {
            if !raw && file.extension().is_some_and(|e| e == "jsonl") {
                subliminal_shared::chat::read_jsonl_file(&file)?;
            }
            let store = Store::open(&store.store)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let size = bytes.len();
            let id = files::put(&store, &name, Bytes::from(bytes)).await?;
            eprintln!(
                "stored {} ({size} bytes) in {}",
                file.display(),
                store.location()
            );
            outln!("{}", files::key(id))?;
        }
        Action::Get {
            key,
            out,
            artifact,
            store,
        } => {
            let store = Store::open(&store.store)?;
            let id = files::parse_key(&key).unwrap_or_else(|| {
                Err(anyhow::anyhow!(
                    "{key:?} is not a key: expected {}<64 hex digits>",
                    files::KEY_PREFIX
                ))
            })?;
            let stage = match inspect(&store, id).await? {
                StageState::Done(stage) => stage,
                StageState::Missing => anyhow::bail!(
                    "no stage {key} in store {}: was it put into another store?",
                    store.location()
                ),
                StageState::Corrupt(reason) => {
                    anyhow::bail!(
                        "stage {key} in store {} is corrupt: {reason}",
                        store.location()
                    )
                }
            };
            let bytes = stage.artifact(&artifact)?;
            std::fs::write(&out, bytes)
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!("wrote {} ({} bytes)", out.display(), bytes.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}
