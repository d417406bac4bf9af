//! Commands that experiment kinds bring with them, as `subliminal VERB KIND
//! ...` (`subliminal filter numbers FILE.jsonl`).
//!
//! The verbs, and the kinds under each, come from the experiment registry:
//! a kind that adds a tool adds it here without an edit to the CLI.

use std::process::ExitCode;

use clap::{ArgMatches, Command};
use subliminal_shared::experiments::{self, Tool};

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
        if !verbs.iter().any(|(v, _)| *v == tool.verb) {
            verbs.push((tool.verb, tool.verb_about));
        }
    }
    for (verb, about) in verbs {
        let kinds = tools
            .iter()
            .filter(|(_, t)| t.verb == verb)
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
    let (kind, args) = under.subcommand()?;
    let (_, tool) = tools()
        .into_iter()
        .find(|(k, t)| t.verb == verb && *k == kind)?;
    Some((tool.run)(args))
}
