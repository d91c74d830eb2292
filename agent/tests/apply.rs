//! The applier against a temporary root: idempotence, drift, removal,
//! change classes, artifacts, users, systemctl, and crash safety (an apply
//! in a child process killed with SIGKILL at many points, then converged).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kraftops_agent::apply::{
    Applier, ApplyError, CommandError, NoServiceManager, PendingKafka, RecordingServiceManager,
    ServiceCall, ServiceManager, Systemctl, TEMP_PREFIX, parse_sha512_file, sha512_digest,
};
use roles::{
    AptPackage, Artifact, OnChange, Plan, PlannedDir, PlannedFile, PlannedUnit, Role, SystemUser,
};

// ------------------------------------------------------------------ fixture

/// uid/gid the test's `etc/passwd` gives root and kafka. As root the
/// applier really chowns, so kafka gets ids of its own; otherwise every
/// account is the current user (chown to oneself is allowed).
#[derive(Clone, Copy, Debug)]
struct Ids {
    root: (u32, u32),
    kafka: (u32, u32),
}

fn ids() -> Ids {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    if uid == 0 {
        Ids {
            root: (0, 0),
            kafka: (4242, 4243),
        }
    } else {
        Ids {
            root: (uid, gid),
            kafka: (uid, gid),
        }
    }
}

fn owner_ids(owner: &str, group: &str) -> (u32, u32) {
    let ids = ids();
    let pick = |name: &str| if name == "kafka" { ids.kafka } else { ids.root };
    (pick(owner).0, pick(group).1)
}

/// A node below a temporary directory: `root/` with `etc/passwd` and
/// `etc/group`, the state directory inside it, and `src/` for downloads.
struct Node {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    state: PathBuf,
    src: PathBuf,
}

impl Node {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let base = tmp.path().to_owned();
        let root = base.join("root");
        let state = root.join("var/lib/kraftops");
        let src = base.join("src");
        fs::create_dir_all(root.join("etc")).expect("create etc");
        fs::create_dir_all(&src).expect("create src");
        let ids = ids();
        fs::write(
            root.join("etc/passwd"),
            format!(
                "root:x:{}:{}:root:/root:/bin/bash\nkafka:x:{}:{}::/var/lib/kafka:/usr/sbin/nologin\n",
                ids.root.0, ids.root.1, ids.kafka.0, ids.kafka.1
            ),
        )
        .expect("write passwd");
        fs::write(
            root.join("etc/group"),
            format!("root:x:{}:\nkafka:x:{}:\n", ids.root.1, ids.kafka.1),
        )
        .expect("write group");
        Node {
            _tmp: tmp,
            base,
            root,
            state,
            src,
        }
    }

    fn applier(&self, services: Arc<dyn ServiceManager>) -> Applier {
        Applier::new(self.root.clone(), self.state.clone(), services).expect("applier")
    }

    fn path(&self, node_path: &str) -> PathBuf {
        self.root.join(node_path.trim_start_matches('/'))
    }

    fn read(&self, node_path: &str) -> Option<Vec<u8>> {
        fs::read(self.path(node_path)).ok()
    }

    fn link(&self, node_path: &str) -> Option<String> {
        fs::read_link(self.path(node_path))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }
}

fn recorder() -> Arc<RecordingServiceManager> {
    Arc::new(RecordingServiceManager::new())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let meta = fs::symlink_metadata(&path).expect("metadata");
        out.push(path.clone());
        if meta.is_dir() {
            walk(&path, out);
        }
    }
}

/// Every `.kraftops-tmp-*` entry below `dir`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    walk(dir, &mut all);
    all.into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(TEMP_PREFIX))
        })
        .collect()
}

/// inode, mtime and ctime of everything below `dir`: equal snapshots mean
/// nothing was written, renamed or chmod'ed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, i64, i64, i64, i64)> {
    let mut all = Vec::new();
    walk(dir, &mut all);
    all.into_iter()
        .map(|p| {
            let m = fs::symlink_metadata(&p).expect("metadata");
            (
                p,
                (
                    m.ino(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                ),
            )
        })
        .collect()
}

// ------------------------------------------------------------------ plans

fn seed_plan(node: &str) -> Plan {
    static PLANS: OnceLock<Vec<Plan>> = OnceLock::new();
    let plans = PLANS.get_or_init(|| {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples");
        let model = desired_state::load_dir(&examples.join("seed")).expect("the example loads");
        let identity = desired_state::Identity::parse(
            &fs::read_to_string(examples.join("seed.example-only.age-identity"))
                .expect("read identity"),
        )
        .expect("identity parses");
        let secrets = model.decrypt_all(&identity).expect("secrets decrypt");
        roles::render_all(&model, &secrets).expect("plans render")
    });
    plans
        .iter()
        .find(|p| p.node == node)
        .cloned()
        .expect("node exists")
}

fn empty_plan() -> Plan {
    Plan::empty("test-1", Role::Broker)
}

fn file(path: &str, contents: &str, on_change: OnChange) -> PlannedFile {
    PlannedFile::config(path, contents.to_owned(), on_change)
}

fn unit(name: &str, contents: &str) -> PlannedUnit {
    PlannedUnit {
        name: name.to_owned(),
        contents: contents.to_owned(),
        enable: true,
        start: true,
        kafka: false,
    }
}

fn restart(u: &str) -> OnChange {
    OnChange::Restart(u.to_owned())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// A Kafka-like `.tar.gz` whose single top directory is `top`: scripts,
/// jars, a relative symlink inside, all stamped with `stamp`.
fn kafka_tarball(top: &str, stamp: &str, jars: usize) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let dir = |path: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_path(path).expect("path");
        h.set_mode(0o755);
        h.set_size(0);
        h.set_cksum();
        (h, path.to_owned())
    };
    let mut entries = vec![
        dir(&format!("{top}/")),
        dir(&format!("{top}/bin/")),
        dir(&format!("{top}/libs/")),
    ];
    for (h, _) in entries.drain(..) {
        b.append(&h, std::io::empty()).expect("append dir");
    }
    let mut add = |path: String, data: Vec<u8>, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_path(&path).expect("path");
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data.as_slice()).expect("append file");
    };
    add(
        format!("{top}/bin/kafka-server-start.sh"),
        format!("#!/bin/sh\necho {stamp}\n").into_bytes(),
        0o755,
    );
    for i in 0..jars {
        add(
            format!("{top}/libs/lib-{i:02}.jar"),
            format!("{stamp} jar {i}\n")
                .repeat(200 + i * 50)
                .into_bytes(),
            0o644,
        );
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, format!("{top}/libs/current.jar"), "lib-00.jar")
        .expect("append symlink");
    b.into_inner()
        .expect("finish tar")
        .finish()
        .expect("finish gzip")
}

/// The file names a [`kafka_tarball`] has below its top directory.
fn tarball_listing(jars: usize) -> Vec<String> {
    let mut v = vec![
        "bin".to_owned(),
        "bin/kafka-server-start.sh".to_owned(),
        "libs".to_owned(),
    ];
    v.push("libs/current.jar".to_owned());
    v.extend((0..jars).map(|i| format!("libs/lib-{i:02}.jar")));
    v.sort();
    v
}

fn listing(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    walk(dir, &mut all);
    let mut v: Vec<String> = all
        .iter()
        .map(|p| {
            p.strip_prefix(dir)
                .expect("below dir")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// A tarball artifact served by `file://`, with its digest pinned.
fn tarball_artifact(path: &Path, bytes: &[u8]) -> Artifact {
    Artifact {
        name: "kafka".to_owned(),
        url: format!("file://{}", path.display()),
        sha512: Some(sha512_digest(bytes)),
        sha512_url: None,
        install_to: "/opt/kafka".to_owned(),
        unpack: true,
        on_change: restart("kafka.service"),
        apt: None,
    }
}

fn versioned(bytes: &[u8]) -> String {
    format!("kafka-{}", &sha512_digest(bytes)[..12])
}

/// `gpg --print-md SHA512 <name>` output, as Apache publishes it.
fn apache_digest_file(name: &str, bytes: &[u8]) -> String {
    let hex = sha512_digest(bytes).to_uppercase();
    let groups: Vec<&str> = (0..16).map(|i| &hex[i * 8..i * 8 + 8]).collect();
    let pad = " ".repeat(name.len() + 2);
    format!(
        "{name}: {} {} {} {} {} {}\n{pad}{} {} {} {} {} {}\n{pad}{} {} {} {}\n",
        groups[0],
        groups[1],
        groups[2],
        groups[3],
        groups[4],
        groups[5],
        groups[6],
        groups[7],
        groups[8],
        groups[9],
        groups[10],
        groups[11],
        groups[12],
        groups[13],
        groups[14],
        groups[15]
    )
}

/// The seed's broker-1 plan with its Kafka download replaced by a local tarball.
fn seed_with_local_kafka(node: &Node) -> (Plan, Vec<u8>) {
    let tgz = kafka_tarball("kafka_2.13-4.1.1", "seed", 3);
    let src = node.src.join("kafka_2.13-4.1.1.tgz");
    fs::write(&src, &tgz).expect("write tarball");
    let mut plan = seed_plan("broker-1");
    plan.artifacts = vec![tarball_artifact(&src, &tgz)];
    (plan, tgz)
}

fn assert_file(node: &Node, f: &PlannedFile) {
    let path = node.path(&f.path);
    let meta = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", f.path));
    assert!(meta.is_file(), "{} is a regular file", f.path);
    assert_eq!(
        fs::read(&path).expect("read"),
        f.contents,
        "{}: contents",
        f.path
    );
    assert_eq!(meta.mode() & 0o7777, f.mode, "{}: mode", f.path);
    assert_eq!(
        (meta.uid(), meta.gid()),
        owner_ids(&f.owner, &f.group),
        "{}: owner",
        f.path
    );
}

fn assert_unit(node: &Node, u: &PlannedUnit) {
    let path = node.path(&format!("/etc/systemd/system/{}", u.name));
    let meta = fs::symlink_metadata(&path).expect("unit file exists");
    assert_eq!(fs::read_to_string(&path).expect("read unit"), u.contents);
    assert_eq!(meta.mode() & 0o7777, 0o644, "{}: mode", u.name);
    assert_eq!((meta.uid(), meta.gid()), ids().root);
}

// ------------------------------------------------------------------ tests

#[test]
fn the_seed_plan_applies_and_a_second_apply_does_nothing() {
    let node = Node::new();
    let (plan, tgz) = seed_with_local_kafka(&node);
    // A leftover of an interrupted apply in a directory the plan writes to.
    fs::create_dir_all(node.path("/etc/kafka")).expect("mkdir");
    fs::write(node.path("/etc/kafka/.kraftops-tmp-write-1-0"), b"stale").expect("stale temp");
    // Planned 0755: the applier fixes it (a directory is never emptied).
    fs::set_permissions(node.path("/etc/kafka"), fs::Permissions::from_mode(0o700)).expect("chmod");

    let rec = recorder();
    let mut applier = node.applier(rec.clone());
    let report = applier.apply(&plan).expect("first apply");

    for f in &plan.files {
        assert_file(&node, f);
    }
    for u in &plan.units {
        assert_unit(&node, u);
    }
    for d in &plan.directories {
        let meta = fs::metadata(node.path(&d.path)).expect("directory exists");
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, d.mode, "{}: mode", d.path);
        assert_eq!(
            (meta.uid(), meta.gid()),
            owner_ids(&d.owner, &d.group),
            "{}",
            d.path
        );
    }
    assert_eq!(node.link("/opt/kafka"), Some(versioned(&tgz)));
    assert!(node.path("/opt/kafka/bin/kafka-server-start.sh").is_file());
    assert!(
        temp_files(&node.base).is_empty(),
        "{:?}",
        temp_files(&node.base)
    );

    let expected_changed = plan.directories.len() + plan.files.len() + plan.units.len();
    assert_eq!(
        report.changed.len(),
        expected_changed,
        "{:?}",
        report.changed
    );
    assert_eq!(report.unchanged, 0);
    assert!(report.daemon_reloaded);
    assert_eq!(report.artifacts_installed, strings(&["kafka"]));
    assert_eq!(
        report.started,
        strings(&[
            "kafka.service",
            "kraftops-agent.service",
            "node-exporter.service"
        ])
    );
    // Nothing was running, so nothing needs a restart (or a lease).
    assert!(report.pending_restarts.is_empty());
    assert_eq!(
        rec.take_calls(),
        vec![
            ServiceCall::DaemonReload,
            ServiceCall::Mask("prometheus-node-exporter.service".to_owned()),
            ServiceCall::Enable("kafka.service".to_owned()),
            ServiceCall::Enable("kraftops-agent.service".to_owned()),
            ServiceCall::Enable("node-exporter.service".to_owned()),
            ServiceCall::Start("kafka.service".to_owned()),
            ServiceCall::Start("kraftops-agent.service".to_owned()),
            ServiceCall::Start("node-exporter.service".to_owned()),
        ]
    );

    // Second apply: nothing written (same inodes, mtimes, ctimes, state file
    // included), nothing reloaded, restarted, enabled or masked.
    let before = snapshot(&node.root);
    let report = applier.apply(&plan).expect("second apply");
    assert!(report.changed.is_empty(), "{:?}", report.changed);
    assert_eq!(report.unchanged, expected_changed);
    assert!(report.removed.is_empty());
    assert!(!report.daemon_reloaded);
    assert!(report.started.is_empty() && report.reloaded.is_empty());
    assert!(report.pending_restarts.is_empty());
    assert!(report.artifacts_installed.is_empty());
    assert_eq!(rec.take_calls(), vec![]);
    assert_eq!(snapshot(&node.root), before);

    // A new applier (the agent restarted) remembers masks and enables, and
    // an installed artifact is not fetched again (its source is gone).
    drop(applier);
    fs::remove_dir_all(&node.src).expect("remove sources");
    let mut applier = node.applier(rec.clone());
    let report = applier.apply(&plan).expect("apply after restart");
    assert!(report.changed.is_empty());
    assert_eq!(rec.take_calls(), vec![]);
    assert_eq!(snapshot(&node.root), before);
}

#[test]
fn a_second_applier_on_the_same_state_directory_is_refused() {
    let node = Node::new();
    let _first = node.applier(Arc::new(NoServiceManager));
    let second = Applier::new(
        node.root.clone(),
        node.state.clone(),
        Arc::new(NoServiceManager),
    );
    assert!(
        matches!(second, Err(ApplyError::Locked { .. })),
        "{second:?}"
    );
}

#[test]
fn drift_is_detected_and_repaired_and_the_restart_waits_for_the_lease() {
    let node = Node::new();
    let (plan, _) = seed_with_local_kafka(&node);
    let rec = recorder();
    let mut applier = node.applier(rec.clone());
    applier.apply(&plan).expect("first apply");
    rec.take_calls();
    assert!(
        applier.drift(&plan).is_empty(),
        "{:?}",
        applier.drift(&plan)
    );

    // By hand: an edit, a chmod, a deletion, a swapped symlink.
    let server = node.path("/etc/kafka/server.properties");
    let mut text = fs::read_to_string(&server).expect("read");
    text.push_str("num.io.threads=1\n");
    fs::write(&server, text).expect("edit");
    let secrets = node.path("/etc/kafka/secrets.properties");
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::remove_file(node.path("/etc/kafka/kafka.env")).expect("delete");
    let link = node.path("/opt/kafka");
    fs::remove_file(&link).expect("remove link");
    std::os::unix::fs::symlink("/nowhere", &link).expect("swap link");

    let mut drift = applier.drift(&plan);
    drift.sort();
    let mut expected: Vec<String> = [
        "/etc/kafka/kafka.env",
        "/etc/kafka/secrets.properties",
        "/etc/kafka/server.properties",
        "/opt/kafka",
    ]
    .iter()
    .map(|p| node.path(p).to_string_lossy().into_owned())
    .collect();
    expected.sort();
    assert_eq!(drift, expected);
    let managed = applier.managed_paths(&plan);
    for p in &expected {
        assert!(managed.contains(&PathBuf::from(p)), "{p} is managed");
    }

    let report = applier.apply(&plan).expect("repair");
    let mut changed = report.changed.clone();
    changed.sort();
    assert_eq!(
        changed,
        strings(&[
            "/etc/kafka/kafka.env",
            "/etc/kafka/secrets.properties",
            "/etc/kafka/server.properties"
        ])
    );
    assert!(
        applier.drift(&plan).is_empty(),
        "{:?}",
        applier.drift(&plan)
    );
    for f in &plan.files {
        assert_file(&node, f);
    }
    // kafka.service runs (the recorder started it): its inputs changed, so
    // a restart is due, under the lease: not done by apply.
    assert_eq!(report.pending_restarts, strings(&["kafka.service"]));
    assert_eq!(rec.take_calls(), vec![]);
    assert!(!report.daemon_reloaded);

    applier.restart(&report.pending_restarts).expect("restart");
    assert_eq!(
        rec.take_calls(),
        vec![ServiceCall::Restart("kafka.service".to_owned())]
    );
    assert!(applier.pending_restarts().is_empty());
    drop(applier);
    assert!(node.applier(rec.clone()).pending_restarts().is_empty());
}

#[test]
fn files_that_left_the_plan_are_removed_and_foreign_files_are_kept() {
    let node = Node::new();
    fs::create_dir_all(node.path("/etc/demo")).expect("mkdir");
    fs::write(node.path("/etc/demo/foreign.conf"), "not ours\n").expect("foreign");
    // Already on disk exactly as planned: the agent never writes it.
    fs::write(node.path("/etc/demo/same.conf"), "same\n").expect("same");
    fs::set_permissions(
        node.path("/etc/demo/same.conf"),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    std::os::unix::fs::chown(
        node.path("/etc/demo/same.conf"),
        Some(ids().root.0),
        Some(ids().root.1),
    )
    .expect("chown");

    let mut a = empty_plan();
    a.files = vec![
        file("/etc/demo/a.conf", "a\n", restart("demo.service")),
        file("/etc/demo/b.conf", "b\n", restart("demo.service")),
        file("/etc/demo/same.conf", "same\n", OnChange::Nothing),
    ];
    a.units = vec![
        unit("demo-old.service", "[Service]\nExecStart=/bin/true\n"),
        unit("demo.service", "[Service]\n"),
    ];
    let rec = recorder();
    let mut applier = node.applier(rec.clone());
    let report = applier.apply(&a).expect("apply a");
    assert!(!report.changed.contains(&"/etc/demo/same.conf".to_owned()));
    rec.take_calls();

    let mut b = a.clone();
    b.files.retain(|f| f.path == "/etc/demo/a.conf");
    b.units.retain(|u| u.name == "demo.service");
    let report = applier.apply(&b).expect("apply b");
    assert_eq!(
        report.removed,
        strings(&["/etc/demo/b.conf", "/etc/systemd/system/demo-old.service"])
    );
    assert!(report.changed.is_empty());
    assert!(report.daemon_reloaded);
    assert_eq!(
        rec.take_calls(),
        vec![
            ServiceCall::Stop("demo-old.service".to_owned()),
            ServiceCall::Disable("demo-old.service".to_owned()),
            ServiceCall::DaemonReload,
        ]
    );
    assert!(node.read("/etc/demo/b.conf").is_none());
    assert!(node.read("/etc/systemd/system/demo-old.service").is_none());
    assert_eq!(node.read("/etc/demo/a.conf").as_deref(), Some(&b"a\n"[..]));
    assert_eq!(
        node.read("/etc/demo/foreign.conf").as_deref(),
        Some(&b"not ours\n"[..])
    );
    // Never written by the agent, so never removed by it.
    assert_eq!(
        node.read("/etc/demo/same.conf").as_deref(),
        Some(&b"same\n"[..])
    );

    // Removal is done once.
    let report = applier.apply(&b).expect("apply b again");
    assert!(report.removed.is_empty());
    assert_eq!(rec.take_calls(), vec![]);
}

/// Files of every change class, changed while their units run.
fn classes_plan(rev: &str) -> Plan {
    let mut p = empty_plan();
    p.files = vec![
        file(
            "/etc/demo/dynamic.conf",
            rev,
            OnChange::KafkaDynamicReload("kafka.service".to_owned()),
        ),
        file("/etc/demo/idle.conf", rev, restart("idle.service")),
        file("/etc/demo/nothing.conf", rev, OnChange::Nothing),
        file(
            "/etc/demo/reload.conf",
            rev,
            OnChange::Reload("web.service".to_owned()),
        ),
        file("/etc/demo/restart.conf", rev, restart("db.service")),
        file(
            "/etc/demo/server.properties",
            rev,
            OnChange::KafkaConfig("kafka.service".to_owned()),
        ),
    ];
    p.units = vec![
        unit("db.service", "[Service]\n"),
        unit("def.service", &format!("[Service]\n# {rev}\n")),
        unit("idle.service", "[Service]\n"),
        unit("kafka.service", "[Service]\n"),
        unit("web.service", "[Service]\n"),
    ];
    p
}

#[test]
fn change_classes_produce_the_right_calls_and_restarts_survive_the_agent() {
    let node = Node::new();
    let rec = recorder();
    let mut applier = node.applier(rec.clone());
    applier.apply(&classes_plan("one\n")).expect("apply one");
    rec.take_calls();
    // Stopped since (by hand or crashed): it is started, not restarted.
    rec.set_active_state("idle.service", "failed");

    let two = classes_plan("two\n");
    let report = applier.apply(&two).expect("apply two");
    assert_eq!(report.changed.len(), 7, "{:?}", report.changed);
    assert_eq!(
        rec.take_calls(),
        vec![
            ServiceCall::DaemonReload,
            // Its unit file changed: enabled again ([Install] may differ).
            ServiceCall::Enable("def.service".to_owned()),
            ServiceCall::Start("idle.service".to_owned()),
            ServiceCall::Reload("web.service".to_owned()),
        ]
    );
    assert_eq!(report.started, strings(&["idle.service"]));
    assert_eq!(report.reloaded, strings(&["web.service"]));
    // Restarts wait for the lease, and so does a running unit whose
    // definition changed. A Kafka config change and a keystore rewrite are
    // Kafka work for the agent (live through the Admin API), with the file
    // as the running Kafka knew it.
    assert_eq!(
        report.pending_restarts,
        strings(&["db.service", "def.service"])
    );
    let kafka_work = PendingKafka {
        config_before: Some("one\n".to_owned()),
        reload_tls: true,
    };
    assert_eq!(
        applier.pending_kafka(),
        [("kafka.service".to_owned(), kafka_work.clone())].into()
    );

    // The agent restarts before it gets to Kafka or the lease: all still due.
    drop(applier);
    let mut applier = node.applier(rec.clone());
    assert_eq!(
        applier.pending_kafka(),
        [("kafka.service".to_owned(), kafka_work)].into()
    );
    // Kafka could not take it all live: a restart, under the lease.
    applier.kafka_done("kafka.service", true).expect("recorded");
    assert!(applier.pending_kafka().is_empty());
    assert_eq!(
        applier.pending_restarts(),
        strings(&["db.service", "def.service", "kafka.service"])
    );
    let report = applier.apply(&two).expect("apply two again");
    assert_eq!(rec.take_calls(), vec![]);
    assert_eq!(report.pending_restarts.len(), 3);

    // A failed restart stays pending; the ones before it are done.
    rec.fail(
        ServiceCall::Restart("def.service".to_owned()),
        "Job for def.service failed.",
    );
    let err = applier
        .restart(&applier.pending_restarts())
        .expect_err("def fails");
    let chain = error_chain(&err);
    assert!(chain.contains("restart def.service"), "{chain}");
    assert!(chain.contains("Job for def.service failed."), "{chain}");
    assert_eq!(
        applier.pending_restarts(),
        strings(&["def.service", "kafka.service"])
    );
    rec.clear_failures();
    applier
        .restart(&applier.pending_restarts())
        .expect("restarts");
    assert!(applier.pending_restarts().is_empty());
    assert_eq!(
        rec.take_calls(),
        vec![
            ServiceCall::Restart("db.service".to_owned()),
            ServiceCall::Restart("def.service".to_owned()),
            ServiceCall::Restart("def.service".to_owned()),
            ServiceCall::Restart("kafka.service".to_owned()),
        ]
    );
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        s.push_str(": ");
        s.push_str(&e.to_string());
        source = e.source();
    }
    s
}

#[test]
fn an_apply_interrupted_after_writing_still_reloads_and_restarts_later() {
    let node = Node::new();
    let rec = recorder();
    let mut applier = node.applier(rec.clone());
    applier.apply(&classes_plan("one\n")).expect("apply one");
    rec.take_calls();

    // daemon-reload fails after every file is written: as if the agent died there.
    rec.fail(
        ServiceCall::DaemonReload,
        "Failed to reload daemon: Connection timed out",
    );
    let two = classes_plan("two\n");
    applier.apply(&two).expect_err("daemon-reload fails");
    for f in &two.files {
        assert_file(&node, f);
    }
    drop(applier);

    rec.clear_failures();
    rec.take_calls();
    let mut applier = node.applier(rec.clone());
    let report = applier.apply(&two).expect("apply again");
    // Nothing differs on disk any more, yet the reload, the daemon-reload
    // and the restarts the interrupted apply owed are all done or due.
    assert!(report.changed.is_empty());
    assert!(report.daemon_reloaded);
    assert_eq!(report.reloaded, strings(&["web.service"]));
    assert_eq!(
        report.pending_restarts,
        strings(&["db.service", "def.service", "idle.service"])
    );
    assert_eq!(
        applier.pending_kafka()["kafka.service"]
            .config_before
            .as_deref(),
        Some("one\n"),
        "the Kafka work the interrupted apply owed is due, against the file before it"
    );
}

#[test]
fn masked_units_are_masked_once_and_stopped_if_running() {
    let node = Node::new();
    let rec = recorder();
    rec.set_active_state("prometheus-node-exporter.service", "active");
    let mut plan = empty_plan();
    plan.masked_units = strings(&["prometheus-node-exporter.service"]);
    let mut applier = node.applier(rec.clone());
    applier.apply(&plan).expect("apply");
    assert_eq!(
        rec.take_calls(),
        vec![
            ServiceCall::Mask("prometheus-node-exporter.service".to_owned()),
            ServiceCall::Stop("prometheus-node-exporter.service".to_owned()),
        ]
    );
    drop(applier);
    node.applier(rec.clone()).apply(&plan).expect("apply again");
    assert_eq!(rec.take_calls(), vec![]);
}

#[test]
fn an_unknown_owner_is_refused_before_anything_is_written() {
    let node = Node::new();
    let mut plan = empty_plan();
    plan.files = vec![file("/etc/demo/a.conf", "a\n", OnChange::Nothing), {
        let mut f = file("/etc/demo/b.conf", "b\n", OnChange::Nothing);
        f.owner = "grafana".to_owned();
        f
    }];
    let err = node
        .applier(recorder())
        .apply(&plan)
        .expect_err("unknown user");
    assert!(
        matches!(&err, ApplyError::UnknownUser { name, .. } if name == "grafana"),
        "{err}"
    );
    assert!(!node.path("/etc/demo").exists());

    let mut plan = empty_plan();
    plan.files = vec![file("/etc/../etc/passwd", "x\n", OnChange::Nothing)];
    let err = node.applier(recorder()).apply(&plan).expect_err("bad path");
    assert!(matches!(err, ApplyError::InvalidPath { .. }), "{err}");
}

#[test]
fn missing_system_users_are_created_in_the_root() {
    if !nix::unistd::geteuid().is_root() || !Path::new("/usr/sbin/useradd").exists() {
        // useradd --root needs root; the other tests cover resolution.
        return;
    }
    let node = Node::new();
    fs::write(
        node.path("/etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\n",
    )
    .expect("passwd");
    fs::write(node.path("/etc/group"), "root:x:0:\n").expect("group");
    let mut plan = empty_plan();
    plan.users = vec![SystemUser {
        name: "kafka".to_owned(),
        home: "/var/lib/kafka".to_owned(),
    }];
    plan.directories = vec![PlannedDir {
        path: "/var/lib/kafka".to_owned(),
        mode: 0o750,
        owner: "kafka".to_owned(),
        group: "kafka".to_owned(),
    }];
    node.applier(recorder()).apply(&plan).expect("apply");
    let passwd = fs::read_to_string(node.path("/etc/passwd")).expect("passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("kafka:"))
        .expect("kafka was created");
    assert!(
        line.ends_with(":/var/lib/kafka:/usr/sbin/nologin"),
        "{line}"
    );
    let uid: u32 = line
        .split(':')
        .nth(2)
        .and_then(|u| u.parse().ok())
        .expect("uid");
    assert!(uid < 1000, "a system user: {line}");
    let meta = fs::metadata(node.path("/var/lib/kafka")).expect("home");
    assert_eq!(meta.uid(), uid);
    assert_eq!(meta.mode() & 0o7777, 0o750);
    assert!(
        fs::read_to_string(node.path("/etc/group"))
            .expect("group")
            .lines()
            .any(|l| l.starts_with("kafka:")),
        "its group was created"
    );
}

// ------------------------------------------------------------------ artifacts

#[test]
fn a_tarball_installs_into_a_versioned_directory_and_the_link_switches() {
    let node = Node::new();
    let rec = recorder();
    let mut applier = node.applier(rec.clone());
    let mut plan = empty_plan();
    plan.units = vec![unit("kafka.service", "[Service]\n")];

    let v1 = kafka_tarball("kafka_2.13-4.1.1", "v1", 4);
    fs::write(node.src.join("v1.tgz"), &v1).expect("write");
    plan.artifacts = vec![tarball_artifact(&node.src.join("v1.tgz"), &v1)];
    let report = applier.apply(&plan).expect("install v1");
    assert_eq!(report.artifacts_installed, strings(&["kafka"]));
    assert_eq!(node.link("/opt/kafka"), Some(versioned(&v1)));
    assert_eq!(listing(&node.path("/opt/kafka/")), tarball_listing(4));
    let script = node.path("/opt/kafka/bin/kafka-server-start.sh");
    assert_eq!(
        fs::read_to_string(&script).expect("read"),
        "#!/bin/sh\necho v1\n"
    );
    assert_eq!(fs::metadata(&script).expect("meta").mode() & 0o777, 0o755);
    assert_eq!(
        fs::read_link(node.path("/opt/kafka/libs/current.jar")).expect("inner link"),
        PathBuf::from("lib-00.jar")
    );
    // kafka.service was not running: started, no restart due.
    assert!(report.pending_restarts.is_empty());
    rec.take_calls();

    // v2, verified through an Apache-style digest file.
    let v2 = kafka_tarball("kafka_2.13-4.2.0", "v2", 5);
    fs::write(node.src.join("kafka_2.13-4.2.0.tgz"), &v2).expect("write");
    fs::write(
        node.src.join("kafka_2.13-4.2.0.tgz.sha512"),
        apache_digest_file("kafka_2.13-4.2.0.tgz", &v2),
    )
    .expect("write digest");
    let mut a = tarball_artifact(&node.src.join("kafka_2.13-4.2.0.tgz"), &v2);
    a.sha512 = None;
    a.sha512_url = Some(format!(
        "file://{}",
        node.src.join("kafka_2.13-4.2.0.tgz.sha512").display()
    ));
    plan.artifacts = vec![a];
    let report = applier.apply(&plan).expect("install v2");
    assert_eq!(report.artifacts_installed, strings(&["kafka"]));
    assert_eq!(node.link("/opt/kafka"), Some(versioned(&v2)));
    assert_eq!(listing(&node.path("/opt/kafka/")), tarball_listing(5));
    // The old version stays for a rollback.
    assert!(node.path(&format!("/opt/{}", versioned(&v1))).is_dir());
    // kafka.service runs now: the new version needs a restart, under the lease.
    assert_eq!(report.pending_restarts, strings(&["kafka.service"]));
    assert_eq!(rec.take_calls(), vec![]);
    applier.restart(&report.pending_restarts).expect("restart");

    // Same again: nothing downloaded (the digest file is not even read).
    fs::remove_file(node.src.join("kafka_2.13-4.2.0.tgz.sha512")).expect("rm");
    let report = applier.apply(&plan).expect("again");
    assert!(report.artifacts_installed.is_empty());

    // v3: v2 is kept as the previous version, v1 goes.
    let v3 = kafka_tarball("kafka_2.13-4.3.0", "v3", 2);
    fs::write(node.src.join("v3.tgz"), &v3).expect("write");
    plan.artifacts = vec![tarball_artifact(&node.src.join("v3.tgz"), &v3)];
    applier.apply(&plan).expect("install v3");
    assert_eq!(node.link("/opt/kafka"), Some(versioned(&v3)));
    assert!(node.path(&format!("/opt/{}", versioned(&v2))).is_dir());
    assert!(!node.path(&format!("/opt/{}", versioned(&v1))).exists());
    assert!(temp_files(&node.base).is_empty());
}

#[test]
fn the_version_a_running_unit_started_from_stays_until_the_unit_restarts() {
    let node = Node::new();
    let rec = recorder();
    let mut plan = empty_plan();
    plan.units = vec![unit("kafka.service", "[Service]\n")];
    let versions: Vec<Vec<u8>> = (1..=3)
        .map(|v| kafka_tarball(&format!("kafka_2.13-4.{v}.0"), &format!("v{v}"), 2))
        .collect();
    let artifact = |v: usize| {
        let path = node.src.join(format!("v{}.tgz", v + 1));
        fs::write(&path, &versions[v]).expect("write");
        tarball_artifact(&path, &versions[v])
    };
    let on_disk = |v: usize| {
        node.path(&format!("/opt/{}", versioned(&versions[v])))
            .is_dir()
    };

    // v1 installed, kafka.service started from it.
    let mut applier = node.applier(rec.clone());
    plan.artifacts = vec![artifact(0)];
    applier.apply(&plan).expect("install v1");
    assert!(
        rec.take_calls()
            .contains(&ServiceCall::Start("kafka.service".to_owned()))
    );

    // v2, then v3, while kafka.service waits for its lease: the JVM still
    // runs from v1's directory, which must stay.
    plan.artifacts = vec![artifact(1)];
    let report = applier.apply(&plan).expect("install v2");
    assert_eq!(report.pending_restarts, strings(&["kafka.service"]));
    plan.artifacts = vec![artifact(2)];
    let report = applier.apply(&plan).expect("install v3");
    assert_eq!(report.pending_restarts, strings(&["kafka.service"]));
    assert_eq!(node.link("/opt/kafka"), Some(versioned(&versions[2])));
    assert_eq!(
        (on_disk(0), on_disk(1), on_disk(2)),
        (true, true, true),
        "v1 (running), v2 (previous) and v3 (current) are all on disk"
    );
    assert!(
        rec.take_calls().is_empty(),
        "nothing restarted without the lease"
    );

    // The agent restarts: what the running unit needs is in its state.
    drop(applier);
    let mut applier = node.applier(rec.clone());
    applier.apply(&plan).expect("v3 again");
    assert!(on_disk(0), "v1 kept across an agent restart");

    // Once kafka.service restarts (from v3), v1 goes at the next apply;
    // v2 stays as the version before v3.
    applier
        .restart(&strings(&["kafka.service"]))
        .expect("restart");
    applier.apply(&plan).expect("after the restart");
    assert_eq!(
        (on_disk(0), on_disk(1), on_disk(2)),
        (false, true, true),
        "after the restart: v1 removed, v2 kept for a rollback"
    );

    // A rollback to the version the unit runs from keeps it too: v3 runs,
    // the link goes back to v2 and then to v1 before the restart.
    plan.artifacts = vec![artifact(1)];
    applier.apply(&plan).expect("back to v2");
    plan.artifacts = vec![artifact(0)];
    applier.apply(&plan).expect("back to v1");
    assert_eq!(node.link("/opt/kafka"), Some(versioned(&versions[0])));
    assert!(on_disk(2), "v3 kept while kafka.service runs from it");
    applier
        .restart(&strings(&["kafka.service"]))
        .expect("restart");
    applier.apply(&plan).expect("after the second restart");
    assert_eq!(
        (on_disk(0), on_disk(1), on_disk(2)),
        (true, true, false),
        "v1 current, v2 kept for a rollback, v3 removed"
    );
    assert!(temp_files(&node.base).is_empty());
}

#[test]
fn a_wrong_or_truncated_download_is_refused_and_nothing_changes() {
    let node = Node::new();
    let mut applier = node.applier(recorder());
    let mut plan = empty_plan();
    let v1 = kafka_tarball("kafka_2.13-4.1.1", "v1", 3);
    fs::write(node.src.join("v1.tgz"), &v1).expect("write");
    plan.artifacts = vec![tarball_artifact(&node.src.join("v1.tgz"), &v1)];
    applier.apply(&plan).expect("install v1");
    let before = snapshot(&node.path("/opt"));

    let v2 = kafka_tarball("kafka_2.13-4.2.0", "v2", 3);
    fs::write(node.src.join("v2.tgz"), &v2).expect("write");

    // Wrong digest.
    let mut wrong = tarball_artifact(&node.src.join("v2.tgz"), &v2);
    wrong.sha512 = Some(sha512_digest(b"something else").to_uppercase());
    plan.artifacts = vec![wrong];
    let err = applier.apply(&plan).expect_err("wrong digest");
    assert!(matches!(err, ApplyError::DigestMismatch { .. }), "{err}");
    assert_eq!(snapshot(&node.path("/opt")), before);

    // Truncated download (right digest, half the bytes).
    fs::write(node.src.join("v2-cut.tgz"), &v2[..v2.len() / 2]).expect("write");
    let mut cut = tarball_artifact(&node.src.join("v2-cut.tgz"), &v2);
    cut.url = format!("file://{}", node.src.join("v2-cut.tgz").display());
    plan.artifacts = vec![cut];
    let err = applier.apply(&plan).expect_err("truncated");
    assert!(matches!(err, ApplyError::DigestMismatch { .. }), "{err}");
    assert_eq!(snapshot(&node.path("/opt")), before);
    assert_eq!(node.link("/opt/kafka"), Some(versioned(&v1)));

    // A digest file that does not name the file.
    fs::write(
        node.src.join("other.sha512"),
        apache_digest_file("other.tgz", &v2).replace(':', ""),
    )
    .expect("write");
    let mut bad = tarball_artifact(&node.src.join("v2.tgz"), &v2);
    bad.sha512 = None;
    bad.sha512_url = Some(format!(
        "file://{}",
        node.src.join("other.sha512").display()
    ));
    plan.artifacts = vec![bad];
    let err = applier.apply(&plan).expect_err("no digest");
    assert!(matches!(err, ApplyError::Digest { .. }), "{err}");

    // Neither https nor file: refused.
    let mut plain = tarball_artifact(&node.src.join("v2.tgz"), &v2);
    plain.url = "http://example.invalid/kafka.tgz".to_owned();
    plan.artifacts = vec![plain];
    let err = applier.apply(&plan).expect_err("http");
    assert!(matches!(err, ApplyError::UnsupportedUrl { .. }), "{err}");

    assert_eq!(snapshot(&node.path("/opt")), before);
    assert!(temp_files(&node.base).is_empty());
}

/// A tarball with one raw entry whose name the `tar` crate would refuse to
/// write (so it is put into the header by hand).
fn tarball_with_raw_entry(name: &[u8], kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_path("kafka/").expect("path");
    h.set_mode(0o755);
    h.set_size(0);
    h.set_cksum();
    b.append(&h, std::io::empty()).expect("dir");
    let data = b"evil\n";
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    if let Some(link) = link {
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(if link.is_some() { 0 } else { data.len() as u64 });
    h.set_cksum();
    if link.is_some() {
        b.append(&h, std::io::empty()).expect("append");
    } else {
        b.append(&h, &data[..]).expect("append");
    }
    b.into_inner().expect("tar").finish().expect("gzip")
}

#[test]
fn archive_entries_that_would_leave_the_target_are_refused() {
    let node = Node::new();
    let mut applier = node.applier(recorder());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            tarball_with_raw_entry(b"kafka/../../../evil", tar::EntryType::Regular, None),
        ),
        (
            "absolute",
            tarball_with_raw_entry(b"/tmp/kraftops-evil", tar::EntryType::Regular, None),
        ),
        (
            "symlink out",
            tarball_with_raw_entry(
                b"kafka/libs/etc",
                tar::EntryType::Symlink,
                Some("../../../../etc"),
            ),
        ),
        (
            "absolute symlink",
            tarball_with_raw_entry(b"kafka/etc", tar::EntryType::Symlink, Some("/etc")),
        ),
        (
            "hard link out",
            tarball_with_raw_entry(b"kafka/passwd", tar::EntryType::Link, Some("../etc/passwd")),
        ),
        (
            "device",
            tarball_with_raw_entry(b"kafka/null", tar::EntryType::Char, None),
        ),
        (
            "two tops",
            tarball_with_raw_entry(b"other/file", tar::EntryType::Regular, None),
        ),
    ];
    for (what, tgz) in cases {
        let src = node.src.join(format!("{}.tgz", what.replace(' ', "-")));
        fs::write(&src, &tgz).expect("write");
        let mut plan = empty_plan();
        plan.artifacts = vec![tarball_artifact(&src, &tgz)];
        let err = applier.apply(&plan).expect_err(what);
        assert!(
            matches!(
                err,
                ApplyError::UnsafeArchiveEntry { .. } | ApplyError::ArchiveLayout { .. }
            ),
            "{what}: {err}"
        );
        assert_eq!(node.link("/opt/kafka"), None, "{what}");
        assert!(!node.base.join("evil").exists() && !node.root.join("evil").exists());
        assert!(!Path::new("/tmp/kraftops-evil").exists());
        assert!(
            temp_files(&node.base).is_empty(),
            "{what}: {:?}",
            temp_files(&node.base)
        );
    }
    // Nothing but the (empty) parent directory was made.
    assert_eq!(listing(&node.path("/opt")), Vec::<String>::new());
}

#[test]
fn a_single_file_artifact_is_verified_written_atomically_and_repaired() {
    let node = Node::new();
    let mut applier = node.applier(recorder());
    let jar = b"PK\x03\x04 pretend jmx exporter".repeat(100);
    fs::write(node.src.join("jmx.jar"), &jar).expect("write");
    let mut plan = empty_plan();
    plan.artifacts = vec![Artifact {
        name: "jmx-exporter".to_owned(),
        url: node.src.join("jmx.jar").display().to_string(), // a local path
        sha512: Some(sha512_digest(&jar)),
        sha512_url: None,
        install_to: "/opt/jmx_exporter/jmx_prometheus_javaagent.jar".to_owned(),
        unpack: false,
        on_change: restart("kafka.service"),
        apt: None,
    }];
    let report = applier.apply(&plan).expect("install");
    assert_eq!(report.artifacts_installed, strings(&["jmx-exporter"]));
    let path = node.path("/opt/jmx_exporter/jmx_prometheus_javaagent.jar");
    assert_eq!(fs::read(&path).expect("read"), jar);
    let meta = fs::metadata(&path).expect("meta");
    assert_eq!(meta.mode() & 0o7777, 0o644);
    assert_eq!((meta.uid(), meta.gid()), ids().root);

    let before = snapshot(&node.path("/opt"));
    assert!(
        applier
            .apply(&plan)
            .expect("again")
            .artifacts_installed
            .is_empty()
    );
    assert_eq!(snapshot(&node.path("/opt")), before);

    fs::write(&path, b"tampered").expect("tamper");
    assert_eq!(
        applier.drift(&plan),
        vec![path.to_string_lossy().into_owned()]
    );
    let report = applier.apply(&plan).expect("repair");
    assert_eq!(report.artifacts_installed, strings(&["jmx-exporter"]));
    assert_eq!(fs::read(&path).expect("read"), jar);
    assert!(applier.drift(&plan).is_empty());
}

#[test]
fn an_apt_artifact_needs_the_node_itself() {
    let node = Node::new();
    let mut plan = empty_plan();
    plan.artifacts = vec![Artifact {
        name: "kafka".to_owned(),
        url: String::new(),
        sha512: None,
        sha512_url: None,
        install_to: "/opt/kafka".to_owned(),
        unpack: false,
        on_change: restart("kafka.service"),
        apt: Some(AptPackage {
            source:
                "deb [signed-by=/etc/apt/keyrings/kafka.asc] https://packages.example/ stable main"
                    .to_owned(),
            package: "kafka".to_owned(),
            version: Some("4.1.1-1".to_owned()),
        }),
    }];
    let err = node
        .applier(recorder())
        .apply(&plan)
        .expect_err("apt below a temp root");
    assert!(matches!(err, ApplyError::AptNeedsHostRoot { .. }), "{err}");
    assert!(err.to_string().contains("kafka"), "{err}");
}

#[test]
fn digest_files_parse_in_apache_and_coreutils_formats() {
    let bytes = b"kafka";
    let hex = sha512_digest(bytes);
    let name = "kafka_2.13-4.1.1.tgz";
    assert_eq!(
        parse_sha512_file(&apache_digest_file(name, bytes), name),
        Some(hex.clone())
    );
    assert_eq!(
        parse_sha512_file(&apache_digest_file(name, bytes).to_lowercase(), name),
        Some(hex.clone())
    );
    assert_eq!(
        parse_sha512_file(&format!("{hex}  {name}\n"), name),
        Some(hex.clone())
    );
    assert_eq!(
        parse_sha512_file(&format!("{}  {name}\n", hex.to_uppercase()), name),
        Some(hex.clone())
    );
    assert_eq!(parse_sha512_file("", name), None);
    assert_eq!(
        parse_sha512_file(&format!("{name}: {}", &hex[..127]), name),
        None
    );
}

// ------------------------------------------------------------------ systemctl

#[test]
fn systemctl_is_called_with_a_timeout_and_failures_carry_its_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("calls.log");
    let script = dir.path().join("systemctl");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\ncase \"$1\" in\n  show) echo ActiveState=active; echo SubState=running;;\n  restart) echo \"Job for $3 failed because the control process exited with error code.\" >&2; exit 1;;\n  stop) sleep 5;;\nesac\n",
            log.display()
        ),
    )
    .expect("write script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let systemctl = Systemctl::new()
        .with_program(&script)
        .with_timeout(Duration::from_millis(500));

    let status = systemctl.status("kafka.service").expect("status");
    assert_eq!(
        (
            status.name.as_str(),
            status.active_state.as_str(),
            status.sub_state.as_str()
        ),
        ("kafka.service", "active", "running")
    );
    systemctl.enable("kafka.service").expect("enable");
    systemctl.daemon_reload().expect("daemon-reload");

    let err = systemctl
        .restart("kafka.service")
        .expect_err("restart fails");
    let chain = error_chain(&err);
    assert!(chain.starts_with("restart kafka.service: "), "{chain}");
    assert!(chain.contains("Job for kafka.service failed"), "{chain}");

    let started = Instant::now();
    let err = systemctl.stop("kafka.service").expect_err("stop hangs");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(
        matches!(
            &err,
            ApplyError::Service {
                source: CommandError::Timeout { .. },
                ..
            }
        ),
        "{err}"
    );

    let calls = fs::read_to_string(&log).expect("log");
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        vec![
            "show --property=ActiveState --property=SubState -- kafka.service",
            "enable -- kafka.service",
            "daemon-reload",
            "restart -- kafka.service",
            "stop -- kafka.service",
        ]
    );
}

#[test]
fn no_service_manager_reports_units_as_unmanaged_and_starts_nothing() {
    let node = Node::new();
    let mut plan = empty_plan();
    plan.units = vec![unit("demo.service", "[Service]\n")];
    plan.files = vec![file("/etc/demo/a.conf", "a\n", restart("demo.service"))];
    let mut applier = node.applier(Arc::new(NoServiceManager));
    let report = applier.apply(&plan).expect("apply");
    assert!(report.started.is_empty());
    plan.files[0].contents = b"b\n".to_vec();
    let report = applier.apply(&plan).expect("apply");
    assert!(report.pending_restarts.is_empty());
    assert_eq!(
        NoServiceManager
            .status("demo.service")
            .expect("status")
            .active_state,
        "unmanaged"
    );
}

// ------------------------------------------------------------------ crash safety

const CHILD_ROOT: &str = "KRAFTOPS_APPLY_CHILD_ROOT";
const CHILD_STATE: &str = "KRAFTOPS_APPLY_CHILD_STATE";
const CHILD_SRC: &str = "KRAFTOPS_APPLY_CHILD_SRC";
const READY: &str = "KRAFTOPS-APPLY-CHILD-READY";
const CRASH_FILES: usize = 40;
const CRASH_JARS: usize = 30;

/// The seed's broker-1 plan at revision `rev` ("a" or "b"): every file and
/// unit stamped with it, 40 more files of varied owners, modes and sizes,
/// a Kafka tarball per revision, and a file, unit and directory only one
/// revision has.
fn crash_plan(src: &Path, rev: &str) -> Plan {
    let mut plan = seed_plan("broker-1");
    for f in &mut plan.files {
        f.contents
            .extend_from_slice(format!("# revision {rev}\n").as_bytes());
    }
    for u in &mut plan.units {
        u.contents.push_str(&format!("# revision {rev}\n"));
    }
    for i in 0..CRASH_FILES {
        let mut f = file(
            &format!("/etc/kraftops-crash/f{i:02}.conf"),
            &format!("{rev} {i}\n").repeat(1 + (i % 7) * 900),
            restart("kafka.service"),
        );
        if i % 3 == 0 {
            f.owner = "kafka".to_owned();
            f.group = "kafka".to_owned();
            f.sensitive = true;
        }
        // Revision b changes every mode: metadata must flip with the bytes.
        f.mode = match (i % 2, rev) {
            (0, "a") => 0o644,
            (0, _) => 0o600,
            (_, "a") => 0o640,
            _ => 0o604,
        };
        plan.files.push(f);
    }
    if rev == "a" {
        plan.files.push(file(
            "/etc/kraftops-crash/only-a.conf",
            "a only\n",
            OnChange::Nothing,
        ));
        plan.units.push(unit("crash-only-a.service", "[Service]\n"));
    } else {
        plan.files.push(file(
            "/etc/kraftops-crash/only-b.conf",
            "b only\n",
            OnChange::Nothing,
        ));
        plan.directories.push(PlannedDir {
            path: "/var/lib/kraftops-crash-b".to_owned(),
            mode: 0o750,
            owner: "kafka".to_owned(),
            group: "kafka".to_owned(),
        });
    }
    let tgz = fs::read(src.join(format!("kafka-{rev}.tgz"))).expect("tarball exists");
    plan.artifacts = vec![tarball_artifact(
        &src.join(format!("kafka-{rev}.tgz")),
        &tgz,
    )];
    plan.files.sort_by(|a, b| a.path.cmp(&b.path));
    plan.units.sort_by(|a, b| a.name.cmp(&b.name));
    plan
}

/// A node with revision "a" fully applied and revision "b"'s sources ready.
fn crash_node() -> (Node, Plan, Plan) {
    let node = Node::new();
    for rev in ["a", "b"] {
        let tgz = kafka_tarball(&format!("kafka_2.13-{rev}"), rev, CRASH_JARS);
        fs::write(node.src.join(format!("kafka-{rev}.tgz")), tgz).expect("write tarball");
    }
    let a = crash_plan(&node.src, "a");
    let b = crash_plan(&node.src, "b");
    node.applier(Arc::new(NoServiceManager))
        .apply(&a)
        .expect("apply a");
    (node, a, b)
}

/// Not a test of its own: the body of the child process the crash test
/// starts (and kills). Without the environment it does nothing.
#[test]
fn crash_child_process() {
    let (Ok(root), Ok(state), Ok(src)) = (
        std::env::var(CHILD_ROOT),
        std::env::var(CHILD_STATE),
        std::env::var(CHILD_SRC),
    ) else {
        return;
    };
    let plan = crash_plan(Path::new(&src), "b");
    let mut applier =
        Applier::new(root.into(), state.into(), Arc::new(NoServiceManager)).expect("child applier");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY}").expect("signal ready");
    out.flush().expect("flush");
    applier.apply(&plan).expect("child apply");
}

/// Starts the child apply of revision b and waits until it is about to
/// apply; returns it and the instant it said so.
fn spawn_child(node: &Node) -> (std::process::Child, Instant) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "crash_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROOT, &node.root)
        .env(CHILD_STATE, &node.state)
        .env(CHILD_SRC, &node.src)
        .stdout(Stdio::piped())
        .stderr(fs::File::create(node.base.join("child.stderr")).expect("child stderr"))
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            // libtest's "test crash_child_process ... " shares the line.
            Some(Ok(line)) if line.trim_end().ends_with(READY) => break,
            Some(Ok(_)) => continue,
            _ => panic!(
                "the child exited before it was ready: {}",
                fs::read_to_string(node.base.join("child.stderr")).unwrap_or_default()
            ),
        }
    }
    let ready = Instant::now();
    // Keep reading, so the child never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, ready)
}

#[derive(Debug, Default)]
struct Seen {
    old: usize,
    new: usize,
}

/// Right after the kill: every managed path holds revision a's bytes and
/// metadata or revision b's (or is absent where one revision lacks it), and
/// `/opt/kafka` points at a complete version. Never anything in between.
fn assert_not_torn(node: &Node, a: &Plan, b: &Plan) -> Seen {
    let mut seen = Seen::default();
    let mut paths: Vec<&str> = a
        .files
        .iter()
        .chain(&b.files)
        .map(|f| f.path.as_str())
        .collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let (fa, fb) = (a.file(path), b.file(path));
        let disk = node.read(path);
        let meta = fs::symlink_metadata(node.path(path)).ok();
        let is = |f: Option<&PlannedFile>| {
            f.zip(disk.as_ref())
                .zip(meta.as_ref())
                .is_some_and(|((f, bytes), m)| {
                    *bytes == f.contents
                        && m.mode() & 0o7777 == f.mode
                        && (m.uid(), m.gid()) == owner_ids(&f.owner, &f.group)
                })
        };
        if is(fa) {
            seen.old += 1;
        } else if is(fb) {
            seen.new += 1;
        } else {
            assert!(
                disk.is_none() && (fa.is_none() || fb.is_none()),
                "{path} is torn: {} bytes, mode {:o}",
                disk.as_ref().map_or(0, Vec::len),
                meta.map_or(0, |m| m.mode())
            );
        }
    }
    let mut units: Vec<&str> = a
        .units
        .iter()
        .chain(&b.units)
        .map(|u| u.name.as_str())
        .collect();
    units.sort();
    units.dedup();
    for name in units {
        let disk = node.read(&format!("/etc/systemd/system/{name}"));
        let (ua, ub) = (a.unit(name), b.unit(name));
        let is = |u: Option<&PlannedUnit>| {
            u.zip(disk.as_deref())
                .is_some_and(|(u, d)| d == u.contents.as_bytes())
        };
        assert!(
            is(ua) || is(ub) || (disk.is_none() && (ua.is_none() || ub.is_none())),
            "unit {name} is torn"
        );
    }
    let link = node.link("/opt/kafka").expect("the link always exists");
    let tgz = |rev: &str| fs::read(node.src.join(format!("kafka-{rev}.tgz"))).expect("tarball");
    assert!(
        link == versioned(&tgz("a")) || link == versioned(&tgz("b")),
        "{link}"
    );
    assert_eq!(
        listing(&node.path("/opt/kafka/")),
        tarball_listing(CRASH_JARS),
        "{link} is complete"
    );
    seen
}

/// After the recovery apply: exactly revision b, nothing left over.
fn assert_converged(node: &Node, applier: &mut Applier, b: &Plan) {
    for f in &b.files {
        assert_file(node, f);
    }
    for u in &b.units {
        assert_unit(node, u);
    }
    assert!(node.read("/etc/kraftops-crash/only-a.conf").is_none());
    assert!(
        node.read("/etc/systemd/system/crash-only-a.service")
            .is_none()
    );
    let meta = fs::metadata(node.path("/var/lib/kraftops-crash-b")).expect("dir b");
    assert_eq!(meta.mode() & 0o7777, 0o750);
    let tgz_b = fs::read(node.src.join("kafka-b.tgz")).expect("tarball");
    assert_eq!(node.link("/opt/kafka"), Some(versioned(&tgz_b)));
    assert_eq!(
        listing(&node.path("/opt/kafka/")),
        tarball_listing(CRASH_JARS)
    );
    assert!(
        temp_files(&node.base).is_empty(),
        "{:?}",
        temp_files(&node.base)
    );
    assert!(applier.drift(b).is_empty(), "{:?}", applier.drift(b));
    assert!(applier.pending_restarts().is_empty());
    let again = applier.apply(b).expect("idempotent after recovery");
    assert!(
        again.changed.is_empty() && again.removed.is_empty(),
        "{again:?}"
    );
    assert!(again.artifacts_installed.is_empty());
}

#[test]
fn an_apply_killed_at_any_point_converges_on_the_next() {
    // How long the child's apply takes when left alone (median of three:
    // fsync times vary with the machine's load).
    let mut runs = Vec::new();
    for _ in 0..3 {
        let (node, _, b) = crash_node();
        let (mut child, ready) = spawn_child(&node);
        let status = child.wait().expect("wait");
        runs.push(ready.elapsed());
        assert!(
            status.success(),
            "the child's apply succeeds when not killed"
        );
        assert_converged(&node, &mut node.applier(Arc::new(NoServiceManager)), &b);
    }
    runs.sort();
    let full = runs[1];

    // Kill points spread over the whole apply, a few past its end.
    const KILLS: u32 = 36;
    let mut partial = 0;
    let mut phases: BTreeMap<&str, u32> = BTreeMap::new();
    let mut delays = Vec::new();
    // The estimate shrinks when a child finished before its kill point, so
    // a slow calibration (say, under a parallel test's fsyncs) cannot push
    // every kill past the end.
    let mut estimate = full;
    for i in 0..KILLS {
        let delay = estimate * i / (KILLS - 4);
        delays.push(delay);
        let (node, a, b) = crash_node();
        let (mut child, ready) = spawn_child(&node);
        if let Some(rest) = delay.checked_sub(ready.elapsed()) {
            std::thread::sleep(rest);
        }
        let finished_first = child.try_wait().expect("try_wait").is_some();
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        if finished_first && i < KILLS - 4 {
            estimate = estimate * 3 / 4;
        }

        let seen = assert_not_torn(&node, &a, &b);
        let switched = node.link("/opt/kafka")
            == Some(versioned(
                &fs::read(node.src.join("kafka-b.tgz")).expect("tarball"),
            ));
        let phase = match (seen.old, seen.new, switched) {
            (_, 0, _) => "before the first write",
            // only-a.conf is removed last, after the artifact.
            (1, _, false) => "files written, Kafka b not yet switched",
            (1, _, true) => "Kafka b switched, removals not done",
            (0, _, _) => "after the apply",
            _ => "between two file writes",
        };
        *phases.entry(phase).or_insert(0) += 1;
        if seen.old > 0 && seen.new > 0 {
            partial += 1;
        }
        let mut applier = node.applier(Arc::new(NoServiceManager));
        applier
            .apply(&b)
            .expect("the apply after the kill succeeds");
        assert_converged(&node, &mut applier, &b);
    }
    let _ = writeln!(
        std::io::stderr(),
        "crash test: {KILLS} kill points ({:?} .. {:?} after the child was ready; its apply took {full:?} alone); where they landed: {phases:?}",
        delays.first().copied().unwrap_or_default(),
        delays.last().copied().unwrap_or_default()
    );
    assert!(
        partial > 0,
        "no kill landed inside the apply (full apply took {full:?}; delays {delays:?})"
    );
}

#[test]
fn a_write_that_never_happened_does_not_make_a_path_the_agents() {
    let node = Node::new();
    // Something that is not a file sits where the plan wants one: the write
    // is recorded as intended, then fails.
    fs::create_dir_all(node.path("/etc/demo/x.conf")).expect("mkdir");
    fs::write(node.path("/etc/demo/x.conf/keep"), "operator data\n").expect("write");
    let mut plan = empty_plan();
    plan.files = vec![
        file("/etc/demo/a.conf", "a\n", OnChange::Nothing),
        file("/etc/demo/x.conf", "x\n", OnChange::Nothing),
    ];
    let mut applier = node.applier(recorder());
    let err = applier
        .apply(&plan)
        .expect_err("cannot replace a directory");
    assert!(matches!(err, ApplyError::Io { .. }), "{err}");

    // The path leaves the plan: the agent never wrote it, so it stays.
    plan.files.retain(|f| f.path == "/etc/demo/a.conf");
    let report = applier.apply(&plan).expect("apply");
    assert!(report.removed.is_empty(), "{:?}", report.removed);
    assert_eq!(
        node.read("/etc/demo/x.conf/keep").as_deref(),
        Some(&b"operator data\n"[..])
    );
    assert!(temp_files(&node.base).is_empty());
}
