//! Shared by the examples: the exit-code wrapper and flag values.
#![allow(dead_code)]

use std::process::ExitCode;

/// Runs `run` after setting up logging; prints its error and exits non-zero on failure.
pub fn main_with(run: fn() -> Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    radvox::init_logging();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The value after `flag`, or an error naming the flag.
pub fn value(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, String> {
    args.next().ok_or_else(|| format!("{flag} needs a value"))
}
