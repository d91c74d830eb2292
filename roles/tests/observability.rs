//! The observability role's output, checked by the real validators: the
//! example's observability node is rendered into a temporary directory and
//! `promtool` and `amtool` (Debian packages `prometheus` and
//! `prometheus-alertmanager`) must accept it. A missing tool fails the test;
//! it never skips.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use roles::layout;
use serde_json::Value;

const NODE: &str = "observability-1";

mod support;

use support::example_dir as example;

/// The promtool unit tests of the example's alert rules.
fn rule_tests() -> Vec<PathBuf> {
    let dir = example().join("observability/tests");
    let mut tests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".test.yaml"))
        .collect();
    tests.sort();
    tests
}

struct Rendered {
    model: desired_state::Model,
    secrets: roles::Secrets,
    plan: roles::Plan,
    /// The node's filesystem root: every planned file at its path below it.
    root: tempfile::TempDir,
}

impl Rendered {
    fn path(&self, node_path: &str) -> PathBuf {
        self.root.path().join(node_path.trim_start_matches('/'))
    }

    fn text(&self, node_path: &str) -> String {
        let file = self
            .plan
            .file(node_path)
            .unwrap_or_else(|| panic!("{node_path} is not in the plan"));
        String::from_utf8(file.contents.clone())
            .unwrap_or_else(|_| panic!("{node_path} is not UTF-8"))
    }

    fn yaml(&self, node_path: &str) -> Value {
        let text = self.text(node_path);
        serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{node_path} does not parse back: {e}\n{text}"))
    }
}

fn render() -> Rendered {
    let (model, secrets) = support::load_example();
    let plan =
        roles::render(&model, NODE, &secrets).unwrap_or_else(|e| panic!("{NODE} renders: {e}"));
    let root = tempfile::tempdir().expect("temporary directory");
    for file in &plan.files {
        write(
            &root.path().join(file.path.trim_start_matches('/')),
            &file.contents,
        );
    }
    for unit in &plan.units {
        write(
            &root.path().join("etc/systemd/system").join(&unit.name),
            unit.contents.as_bytes(),
        );
    }
    Rendered {
        model,
        secrets,
        plan,
        root,
    }
}

fn write(path: &Path, contents: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
    }
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Runs a validator. A missing tool is a failure that says what to install.
fn run(tool: &str, package: &str, args: &[&str]) -> Output {
    match Command::new(tool).args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!(
                "`{tool}` is not installed; install the Debian package `{package}` (apt-get install {package}). These checks never skip."
            )
        }
        Err(e) => panic!("cannot run {tool}: {e}"),
    }
}

fn describe(tool: &str, args: &[&str], output: &Output) -> String {
    format!(
        "`{tool} {}` exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn must_pass(tool: &str, package: &str, args: &[&str]) -> Output {
    let output = run(tool, package, args);
    assert!(output.status.success(), "{}", describe(tool, args, &output));
    output
}

fn must_fail(tool: &str, package: &str, args: &[&str]) -> Output {
    let output = run(tool, package, args);
    assert!(
        !output.status.success(),
        "expected failure, but {}",
        describe(tool, args, &output)
    );
    output
}

fn promtool(args: &[&str]) -> Output {
    must_pass("promtool", "prometheus", args)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn rendered_rule_files(r: &Rendered) -> Vec<String> {
    let prefix = format!("{}/", layout::PROMETHEUS_RULES_DIR);
    r.plan
        .files
        .iter()
        .filter(|f| f.path.starts_with(&prefix))
        .map(|f| f.path.clone())
        .collect()
}

// ------------------------------------------------------------ real validators

#[test]
fn promtool_accepts_the_prometheus_config_and_finds_the_rules() {
    let r = render();
    let config = r.path(layout::PROMETHEUS_CONFIG);
    let output = promtool(&["check", "config", path_str(&config)]);
    // The relative `rules/*.yaml` glob resolved next to the config.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "SUCCESS: {} rule files found",
            r.model.rules.len()
        )),
        "{}",
        describe("promtool", &["check", "config"], &output)
    );
}

#[test]
fn promtool_accepts_every_rendered_rule_file() {
    let r = render();
    let files = rendered_rule_files(&r);
    assert_eq!(
        files.len(),
        r.model.rules.len(),
        "one rendered rule file per repository rule file"
    );
    for file in files {
        promtool(&["check", "rules", path_str(&r.path(&file))]);
    }
}

#[test]
fn promtool_unit_tests_of_the_alert_rules_pass() {
    let r = render();
    let tests = rule_tests();
    assert!(
        tests.len() >= 2,
        "expected the kafka and hosts rule tests, found {tests:?}"
    );
    let etc = r.path(layout::PROMETHEUS_ETC);
    for test in &tests {
        // Next to the rendered config, so `rule_files: [rules/<stem>.yaml]`
        // names the rendered rule files, not the repository's.
        let copy = etc.join(test.file_name().expect("file name"));
        std::fs::copy(test, &copy).unwrap_or_else(|e| panic!("{}: {e}", test.display()));
        promtool(&["test", "rules", path_str(&copy)]);
    }
}

#[test]
fn every_alert_has_a_firing_unit_test() {
    let model = desired_state::load_dir(&example()).unwrap_or_else(|d| panic!("{d}"));
    let mut fired = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in rule_tests() {
        let text = std::fs::read_to_string(&test).expect("test file");
        let doc: Value =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", test.display()));
        for case in doc["tests"]
            .as_array()
            .expect("tests")
            .iter()
            .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            if case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                fired.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    let alerts: BTreeSet<String> = model
        .rules
        .iter()
        .flat_map(|rf| {
            rf.groups.iter().flat_map(|g| {
                g.rules
                    .iter()
                    .filter_map(|r| r.alert.as_ref().map(|a| a.as_str().to_owned()))
            })
        })
        .collect();
    assert!(
        alerts.len() >= 11,
        "the example has 8 Kafka/kraftops and 3 host alerts, found {alerts:?}"
    );
    let untested: Vec<_> = alerts.difference(&fired).collect();
    assert!(
        untested.is_empty(),
        "alerts without a firing test case: {untested:?}"
    );
    let no_quiet_case: Vec<_> = alerts.difference(&quiet).collect();
    assert!(
        no_quiet_case.is_empty(),
        "alerts without a not-firing test case: {no_quiet_case:?}"
    );
}

#[test]
fn amtool_accepts_the_alertmanager_config() {
    let r = render();
    let config = r.path(layout::ALERTMANAGER_CONFIG);
    must_pass(
        "amtool",
        "prometheus-alertmanager",
        &["check-config", path_str(&config)],
    );
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool has no offline expression checker; a rule file of recording
    // rules, one per panel query, gets every query parsed.
    let r = render();
    let mut rules = Vec::new();
    for d in &r.model.dashboards {
        let mut exprs = Vec::new();
        collect_exprs(&d.json, &mut exprs);
        assert!(!exprs.is_empty(), "{} has no queries", d.file);
        for expr in exprs {
            let expr = expr.replace("$__rate_interval", "5m");
            // `$node`, `$az`, … are regex variables: any value parses.
            let expr = regex_vars(&expr);
            rules.push(serde_json::json!({ "record": format!("dashboard:{}:{}", d.uid.replace('-', "_"), rules.len()), "expr": expr }));
        }
    }
    let doc = serde_json::json!({ "groups": [{ "name": "dashboards", "rules": rules }] });
    let path = r.root.path().join("dashboard-queries.yaml");
    write(
        &path,
        serde_saphyr::to_string(&doc)
            .expect("serializes")
            .as_bytes(),
    );
    promtool(&["check", "rules", path_str(&path)]);
}

/// The metric names the rendered JMX exporter rules and the agent produce;
/// dashboards and alert rules may use no other Kafka, JVM or kraftops metric.
const METRIC_CONTRACT: &[&str] = &[
    "kafka_server_replicamanager_underreplicatedpartitions",
    "kafka_server_replicamanager_underminisrpartitioncount",
    "kafka_server_replicamanager_partitioncount",
    "kafka_server_replicamanager_leadercount",
    "kafka_controller_kafkacontroller_activecontrollercount",
    "kafka_controller_kafkacontroller_offlinepartitionscount",
    "kafka_controller_kafkacontroller_globaltopiccount",
    "kafka_controller_kafkacontroller_globalpartitioncount",
    "kafka_server_brokertopicmetrics_bytesin_total",
    "kafka_server_brokertopicmetrics_bytesout_total",
    "kafka_server_brokertopicmetrics_messagesin_total",
    "kafka_network_requestmetrics_requests_total",
    "kafka_server_raftmetrics_high_watermark",
    "kafka_server_raftmetrics_current_leader",
    "kafka_server_raftmetrics_commit_latency_avg",
    "kafka_connect_connect_worker_metrics_connector_count",
    "kafka_connect_connect_worker_metrics_task_count",
    "kafka_connect_connect_worker_metrics_connector_failed_task_count",
    "kafka_connect_connect_worker_metrics_connector_running_task_count",
    "kafka_connect_connector_status",
    "kafka_connect_connect_worker_rebalance_metrics_rebalancing",
    "jvm_memory_used_bytes",
    "kraftops_agent_converged",
    "kraftops_agent_reconcile_total",
    "kraftops_agent_last_reconcile_timestamp_seconds",
    "kraftops_agent_info",
    "kraftops_certificate_expiry_timestamp_seconds",
];

#[test]
fn dashboards_and_rules_use_only_contract_metrics() {
    let model = desired_state::load_dir(&example()).unwrap_or_else(|d| panic!("{d}"));
    let mut exprs: Vec<(String, String)> = Vec::new();
    for d in &model.dashboards {
        let mut found = Vec::new();
        collect_exprs(&d.json, &mut found);
        exprs.extend(found.into_iter().map(|e| (d.file.clone(), e)));
    }
    for rf in &model.rules {
        exprs.extend(
            rf.groups
                .iter()
                .flat_map(|g| g.rules.iter().map(|r| (rf.file.clone(), r.expr.clone()))),
        );
    }
    let mut used = BTreeSet::new();
    for (file, expr) in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if ["kafka_", "kraftops_", "jvm_"]
                .iter()
                .any(|p| word.starts_with(p))
            {
                assert!(
                    METRIC_CONTRACT.contains(&word),
                    "{file}: {word} is not in the metric name contract (in `{expr}`)"
                );
                used.insert(word);
            }
        }
    }
    // Every contract metric shows up somewhere, or the contract is stale.
    let unused: Vec<_> = METRIC_CONTRACT
        .iter()
        .filter(|m| !used.contains(**m))
        .collect();
    assert!(
        unused.is_empty(),
        "contract metrics no dashboard or rule uses: {unused:?}"
    );
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            map.values().for_each(|c| collect_exprs(c, out));
        }
        Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

fn regex_vars(expr: &str) -> String {
    let mut out = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|n| n.is_ascii_alphabetic()) {
            while chars
                .peek()
                .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '_')
            {
                chars.next();
            }
            out.push_str(".*");
        } else {
            out.push(c);
        }
    }
    out
}

// ------------------------------------------- the validators can say no

#[test]
fn promtool_rejects_a_broken_rule() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("broken.yaml");
    write(
        &path,
        b"groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: sum(up\n",
    );
    let output = must_fail(
        "promtool",
        "prometheus",
        &["check", "rules", path_str(&path)],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("parse error") || text.contains("unclosed"),
        "{text}"
    );
}

#[test]
fn promtool_test_rules_fails_on_a_wrong_expectation() {
    let r = render();
    let test = example().join("observability/tests/kafka.test.yaml");
    let text = std::fs::read_to_string(&test).expect("kafka.test.yaml");
    let wrong = text.replace(
        "leads 3 under-replicated partitions",
        "leads 4 under-replicated partitions",
    );
    assert_ne!(wrong, text, "the expectation to break is in the test file");
    let copy = r.path(layout::PROMETHEUS_ETC).join("wrong.test.yaml");
    write(&copy, wrong.as_bytes());
    must_fail(
        "promtool",
        "prometheus",
        &["test", "rules", path_str(&copy)],
    );
}

#[test]
fn amtool_rejects_a_route_to_an_unknown_receiver() {
    let r = render();
    let text = r.text(layout::ALERTMANAGER_CONFIG).replacen(
        "receiver: coordinator",
        "receiver: nobody",
        1,
    );
    let path = r.root.path().join("broken-alertmanager.yml");
    write(&path, text.as_bytes());
    must_fail(
        "amtool",
        "prometheus-alertmanager",
        &["check-config", path_str(&path)],
    );
}

// ------------------------------------------------------------------ content

#[test]
fn scrape_jobs_are_derived_from_the_nodes() {
    let r = render();
    let config = r.yaml(layout::PROMETHEUS_CONFIG);
    assert_eq!(config["rule_files"], serde_json::json!(["rules/*.yaml"]));
    assert_eq!(config["global"]["scrape_interval"], "15s");
    assert_eq!(
        config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"],
        serde_json::json!(["10.0.1.41:9093"])
    );
    let jobs = config["scrape_configs"].as_array().expect("scrape_configs");
    let names: Vec<&str> = jobs
        .iter()
        .map(|j| j["job_name"].as_str().expect("job_name"))
        .collect();
    assert_eq!(
        names,
        desired_state::DERIVED_JOBS,
        "the derived jobs, in order"
    );

    let targets = |job: &str| -> Vec<(String, Value)> {
        let job = jobs
            .iter()
            .find(|j| j["job_name"] == job)
            .unwrap_or_else(|| panic!("job {job}"));
        job["static_configs"]
            .as_array()
            .expect("static_configs")
            .iter()
            .flat_map(|sc| {
                sc["targets"]
                    .as_array()
                    .expect("targets")
                    .iter()
                    .map(|t| (t.as_str().expect("target").to_owned(), sc["labels"].clone()))
            })
            .collect()
    };
    let brokers = targets("kafka-broker");
    assert_eq!(brokers.len(), 4);
    for broker in r.model.brokers() {
        let target = format!("{}.kafka.internal:8080", broker.name.as_str());
        let (_, labels) = brokers
            .iter()
            .find(|(t, _)| *t == target)
            .unwrap_or_else(|| panic!("{target} is not a kafka-broker target"));
        assert_eq!(labels["az"], broker.az.as_str(), "{target}");
        assert_eq!(labels["node"], broker.name.as_str(), "{target}");
        assert_eq!(labels["role"], "broker", "{target}");
    }
    // Node order, so the file does not change when nothing changed.
    let order: Vec<&str> = brokers.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        order,
        [
            "broker-1.kafka.internal:8080",
            "broker-2.kafka.internal:8080",
            "broker-3.kafka.internal:8080",
            "broker-4.kafka.internal:8080"
        ]
    );
    assert_eq!(targets("kafka-controller").len(), 3);
    assert_eq!(
        targets("kafka-connect")
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>(),
        ["connect-1.kafka.internal:8079"]
    );
    assert_eq!(
        targets("node").len(),
        9,
        "every node's node_exporter, the observability node's too"
    );
    assert_eq!(targets("kraftops-agent").len(), 9);
    assert_eq!(
        targets("kraftops-coordinator")
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>(),
        ["observability-1.kafka.internal:9171"]
    );
}

#[test]
fn rule_files_round_trip_unchanged() {
    let r = render();
    for rf in &r.model.rules {
        let stem = rf
            .file
            .rsplit('/')
            .next()
            .expect("name")
            .trim_end_matches(".yaml");
        let path = format!("{}/{stem}.yaml", layout::PROMETHEUS_RULES_DIR);
        let parsed: desired_state::RulesFile =
            serde_saphyr::from_str(&r.text(&path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            serde_json::to_value(&parsed).expect("json"),
            serde_json::to_value(&rf.item.value).expect("json"),
            "{path} says something else than {}",
            rf.file
        );
        assert_eq!(
            r.plan.file(&path).expect("planned").on_change,
            roles::OnChange::Reload(layout::PROMETHEUS_UNIT.to_owned())
        );
    }
}

#[test]
fn alertmanager_routes_to_the_first_receiver() {
    let r = render();
    let config = r.yaml(layout::ALERTMANAGER_CONFIG);
    assert_eq!(config["route"]["receiver"], "coordinator");
    assert_eq!(
        config["route"]["group_by"],
        serde_json::json!(["alertname"])
    );
    assert_eq!(config["route"]["repeat_interval"], "1h");
    assert_eq!(
        config["receivers"][0]["webhook_configs"][0]["url"],
        "http://observability-1.kafka.internal:9171/v1/alerts"
    );
}

#[test]
fn grafana_has_one_prometheus_datasource_and_every_dashboard() {
    let r = render();
    let ds = r.yaml(layout::GRAFANA_DATASOURCES);
    let list = ds["datasources"].as_array().expect("datasources");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["uid"], desired_state::DATASOURCE_UID);
    assert_eq!(list[0]["name"], desired_state::DATASOURCE_NAME);
    assert_eq!(list[0]["type"], "prometheus");
    assert_eq!(list[0]["url"], "http://10.0.1.41:9090");

    let providers = r.yaml(layout::GRAFANA_DASHBOARD_PROVIDERS);
    assert_eq!(
        providers["providers"][0]["options"]["path"],
        layout::GRAFANA_DASHBOARDS_DIR
    );

    let example_dashboards: BTreeSet<String> =
        std::fs::read_dir(example().join("observability/dashboards"))
            .expect("dashboards directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
    assert_eq!(example_dashboards.len(), 5, "{example_dashboards:?}");
    assert_eq!(r.model.dashboards.len(), example_dashboards.len());
    for d in &r.model.dashboards {
        let path = format!("{}/{}.json", layout::GRAFANA_DASHBOARDS_DIR, d.uid);
        let file = r
            .plan
            .file(&path)
            .unwrap_or_else(|| panic!("{} is not rendered to {path}", d.file));
        assert_eq!(
            file.on_change,
            roles::OnChange::Nothing,
            "Grafana rescans dashboards"
        );
        let json: Value = serde_json::from_slice(&file.contents).expect("dashboard JSON");
        assert_eq!(json, d.json, "{path}");
        assert_eq!(
            json["schemaVersion"].as_u64().map(|v| v >= 36),
            Some(true),
            "{path}"
        );
    }

    let ini = r.text(layout::GRAFANA_INI);
    assert!(ini.contains("http_addr = 10.0.1.41\n"), "{ini}");
    assert!(
        ini.contains(&format!(
            "admin_password = $__file{{{}}}\n",
            layout::GRAFANA_ADMIN_PASSWORD
        )),
        "{ini}"
    );
    assert!(ini.contains("[auth.anonymous]\nenabled = false\n"), "{ini}");
}

#[test]
fn password_files_are_sensitive() {
    let r = render();
    let secret = |name: &str| {
        r.secrets[&desired_state::types::Name::try_from(name).expect("name")]
            .expose()
            .to_owned()
    };

    let props = r
        .plan
        .file(layout::ADMIN_CLIENT_PROPERTIES)
        .expect("admin client properties");
    assert!(props.sensitive);
    assert_eq!(
        (props.mode, props.owner.as_str(), props.group.as_str()),
        (0o600, "root", "root")
    );
    let parsed = roles::properties::parse(&String::from_utf8_lossy(&props.contents))
        .expect("properties parse");
    assert_eq!(parsed["security.protocol"], "SASL_SSL");
    assert_eq!(parsed["sasl.mechanism"], "SCRAM-SHA-512");
    assert_eq!(parsed["ssl.truststore.type"], "PEM");
    assert_eq!(parsed["ssl.truststore.location"], layout::TRUSTSTORE);
    assert_eq!(
        parsed["sasl.jaas.config"],
        format!(
            "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"{}\";",
            secret("admin-password")
        )
    );

    let grafana = r
        .plan
        .file(layout::GRAFANA_ADMIN_PASSWORD)
        .expect("grafana admin password");
    assert!(grafana.sensitive);
    assert_eq!(
        (grafana.mode, grafana.owner.as_str(), grafana.group.as_str()),
        (0o640, "root", layout::GRAFANA_USER)
    );
    assert_eq!(
        String::from_utf8_lossy(&grafana.contents),
        secret("grafana-admin-password")
    );

    // Nothing else on the node holds a password.
    let passwords: Vec<String> = r
        .secrets
        .values()
        .map(|s| s.expose().to_owned())
        .filter(|s| !s.contains('\n'))
        .collect();
    for file in r.plan.files.iter().filter(|f| !f.sensitive) {
        let text = String::from_utf8_lossy(&file.contents);
        assert!(
            !passwords.iter().any(|p| text.contains(p.as_str())),
            "{} holds a password",
            file.path
        );
    }
}

#[test]
fn coordinator_config_parses_back_into_its_type() {
    let r = render();
    let config: roles::observability::CoordinatorConfig =
        serde_saphyr::from_str(&r.text(layout::COORDINATOR_CONFIG))
            .unwrap_or_else(|e| panic!("{}: {e}", layout::COORDINATOR_CONFIG));
    assert_eq!(config.listen, "10.0.1.41:9171");
    assert_eq!(config.cluster, "kafka-prod");
    assert_eq!(
        config.kafka.bootstrap_servers,
        "broker-1.kafka.internal:9092,broker-2.kafka.internal:9092,broker-3.kafka.internal:9092,broker-4.kafka.internal:9092"
    );
    assert_eq!(
        config.kafka.client_properties,
        layout::ADMIN_CLIENT_PROPERTIES
    );
    assert_eq!(
        config.connect_urls,
        ["http://connect-1.kafka.internal:8083"]
    );
    assert_eq!(config.prometheus_url, "http://10.0.1.41:9090");
    assert_eq!(config.alertmanager_url, "http://10.0.1.41:9093");
    assert_eq!(config.rollout.lease_ttl.as_secs(), 15 * 60);
}

#[test]
fn files_and_units_say_what_a_change_needs() {
    use roles::OnChange::{Nothing, Reload, Restart};
    let r = render();
    let expect = [
        (
            layout::PROMETHEUS_CONFIG,
            Reload(layout::PROMETHEUS_UNIT.to_owned()),
        ),
        (
            layout::ALERTMANAGER_CONFIG,
            Reload(layout::ALERTMANAGER_UNIT.to_owned()),
        ),
        (
            layout::GRAFANA_INI,
            Restart(layout::GRAFANA_UNIT.to_owned()),
        ),
        (
            layout::GRAFANA_DATASOURCES,
            Restart(layout::GRAFANA_UNIT.to_owned()),
        ),
        (
            layout::GRAFANA_DASHBOARD_PROVIDERS,
            Restart(layout::GRAFANA_UNIT.to_owned()),
        ),
        (
            layout::GRAFANA_ADMIN_PASSWORD,
            Restart(layout::GRAFANA_UNIT.to_owned()),
        ),
        (
            layout::COORDINATOR_CONFIG,
            Restart(layout::COORDINATOR_UNIT.to_owned()),
        ),
        (
            layout::ADMIN_CLIENT_PROPERTIES,
            Restart(layout::COORDINATOR_UNIT.to_owned()),
        ),
    ];
    for (path, on_change) in expect {
        assert_eq!(
            r.plan
                .file(path)
                .unwrap_or_else(|| panic!("{path}"))
                .on_change,
            on_change,
            "{path}"
        );
    }
    assert!(
        r.plan
            .files
            .iter()
            .filter(|f| f.path.starts_with(layout::GRAFANA_DASHBOARDS_DIR))
            .all(|f| f.on_change == Nothing)
    );

    for name in [
        layout::PROMETHEUS_UNIT,
        layout::ALERTMANAGER_UNIT,
        layout::GRAFANA_UNIT,
        layout::COORDINATOR_UNIT,
    ] {
        let unit = r.plan.unit(name).unwrap_or_else(|| panic!("unit {name}"));
        assert!(unit.enable && unit.start && !unit.kafka, "{name}");
    }
    let prometheus = &r
        .plan
        .unit(layout::PROMETHEUS_UNIT)
        .expect("prometheus")
        .contents;
    assert!(prometheus.contains(
        "ExecStart=/usr/bin/prometheus --config.file=/etc/prometheus/prometheus.yml --storage.tsdb.path=/var/lib/prometheus/metrics2 --storage.tsdb.retention.time=15d --web.listen-address=10.0.1.41:9090 --web.enable-lifecycle\n"
    ));
    assert!(
        prometheus.contains("ExecReload=/bin/kill -HUP $MAINPID\n")
            && prometheus.contains("User=prometheus\n")
    );
    let coordinator = &r
        .plan
        .unit(layout::COORDINATOR_UNIT)
        .expect("coordinator")
        .contents;
    assert!(coordinator.contains("ExecStart=/usr/local/bin/kraftops-agent coordinator --config /etc/kraftops/coordinator.yaml\n"));
    assert!(coordinator.contains("Type=notify\n") && coordinator.contains("Restart=always\n"));

    let users: Vec<&str> = r.plan.users.iter().map(|u| u.name.as_str()).collect();
    assert!(
        users.contains(&"prometheus") && users.contains(&"grafana"),
        "{users:?}"
    );
}

#[test]
fn rendering_is_deterministic() {
    let a = render();
    let b = render();
    assert_eq!(a.plan, b.plan);
}

#[test]
#[should_panic(expected = "install the Debian package `prometheus`")]
fn a_missing_validator_fails_instead_of_skipping() {
    run(
        "promtool-that-is-not-installed",
        "prometheus",
        &["--version"],
    );
}

/// What the example does not use: a second receiver with matchers (a child
/// route) and an extra scrape job with its own path and labels.
#[test]
fn validators_accept_child_routes_and_scrape_extras() {
    use desired_state::types::{AbsPath, LabelName, Name, SingleLine, Url};
    use desired_state::{Located, Receiver, ScrapeJob};

    let r = render();
    let mut model = r.model.clone();
    let obs = &mut model.cluster.observability;
    obs.alertmanager.receivers.push(Located::unplaced(Receiver {
        name: Located::unplaced(Name::try_from("on-call").expect("name")),
        webhook_urls: vec![
            Url::try_from("https://pager.example.com/hook?team=kafka").expect("url"),
        ],
        matchers: [("severity", "critical"), ("team", "kafka \"platform\"")]
            .into_iter()
            .map(|(k, v)| {
                (
                    LabelName::try_from(k).expect("key"),
                    SingleLine::try_from(v).expect("value"),
                )
            })
            .collect(),
    }));
    obs.scrape_extras.push(Located::unplaced(ScrapeJob {
        job_name: Located::unplaced(Name::try_from("blackbox").expect("name")),
        targets: vec![Located::unplaced(
            SingleLine::try_from("blackbox.kafka.internal:9115").expect("target"),
        )],
        metrics_path: Some(AbsPath::try_from("/probe").expect("path")),
        labels: [(
            LabelName::try_from("team").expect("key"),
            SingleLine::try_from("yes").expect("value"),
        )]
        .into_iter()
        .collect(),
    }));
    let plan = roles::render(&model, NODE, &r.secrets).expect("renders");
    let dir = tempfile::tempdir().expect("temporary directory");
    for file in &plan.files {
        write(
            &dir.path().join(file.path.trim_start_matches('/')),
            &file.contents,
        );
    }
    let am = dir
        .path()
        .join(layout::ALERTMANAGER_CONFIG.trim_start_matches('/'));
    must_pass(
        "amtool",
        "prometheus-alertmanager",
        &["check-config", path_str(&am)],
    );
    let prom = dir
        .path()
        .join(layout::PROMETHEUS_CONFIG.trim_start_matches('/'));
    promtool(&["check", "config", path_str(&prom)]);

    let text = String::from_utf8(
        plan.file(layout::ALERTMANAGER_CONFIG)
            .expect("alertmanager.yml")
            .contents
            .clone(),
    )
    .expect("UTF-8");
    let config: Value = serde_saphyr::from_str(&text).expect("parses");
    let route = &config["route"]["routes"][0];
    assert_eq!(route["receiver"], "on-call");
    assert_eq!(
        route["matchers"],
        serde_json::json!(["severity=\"critical\"", "team=\"kafka \\\"platform\\\"\""])
    );
    let text = String::from_utf8(
        plan.file(layout::PROMETHEUS_CONFIG)
            .expect("prometheus.yml")
            .contents
            .clone(),
    )
    .expect("UTF-8");
    let config: Value = serde_saphyr::from_str(&text).expect("parses");
    let extra = config["scrape_configs"]
        .as_array()
        .expect("jobs")
        .last()
        .cloned()
        .expect("a job");
    assert_eq!(extra["job_name"], "blackbox");
    assert_eq!(extra["metrics_path"], "/probe");
    // "yes" is a boolean to YAML 1.1 readers; it must stay a string.
    assert!(
        text.contains("team: 'yes'") || text.contains("team: \"yes\""),
        "{text}"
    );
}
