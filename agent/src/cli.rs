//! Parsing the command line and running the one-shot commands.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kraftops-agent",
    version,
    about = "Run a Kafka cluster from a git repository"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a desired-state repository; print every problem as file:line:col: message.
    Validate {
        /// The repository's root directory.
        dir: PathBuf,
    },
    /// Render the plan of one node (or all) into a directory tree.
    Render(RenderArgs),
    /// Write the JSON Schemas of the repository's files into a directory.
    Schema {
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the node agent: keep this node in line with the repository.
    Run {
        #[arg(long, default_value = "/etc/kraftops/agent.yaml")]
        config: PathBuf,
    },
    /// Run the coordinator (on the observability node).
    Coordinator {
        /// The coordinator's config, rendered by the observability role.
        #[arg(long, default_value = "/etc/kraftops/coordinator.yaml")]
        config: PathBuf,
        /// The node agent's config: where the repository is, and the identity.
        #[arg(long, default_value = "/etc/kraftops/agent.yaml")]
        agent_config: PathBuf,
    },
    /// Resume a rollout the coordinator halted after a failed restart, with
    /// this node's credentials (its agent.yaml). Pushing a new commit
    /// resumes it too.
    Resume {
        #[arg(long, default_value = "/etc/kraftops/agent.yaml")]
        config: PathBuf,
        /// Only this role's rollout (default: every halted role).
        #[arg(long)]
        role: Option<String>,
    },
    /// Print the cluster's status from the coordinator: nodes, rollout,
    /// topics and connectors, as tables for a terminal.
    Status {
        /// This node's agent.yaml, naming the coordinator and how to reach it.
        #[arg(long, default_value = "/etc/kraftops/agent.yaml")]
        config: PathBuf,
        /// Read this coordinator instead (plain HTTP, e.g.
        /// `http://127.0.0.1:7070`), without an agent.yaml.
        #[arg(long)]
        coordinator: Option<String>,
    },
    /// Create a new desired-state repository from a template.
    Init(InitArgs),
    /// The whole cluster on this machine: systemd-nspawn nodes, real Kafka.
    Local(crate::local::cli::LocalArgs),
}

#[derive(Debug, Args)]
struct InitArgs {
    /// The new repository's directory (must be empty or absent).
    dir: PathBuf,
    /// The cluster's name.
    #[arg(long)]
    name: String,
    /// The repository to copy the topology from.
    #[arg(long, default_value = "desired-state/examples/seed")]
    template: PathBuf,
    /// Where to write the new age identity (outside the repository).
    #[arg(long)]
    identity_out: PathBuf,
    /// More age recipients (age1…) to encrypt every secret to.
    #[arg(long = "recipient")]
    recipients: Vec<String>,
}

#[derive(Debug, Args)]
struct RenderArgs {
    /// The repository's root directory.
    dir: PathBuf,
    /// The node to render.
    #[arg(long, conflicts_with = "all", required_unless_present = "all")]
    node: Option<String>,
    /// Render every node.
    #[arg(long)]
    all: bool,
    /// Where to write: `<out>/<node>/<absolute path on the node>` per file,
    /// `<out>/<node>/etc/systemd/system/<unit>` per unit, `<out>/<node>/plan.json`.
    #[arg(long)]
    out: PathBuf,
    /// The age identity file that decrypts the repository's secrets.
    #[arg(long)]
    identity: PathBuf,
}

pub fn run(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<ExitCode> {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Ok(if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            });
        }
    };
    match cli.command {
        Command::Validate { dir } => validate(&dir),
        Command::Render(args) => render(&args),
        Command::Schema { out } => schema(&out),
        Command::Run { config } => {
            init_tracing();
            let config = kraftops_agent_config(&config)?;
            agent_runtime()?.block_on(crate::daemon::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Coordinator {
            config,
            agent_config,
        } => {
            init_tracing();
            let agent = kraftops_agent_config(&agent_config)?;
            runtime()?.block_on(crate::coordinator::service::run(&config, agent))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Init(args) => init(&args),
        Command::Resume { config, role } => resume(&config, role.as_deref()),
        Command::Status {
            config,
            coordinator,
        } => status(&config, coordinator.as_deref()),
        Command::Local(args) => crate::local::cli::run(args),
    }
}

fn resume(config: &Path, role: Option<&str>) -> anyhow::Result<ExitCode> {
    let config = kraftops_agent_config(config)?;
    let client = crate::daemon::reconcile::coordinator_client(&config)
        .context("reaching the coordinator")?
        .context("agent.yaml names no coordinator")?;
    let view = client
        .resume(role)
        .context("resuming the rollout at the coordinator")?;
    let mut out = std::io::stdout().lock();
    for r in &view.roles {
        let state = if r.halted.is_empty() {
            "running"
        } else {
            "halted"
        };
        writeln!(out, "{:<14} {state}", r.role)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `status`: nodes and rollout must come from the coordinator; topics and
/// connectors are shown as unavailable when the cluster API cannot answer
/// (Kafka down), so the rest of the table still helps.
fn status(config: &Path, coordinator: Option<&str>) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal as _;
    let client = match coordinator {
        Some(url) => crate::daemon::client::CoordinatorClient::new(url, "status", ""),
        None => {
            let config = kraftops_agent_config(config)?;
            crate::daemon::reconcile::coordinator_client(&config)
                .context("reaching the coordinator")?
                .context("agent.yaml names no coordinator")?
        }
    };
    let snapshot = crate::coordinator::status_view::StatusSnapshot {
        cluster: String::new(),
        now: crate::certs::unix_now(),
        nodes: client.nodes().context("reading the nodes")?,
        rollout: client.rollout().context("reading the rollout")?,
        topics: client.topics().map_err(|e| crate::error_chain(&e)),
        connectors: client.connectors().map_err(|e| crate::error_chain(&e)),
    };
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let table = crate::coordinator::status_view::render_table(&snapshot, colour);
    std::io::stdout().lock().write_all(table.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn validate(dir: &Path) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match desired_state::load_dir(dir) {
        Ok(model) => {
            writeln!(
                stdout,
                "{}: valid ({} nodes, {} topics, {} users, {} connectors)",
                dir.display(),
                model.nodes.len(),
                model.topics.len(),
                model.users.len(),
                model.connectors.len()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            for d in &problems {
                writeln!(stdout, "{d}")?;
            }
            let n = problems.len();
            writeln!(stdout, "{n} problem{} found", if n == 1 { "" } else { "s" })?;
            Ok(ExitCode::from(1))
        }
    }
}

fn render(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let model = match desired_state::load_dir(&args.dir) {
        Ok(m) => m,
        Err(problems) => {
            let mut stdout = std::io::stdout().lock();
            for d in &problems {
                writeln!(stdout, "{d}")?;
            }
            writeln!(
                stdout,
                "{} problem(s) found; nothing rendered",
                problems.len()
            )?;
            return Ok(ExitCode::from(1));
        }
    };
    let identity_text = std::fs::read_to_string(&args.identity)
        .with_context(|| format!("reading identity {}", args.identity.display()))?;
    let identity = desired_state::Identity::parse(&identity_text)
        .with_context(|| format!("parsing identity {}", args.identity.display()))?;
    let secrets = model
        .decrypt_all(&identity)
        .context("decrypting the repository's secrets")?;
    let plans = match &args.node {
        Some(node) => vec![roles::render(&model, node, &secrets)?],
        None => roles::render_all(&model, &secrets)?,
    };
    let mut stdout = std::io::stdout().lock();
    for plan in &plans {
        let root = args.out.join(&plan.node);
        write_plan(&root, plan)?;
        writeln!(
            stdout,
            "{}: {} files, {} units -> {}",
            plan.node,
            plan.files.len(),
            plan.units.len(),
            root.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a plan below `root` as the node would see it, plus `plan.json`
/// (everything but file contents). Not the agent's apply: no owners, no
/// atomic replace, no units started.
fn write_plan(root: &Path, plan: &roles::Plan) -> anyhow::Result<()> {
    let place = |abs: &str| -> anyhow::Result<PathBuf> {
        let rel = abs
            .strip_prefix('/')
            .filter(|r| !r.split('/').any(|c| c == ".." || c.is_empty()));
        match rel {
            Some(rel) => Ok(root.join(rel)),
            None => bail!("refusing to write {abs:?}: not a clean absolute path"),
        }
    };
    let write = |path: PathBuf, bytes: &[u8]| -> anyhow::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    for file in &plan.files {
        write(place(&file.path)?, &file.contents)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let path = place(&file.path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
                .with_context(|| format!("chmod {}", path.display()))?;
        }
    }
    for unit in &plan.units {
        write(
            place(&format!("/etc/systemd/system/{}", unit.name))?,
            unit.contents.as_bytes(),
        )?;
    }
    let json = serde_json::to_string_pretty(plan).context("serializing the plan")?;
    write(root.join("plan.json"), format!("{json}\n").as_bytes())
}

fn schema(out: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut stdout = std::io::stdout().lock();
    for (name, text) in desired_state::schema::all() {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        writeln!(stdout, "wrote {}", path.display())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn kraftops_agent_config(path: &Path) -> anyhow::Result<crate::config::AgentConfig> {
    Ok(crate::config::AgentConfig::load(path)?)
}

/// The node agent's runtime: one thread. Its async side only waits on
/// sockets and timers (the API, the coordinator's long-poll, reports); every
/// reconcile (git, rendering, writing files, systemctl) runs on the blocking
/// pool, one at a time. One thread keeps the agent's threads and their
/// malloc arenas the same on a 2-core and a 64-core node (a worker per core
/// measured about 30 KiB of RSS each, and did no work).
fn agent_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the agent's async runtime")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Logs to stderr: human-readable on a terminal, JSON otherwise (under
/// systemd, journald keeps the fields). `RUST_LOG` filters (default `info`).
fn init_tracing() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}

fn init(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let mut opts = crate::init::InitOptions::new(&args.name, &args.template, &args.identity_out);
    opts.recipients.clone_from(&args.recipients);
    let report = crate::init::init(&args.dir, &opts)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "created {} (cluster {}, KRaft id {}); identity in {}",
        report.dir.display(),
        report.cluster_name,
        report.kraft_cluster_id,
        args.identity_out.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
