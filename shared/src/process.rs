//! What every subliminal binary's `main` does around its work: an async
//! runtime, and an exit code that says what went wrong.
//!
//! Exit codes: 0 success; 1 failure; 2 invalid input (a sweep file, refused
//! before anything ran).

use std::future::Future;
use std::process::ExitCode;

use crate::spec::SpecError;

/// Runs `work` on a multi-threaded runtime and maps its outcome to an exit code.
pub fn run_main<F>(work: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<ExitCode>>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<SpecError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
