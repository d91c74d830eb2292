//! Rendering is a pure function: for generated valid repositories (1 to 6
//! brokers, 1/3/5 controllers, random topics and settings), rendering twice
//! gives the same bytes, and every setting comes out of the `.properties`
//! files exactly as it went in, however much escaping it needs.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use desired_state::FileSet;
use proptest::prelude::*;

mod support;

/// The example repository's files.
fn seed_files() -> &'static FileSet {
    static FILES: OnceLock<FileSet> = OnceLock::new();
    FILES.get_or_init(support::example_files)
}

/// The example's secrets, decrypted with the example identity. Every
/// generated repository keeps the example's `secrets/`.
fn secrets() -> &'static roles::Secrets {
    static SECRETS: OnceLock<roles::Secrets> = OnceLock::new();
    SECRETS.get_or_init(|| {
        let model = desired_state::load_files(seed_files())
            .unwrap_or_else(|d| panic!("the example loads: {d}"));
        model
            .decrypt_all(&support::example_identity())
            .expect("the example's secrets decrypt")
    })
}

/// Valid, distinct KRaft directory ids for up to five controllers.
const DIRECTORY_IDS: [&str; 5] = [
    "AQwXIi04Q05ZZG96hZCbpg",
    "JjE8R1JdaHN-iZSfqrXAyw",
    "S1ZhbHeCjZijrrnEz9rl8A",
    "cHuGkZynsr3I097p9P8KFQ",
    "laCrtsHM1-Lt-AMOGSQvOg",
];

/// The example's availability zones: (name, third octet of its subnet).
const AZS: [(&str, u8); 3] = [
    ("eu-central-1a", 1),
    ("eu-central-1b", 2),
    ("eu-central-1c", 3),
];

type Settings = BTreeMap<String, String>;

#[derive(Debug, Clone)]
struct Case {
    brokers: usize,
    controllers: usize,
    /// name → (partitions, explicit replication factor, explicit min.insync.replicas)
    topics: BTreeMap<String, (u32, Option<u16>, Option<u16>)>,
    broker_settings: Settings,
    controller_settings: Settings,
    connect_settings: Settings,
    /// Settings of one broker, merged over `broker_settings`.
    node_settings: (usize, Settings),
}

/// Characters a properties file must escape, plus quotes, non-ASCII and
/// characters outside the Basic Multilingual Plane.
fn value() -> impl Strategy<Value = String> {
    let chars = prop::sample::select(vec![
        'a', 'Z', '0', '9', '.', '-', '_', '=', ':', '#', '!', '\\', ' ', '"', '\'', '$', '{', '}',
        ',', '/', 'é', 'ß', '日', '€', '🦀',
    ]);
    prop::collection::vec(chars, 0..24).prop_map(String::from_iter)
}

/// Keys no role manages, so validation accepts them anywhere.
fn settings() -> impl Strategy<Value = Settings> {
    prop::collection::btree_map("test\\.[a-z0-9][a-z0-9._-]{0,12}", value(), 0..6)
}

fn topic_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,40}".prop_filter("not a reserved topic name", |n| {
        n != "." && n != ".." && !n.starts_with("__")
    })
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=6, prop::sample::select(vec![1usize, 3, 5]))
        .prop_flat_map(|(brokers, controllers)| {
            let max_rf = brokers.min(3) as u16;
            let topic = (
                1u32..=12,
                prop::option::of(1..=max_rf),
                prop::option::of(1..=max_rf),
            );
            (
                Just(brokers),
                Just(controllers),
                prop::collection::btree_map(topic_name(), topic, 1..8),
                settings(),
                settings(),
                settings(),
                (0..brokers, settings()),
            )
        })
        .prop_map(
            |(
                brokers,
                controllers,
                topics,
                broker_settings,
                controller_settings,
                connect_settings,
                node_settings,
            )| {
                let default_rf = brokers.min(3) as u16;
                let default_isr = default_rf.saturating_sub(1).max(1);
                let topics = topics
                    .into_iter()
                    .map(|(name, (partitions, rf, isr))| {
                        // Keep min.insync.replicas below the replication factor, as validation requires.
                        let effective_rf = rf.unwrap_or(default_rf);
                        let isr = match isr {
                            Some(isr) if effective_rf > 1 => Some(isr.min(effective_rf - 1)),
                            Some(_) => Some(1),
                            None if effective_rf > 1 && default_isr >= effective_rf => {
                                Some(effective_rf - 1)
                            }
                            None => None,
                        };
                        (name, (partitions, rf, isr))
                    })
                    .collect();
                Case {
                    brokers,
                    controllers,
                    topics,
                    broker_settings,
                    controller_settings,
                    connect_settings,
                    node_settings,
                }
            },
        )
}

/// A YAML double-quoted scalar holding `s` exactly.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn settings_yaml(settings: &Settings, indent: &str) -> String {
    settings
        .iter()
        .map(|(k, v)| format!("{indent}{}: {}\n", quoted(k), quoted(v)))
        .collect()
}

fn replace_once(files: &mut FileSet, file: &str, from: &str, to: &str) {
    let text = String::from_utf8(files[file].clone()).expect("UTF-8");
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} must occur once in the example's {file}"
    );
    files.insert(file.to_owned(), text.replacen(from, to, 1).into_bytes());
}

impl Case {
    fn files(&self) -> FileSet {
        let mut files = seed_files().clone();
        // The fewest iterations Kafka accepts: in a debug build, deriving
        // the controllers' SCRAM credentials is most of the time a render takes.
        replace_once(
            &mut files,
            "cluster.yaml",
            "  scram_iterations: 8192\n",
            "  scram_iterations: 4096\n",
        );
        let rf = self.brokers.min(3);
        let isr = rf.saturating_sub(1).max(1);
        replace_once(
            &mut files,
            "cluster.yaml",
            "  replication_factor: 3\n  min_insync_replicas: 2\n",
            &format!("  replication_factor: {rf}\n  min_insync_replicas: {isr}\n"),
        );
        replace_once(
            &mut files,
            "cluster.yaml",
            "    group.initial.rebalance.delay.ms: 3000\n",
            &format!(
                "    group.initial.rebalance.delay.ms: 3000\n{}",
                settings_yaml(&self.broker_settings, "    ")
            ),
        );
        if !self.controller_settings.is_empty() {
            replace_once(
                &mut files,
                "cluster.yaml",
                "  metadata_dir: /var/lib/kafka/metadata\n",
                &format!(
                    "  metadata_dir: /var/lib/kafka/metadata\n  settings:\n{}",
                    settings_yaml(&self.controller_settings, "    ")
                ),
            );
        }
        replace_once(
            &mut files,
            "cluster.yaml",
            "    value.converter.schemas.enable: false\n",
            &format!(
                "    value.converter.schemas.enable: false\n{}",
                settings_yaml(&self.connect_settings, "    ")
            ),
        );
        files.insert("nodes.yaml".to_owned(), self.nodes_yaml().into_bytes());
        files.insert(
            "topics/app.yaml".to_owned(),
            self.topics_yaml().into_bytes(),
        );
        files
    }

    fn nodes_yaml(&self) -> String {
        let mut out = String::from("nodes:\n");
        for i in 0..self.brokers {
            let (az, octet) = AZS[i % AZS.len()];
            out.push_str(&format!(
                "  - name: broker-{n}\n    role: broker\n    node_id: {n}\n    az: {az}\n    address: 10.0.{octet}.{host}\n    instance_type: t3.small\n",
                n = i + 1,
                host = 11 + i
            ));
            let (node, settings) = &self.node_settings;
            if *node == i && !settings.is_empty() {
                out.push_str(&format!(
                    "    settings:\n{}",
                    settings_yaml(settings, "      ")
                ));
            }
        }
        for (i, directory_id) in DIRECTORY_IDS.iter().enumerate().take(self.controllers) {
            let (az, octet) = AZS[i % AZS.len()];
            out.push_str(&format!(
                "  - name: controller-{n}\n    role: controller\n    node_id: {id}\n    directory_id: {directory_id}\n    az: {az}\n    address: 10.0.{octet}.{host}\n    instance_type: t3.small\n",
                n = i + 1,
                id = 3001 + i,
                host = 21 + i
            ));
        }
        out.push_str("  - name: connect-1\n    role: connect\n    az: eu-central-1a\n    address: 10.0.1.31\n    instance_type: t3.small\n");
        out.push_str("  - name: observability-1\n    role: observability\n    az: eu-central-1a\n    address: 10.0.1.41\n    instance_type: t3.medium\n");
        out
    }

    fn topics_yaml(&self) -> String {
        let mut out = String::from("topics:\n");
        for (name, (partitions, rf, isr)) in &self.topics {
            out.push_str(&format!(
                "  - name: {}\n    partitions: {partitions}\n",
                quoted(name)
            ));
            if let Some(rf) = rf {
                out.push_str(&format!("    replication_factor: {rf}\n"));
            }
            if let Some(isr) = isr {
                out.push_str(&format!("    config:\n      min.insync.replicas: {isr}\n"));
            }
        }
        out
    }

    /// The settings a node's properties files must carry, verbatim.
    fn expected_settings(&self, plan: &roles::Plan) -> Settings {
        match plan.role {
            roles::Role::Broker => {
                let mut expected = self.broker_settings.clone();
                let (node, settings) = &self.node_settings;
                if plan.node == format!("broker-{}", node + 1) {
                    expected.extend(settings.clone());
                }
                expected
            }
            roles::Role::Controller => self.controller_settings.clone(),
            roles::Role::Connect => self.connect_settings.clone(),
            roles::Role::Observability => Settings::new(),
        }
    }
}

fn render(files: &FileSet) -> Vec<roles::Plan> {
    let model = desired_state::load_files(files)
        .unwrap_or_else(|d| panic!("a generated repository must be valid: {d}"));
    roles::render_all(&model, secrets())
        .unwrap_or_else(|e| panic!("a valid repository renders: {e}"))
}

/// Asserts that two renders are identical, naming the first difference.
fn assert_same(first: &[roles::Plan], second: &[roles::Plan]) {
    assert_eq!(first.len(), second.len());
    for (a, b) in first.iter().zip(second) {
        assert_eq!(a.node, b.node);
        let paths = |p: &roles::Plan| p.files.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
        assert_eq!(paths(a), paths(b), "{}: the same files", a.node);
        for (fa, fb) in a.files.iter().zip(&b.files) {
            assert!(
                fa.contents == fb.contents,
                "{}: {} differs between two renders",
                a.node,
                fa.path
            );
        }
        let units = |p: &roles::Plan| p.units.iter().map(|u| u.name.clone()).collect::<Vec<_>>();
        assert_eq!(units(a), units(b), "{}: the same units", a.node);
        for (ua, ub) in a.units.iter().zip(&b.units) {
            assert_eq!(
                ua.contents, ub.contents,
                "{}: unit {} differs between two renders",
                a.node, ua.name
            );
        }
        assert_eq!(a, b, "{}: plans differ in metadata", a.node);
    }
}

fn assert_settings_verbatim(case: &Case, plans: &[roles::Plan]) {
    for plan in plans {
        let parsed: Vec<(&str, BTreeMap<String, String>)> = plan
            .files
            .iter()
            .filter(|f| f.path.ends_with(".properties"))
            .map(|f| {
                let text = std::str::from_utf8(&f.contents)
                    .unwrap_or_else(|_| panic!("{}: {} is not UTF-8", plan.node, f.path));
                let map = roles::properties::parse(text)
                    .unwrap_or_else(|e| panic!("{}: {} does not parse: {e}", plan.node, f.path));
                (f.path.as_str(), map)
            })
            .collect();
        let expected = case.expected_settings(plan);
        if expected.is_empty() {
            continue;
        }
        // Wherever a generated key appears, it has the generated value...
        for (path, map) in &parsed {
            for (key, value) in &expected {
                if let Some(found) = map.get(key) {
                    assert_eq!(found, value, "{}: {path}: {key}", plan.node);
                }
            }
        }
        // ...and one properties file of the node carries all of them.
        let carries_all = parsed
            .iter()
            .any(|(_, map)| expected.keys().all(|k| map.contains_key(k)));
        let paths: Vec<&str> = parsed.iter().map(|(p, _)| *p).collect();
        assert!(
            carries_all,
            "{}: no .properties file ({paths:?}) carries all of {expected:?}",
            plan.node
        );
    }
}

/// Few cases by default, so the test takes seconds in a debug build; set
/// `PROPTEST_CASES` for a longer run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn rendering_is_deterministic_and_settings_survive_escaping(case in case()) {
        let files = case.files();
        let first = render(&files);
        let second = render(&files);
        assert_same(&first, &second);
        prop_assert_eq!(first.len(), case.brokers + case.controllers + 2);
        assert_settings_verbatim(&case, &first);
    }
}

#[test]
fn the_generator_makes_repositories_that_load() {
    // The property above is only as good as its inputs: a case that failed
    // validation would never reach the renderer.
    let case = Case {
        brokers: 1,
        controllers: 5,
        topics: BTreeMap::from([
            ("a.b_c-1".to_owned(), (3, None, None)),
            ("Z".to_owned(), (1, Some(1), Some(1))),
        ]),
        broker_settings: BTreeMap::from([("test.x".to_owned(), " a=b:c #!\\ é🦀 ".to_owned())]),
        controller_settings: BTreeMap::from([("test.y".to_owned(), "\"quoted\"".to_owned())]),
        connect_settings: Settings::new(),
        node_settings: (
            0,
            BTreeMap::from([("test.x".to_owned(), "override".to_owned())]),
        ),
    };
    let model = desired_state::load_files(&case.files()).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(model.brokers().count(), 1);
    assert_eq!(model.controllers().count(), 5);
    assert_eq!(model.topics.len(), 2);
    let broker = model.node("broker-1").expect("broker-1");
    assert_eq!(
        broker.settings.values().next().map(|v| v.as_str()),
        Some("override")
    );
    let setting = model
        .cluster
        .broker
        .settings
        .iter()
        .find(|(k, _)| k.as_str() == "test.x")
        .map(|(_, v)| v.as_str());
    assert_eq!(setting, Some(" a=b:c #!\\ é🦀 "));
}
