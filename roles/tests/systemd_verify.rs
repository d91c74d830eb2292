//! The real `systemd-analyze verify` over every unit of every node of the
//! example repository.
//!
//! PID 1 need not be systemd: each node's units are verified in a scratch
//! root (`--root=`) holding the host's own unit directory (for
//! `sysinit.target` and friends), the node's units in `/etc/systemd/system`,
//! an executable stand-in at every path an `Exec*=` line names, and
//! `passwd`/`group` entries for every `User=`/`Group=`. `systemd-analyze`
//! exits 0 on some problems (an unknown key is only a warning), so any
//! output naming one of the units counts as a failure too.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const SYSTEMD_ANALYZE: &str = "systemd-analyze";

/// Where the host's packaged units are; `sysinit.target` must be among them.
const HOST_UNIT_DIRS: [&str; 2] = ["/usr/lib/systemd/system", "/lib/systemd/system"];

mod support;

fn render_example() -> Vec<roles::Plan> {
    let (model, secrets) = support::load_example();
    roles::render_all(&model, &secrets).expect("example renders")
}

/// Fails the test, with what to do, when the validator is missing: this
/// test must not pass by skipping.
fn require_systemd_analyze() {
    match Command::new(SYSTEMD_ANALYZE).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`{SYSTEMD_ANALYZE} --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "`{SYSTEMD_ANALYZE}` cannot be run ({e}). Every rendered unit is checked with \
             `systemd-analyze verify`; install it (Debian package `systemd`, see scripts/) and rerun."
        ),
    }
}

fn host_unit_dir() -> &'static Path {
    HOST_UNIT_DIRS
        .iter()
        .map(Path::new)
        .find(|d| d.join("sysinit.target").exists())
        .unwrap_or_else(|| {
            panic!("none of {HOST_UNIT_DIRS:?} holds sysinit.target; is systemd installed?")
        })
}

/// The executable an `Exec*=` value runs: the first word, without systemd's
/// `@-:+!` prefixes and without quotes.
fn executable(value: &str) -> Option<String> {
    let word = value.trim_start_matches(['@', '-', ':', '+', '!']);
    let word = match word.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => word.split_whitespace().next()?,
    };
    word.starts_with('/').then(|| word.to_owned())
}

fn unit_values<'a>(contents: &'a str, keys: &'a [&str]) -> impl Iterator<Item = &'a str> + 'a {
    contents.lines().filter_map(move |line| {
        let (key, value) = line.split_once('=')?;
        keys.contains(&key.trim()).then_some(value.trim())
    })
}

const EXEC_KEYS: [&str; 7] = [
    "ExecStart",
    "ExecStartPre",
    "ExecStartPost",
    "ExecReload",
    "ExecStop",
    "ExecStopPost",
    "ExecCondition",
];

/// Every executable the units run.
fn executables(units: &[(String, String)]) -> BTreeSet<String> {
    units
        .iter()
        .flat_map(|(_, contents)| {
            unit_values(contents, &EXEC_KEYS)
                .filter_map(executable)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn write(path: &Path, contents: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
    }
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A scratch root holding `units` and everything `systemd-analyze verify`
/// looks for around them.
fn scratch_root(units: &[(String, String)]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().expect("temp dir");
    let system = root.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&system).expect("unit dir");
    for entry in std::fs::read_dir(host_unit_dir()).expect("host units") {
        let entry = entry.expect("entry");
        // Regular files and symlinks to them; dangling links and `.wants/`
        // directories play no part in loading our units.
        if entry.path().is_file() {
            std::fs::copy(entry.path(), system.join(entry.file_name())).expect("copy host unit");
        }
    }
    for (name, contents) in units {
        write(&root.path().join("etc/systemd/system").join(name), contents);
    }
    for exe in executables(units) {
        let path = root.path().join(exe.trim_start_matches('/'));
        write(&path, "#!/bin/sh\nexit 0\n");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut accounts: BTreeSet<&str> = BTreeSet::from(["root"]);
    for (_, contents) in units {
        accounts.extend(unit_values(contents, &["User", "Group"]));
    }
    let mut passwd = String::new();
    let mut group = String::new();
    for (id, name) in accounts.iter().enumerate() {
        let id = if *name == "root" { 0 } else { 900 + id };
        passwd.push_str(&format!(
            "{name}:x:{id}:{id}::/nonexistent:/usr/sbin/nologin\n"
        ));
        group.push_str(&format!("{name}:x:{id}:\n"));
    }
    write(&root.path().join("etc/passwd"), &passwd);
    write(&root.path().join("etc/group"), &group);
    root
}

/// Runs `systemd-analyze verify` on `units` (name, contents). `Err` holds
/// its complaints.
fn verify(units: &[(String, String)]) -> Result<(), String> {
    require_systemd_analyze();
    let root = scratch_root(units);
    let out = Command::new(SYSTEMD_ANALYZE)
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg("--man=no")
        .arg("--generators=no")
        .args(units.iter().map(|(name, _)| name))
        .output()
        .expect("systemd-analyze runs");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let about_ours: Vec<&str> = output
        .lines()
        .filter(|line| units.iter().any(|(name, _)| line.contains(name.as_str())))
        .collect();
    if out.status.success() && about_ours.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "systemd-analyze verify exited {}:\n{output}",
            out.status
        ))
    }
}

#[test]
fn every_unit_of_every_example_node_passes_systemd_analyze_verify() {
    let plans = render_example();
    assert_eq!(plans.len(), 9);
    let mut failures = Vec::new();
    let mut verified = 0;
    for plan in &plans {
        let units: Vec<(String, String)> = plan
            .units
            .iter()
            .map(|u| (u.name.clone(), u.contents.clone()))
            .collect();
        assert!(!units.is_empty(), "{} has no units", plan.node);
        verified += units.len();
        if let Err(e) = verify(&units) {
            failures.push(format!("{}: {e}", plan.node));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // kafka + format + agent + node_exporter on 7 Kafka servers, connect + 2 on connect-1.
    assert!(verified >= 7 * 4 + 3, "only {verified} units verified");
}

#[test]
fn units_run_the_expected_binaries() {
    let plans = render_example();
    let common = [
        "/usr/bin/prometheus-node-exporter",
        "/usr/local/bin/kraftops-agent",
    ];
    for plan in &plans {
        let units: Vec<(String, String)> = plan
            .units
            .iter()
            .filter(|u| {
                matches!(
                    u.name.as_str(),
                    "kafka.service"
                        | "kafka-storage-format.service"
                        | "kafka-connect.service"
                        | "node-exporter.service"
                        | "kraftops-agent.service"
                )
            })
            .map(|u| (u.name.clone(), u.contents.clone()))
            .collect();
        let mut expected: BTreeSet<String> = common.iter().map(|s| (*s).to_owned()).collect();
        // The long-running JVMs start through /bin/sh, which resolves the
        // install_dir link first (what it then runs: tests/kafka_roles.rs).
        match plan.role {
            roles::Role::Controller | roles::Role::Broker => {
                expected.extend([
                    "/bin/sh".to_owned(),
                    "/opt/kafka/bin/kafka-storage.sh".to_owned(),
                ]);
            }
            roles::Role::Connect => {
                expected.insert("/bin/sh".to_owned());
            }
            roles::Role::Observability => {}
        }
        assert_eq!(executables(&units), expected, "{}", plan.node);
    }
}

fn unit(name: &str, contents: &str) -> Vec<(String, String)> {
    vec![(name.to_owned(), contents.to_owned())]
}

const GOOD: &str = "[Unit]\nDescription=fine\n\n[Service]\nUser=kafka\nExecStart=/opt/x/bin/run --flag\n\n[Install]\nWantedBy=multi-user.target\n";

#[test]
fn verify_accepts_a_good_unit() {
    verify(&unit("good.service", GOOD)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn verify_rejects_broken_units() {
    let broken = [
        // Fatal: systemd refuses to load it.
        ("relative.service", "[Service]\nExecStart=bin/run\n"),
        (
            "bad-type.service",
            "[Service]\nType=sometimes\nExecStart=/opt/x/bin/run\n",
        ),
        // systemd only warns and exits 0, which must still fail.
        (
            "typo.service",
            "[Service]\nExecStart=/opt/x/bin/run\nProtectProcc=invisible\n",
        ),
        (
            "bad-value.service",
            "[Service]\nExecStart=/opt/x/bin/run\nRestart=sometimes\n",
        ),
    ];
    for (name, contents) in broken {
        match verify(&unit(name, contents)) {
            Err(e) => assert!(e.contains(name), "the complaint names the unit: {e}"),
            Ok(()) => panic!("{name} is broken but passed verification:\n{contents}"),
        }
    }
}

#[test]
fn verify_rejects_a_missing_executable() {
    // The scratch root gets the binaries the units name; a unit whose
    // binary is then removed must fail the same check a node would.
    require_systemd_analyze();
    let units = unit("missing.service", GOOD);
    let root = scratch_root(&units);
    std::fs::remove_file(root.path().join("opt/x/bin/run")).expect("stand-in exists");
    let out = Command::new(SYSTEMD_ANALYZE)
        .args([
            "verify",
            &format!("--root={}", root.path().display()),
            "--man=no",
            "--generators=no",
            "missing.service",
        ])
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a unit without its binary verified: {stderr}"
    );
    assert!(
        stderr.contains("/opt/x/bin/run"),
        "the complaint names the binary: {stderr}"
    );
}
