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
    }
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
