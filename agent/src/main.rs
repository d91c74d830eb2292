//! `kraftops-agent`: the node agent's command line.
//!
//! For now the one-shot commands an operator runs on a desired-state
//! repository: `validate` (what a repository's own CI runs) and `render`
//! (what a node would get), plus `schema` (the JSON Schemas of the files).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run(std::env::args_os()) {
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
