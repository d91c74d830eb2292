//! The observability node: Prometheus, Alertmanager, Grafana and the kraftops
//! coordinator, all derived from `nodes.yaml` and `cluster.yaml`.
//!
//! Every YAML file is built from typed structs and written by
//! `serde_saphyr::to_string`, which quotes any scalar a YAML 1.1 reader (the
//! Go YAML Prometheus and Alertmanager use) could read as another type, so a
//! value can never turn into structure. Only `grafana.ini` is written line by
//! line, from typed values.
//!
//! What a change needs: Prometheus and Alertmanager re-read their files on
//! `SIGHUP` (reload); Grafana reads `grafana.ini` and provisioning only at
//! start (restart); dashboards are rescanned by Grafana's file provider
//! (nothing); the coordinator reads its config at start (restart).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use desired_state::{Node, Role, RolloutPolicy};
use serde::{Deserialize, Serialize};

use crate::layout::{self, MANAGED_HEADER};
use crate::systemd::{UnitFile, quote_arg};
use crate::{Ctx, OnChange, Plan, PlannedDir, PlannedFile, PlannedUnit, RenderError, SystemUser};

pub(crate) fn render(ctx: &Ctx<'_>, plan: &mut Plan) -> Result<(), RenderError> {
    // The packages' own units would bind the same ports as ours (Debian's
    // prometheus.service is overridden by ours, which has the same name).
    plan.masked_units.extend([
        "prometheus-alertmanager.service".to_owned(),
        "grafana-server.service".to_owned(),
    ]);
    users_and_directories(plan, ctx.model.cluster.observability.grafana.enabled);
    prometheus(ctx, plan)?;
    alertmanager(ctx, plan)?;
    if ctx.model.cluster.observability.grafana.enabled {
        grafana(ctx, plan)?;
    }
    coordinator(ctx, plan)?;
    Ok(())
}

// ------------------------------------------------------------------ helpers

/// `# <MANAGED_HEADER>` followed by the value as YAML.
fn yaml<T: Serialize>(file: &str, value: &T) -> Result<String, RenderError> {
    let body = serde_saphyr::to_string(value).map_err(|e| RenderError::Serialize {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    Ok(format!("# {MANAGED_HEADER}\n{body}"))
}

fn dir(path: &str, mode: u32, owner: &str, group: &str) -> PlannedDir {
    PlannedDir {
        path: path.to_owned(),
        mode,
        owner: owner.to_owned(),
        group: group.to_owned(),
    }
}

fn unit(name: &str, file: &UnitFile) -> Result<PlannedUnit, RenderError> {
    Ok(PlannedUnit {
        name: name.to_owned(),
        contents: file.render(name)?,
        enable: true,
        start: true,
        kafka: false,
    })
}

/// A command line for `ExecStart=`, every word quoted as systemd needs.
fn command(words: &[String]) -> String {
    words
        .iter()
        .map(|w| quote_arg(w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn address(ctx: &Ctx<'_>) -> Ipv4Addr {
    *ctx.node.address
}

fn http_url(addr: Ipv4Addr, port: u16) -> String {
    format!("http://{addr}:{port}")
}

fn users_and_directories(plan: &mut Plan, grafana: bool) {
    use layout::{GRAFANA_USER as G, PROMETHEUS_USER as P};
    plan.users.push(SystemUser {
        name: P.to_owned(),
        home: layout::PROMETHEUS_HOME.to_owned(),
    });
    plan.directories.extend([
        dir(layout::PROMETHEUS_ETC, 0o755, "root", "root"),
        dir(layout::PROMETHEUS_RULES_DIR, 0o755, "root", "root"),
        dir(layout::PROMETHEUS_HOME, 0o755, P, P),
        dir(layout::PROMETHEUS_TSDB, 0o750, P, P),
        dir(layout::ALERTMANAGER_ETC, 0o755, "root", "root"),
        dir(layout::ALERTMANAGER_DATA, 0o750, P, P),
    ]);
    if !grafana {
        return;
    }
    plan.users.push(SystemUser {
        name: G.to_owned(),
        home: layout::GRAFANA_DATA.to_owned(),
    });
    plan.directories.extend([
        // Grafana reads its configuration as group grafana and cannot change it.
        dir(layout::GRAFANA_ETC, 0o750, "root", G),
        dir(layout::GRAFANA_PROVISIONING, 0o750, "root", G),
        dir(
            &format!("{}/datasources", layout::GRAFANA_PROVISIONING),
            0o750,
            "root",
            G,
        ),
        dir(
            &format!("{}/dashboards", layout::GRAFANA_PROVISIONING),
            0o750,
            "root",
            G,
        ),
        dir(
            &format!("{}/plugins", layout::GRAFANA_PROVISIONING),
            0o750,
            "root",
            G,
        ),
        dir(
            &format!("{}/alerting", layout::GRAFANA_PROVISIONING),
            0o750,
            "root",
            G,
        ),
        dir(layout::GRAFANA_DATA, 0o750, G, G),
        dir(&format!("{}/plugins", layout::GRAFANA_DATA), 0o750, G, G),
        dir(layout::GRAFANA_DASHBOARDS_DIR, 0o755, "root", "root"),
        dir(layout::GRAFANA_LOGS, 0o750, G, G),
    ]);
}

// --------------------------------------------------------------- prometheus

#[derive(Debug, Serialize)]
struct PrometheusConfig {
    global: PrometheusGlobal,
    alerting: Alerting,
    rule_files: Vec<String>,
    scrape_configs: Vec<ScrapeConfig>,
}

#[derive(Debug, Serialize)]
struct PrometheusGlobal {
    scrape_interval: String,
    evaluation_interval: String,
    /// Attached to alerts, so a receiver knows which cluster speaks.
    external_labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct Alerting {
    alertmanagers: Vec<AlertmanagerTargets>,
}

#[derive(Debug, Serialize)]
struct AlertmanagerTargets {
    static_configs: Vec<StaticConfig>,
}

#[derive(Debug, Serialize)]
struct ScrapeConfig {
    job_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_path: Option<String>,
    static_configs: Vec<StaticConfig>,
}

#[derive(Debug, Serialize)]
struct StaticConfig {
    targets: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
}

/// The glob in `rule_files`: relative, so Prometheus resolves it next to its
/// config file (and `promtool` next to a copy of the rendered tree).
const RULE_FILES: &str = "rules/*.yaml";

/// A scrape job of one port on every node of `nodes`, each target labelled
/// with the node's name, AZ and role.
fn node_job<'a>(
    ctx: &Ctx<'_>,
    job_name: &str,
    port: u16,
    nodes: impl Iterator<Item = &'a Node>,
) -> ScrapeConfig {
    let static_configs = nodes
        .map(|n| StaticConfig {
            targets: vec![format!("{}:{port}", ctx.fqdn(n))],
            labels: BTreeMap::from([
                ("node".to_owned(), n.name.to_string()),
                ("az".to_owned(), n.az.to_string()),
                ("role".to_owned(), n.role.as_str().to_owned()),
            ]),
        })
        .collect();
    ScrapeConfig {
        job_name: job_name.to_owned(),
        metrics_path: None,
        static_configs,
    }
}

/// The jobs derived from `nodes.yaml`, named as in
/// [`desired_state::DERIVED_JOBS`], then the repository's `scrape_extras`.
fn scrape_configs(ctx: &Ctx<'_>) -> Vec<ScrapeConfig> {
    let model = ctx.model;
    let ports = ctx.ports();
    let all = || model.nodes.iter().map(|n| &n.value);
    let role = |r: Role| model.nodes_with_role(r);
    let observability = std::iter::once(ctx.node);
    let mut jobs = vec![
        node_job(ctx, "prometheus", ports.prometheus, observability.clone()),
        node_job(
            ctx,
            "alertmanager",
            ports.alertmanager,
            observability.clone(),
        ),
        node_job(ctx, "node", ports.node_exporter, all()),
        node_job(ctx, "kafka-broker", ports.broker_jmx, role(Role::Broker)),
        node_job(
            ctx,
            "kafka-controller",
            ports.controller_jmx,
            role(Role::Controller),
        ),
        node_job(ctx, "kafka-connect", ports.connect_jmx, role(Role::Connect)),
        node_job(ctx, "kraftops-agent", ports.agent, all()),
        node_job(
            ctx,
            "kraftops-coordinator",
            ports.coordinator,
            observability.clone(),
        ),
        node_job(ctx, "grafana", ports.grafana, observability),
    ];
    if !model.cluster.observability.grafana.enabled {
        jobs.retain(|j| j.job_name != "grafana");
    }
    // A cluster without Connect has no `kafka-connect` targets; leave the job out.
    jobs.retain(|j| !j.static_configs.is_empty());
    jobs.extend(
        model
            .cluster
            .observability
            .scrape_extras
            .iter()
            .map(|extra| ScrapeConfig {
                job_name: extra.job_name.to_string(),
                metrics_path: extra.metrics_path.as_ref().map(ToString::to_string),
                static_configs: vec![StaticConfig {
                    targets: extra.targets.iter().map(ToString::to_string).collect(),
                    labels: extra
                        .labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                }],
            }),
    );
    jobs
}

fn prometheus(ctx: &Ctx<'_>, plan: &mut Plan) -> Result<(), RenderError> {
    let obs = &ctx.model.cluster.observability;
    let ports = ctx.ports();
    let addr = address(ctx);
    let config = PrometheusConfig {
        global: PrometheusGlobal {
            scrape_interval: obs.scrape_interval.to_string(),
            evaluation_interval: obs.evaluation_interval.to_string(),
            external_labels: BTreeMap::from([(
                "cluster".to_owned(),
                ctx.model.cluster.name.to_string(),
            )]),
        },
        alerting: Alerting {
            alertmanagers: vec![AlertmanagerTargets {
                static_configs: vec![StaticConfig {
                    targets: vec![format!("{addr}:{}", ports.alertmanager)],
                    labels: BTreeMap::new(),
                }],
            }],
        },
        rule_files: vec![RULE_FILES.to_owned()],
        scrape_configs: scrape_configs(ctx),
    };
    let reload = OnChange::Reload(layout::PROMETHEUS_UNIT.to_owned());
    plan.files.push(PlannedFile::config(
        layout::PROMETHEUS_CONFIG,
        yaml(layout::PROMETHEUS_CONFIG, &config)?,
        reload.clone(),
    ));

    for rules in &ctx.model.rules {
        let name = rules.file.rsplit('/').next().unwrap_or(&rules.file);
        let stem = name.strip_suffix(".yaml").unwrap_or(name);
        let path = format!("{}/{stem}.yaml", layout::PROMETHEUS_RULES_DIR);
        let text = yaml(&path, &rules.item.value)?;
        plan.files
            .push(PlannedFile::config(&path, text, reload.clone()));
    }

    let exec = command(&[
        layout::PROMETHEUS_BIN.to_owned(),
        format!("--config.file={}", layout::PROMETHEUS_CONFIG),
        format!("--storage.tsdb.path={}", layout::PROMETHEUS_TSDB),
        format!("--storage.tsdb.retention.time={}", obs.retention),
        format!("--web.listen-address={addr}:{}", ports.prometheus),
        "--web.enable-lifecycle".to_owned(),
    ]);
    let file = UnitFile::new()
        .comment(MANAGED_HEADER)
        .section("Unit")
        .set("Description", "Prometheus (kraftops)")
        .set("Documentation", "https://prometheus.io/docs/")
        .set("Wants", "network-online.target")
        .set("After", "network-online.target")
        .section("Service")
        .set("Type", "simple")
        .set("User", layout::PROMETHEUS_USER)
        .set("Group", layout::PROMETHEUS_USER)
        .set("ExecStart", exec)
        .set("ExecReload", "/bin/kill -HUP $MAINPID")
        .set("Restart", "on-failure")
        .set("RestartSec", "5s")
        // Give the TSDB time to write its head block rather than killing it.
        .set("TimeoutStopSec", "120s")
        .set("LimitNOFILE", "65536")
        .set("ProtectHome", "yes")
        .set("ProtectSystem", "full")
        .sandbox()
        .section("Install")
        .set("WantedBy", "multi-user.target");
    plan.units.push(unit(layout::PROMETHEUS_UNIT, &file)?);
    Ok(())
}

// ------------------------------------------------------------- alertmanager

#[derive(Debug, Serialize)]
struct AlertmanagerConfig {
    route: Route,
    receivers: Vec<AmReceiver>,
}

#[derive(Debug, Serialize)]
struct Route {
    receiver: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    group_by: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_wait: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repeat_interval: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    matchers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<Route>,
}

#[derive(Debug, Serialize)]
struct AmReceiver {
    name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    webhook_configs: Vec<WebhookConfig>,
}

#[derive(Debug, Serialize)]
struct WebhookConfig {
    url: String,
    send_resolved: bool,
}

/// One Alertmanager matcher, `name="value"`, the value quoted and escaped as
/// Alertmanager's matcher parser reads it.
fn matcher(name: &str, value: &str) -> String {
    let mut out = format!("{name}=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn alertmanager(ctx: &Ctx<'_>, plan: &mut Plan) -> Result<(), RenderError> {
    let spec = &ctx.model.cluster.observability.alertmanager;
    let ports = ctx.ports();
    let addr = address(ctx);
    let receivers: Vec<AmReceiver> = spec
        .receivers
        .iter()
        .map(|r| AmReceiver {
            name: r.name.to_string(),
            webhook_configs: r
                .webhook_urls
                .iter()
                .map(|u| WebhookConfig {
                    url: u.to_string(),
                    send_resolved: true,
                })
                .collect(),
        })
        .collect();
    // Validation guarantees a first receiver; without one, a receiver that
    // drops everything keeps the file valid rather than failing the render.
    let default = receivers
        .first()
        .map_or_else(|| "blackhole".to_owned(), |r| r.name.clone());
    let routes = spec
        .receivers
        .iter()
        .skip(1)
        .map(|r| Route {
            receiver: r.name.to_string(),
            group_by: Vec::new(),
            group_wait: None,
            group_interval: None,
            repeat_interval: None,
            matchers: r
                .matchers
                .iter()
                .map(|(k, v)| matcher(k.as_str(), v.as_str()))
                .collect(),
            routes: Vec::new(),
        })
        .collect();
    let receivers = if receivers.is_empty() {
        vec![AmReceiver {
            name: default.clone(),
            webhook_configs: Vec::new(),
        }]
    } else {
        receivers
    };
    let config = AlertmanagerConfig {
        route: Route {
            receiver: default,
            group_by: spec.group_by.iter().map(ToString::to_string).collect(),
            group_wait: Some(spec.group_wait.to_string()),
            group_interval: Some(spec.group_interval.to_string()),
            repeat_interval: Some(spec.repeat_interval.to_string()),
            matchers: Vec::new(),
            routes,
        },
        receivers,
    };
    plan.files.push(PlannedFile::config(
        layout::ALERTMANAGER_CONFIG,
        yaml(layout::ALERTMANAGER_CONFIG, &config)?,
        OnChange::Reload(layout::ALERTMANAGER_UNIT.to_owned()),
    ));

    let exec = command(&[
        layout::ALERTMANAGER_BIN.to_owned(),
        format!("--config.file={}", layout::ALERTMANAGER_CONFIG),
        format!("--storage.path={}", layout::ALERTMANAGER_DATA),
        format!("--web.listen-address={addr}:{}", ports.alertmanager),
        format!(
            "--cluster.listen-address={addr}:{}",
            ports.alertmanager_cluster
        ),
    ]);
    let file = UnitFile::new()
        .comment(MANAGED_HEADER)
        .section("Unit")
        .set("Description", "Prometheus Alertmanager (kraftops)")
        .set(
            "Documentation",
            "https://prometheus.io/docs/alerting/latest/alertmanager/",
        )
        .set("Wants", "network-online.target")
        .set("After", "network-online.target")
        // The Debian package's own unit binds the same ports.
        .set("Conflicts", "prometheus-alertmanager.service")
        .section("Service")
        .set("Type", "simple")
        .set("User", layout::PROMETHEUS_USER)
        .set("Group", layout::PROMETHEUS_USER)
        .set("ExecStart", exec)
        .set("ExecReload", "/bin/kill -HUP $MAINPID")
        .set("Restart", "on-failure")
        .set("RestartSec", "5s")
        .set("ProtectHome", "yes")
        .set("ProtectSystem", "full")
        .sandbox()
        .section("Install")
        .set("WantedBy", "multi-user.target");
    plan.units.push(unit(layout::ALERTMANAGER_UNIT, &file)?);
    Ok(())
}

// ------------------------------------------------------------------ grafana

#[derive(Debug, Serialize)]
struct DatasourceProvisioning {
    #[serde(rename = "apiVersion")]
    api_version: u32,
    datasources: Vec<Datasource>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Datasource {
    name: String,
    uid: String,
    #[serde(rename = "type")]
    kind: String,
    access: String,
    url: String,
    is_default: bool,
    editable: bool,
    json_data: DatasourceJsonData,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DatasourceJsonData {
    /// The scrape interval, so `$__rate_interval` covers at least four scrapes.
    time_interval: String,
    http_method: String,
}

#[derive(Debug, Serialize)]
struct DashboardProvisioning {
    #[serde(rename = "apiVersion")]
    api_version: u32,
    providers: Vec<DashboardProvider>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DashboardProvider {
    name: String,
    org_id: u32,
    folder: String,
    #[serde(rename = "type")]
    kind: String,
    disable_deletion: bool,
    allow_ui_updates: bool,
    update_interval_seconds: u32,
    options: DashboardProviderOptions,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DashboardProviderOptions {
    path: String,
    folders_from_files_structure: bool,
}

/// An ini file of `key = value` lines, refusing values that would break a line.
fn ini(file: &str, sections: &[(&str, Vec<(&str, String)>)]) -> Result<String, RenderError> {
    let mut out = format!("# {MANAGED_HEADER}\n");
    for (section, entries) in sections {
        out.push_str(&format!("\n[{section}]\n"));
        for (key, value) in entries {
            if value.chars().any(char::is_control) {
                return Err(RenderError::Serialize {
                    file: file.to_owned(),
                    message: format!(
                        "value of {section}.{key} contains a line break or control character"
                    ),
                });
            }
            out.push_str(&format!("{key} = {value}\n"));
        }
    }
    Ok(out)
}

/// Grafana's own rule for dashboard uids; the uid is also the file name, so
/// this keeps a dashboard from writing outside its directory.
fn check_dashboard_uid(file: &str, uid: &str) -> Result<(), RenderError> {
    let ok = !uid.is_empty()
        && uid.len() <= 40
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(RenderError::Serialize {
            file: file.to_owned(),
            message: format!("dashboard uid {uid:?} must be 1 to 40 characters of [A-Za-z0-9_-]"),
        })
    }
}

fn grafana(ctx: &Ctx<'_>, plan: &mut Plan) -> Result<(), RenderError> {
    let model = ctx.model;
    let spec = &model.cluster.observability.grafana;
    let ports = ctx.ports();
    let addr = address(ctx);
    let restart = OnChange::Restart(layout::GRAFANA_UNIT.to_owned());
    let readable = |path: &str, contents: String| PlannedFile {
        mode: 0o640,
        group: layout::GRAFANA_USER.to_owned(),
        ..PlannedFile::config(path, contents, restart.clone())
    };

    let mut security = vec![("admin_user", spec.admin_user.to_string())];
    if let Some(secret) = &spec.admin_password_secret {
        let password = ctx.secret(secret, layout::GRAFANA_ADMIN_PASSWORD)?;
        security.push((
            "admin_password",
            format!("$__file{{{}}}", layout::GRAFANA_ADMIN_PASSWORD),
        ));
        plan.files.push(PlannedFile {
            sensitive: true,
            ..readable(layout::GRAFANA_ADMIN_PASSWORD, password.to_owned())
        });
    }
    security.push(("disable_gravatar", "true".to_owned()));
    let text = ini(
        layout::GRAFANA_INI,
        &[
            (
                "paths",
                vec![
                    ("data", layout::GRAFANA_DATA.to_owned()),
                    ("logs", layout::GRAFANA_LOGS.to_owned()),
                    ("plugins", format!("{}/plugins", layout::GRAFANA_DATA)),
                    ("provisioning", layout::GRAFANA_PROVISIONING.to_owned()),
                ],
            ),
            (
                "server",
                vec![
                    ("protocol", "http".to_owned()),
                    ("http_addr", addr.to_string()),
                    ("http_port", ports.grafana.to_string()),
                    ("domain", ctx.host()),
                ],
            ),
            ("security", security),
            ("users", vec![("allow_sign_up", "false".to_owned())]),
            ("auth.anonymous", vec![("enabled", "false".to_owned())]),
            (
                "analytics",
                vec![
                    ("reporting_enabled", "false".to_owned()),
                    ("check_for_updates", "false".to_owned()),
                    ("check_for_plugin_updates", "false".to_owned()),
                ],
            ),
            // Scraped by the `grafana` job.
            ("metrics", vec![("enabled", "true".to_owned())]),
            ("log", vec![("mode", "console".to_owned())]),
        ],
    )?;
    plan.files.push(readable(layout::GRAFANA_INI, text));

    let datasources = DatasourceProvisioning {
        api_version: 1,
        datasources: vec![Datasource {
            name: desired_state::DATASOURCE_NAME.to_owned(),
            uid: desired_state::DATASOURCE_UID.to_owned(),
            kind: "prometheus".to_owned(),
            access: "proxy".to_owned(),
            url: http_url(addr, ports.prometheus),
            is_default: true,
            editable: false,
            json_data: DatasourceJsonData {
                time_interval: model.cluster.observability.scrape_interval.to_string(),
                http_method: "POST".to_owned(),
            },
        }],
    };
    plan.files.push(readable(
        layout::GRAFANA_DATASOURCES,
        yaml(layout::GRAFANA_DATASOURCES, &datasources)?,
    ));

    let providers = DashboardProvisioning {
        api_version: 1,
        providers: vec![DashboardProvider {
            name: "kraftops".to_owned(),
            org_id: 1,
            folder: model.cluster.name.to_string(),
            kind: "file".to_owned(),
            disable_deletion: true,
            allow_ui_updates: false,
            update_interval_seconds: 30,
            options: DashboardProviderOptions {
                path: layout::GRAFANA_DASHBOARDS_DIR.to_owned(),
                folders_from_files_structure: false,
            },
        }],
    };
    plan.files.push(readable(
        layout::GRAFANA_DASHBOARD_PROVIDERS,
        yaml(layout::GRAFANA_DASHBOARD_PROVIDERS, &providers)?,
    ));

    for dashboard in &model.dashboards {
        check_dashboard_uid(&dashboard.file, &dashboard.uid)?;
        let path = format!("{}/{}.json", layout::GRAFANA_DASHBOARDS_DIR, dashboard.uid);
        let mut text =
            serde_json::to_string_pretty(&dashboard.json).map_err(|e| RenderError::Serialize {
                file: path.clone(),
                message: e.to_string(),
            })?;
        text.push('\n');
        plan.files
            .push(PlannedFile::config(&path, text, OnChange::Nothing));
    }

    let exec = command(&[
        layout::GRAFANA_BIN.to_owned(),
        "server".to_owned(),
        "--homepath".to_owned(),
        layout::GRAFANA_HOME.to_owned(),
        "--config".to_owned(),
        layout::GRAFANA_INI.to_owned(),
    ]);
    let file = UnitFile::new()
        .comment(MANAGED_HEADER)
        .section("Unit")
        .set("Description", "Grafana (kraftops)")
        .set("Documentation", "https://grafana.com/docs/grafana/latest/")
        .set("Wants", "network-online.target")
        .set("After", "network-online.target prometheus.service")
        // The Grafana package's own unit binds the same port.
        .set("Conflicts", "grafana-server.service")
        .section("Service")
        .set("Type", "simple")
        .set("User", layout::GRAFANA_USER)
        .set("Group", layout::GRAFANA_USER)
        .set("WorkingDirectory", layout::GRAFANA_HOME)
        .set("ExecStart", exec)
        .set("Restart", "on-failure")
        .set("RestartSec", "5s")
        .set("LimitNOFILE", "10000")
        .set("ProtectHome", "yes")
        .set("ProtectSystem", "full")
        .sandbox()
        .section("Install")
        .set("WantedBy", "multi-user.target");
    plan.units.push(unit(layout::GRAFANA_UNIT, &file)?);
    Ok(())
}

// -------------------------------------------------------------- coordinator

/// `/etc/kraftops/coordinator.yaml`: everything `kraftops-agent coordinator`
/// is told by the observability role. The agent parses the same type.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// `address:port` of the coordinator's HTTP API (private address only).
    pub listen: String,
    /// `address:port` of the coordinator's mutual-TLS API for agents
    /// (enrolment, status, leases, nudges, certificates).
    #[serde(default)]
    pub tls_listen: Option<String>,
    pub cluster: String,
    pub kafka: CoordinatorKafka,
    /// REST base URL of every Kafka Connect worker, in `nodes.yaml` order.
    pub connect_urls: Vec<String>,
    pub prometheus_url: String,
    pub alertmanager_url: String,
    pub rollout: RolloutPolicy,
}

/// How the coordinator reaches Kafka as the admin user.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorKafka {
    /// `host:port,…` of every broker's client listener.
    pub bootstrap_servers: String,
    /// Client properties with the admin user's SCRAM credentials (mode 0600).
    pub client_properties: String,
}

/// The JAAS line of a SCRAM client. Kafka's JAAS parser reads quoted values
/// with backslash escapes, so `\` and `"` in a password are escaped.
fn scram_jaas(user: &str, password: &str) -> String {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{}\" password=\"{}\";",
        quote(user),
        quote(password)
    )
}

fn coordinator(ctx: &Ctx<'_>, plan: &mut Plan) -> Result<(), RenderError> {
    let model = ctx.model;
    let ports = ctx.ports();
    let addr = address(ctx);
    let restart = OnChange::Restart(layout::COORDINATOR_UNIT.to_owned());

    let admin = &model.cluster.security.admin_user;
    let password = ctx.password(admin, layout::ADMIN_CLIENT_PROPERTIES)?;
    let properties = BTreeMap::from([
        ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
        ("sasl.mechanism".to_owned(), "SCRAM-SHA-512".to_owned()),
        (
            "sasl.jaas.config".to_owned(),
            scram_jaas(admin.as_str(), password),
        ),
        ("ssl.truststore.type".to_owned(), "PEM".to_owned()),
        (
            "ssl.truststore.location".to_owned(),
            layout::TRUSTSTORE.to_owned(),
        ),
    ]);
    plan.files.push(PlannedFile {
        mode: 0o600,
        sensitive: true,
        ..PlannedFile::config(
            layout::ADMIN_CLIENT_PROPERTIES,
            crate::properties::render(MANAGED_HEADER, &properties),
            restart.clone(),
        )
    });

    let config = CoordinatorConfig {
        listen: format!("{addr}:{}", ports.coordinator),
        tls_listen: Some(format!("{addr}:{}", ports.coordinator_tls)),
        cluster: model.cluster.name.to_string(),
        kafka: CoordinatorKafka {
            bootstrap_servers: ctx.bootstrap_servers(),
            client_properties: layout::ADMIN_CLIENT_PROPERTIES.to_owned(),
        },
        connect_urls: model
            .nodes_with_role(Role::Connect)
            .map(|n| format!("http://{}:{}", ctx.fqdn(n), ports.connect_rest))
            .collect(),
        prometheus_url: http_url(addr, ports.prometheus),
        alertmanager_url: http_url(addr, ports.alertmanager),
        rollout: model.cluster.rollout.clone(),
    };
    plan.files.push(PlannedFile::config(
        layout::COORDINATOR_CONFIG,
        yaml(layout::COORDINATOR_CONFIG, &config)?,
        restart,
    ));

    let exec = command(&[
        layout::AGENT_BIN.to_owned(),
        "coordinator".to_owned(),
        "--config".to_owned(),
        layout::COORDINATOR_CONFIG.to_owned(),
    ]);
    // Runs as root for the root-only admin credentials and the agent's age
    // identity, but with no capabilities and a read-only view of the system.
    let file = UnitFile::new()
        .comment(MANAGED_HEADER)
        .section("Unit")
        .set(
            "Description",
            "kraftops coordinator: restart leases, certificates, cluster-scope reconcilers",
        )
        .set("Wants", "network-online.target")
        .set("After", "network-online.target")
        .section("Service")
        .set("Type", "notify")
        .set("ExecStart", exec)
        .set("Restart", "always")
        .set("RestartSec", "5s")
        .set("StateDirectory", "kraftops-coordinator")
        .set("CapabilityBoundingSet", "")
        .set("ProtectSystem", "strict")
        .set("ProtectHome", "yes")
        .set("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6")
        .set("MemoryDenyWriteExecute", "yes")
        .set("SystemCallFilter", "@system-service")
        .sandbox()
        .section("Install")
        .set("WantedBy", "multi-user.target");
    plan.units.push(unit(layout::COORDINATOR_UNIT, &file)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_are_quoted() {
        assert_eq!(matcher("severity", "critical"), "severity=\"critical\"");
        assert_eq!(matcher("team", "a\"b\\c"), "team=\"a\\\"b\\\\c\"");
    }

    #[test]
    fn jaas_escapes_quotes_and_backslashes() {
        assert_eq!(
            scram_jaas("admin", "p\"w\\d"),
            "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"p\\\"w\\\\d\";"
        );
    }

    #[test]
    fn dashboard_uids_are_safe_file_names() {
        assert!(check_dashboard_uid("d.json", "kafka-brokers_1").is_ok());
        assert!(check_dashboard_uid("d.json", "../etc/passwd").is_err());
        assert!(check_dashboard_uid("d.json", "").is_err());
        assert!(check_dashboard_uid("d.json", &"x".repeat(41)).is_err());
    }

    #[test]
    fn ini_refuses_line_breaks() {
        let err = ini(
            "grafana.ini",
            &[("server", vec![("domain", "a\n[security]".to_owned())])],
        )
        .expect_err("refused");
        assert!(err.to_string().contains("server.domain"), "{err}");
    }
}
