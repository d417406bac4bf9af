//! Writing to standard output without panicking.
//!
//! `println!` panics when the reader of a pipe has gone (`subliminal status
//! --json | head`). This macro returns the write's error instead; the
//! command passes it up with `?`, and `process::run_main` ends a command
//! whose only failure is a closed pipe quietly, with exit code 0.

/// `println!` that returns the write's `io::Result`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}
