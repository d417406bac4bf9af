//! What every subliminal binary's `main` does around its work: an async
//! runtime, and an exit code that says what went wrong.
//!
//! Exit codes: 0 success; 1 failure; 2 invalid input (a sweep file, refused
//! before anything ran). Output into a pipe whose reader has gone
//! (`subliminal status --json | head`) ends quietly with 0, as a Unix filter
//! does: the reader has what it wanted.

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
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
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

/// Whether `e` is, or was caused by, a write into a pipe that has no reader.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
