//! Commands that experiment kinds bring with them, as `subliminal VERB KIND
//! ...` (`subliminal filter numbers FILE.jsonl`), or as `subliminal VERB
//! ...` for a verb that is one kind's alone (`subliminal audit FILE.jsonl`).
//!
//! The verbs, and the kinds under each, come from the experiment registry:
//! a kind that adds a tool adds it here without an edit to the CLI. A tool
//! that runs stages does so through [`LocalHost`], the same runner as
//! `subliminal run`.

use std::process::ExitCode;

use clap::{ArgMatches, Command};
use subliminal_shared::experiments::{self, Tool, ToolHost};
use subliminal_shared::spec::Source;

/// Every kind's tools, with the kind's name.
fn tools() -> Vec<(&'static str, Tool)> {
    experiments::KINDS
        .iter()
        .flat_map(|kind| kind.tools().into_iter().map(|tool| (kind.name(), tool)))
        .collect()
}

/// The CLI with a subcommand per tool verb, and under it one per kind.
pub fn augment(mut cli: Command) -> Command {
    let tools = tools();
    let mut verbs: Vec<(&str, &str)> = Vec::new();
    for (_, tool) in &tools {
        if tool.standalone {
            cli = cli.subcommand((tool.command)().name(tool.verb).about(tool.verb_about));
        } else if !verbs.iter().any(|(v, _)| *v == tool.verb) {
            verbs.push((tool.verb, tool.verb_about));
        }
    }
    for (verb, about) in verbs {
        let kinds = tools
            .iter()
            .filter(|(_, t)| t.verb == verb && !t.standalone)
            .map(|(kind, t)| (t.command)().name(*kind));
        cli = cli.subcommand(
            Command::new(verb)
                .about(about)
                .subcommand_required(true)
                .arg_required_else_help(true)
                .subcommands(kinds),
        );
    }
    cli
}

/// Runs the tool the command line names, if it names one.
pub fn run(matches: &ArgMatches) -> Option<anyhow::Result<ExitCode>> {
    let (verb, under) = matches.subcommand()?;
    let tools = tools();
    if let Some((_, tool)) = tools.iter().find(|(_, t)| t.standalone && t.verb == verb) {
        return Some((tool.run)(under, &LocalHost));
    }
    let (kind, args) = under.subcommand()?;
    let (_, tool) = tools
        .into_iter()
        .find(|(k, t)| t.verb == verb && *k == kind)?;
    Some((tool.run)(args, &LocalHost))
}

/// Runs a tool's sweep as `subliminal run` does, with its defaults.
struct LocalHost;

impl ToolHost for LocalHost {
    fn run_locally(
        &self,
        sweep: &Source,
        store: &str,
        jobs: Option<usize>,
    ) -> anyhow::Result<bool> {
        let runtime = tokio::runtime::Runtime::new()?;
        let mut settings = super::run::Settings::defaults(store);
        settings.jobs = jobs.or(settings.jobs);
        runtime.block_on(super::run::run_source(sweep, settings))
    }
}
