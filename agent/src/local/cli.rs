//! `kraftops-agent local …`: the command line of local mode.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::{ClusterState, Layout, UpOptions};

#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Where local mode keeps node layers, the git server and its state.
    #[arg(long, global = true, default_value = super::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    #[command(subcommand)]
    pub command: LocalCommand,
}

#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Build the cluster of a desired-state repository on this machine
    /// (systemd-nspawn nodes, real Kafka) and wait until it is healthy.
    Up {
        /// The desired-state repository.
        dir: PathBuf,
        /// The local override (addresses, heaps, identity).
        #[arg(long = "override")]
        override_file: PathBuf,
        /// The Kafka distribution tarball (`scripts/kafka-dist` makes one).
        #[arg(long)]
        kafka_tarball: PathBuf,
        /// The JMX exporter javaagent jar.
        #[arg(long)]
        jmx_jar: PathBuf,
        /// The agent binary to install on the nodes (default: this one).
        #[arg(long)]
        agent_binary: Option<PathBuf>,
        /// Seconds to wait for the cluster to become healthy.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
    /// One row per node from the coordinator, and the cluster's URLs.
    Status,
    /// Commit a desired-state directory (with the override) to the local
    /// git server; the push hook nudges every agent.
    Push {
        dir: PathBuf,
        #[arg(long, short, default_value = "kraftops local push")]
        message: String,
        /// Push even if the repository is invalid (to see it refused).
        #[arg(long)]
        allow_invalid: bool,
    },
    /// Stop and remove everything local mode made (idempotent).
    Down {
        /// Also delete the state directory (node layers, git server).
        #[arg(long)]
        purge: bool,
    },
    /// Run a command inside a node (all its namespaces).
    Exec {
        node: String,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
}

pub fn run(args: LocalArgs) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(&args.state_dir);
    let mut stdout = std::io::stdout().lock();
    match args.command {
        LocalCommand::Up {
            dir,
            override_file,
            kafka_tarball,
            jmx_jar,
            agent_binary,
            timeout,
        } => {
            let agent_binary = match agent_binary {
                Some(p) => p,
                None => std::env::current_exe().context("finding this binary")?,
            };
            let opts = UpOptions {
                source: dir,
                override_file,
                kafka_tarball,
                jmx_jar,
                agent_binary,
                timeout: Duration::from_secs(timeout),
            };
            let (_, phases) = super::up(&layout, &opts)?;
            let connect = phases.iter().any(|(n, _)| n == "connect");
            writeln!(
                stdout,
                "local cluster up{}; phases (seconds since start):",
                if connect {
                    " and healthy"
                } else {
                    "; Connect is not healthy (see above)"
                }
            )?;
            for (name, t) in &phases {
                writeln!(stdout, "  {name:<10} {t:>7.1}")?;
            }
            writeln!(stdout)?;
            write!(stdout, "{}", super::status(&layout)?)?;
            Ok(ExitCode::SUCCESS)
        }
        LocalCommand::Status => {
            write!(stdout, "{}", super::status(&layout)?)?;
            Ok(ExitCode::SUCCESS)
        }
        LocalCommand::Push {
            dir,
            message,
            allow_invalid,
        } => {
            let head = super::push(&layout, &dir, &message, allow_invalid)?;
            writeln!(stdout, "{head}")?;
            Ok(ExitCode::SUCCESS)
        }
        LocalCommand::Down { purge } => {
            for line in super::down(&layout, purge)? {
                writeln!(stdout, "{line}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        LocalCommand::Exec { node, command } => {
            let state = ClusterState::load(&layout)?;
            let args: Vec<&str> = command.iter().map(String::as_str).collect();
            let status = super::checks::in_node(&state, &node, &args)?
                .stdin(std::process::Stdio::inherit())
                .status()
                .with_context(|| format!("running {args:?} in {node}"))?;
            Ok(ExitCode::from(
                u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
            ))
        }
    }
}
