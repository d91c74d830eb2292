//! The command line: `kraftops-bootstrap plan|apply|destroy <dir>`.
//!
//! Everything that can be checked without AWS is checked first: the
//! repository is loaded and validated (every problem printed as
//! `file:line:col: message`), the secrets decrypted and every machine's
//! user-data rendered. Only then is an AWS client made.
//!
//! Output: the plan, the summary and the final table of machines on stdout;
//! progress of long operations on stderr.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use desired_state::types::Name;
use desired_state::{Identity, Model, SecretValue};

use crate::actual::Instance;
use crate::desired::Desired;
use crate::diff::{self, Plan};
use crate::ec2::{Ec2, Launch, USER_DATA_LIMIT, UserData};

#[derive(Debug, Parser)]
#[command(
    name = "kraftops-bootstrap",
    version,
    about = "Provisions a kraftops cluster's AWS network and machines from its desired-state repository",
    long_about = "Provisions a kraftops cluster's AWS network and machines from its desired-state repository.\n\n\
                  There is no state file: every resource is tagged kraftops:cluster=<name> and\n\
                  kraftops:resource=<what>, and found again by those tags.\n\n\
                  Credentials come from the AWS chain: environment variables, the shared config and\n\
                  credentials files (static keys, assumed roles), web identity, container and\n\
                  instance roles. SSO and credential_process profiles are not built in: export\n\
                  their credentials to the environment first (aws configure export-credentials)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print what `apply` would create, keep, change and delete.
    Plan(PlanArgs),
    /// Create or change the cluster's network and machines to match the repository.
    Apply(PlanArgs),
    /// Delete every resource tagged for the cluster.
    Destroy(DestroyArgs),
}

#[derive(Debug, Args)]
struct Common {
    /// The desired-state repository (a directory).
    dir: PathBuf,
    /// The AWS region. Default and only accepted value: aws.region of
    /// cluster.yaml (the zones of network.azs were checked against it), so
    /// giving it guards against working on the wrong repository.
    #[arg(long)]
    region: Option<String>,
    /// Talk to this EC2 endpoint instead of AWS's (an emulator).
    #[arg(long, value_name = "URL")]
    endpoint_url: Option<String>,
}

#[derive(Debug, Args)]
struct PlanArgs {
    #[command(flatten)]
    common: Common,
    /// The age identity that decrypts the repository's secrets: the nodes'
    /// join tokens go into their user-data, and the identity itself into the
    /// observability node's (its coordinator decrypts the CA key).
    #[arg(long, value_name = "FILE")]
    identity: PathBuf,
    /// Keep the identity out of the observability node's user-data: place
    /// it at /etc/kraftops/age-identity (mode 0600) on that machine yourself
    /// (its agent waits for the file); EC2 then holds no working secret.
    #[arg(long)]
    identity_out_of_band: bool,
}

#[derive(Debug, Args)]
struct DestroyArgs {
    #[command(flatten)]
    common: Common,
    /// Do not ask; required when standard input is not a terminal.
    #[arg(long)]
    yes: bool,
}

/// Runs the command line `args` (the program name first).
pub fn run(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> anyhow::Result<ExitCode> {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            e.print()?;
            return Ok(if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            });
        }
    };
    match cli.command {
        Command::Plan(args) => plan_or_apply(&args, false),
        Command::Apply(args) => plan_or_apply(&args, true),
        Command::Destroy(args) => destroy(&args),
    }
}

/// Loads and validates the repository; prints every problem and returns
/// `None` when there are any.
fn load(dir: &Path) -> anyhow::Result<Option<Model>> {
    match desired_state::load_dir(dir) {
        Ok(model) => Ok(Some(model)),
        Err(problems) => {
            let mut err = io::stderr().lock();
            for d in &problems {
                writeln!(err, "{d}")?;
            }
            let n = problems.len();
            writeln!(
                err,
                "{n} problem{} in {}; nothing was done (no AWS call was made)",
                if n == 1 { "" } else { "s" },
                dir.display()
            )?;
            Ok(None)
        }
    }
}

fn aws_spec(model: &Model) -> anyhow::Result<&desired_state::AwsSpec> {
    Ok(&model
        .cluster
        .aws
        .as_ref()
        .ok_or(crate::desired::DesiredError::NoAwsSection)?
        .value)
}

/// Every node's user-data: its join token, and on the observability node
/// the identity's own text (unless it is placed out of band).
fn user_data(
    model: &Model,
    identity_file: &Path,
    identity_out_of_band: bool,
) -> anyhow::Result<BTreeMap<String, UserData>> {
    let text = std::fs::read_to_string(identity_file)
        .with_context(|| format!("reading the age identity {}", identity_file.display()))?;
    let identity = Identity::parse(&text)
        .with_context(|| format!("parsing the age identity {}", identity_file.display()))?;
    let identity_value = SecretValue::new(text);
    let mut out = BTreeMap::new();
    for node in model.nodes.iter().map(|n| &n.value) {
        let name = node.name.as_str();
        let secret = format!("join-token-{name}");
        let secret_name =
            Name::try_from(secret.clone()).with_context(|| format!("the join token of {name}"))?;
        let join_token = model.decrypt(&secret_name, &identity).with_context(|| {
            format!(
                "decrypting secrets/{secret}.age (the join token of {name}) with {}",
                identity_file.display()
            )
        })?;
        let secrets = roles::cloud_init::UserDataSecrets {
            join_token: &join_token,
            identity: (*node.role == desired_state::Role::Observability && !identity_out_of_band)
                .then_some(&identity_value),
        };
        let text = roles::cloud_init::user_data(model, name, &secrets)
            .with_context(|| format!("rendering the user-data of {name}"))?;
        if text.len() > USER_DATA_LIMIT {
            bail!(
                "the user-data of {name} is {} bytes; EC2 takes at most {USER_DATA_LIMIT}",
                text.len()
            );
        }
        out.insert(name.to_owned(), UserData::new(text));
    }
    Ok(out)
}

/// The region to work in: `--region`, which must then be `aws.region`
/// (the zones of `network.azs` were checked against it), or `aws.region`.
fn region(common: &Common, aws: &desired_state::AwsSpec) -> anyhow::Result<String> {
    let configured = aws.region.as_str();
    match common.region.as_deref() {
        Some(r) if r != configured => bail!(
            "--region {r} is not aws.region {configured} of cluster.yaml, whose zones network.azs names; change aws.region instead (nothing was done)"
        ),
        _ => Ok(configured.to_owned()),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// An EC2 client for `region` from the usual credential chain.
async fn client(region: &str, endpoint: Option<&str>) -> aws_sdk_ec2::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_owned()))
        .load()
        .await;
    let mut ec2 = aws_sdk_ec2::config::Builder::from(&config);
    if let Some(url) = endpoint {
        ec2 = ec2.endpoint_url(url);
    }
    aws_sdk_ec2::Client::from_conf(ec2.build())
}

fn print_plan(out: &mut impl Write, plan: &Plan) -> io::Result<()> {
    for step in &plan.steps {
        writeln!(out, "{step}")?;
    }
    Ok(())
}

fn refusal(plan: &Plan) -> anyhow::Error {
    let refused = plan.refused();
    anyhow::anyhow!(
        "{} change{} cannot be made in place, so nothing was applied:\n  {}",
        refused.len(),
        if refused.len() == 1 { "" } else { "s" },
        refused.join("\n  ")
    )
}

fn plan_or_apply(args: &PlanArgs, apply: bool) -> anyhow::Result<ExitCode> {
    let dir = &args.common.dir;
    let Some(model) = load(dir)? else {
        return Ok(ExitCode::from(1));
    };
    let aws = aws_spec(&model)?;
    let desired = Desired::from_model(&model)?;
    let user_data = user_data(&model, &args.identity, args.identity_out_of_band)?;
    let region = region(&args.common, aws)?;

    runtime()?.block_on(async {
        let ec2 = Ec2::new(
            client(&region, args.common.endpoint_url.as_deref()).await,
            &desired.cluster,
        );
        let image = ec2
            .resolve_image(&aws.ami)
            .await
            .context("resolving aws.ami")?;
        let actual = ec2
            .read()
            .await
            .context("reading the cluster's resources")?;
        let plan = diff::diff(&desired, &actual);
        let mut out = io::stdout().lock();
        writeln!(
            out,
            "Cluster {} in {region}; image {image}",
            desired.cluster
        )?;
        print_plan(&mut out, &plan)?;
        let counts = plan.counts();
        writeln!(out, "Plan: {counts}.")?;
        out.flush()?;
        if !plan.refused().is_empty() {
            return Err(refusal(&plan));
        }
        if !apply {
            return Ok(ExitCode::SUCCESS);
        }
        if plan.is_noop() {
            writeln!(
                out,
                "Nothing to create, change or delete: {} resources up to date.",
                counts.keep
            )?;
        } else {
            let launch = Launch {
                image,
                key_pair: aws.key_pair.as_ref().map(|k| k.as_str().to_owned()),
                root_volume_gib: *aws.root_volume_gib,
                user_data,
            };
            let applied = ec2
                .apply(&plan, &desired, &launch, &mut io::stderr())
                .await
                .context("applying the plan (run apply again to resume)")?;
            writeln!(
                out,
                "Apply complete: {} created, {} changed, {} deleted.",
                applied.created, applied.changed, applied.deleted
            )?;
        }
        let machines = ec2.machines().await.context("reading the machines")?;
        print_table(&mut out, &desired, &machines)?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The nodes' table: name, role, zone, instance id, private and public
/// address.
fn print_table(out: &mut impl Write, desired: &Desired, machines: &[Instance]) -> io::Result<()> {
    let mut rows = vec![[
        "NODE".to_owned(),
        "ROLE".to_owned(),
        "AZ".to_owned(),
        "INSTANCE".to_owned(),
        "PRIVATE".to_owned(),
        "PUBLIC".to_owned(),
    ]];
    for spec in &desired.instances {
        let machine = machines
            .iter()
            .filter(|m| m.node() == Some(spec.node.as_str()) && !m.state.is_gone())
            .min_by_key(|m| m.id.clone());
        let dash = || "-".to_owned();
        rows.push([
            spec.node.clone(),
            spec.role.to_string(),
            spec.az.clone(),
            machine.map_or_else(dash, |m| m.id.clone()),
            machine
                .and_then(|m| m.private_ip)
                .map_or_else(dash, |a| a.to_string()),
            machine
                .and_then(|m| m.public_ip.clone())
                .unwrap_or_else(dash),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

fn destroy(args: &DestroyArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.common.dir;
    let Some(model) = load(dir)? else {
        return Ok(ExitCode::from(1));
    };
    let aws = aws_spec(&model)?;
    let desired = Desired::from_model(&model)?;
    let interactive = io::stdin().is_terminal();
    if !args.yes && !interactive {
        bail!(
            "destroy deletes every resource tagged {}={}: pass --yes to confirm (standard input is not a terminal, so there is no one to ask); nothing was deleted",
            crate::tags::CLUSTER,
            desired.cluster
        );
    }
    let region = region(&args.common, aws)?;

    runtime()?.block_on(async {
        let ec2 = Ec2::new(
            client(&region, args.common.endpoint_url.as_deref()).await,
            &desired.cluster,
        );
        let actual = ec2
            .read()
            .await
            .context("reading the cluster's resources")?;
        let mut out = io::stdout().lock();
        if actual.is_empty() {
            writeln!(
                out,
                "Nothing is tagged {}={} in {region}.",
                crate::tags::CLUSTER,
                desired.cluster
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        let plan = diff::destroy(&actual);
        writeln!(out, "Cluster {} in {region}", desired.cluster)?;
        print_plan(&mut out, &plan)?;
        writeln!(out, "Plan: {}.", plan.counts())?;
        out.flush()?;
        if !args.yes {
            let mut err = io::stderr().lock();
            write!(
                err,
                "Type the cluster's name ({}) to delete all of this: ",
                desired.cluster
            )?;
            err.flush()?;
            let mut answer = String::new();
            io::stdin().lock().read_line(&mut answer)?;
            if answer.trim() != desired.cluster {
                bail!("not confirmed; nothing was deleted");
            }
        }
        let applied = ec2
            .destroy(&plan, &desired, &mut io::stderr())
            .await
            .context("destroying the cluster (run destroy again to resume)")?;
        let left = ec2.read().await.context("reading what is left")?;
        if !left.is_empty() {
            bail!(
                "{} resources tagged {}={} are still there; run destroy again",
                left.count(),
                crate::tags::CLUSTER,
                desired.cluster
            );
        }
        writeln!(
            out,
            "Destroy complete: {} deleted; nothing tagged {}={} is left in {region}.",
            applied.deleted,
            crate::tags::CLUSTER,
            desired.cluster
        )?;
        Ok(ExitCode::SUCCESS)
    })
}
