//! `kraftops-bootstrap`: provisions a cluster on AWS from its desired-state
//! repository (see `kraftops_bootstrap::cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    match kraftops_bootstrap::cli::run(std::env::args_os()) {
        Ok(code) => code,
        Err(err) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {err:#}");
            }
            ExitCode::from(1)
        }
    }
}
