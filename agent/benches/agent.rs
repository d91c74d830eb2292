//! Agent benchmarks (figures, not assertions): the cost of a no-op
//! reconcile (remote unchanged) against a baseline of the bare `git fetch`
//! it contains, and an idle agent's RSS and CPU.
//!
//! `cargo bench -p kraftops-agent --bench agent`

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kraftops_agent::daemon::reconcile::Reconciler;
use kraftops_agent::daemon::state::Trigger;
use kraftops_agent::protocol::Phase;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed")
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=ops",
            "-c",
            "user.email=ops@example",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "git {args:?} failed");
}

/// CPU time (user + system) of this process, from /proc.
fn cpu_of(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .expect("stat")
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let remote = tmp.path().join("remote.git");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&remote).expect("mkdir");
    git(&remote, &["init", "--bare", "-q"]);
    let status = Command::new("cp")
        .args([
            "-r",
            example().to_str().expect("utf8"),
            work.to_str().expect("utf8"),
        ])
        .status()
        .expect("cp");
    assert!(status.success());
    // No download in the benchmark: the node's role is one without Kafka.
    git(&work, &["init", "-q"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "example"]);
    git(
        &work,
        &["push", "-q", remote.to_str().expect("utf8"), "HEAD:main"],
    );

    let node = "observability-1";
    let root = tmp.path().join(node);
    std::fs::create_dir_all(root.join("etc/kraftops")).expect("mkdir");
    std::fs::copy(
        example().with_file_name("seed.example-only.age-identity"),
        root.join("etc/kraftops/age-identity"),
    )
    .expect("identity");
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nprometheus:x:0:0::/:/bin/false\ngrafana:x:0:0::/:/bin/false\n",
    )
    .expect("passwd");
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nprometheus:x:0:\ngrafana:x:0:\n",
    )
    .expect("group");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let config_text = format!(
        "node: {node}\nrepository:\n  url: file://{}\n  branch: main\nidentity_file: /etc/kraftops/age-identity\nlisten: 127.0.0.1:{port}\nroot: {}\nservice_manager: none\n",
        remote.display(),
        root.display()
    );
    std::fs::write(root.join("agent.yaml"), &config_text).expect("config");
    let config = kraftops_agent::config::AgentConfig::parse(Path::new("agent.yaml"), &config_text)
        .expect("config");

    let mut reconciler = Reconciler::new(config).expect("reconciler");
    let first = reconciler.reconcile(&Trigger::Timer, &|_| {});
    assert!(
        matches!(first.phase, Phase::Converged | Phase::Failed),
        "{first:?}"
    );

    let rounds = 50;
    let me = std::process::id().to_string();
    let mut noop = Vec::new();
    let cpu_before = cpu_of(&me);
    for _ in 0..rounds {
        let t = Instant::now();
        let o = reconciler.reconcile(&Trigger::Timer, &|_| {});
        noop.push(t.elapsed());
        assert_eq!(o.files_written, 0, "a no-op reconcile wrote files");
    }
    let noop_cpu = (cpu_of(&me) - cpu_before) / rounds;

    // Baseline: the fetch alone, on its own clone.
    let mut repo = kraftops_agent::sync::Repo::open_or_clone(
        remote.to_str().expect("utf8"),
        "main",
        &tmp.path().join("baseline"),
    )
    .expect("clone");
    repo.fetch().expect("fetch");
    let mut fetch = Vec::new();
    let cpu_before = cpu_of(&me);
    for _ in 0..rounds {
        let t = Instant::now();
        repo.fetch().expect("fetch");
        fetch.push(t.elapsed());
    }
    let fetch_cpu = (cpu_of(&me) - cpu_before) / rounds;

    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "no-op reconcile ({rounds} rounds, file:// remote unchanged): median {:.2} ms wall, {:.2} ms CPU each (goal < 5 ms CPU)",
        median(noop).as_secs_f64() * 1e3,
        noop_cpu.as_secs_f64() * 1e3
    );
    let _ = writeln!(
        out,
        "BASELINE git fetch alone: median {:.2} ms wall, {:.2} ms CPU each",
        median(fetch).as_secs_f64() * 1e3,
        fetch_cpu.as_secs_f64() * 1e3
    );

    // An idle agent process: converged, then left alone. (It takes the
    // state directory's lock, so the in-process reconciler goes first.)
    drop(reconciler);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kraftops-agent"))
        .args([
            "run",
            "--config",
            root.join("agent.yaml").to_str().expect("utf8"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent starts");
    std::thread::sleep(Duration::from_secs(5));
    if let Ok(Some(status)) = child.try_wait() {
        panic!("the agent exited early: {status}");
    }
    let pid = child.id();
    let cpu0 = cpu_of(&pid.to_string());
    let window = Duration::from_secs(30);
    std::thread::sleep(window);
    let cpu = cpu_of(&pid.to_string()) - cpu0;
    let rss = rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    let _ = writeln!(
        out,
        "idle agent over {}s (60s poll): RSS {:.1} MiB, CPU {:.3} % (goals: < 20 MiB, < 0.1 %)",
        window.as_secs(),
        rss as f64 / 1024.0,
        cpu.as_secs_f64() / window.as_secs_f64() * 100.0
    );
}
