//! `kraftops-agent coordinator`: the coordinator as a process. It keeps its
//! own clone of the desired-state repository (the same repository and
//! identity as the observability node's agent), builds the [`ClusterView`]
//! and the CA signer from it, and refreshes both on every nudge and poll.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use desired_state::{Identity, Model};
use roles::observability::CoordinatorConfig;
use tokio_util::sync::CancellationToken;

use super::{
    ClusterView, Coordinator, CsrSigner, NodeEntry, RolloutRules, ServerCertificate, SystemClock,
    serve_tls, server_config,
};
use crate::certs::{Ca, NodeIdentity};
use crate::config::AgentConfig;
use crate::sync::Repo;

/// Signs CSRs with the cluster CA, giving each node exactly its own names.
#[derive(Debug)]
pub struct CaSigner(pub Arc<Ca>);

impl CsrSigner for CaSigner {
    fn sign(
        &self,
        csr_pem: &str,
        node: &str,
        entry: &NodeEntry,
        validity: Duration,
        now: u64,
    ) -> Result<(String, u64), String> {
        let identity = NodeIdentity {
            name: node.to_owned(),
            dns_names: entry.dns_names.clone(),
            ips: entry.ips.clone(),
        };
        self.0
            .sign(csr_pem, &identity, validity.as_secs(), now)
            .map(|c| (c.pem, c.not_after))
            .map_err(|e| e.to_string())
    }
    fn ca_pem(&self) -> String {
        self.0.cert_pem().to_owned()
    }
}

/// The coordinator's view of `model`: nodes with their names and AZs, join
/// tokens, lease and certificate lifetimes, the rollout policy; and the CA.
/// Its `revision` is `None`: the caller knows the commit.
pub fn view_of(model: &Model, identity: &Identity) -> anyhow::Result<(ClusterView, Ca)> {
    let mut nodes = BTreeMap::new();
    let mut join_tokens = BTreeMap::new();
    for n in model.nodes.iter().map(|n| &n.value) {
        let name = n.name.to_string();
        nodes.insert(
            name.clone(),
            NodeEntry {
                role: n.role.to_string(),
                az: n.az.to_string(),
                dns_names: vec![model.fqdn(n)],
                ips: vec![IpAddr::V4(n.address.value)],
            },
        );
        let secret = desired_state::types::Name::try_from(crate::init::join_token_secret(&name))
            .map_err(|e| anyhow::anyhow!("join token secret name for {name}: {e}"))?;
        if model.secrets.contains_key(&secret) {
            let token = model
                .decrypt(&secret, identity)
                .with_context(|| format!("decrypting the join token of {name}"))?;
            join_tokens.insert(name, token.expose().to_owned());
        }
    }
    let key_secret = &model.cluster.security.ca.key_secret;
    let key = model
        .decrypt(key_secret, identity)
        .context("decrypting the CA key")?;
    let ca = Ca::from_pem(&model.ca_certificate, key.expose()).context("loading the cluster CA")?;
    let view = ClusterView {
        cluster: model.cluster.name.to_string(),
        nodes,
        join_tokens,
        lease_ttl_max: Duration::from_secs(model.cluster.rollout.lease_ttl.as_secs()),
        cert_validity: Duration::from_secs(model.cluster.security.ca.cert_validity.as_secs()),
        rollout: RolloutRules::of(&model.cluster.rollout),
        revision: None,
    };
    Ok((view, ca))
}

/// The view and a CA signer for `model`, ready for [`Coordinator::new`].
pub fn signer_and_view(
    model: &Model,
    identity: &Identity,
) -> anyhow::Result<(ClusterView, Arc<dyn CsrSigner>)> {
    let (view, ca) = view_of(model, identity)?;
    Ok((view, Arc::new(CaSigner(Arc::new(ca)))))
}

/// A keystore PEM (key, certificate, CA) for the coordinator's own TLS
/// listener: `node`'s names from `view`, plus `localhost` and 127.0.0.1 for
/// tools on the same machine. Returns it with its `not_after`.
pub fn coordinator_keystore(
    ca: &Ca,
    view: &ClusterView,
    node: &str,
    now: u64,
) -> anyhow::Result<(String, u64)> {
    let entry = view
        .nodes
        .get(node)
        .with_context(|| format!("the coordinator's node {node} is not in nodes.yaml"))?;
    let mut dns_names = entry.dns_names.clone();
    dns_names.push("localhost".to_owned());
    let mut ips = entry.ips.clone();
    ips.push(IpAddr::from([127, 0, 0, 1]));
    let identity = NodeIdentity {
        name: node.to_owned(),
        dns_names,
        ips,
    };
    // The CA gives the certificate `identity`'s names; the CSR only
    // carries the key.
    let key = crate::certs::NodeKey::generate().context("generating the coordinator's key")?;
    let csr = crate::certs::csr_for_names("coordinator", node, &[], &[], &key)
        .context("the coordinator's CSR")?;
    let signed = ca
        .sign(&csr, &identity, view.cert_validity.as_secs(), now)
        .context("signing the coordinator's certificate")?;
    Ok((
        crate::certs::keystore_pem(&key, &signed.pem, ca.cert_pem()),
        signed.not_after,
    ))
}

/// What `next` may not change from the `accepted` model, as the agents
/// check it before applying a commit (`roles::transition`): `None` when it
/// may be followed, or when either side's secrets cannot be decrypted
/// (then the resource planner's own refusal is the guard).
fn refuse_transition(
    accepted: &(Model, Option<roles::Secrets>),
    next: &Model,
    identity: &Identity,
) -> Option<Vec<String>> {
    let (model, Some(secrets)) = accepted else {
        return None;
    };
    let next_secrets = next.decrypt_all(identity).ok()?;
    let problems = roles::transition::check_transition(
        roles::transition::Commit { model, secrets },
        roles::transition::Commit {
            model: next,
            secrets: &next_secrets,
        },
    );
    (!problems.is_empty()).then(|| problems.iter().map(ToString::to_string).collect())
}

/// Fetches the repository and loads the head (blocking).
fn load_head(repo: &mut Repo) -> anyhow::Result<(String, Model)> {
    let head = repo
        .fetch()
        .context("fetching the desired-state repository")?;
    let files = repo.files_at(&head).context("reading the head commit")?;
    let model = desired_state::load_files(&files)
        .map_err(|d| anyhow::anyhow!("commit {head} is invalid: {d}"))?;
    Ok((head, model))
}

/// Runs the coordinator until SIGTERM or Ctrl-C.
pub async fn run(config_path: &Path, agent: AgentConfig) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config: CoordinatorConfig = serde_saphyr::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", config_path.display(), e.without_snippet()))?;
    let identity_path = agent.rooted(&agent.identity_file);
    let identity_text = std::fs::read_to_string(&identity_path)
        .with_context(|| format!("reading {}", identity_path.display()))?;
    let identity = Identity::parse(&identity_text)
        .with_context(|| format!("parsing {}", identity_path.display()))?;
    // Its own clone, in the unit's StateDirectory= (systemd passes it as
    // $STATE_DIRECTORY; the sandbox leaves only that writable).
    let state_dir = match std::env::var_os("STATE_DIRECTORY") {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => agent.state_path().join("coordinator"),
    };
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let dir = state_dir.join("repository");
    let url = agent.repository.url.clone();
    let branch = agent.repository.branch.clone();
    let fetch_timeout = agent.repository.fetch_timeout();
    let (mut repo, head, model) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut repo = Repo::open_or_clone(&url, &branch, &dir)
            .context("opening the repository clone")?
            .with_fetch_timeout(fetch_timeout);
        let (head, model) = load_head(&mut repo)?;
        Ok((repo, head, model))
    })
    .await
    .context("the loading thread panicked")??;
    let (mut view, ca) = view_of(&model, &identity)?;
    view.revision = Some(head.clone());
    let ca = Arc::new(ca);
    let signer: Arc<dyn CsrSigner> = Arc::new(CaSigner(Arc::clone(&ca)));
    let tls = match &config.tls_listen {
        Some(address) => {
            let now = crate::certs::unix_now();
            let (pem, not_after) = coordinator_keystore(&ca, &view, &agent.node, now)?;
            let certificate = ServerCertificate::from_keystore(&pem)
                .context("loading the coordinator's TLS certificate")?;
            let server = server_config(ca.cert_pem(), Arc::clone(&certificate))
                .context("the coordinator's TLS configuration")?;
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("binding {address}"))?;
            Some((listener, server, certificate, now, not_after))
        }
        None => None,
    };
    // The names the coordinator's TLS certificate is renewed for.
    let mut tls_view = view.clone();
    let webhook_secret = desired_state::types::Name::try_from("git-webhook-secret")
        .ok()
        .filter(|n| model.secrets.contains_key(n))
        .map(|n| model.decrypt(&n, &identity).map(|s| s.expose().to_owned()))
        .transpose()
        .context("decrypting secrets/git-webhook-secret.age")?;
    // The lease record survives restarts: the next run grants no lease
    // before the last one this run granted has expired.
    let coordinator = Coordinator::with_lease_record(
        view,
        signer,
        Arc::new(SystemClock),
        webhook_secret,
        state_dir.join("leases-until"),
    );
    // Halts and the lease history survive restarts too: a rollout halted
    // after a failed restart stays halted.
    coordinator.keep_halts(state_dir.join(super::HALT_FILE));
    coordinator
        .enable_enrolment(
            identity_text.clone(),
            Some(state_dir.join("spent-join-tokens")),
        )
        .with_context(|| format!("reading {}", state_dir.join("spent-join-tokens").display()))?;
    tracing::info!(commit = %head, cluster = %config.cluster, listen = %config.listen, "coordinator starting");

    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let server = tokio::spawn(super::serve(listener, coordinator.clone(), stop.clone()));
    let mut tls_server = None;
    let mut server_certificate = None;
    if let Some((listener, config, certificate, issued, not_after)) = tls {
        tls_server = Some(tokio::spawn(serve_tls(
            listener,
            coordinator.clone(),
            config,
            stop.clone(),
        )));
        server_certificate = Some((certificate, issued, not_after));
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    // The cluster-scope work (metadata.version, topics, users, ACLs, quotas,
    // connectors) on a thread of its own: the Kafka and Connect clients block. It ends when `heads` is dropped.
    let (heads, heads_rx) = std::sync::mpsc::channel();
    let _ = heads.send(super::cluster::Head {
        commit: head.clone(),
        model: Arc::new(model.clone()),
    });
    // Not joined at shutdown: it may be inside a Kafka call for a few seconds.
    {
        let coordinator = coordinator.clone();
        let state_dir = state_dir.clone();
        let identity = Identity::parse(&identity_text)
            .with_context(|| format!("parsing {}", identity_path.display()))?;
        std::thread::Builder::new()
            .name("cluster".to_owned())
            .spawn(move || super::cluster::run(coordinator, identity, heads_rx, &state_dir))
            .context("starting the cluster thread")?;
    }

    // Follow the repository: nodes, tokens and the CA come from git. A
    // refresh also nudges every agent, so a push reaches them at once.
    let mut last = head;
    // The model the coordinator follows and its secret values: a new head
    // is checked against them as every agent checks it (`refused` keeps one
    // warning per refused head).
    let mut accepted = (model.clone(), model.decrypt_all(&identity).ok());
    let mut refused: Option<String> = None;
    let mut generation = coordinator.generation();
    let poll = Duration::from_secs(model.cluster.agent.poll_interval.as_secs().max(5));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(poll) => {}
            () = async {
                while coordinator.generation() == generation {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            } => {}
        }
        generation = coordinator.generation();
        // The TLS certificate is renewed at two thirds of its lifetime.
        if let Some((certificate, issued, not_after)) = &mut server_certificate {
            let now = crate::certs::unix_now();
            if now >= *issued + (*not_after).saturating_sub(*issued) * 2 / 3 {
                match coordinator_keystore(&ca, &tls_view, &agent.node, now).and_then(
                    |(pem, until)| {
                        certificate.replace(&pem)?;
                        Ok(until)
                    },
                ) {
                    Ok(until) => {
                        tracing::info!(
                            not_after = until,
                            "renewed the coordinator's TLS certificate"
                        );
                        *issued = now;
                        *not_after = until;
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "renewing the coordinator's TLS certificate")
                    }
                }
            }
        }
        let (back, loaded) = tokio::task::spawn_blocking(move || {
            let loaded = load_head(&mut repo);
            (repo, loaded)
        })
        .await
        .context("the loading thread panicked")?;
        repo = back;
        match loaded {
            Ok((head, _)) if refused.as_ref() == Some(&head) => {}
            Ok((head, model))
                if head != last
                    && let Some(problems) = refuse_transition(&accepted, &model, &identity) =>
            {
                tracing::warn!(commit = %head, problems = %problems.join("\n"), "refused: keeping the previous view, as the agents keep their commit");
                refused = Some(head);
            }
            Ok((head, model)) if head != last => match view_of(&model, &identity) {
                Ok((mut view, _)) => {
                    accepted = (model.clone(), model.decrypt_all(&identity).ok());
                    let _ = heads.send(super::cluster::Head {
                        commit: head.clone(),
                        model: Arc::new(model),
                    });
                    view.revision = Some(head.clone());
                    tracing::info!(commit = %head, "cluster view updated");
                    tls_view = view.clone();
                    coordinator.set_view(view);
                    last = head;
                    coordinator.nudge();
                    generation = coordinator.generation();
                }
                Err(e) => {
                    tracing::warn!(commit = %head, error = %format!("{e:#}"), "keeping the previous view")
                }
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "keeping the previous view"),
        }
    }
    tracing::info!("coordinator shutting down");
    drop(heads);
    stop.cancel();
    server.await.context("the server task panicked")??;
    if let Some(tls_server) = tls_server {
        tls_server.await.context("the TLS server task panicked")??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed")
    }

    #[test]
    fn a_head_changing_a_cluster_login_in_place_is_not_followed() {
        let identity = Identity::parse(
            &std::fs::read_to_string(example().with_file_name("seed.example-only.age-identity"))
                .expect("identity"),
        )
        .expect("parses");
        let files = desired_state::read_repository(&example()).expect("reads");
        let model = desired_state::load_files(&files).expect("loads");
        let accepted = (model.clone(), model.decrypt_all(&identity).ok());
        assert!(accepted.1.is_some());
        assert_eq!(refuse_transition(&accepted, &model, &identity), None);

        let with = |secret: &str, value: &str| {
            let file = format!("secrets/{secret}.age");
            let encrypted =
                desired_state::EncryptedSecret::encrypt(&file, value, &identity.recipients())
                    .expect("encrypts");
            let mut files = files.clone();
            files.insert(file, encrypted.ciphertext().to_vec());
            desired_state::load_files(&files).expect("loads")
        };
        // The admin password: the coordinator would log in with it before
        // Kafka has it. Refused, at the users/ file.
        let problems = refuse_transition(&accepted, &with("admin-password", "new"), &identity)
            .expect("refused");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("users/platform.yaml:")
                && problems[0].contains("user admin, the security.admin_user, changes in place"),
            "{problems:?}"
        );
        // A client's password is the coordinator's to set: followed.
        assert_eq!(
            refuse_transition(&accepted, &with("client-password", "new"), &identity),
            None
        );
    }
}
