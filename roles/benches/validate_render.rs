//! How long validating and rendering a large repository takes: 10,000
//! topics over 20 files, 100 brokers, 3 controllers, Kafka Connect,
//! observability, 100 users with ACLs. Run with
//! `cargo bench -p roles --bench validate_render`; the goal is a total under
//! one second in release mode.
//!
//! The unmodified example repository is measured in the same run as a
//! baseline, so a slow machine shows as a slow baseline, not a regression.

use std::fmt::Write as _;
use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

use desired_state::FileSet;

const TOPICS: usize = 10_000;
const TOPIC_FILES: usize = 20;
const BROKERS: usize = 100;
const CONTROLLERS: usize = 3;
/// One user per this many topics, each with ACLs on its own topics.
const TOPICS_PER_USER: usize = 100;
const USER_FILES: usize = 5;
const ITERATIONS: usize = 10;

const AZS: [(&str, u8); 3] = [
    ("eu-central-1a", 1),
    ("eu-central-1b", 2),
    ("eu-central-1c", 3),
];
const DIRECTORY_IDS: [&str; CONTROLLERS] = [
    "lHj4i5lmJll-L0hQplnIXg",
    "NxO682vtHTLt6GeTCBtbDA",
    "cEhSheak9bo3D5HiP5mqDg",
];

#[path = "../tests/support/mod.rs"]
mod support;

/// The example with its nodes, topics and application users scaled up.
fn large_repository(example: &FileSet) -> FileSet {
    let mut files = example.clone();

    let mut nodes = String::from("nodes:\n");
    for i in 0..BROKERS {
        let (az, octet) = AZS[i % AZS.len()];
        let host = 10 + i / AZS.len();
        writeln!(nodes, "  - name: broker-{n}\n    role: broker\n    node_id: {n}\n    az: {az}\n    address: 10.0.{octet}.{host}\n    instance_type: m6i.large", n = i + 1).expect("write to String");
    }
    for (i, directory_id) in DIRECTORY_IDS.iter().enumerate() {
        let (az, octet) = AZS[i % AZS.len()];
        writeln!(
            nodes,
            "  - name: controller-{n}\n    role: controller\n    node_id: {id}\n    directory_id: {directory_id}\n    az: {az}\n    address: 10.0.{octet}.200\n    instance_type: t3.small",
            n = i + 1,
            id = 3001 + i
        )
        .expect("write to String");
    }
    nodes.push_str("  - name: connect-1\n    role: connect\n    az: eu-central-1a\n    address: 10.0.1.250\n    instance_type: t3.small\n");
    nodes.push_str("  - name: observability-1\n    role: observability\n    az: eu-central-1a\n    address: 10.0.1.251\n    instance_type: t3.medium\n");
    files.insert("nodes.yaml".to_owned(), nodes.into_bytes());

    files.retain(|path, _| !path.starts_with("topics/"));
    let per_file = TOPICS / TOPIC_FILES;
    for f in 0..TOPIC_FILES {
        let mut text = String::from("topics:\n");
        for t in 0..per_file {
            let i = f * per_file + t;
            writeln!(
                text,
                "  - name: team-{team}.events-{i}\n    partitions: {partitions}\n    replication_factor: 3\n    config:\n      min.insync.replicas: 2\n      retention.ms: {retention}\n      cleanup.policy: delete",
                team = i / TOPICS_PER_USER,
                partitions = 6 + i % 7,
                retention = 3_600_000 * (1 + i % 168)
            )
            .expect("write to String");
        }
        files.insert(format!("topics/team-{f:02}.yaml"), text.into_bytes());
    }
    // Keep the topics the example's connector and ACLs name.
    files.insert(
        "topics/app.yaml".to_owned(),
        example["topics/app.yaml"].clone(),
    );

    let teams = TOPICS / TOPICS_PER_USER;
    for f in 0..USER_FILES {
        let mut text = String::from("users:\n");
        for team in (f..teams).step_by(USER_FILES) {
            writeln!(
                text,
                "  - name: team-{team}\n    password_secret: client-password\n    acls:\n      - resource: topic\n        name: team-{team}.\n        pattern: prefixed\n        operations: [read, write, describe]\n      - resource: group\n        name: team-{team}-\n        pattern: prefixed\n        operations: [read, describe]\n      - resource: transactional_id\n        name: team-{team}-tx\n        operations: [write, describe]"
            )
            .expect("write to String");
        }
        files.insert(format!("users/teams-{f}.yaml"), text.into_bytes());
    }
    files
}

/// Minimum and median of `ITERATIONS` runs of `f`.
fn measure<T>(mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..ITERATIONS)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[0], times[times.len() / 2])
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> std::io::Result<()> {
    let example = support::example_files();
    let identity = support::example_identity();
    let secrets = desired_state::load_files(&example)
        .unwrap_or_else(|d| panic!("{d}"))
        .decrypt_all(&identity)
        .expect("the example's secrets decrypt");

    let large = large_repository(&example);
    let model = desired_state::load_files(&large)
        .unwrap_or_else(|d| panic!("the generated repository must be valid: {d}"));
    assert_eq!(model.topics.len(), TOPICS + 2);
    assert_eq!(model.brokers().count(), BROKERS);
    let bytes: usize = large.values().map(Vec::len).sum();
    let plans = roles::render_all(&model, &secrets).expect("the generated repository renders");
    let rendered: usize = plans
        .iter()
        .map(|p| {
            p.files.iter().map(|f| f.contents.len()).sum::<usize>()
                + p.units.iter().map(|u| u.contents.len()).sum::<usize>()
        })
        .sum();

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "large repository: {} files, {} KiB in; {} nodes, {} KiB rendered; {ITERATIONS} iterations each, min / median",
        large.len(),
        bytes / 1024,
        plans.len(),
        rendered / 1024
    )?;

    let label = format!("{TOPICS} topics/{BROKERS} brokers");
    let (min, median) = measure(|| {
        desired_state::load_files(&large)
            .map(|m| m.topics.len())
            .unwrap_or(0)
    });
    writeln!(
        out,
        "validate {label}: min {} median {}",
        ms(min),
        ms(median)
    )?;
    let (min, median) = measure(|| {
        roles::render_all(&model, &secrets)
            .map(|p| p.len())
            .unwrap_or(0)
    });
    writeln!(
        out,
        "render   {label}: min {} median {}",
        ms(min),
        ms(median)
    )?;
    let (min, median) = measure(|| {
        desired_state::load_files(&large)
            .ok()
            .and_then(|m| roles::render_all(&m, &secrets).ok())
            .map_or(0, |p| p.len())
    });
    writeln!(
        out,
        "total    {label}: min {} median {}",
        ms(min),
        ms(median)
    )?;
    let verdict = if median < Duration::from_secs(1) {
        "within"
    } else {
        "OVER"
    };
    writeln!(out, "         goal: total under 1 s ({verdict})")?;

    let label = "example (9 nodes, 2 topics)";
    let example_model = desired_state::load_files(&example).unwrap_or_else(|d| panic!("{d}"));
    let (min, median) = measure(|| {
        desired_state::load_files(&example)
            .map(|m| m.topics.len())
            .unwrap_or(0)
    });
    writeln!(
        out,
        "BASELINE validate {label}: min {} median {}",
        ms(min),
        ms(median)
    )?;
    let (min, median) = measure(|| {
        roles::render_all(&example_model, &secrets)
            .map(|p| p.len())
            .unwrap_or(0)
    });
    writeln!(
        out,
        "BASELINE render   {label}: min {} median {}",
        ms(min),
        ms(median)
    )?;
    let (min, median) = measure(|| {
        desired_state::load_files(&example)
            .ok()
            .and_then(|m| roles::render_all(&m, &secrets).ok())
            .map_or(0, |p| p.len())
    });
    writeln!(
        out,
        "BASELINE total    {label}: min {} median {}",
        ms(min),
        ms(median)
    )?;
    Ok(())
}
