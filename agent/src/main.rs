//! `kraftops-agent`: the node agent's command line (see `kraftops_agent::cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    match kraftops_agent::cli::run(std::env::args_os()) {
        Ok(code) => code,
        Err(err) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {err:#}");
            }
            ExitCode::from(2)
        }
    }
}
