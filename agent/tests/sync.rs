//! Integration tests of `kraftops_agent::sync` against real git: bare
//! "remote" repositories built with the `git` CLI, served over `file://` and
//! by a real `git daemon` on loopback, and commits signed with keys made by
//! `ssh-keygen`. Nothing is mocked; missing tools fail the tests.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kraftops_agent::sync::{MAX_FILE_BYTES, Repo, SyncError, TrustedSigners};

// ---------------------------------------------------------------------------
// Tools and fixtures
// ---------------------------------------------------------------------------

/// Fails (never skips) when a tool the tests need is missing.
fn require_tools() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        for (tool, args, package) in [
            ("git", &["--version"][..], "git"),
            ("ssh-keygen", &["-?"][..], "openssh-client"),
        ] {
            let found = Command::new(tool)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if let Err(e) = found {
                panic!(
                    "`{tool} {}` cannot run ({e}); install the Debian package `{package}` \
                     (apt-get install {package})",
                    args.join(" ")
                );
            }
        }
        git_daemon_binary();
    });
}

/// A `git` command isolated from the user's and the system's config.
fn git_command(dir: &Path, home: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args([
            "-c",
            "user.name=Kraftops Test",
            "-c",
            "user.email=test@kraftops.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgSign=false",
        ])
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE");
    cmd
}

/// Runs a command, panics with its output on failure, returns raw stdout.
fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Vec<u8> {
    let shown = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for command");
    assert!(
        out.status.success(),
        "{shown} failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A bare "remote" repository and a working clone that commits and pushes.
struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        require_tools();
        let tmp = tempfile::tempdir().expect("tempdir");
        let fx = Fixture { tmp };
        for dir in [fx.home(), fx.srv(), fx.work(), fx.state()] {
            std::fs::create_dir_all(dir).expect("create fixture dir");
        }
        fx.git_in(&fx.srv(), &["init", "--quiet", "--bare", "remote.git"]);
        fx.git(&["init", "--quiet"]);
        fx.git(&["checkout", "--quiet", "-b", "main"]);
        let remote = fx.remote();
        fx.git(&[
            "remote",
            "add",
            "origin",
            remote.to_str().expect("utf-8 path"),
        ]);
        fx
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }
    /// The directory `git daemon` serves (its `--base-path`).
    fn srv(&self) -> PathBuf {
        self.tmp.path().join("srv")
    }
    fn remote(&self) -> PathBuf {
        self.srv().join("remote.git")
    }
    fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }
    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    /// Where the agent keeps its clone (created by `open_or_clone`).
    fn clone_dir(&self) -> PathBuf {
        self.state().join("repo")
    }
    fn file_url(&self) -> String {
        format!("file://{}", self.remote().display())
    }

    fn git_in(&self, dir: &Path, args: &[&str]) -> String {
        let mut cmd = git_command(dir, &self.home());
        cmd.args(args);
        String::from_utf8(run(cmd, None))
            .expect("utf-8 git output")
            .trim()
            .to_owned()
    }

    /// Runs git in the working clone; stdout trimmed.
    fn git(&self, args: &[&str]) -> String {
        self.git_in(&self.work(), args)
    }

    fn write(&self, path: &str, contents: &[u8]) {
        let path = self.work().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write file");
    }

    /// Commits everything in the work tree; returns the new commit id.
    fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.head()
    }

    /// Commits everything, signed with `key` (git's `gpg.format=ssh`).
    fn commit_signed(&self, key: &Key, message: &str) -> String {
        self.git(&["add", "--all"]);
        let signing_key = format!("user.signingkey={}", key.private.display());
        self.git(&[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing_key,
            "commit",
            "--quiet",
            "--allow-empty",
            "-S",
            "-m",
            message,
        ]);
        self.head()
    }

    fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    fn push(&self) {
        self.git(&["push", "--quiet", "origin", "HEAD:refs/heads/main"]);
    }

    fn force_push(&self) {
        self.git(&[
            "push",
            "--quiet",
            "--force",
            "origin",
            "HEAD:refs/heads/main",
        ]);
    }

    /// The raw commit object of `rev`, exactly as stored.
    fn raw_commit(&self, rev: &str) -> String {
        let mut cmd = git_command(&self.work(), &self.home());
        cmd.args(["cat-file", "commit", rev]);
        String::from_utf8(run(cmd, None)).expect("utf-8 commit")
    }

    /// Writes `raw` as a commit object and moves `main` (and HEAD) to it.
    fn write_commit(&self, raw: &str) -> String {
        let mut cmd = git_command(&self.work(), &self.home());
        cmd.args(["hash-object", "-t", "commit", "-w", "--stdin"]);
        let id = String::from_utf8(run(cmd, Some(raw.as_bytes())))
            .expect("utf-8 id")
            .trim()
            .to_owned();
        self.git(&["update-ref", "refs/heads/main", &id]);
        id
    }

    /// Whether the agent's clone is shallow, as git itself sees it.
    fn clone_is_shallow(&self) -> bool {
        let dir = self.clone_dir();
        let git_dir = format!("--git-dir={}", dir.display());
        match self
            .git_in(
                self.tmp.path(),
                &[&git_dir, "rev-parse", "--is-shallow-repository"],
            )
            .as_str()
        {
            "true" => true,
            "false" => false,
            other => panic!("unexpected rev-parse output {other:?}"),
        }
    }

    fn keygen(&self, kind: &str, name: &str, comment: &str) -> Key {
        let private = self.tmp.path().join("keys").join(name);
        std::fs::create_dir_all(private.parent().expect("parent")).expect("mkdir keys");
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-t", kind, "-N", "", "-C", comment, "-f"])
            .arg(&private)
            .env("HOME", self.home());
        run(cmd, None);
        let public_path = private.with_extension("pub");
        let public = std::fs::read_to_string(&public_path)
            .expect("read public key")
            .trim()
            .to_owned();
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-l", "-E", "sha256", "-f"]).arg(&public_path);
        let listing = String::from_utf8(run(cmd, None)).expect("utf-8 listing");
        let fingerprint = listing
            .split_whitespace()
            .nth(1)
            .expect("fingerprint in ssh-keygen -l output")
            .to_owned();
        Key {
            private,
            public,
            fingerprint,
        }
    }
}

struct Key {
    private: PathBuf,
    /// The `ssh-… AAAA… comment` line.
    public: String,
    /// `SHA256:…`, as `ssh-keygen -l -E sha256` prints it.
    fingerprint: String,
}

/// A `git daemon` on 127.0.0.1, killed when dropped (also when a test
/// fails).
struct GitDaemon {
    child: Option<Child>,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        Self::start_on(base, None)
    }

    /// Starts on `port`, or on a free one; waits until it accepts.
    fn start_on(base: &Path, port: Option<u16>) -> GitDaemon {
        require_tools();
        let mut last_error = String::new();
        for _attempt in 0..10 {
            let port = port.unwrap_or_else(free_port);
            let log = base.with_file_name(format!("git-daemon-{port}.log"));
            let log_file = std::fs::File::create(&log).expect("daemon log");
            // The real daemon, not the `git` wrapper: killing `git daemon`
            // would leave its `git-daemon` child listening.
            let child = Command::new(git_daemon_binary())
                .arg("--reuseaddr")
                .arg(format!("--base-path={}", base.display()))
                .arg("--export-all")
                .arg(format!("--port={port}"))
                .arg("--listen=127.0.0.1")
                .arg(base)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .expect("spawn git daemon (Debian package `git`)");
            let mut daemon = GitDaemon {
                child: Some(child),
                port,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if daemon.accepts() {
                    return daemon;
                }
                let exited = daemon
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    last_error = format!(
                        "git daemon exited with {status}: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            daemon.kill();
            if last_error.is_empty() {
                last_error = format!("git daemon did not accept on port {port} within 10 s");
            }
        }
        panic!("cannot start git daemon: {last_error}");
    }

    fn accepts(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    }

    fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }

    /// Kills the daemon; panics unless its port then refuses connections.
    fn stop(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.accepts() {
            assert!(
                Instant::now() < deadline,
                "port {} still accepts after git daemon was killed",
                self.port
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `git-daemon` in git's exec path (Debian package `git`).
fn git_daemon_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("run `git --exec-path` (Debian package `git`)");
        let dir = String::from_utf8(out.stdout).expect("utf-8 exec path");
        let daemon = Path::new(dir.trim()).join("git-daemon");
        assert!(
            daemon.is_file(),
            "{} is missing; install the Debian package `git`",
            daemon.display()
        );
        daemon
    })
    .clone()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn open(url: &str, fx: &Fixture) -> Repo {
    Repo::open_or_clone(url, "main", &fx.clone_dir())
        .unwrap_or_else(|e| panic!("open_or_clone {url}: {e:?}"))
}

fn fetch(repo: &mut Repo) -> String {
    repo.fetch().unwrap_or_else(|e| panic!("fetch: {e:?}"))
}

fn files(repo: &Repo, commit: &str) -> BTreeMap<String, Vec<u8>> {
    repo.files_at(commit)
        .unwrap_or_else(|e| panic!("files_at {commit}: {e:?}"))
}

fn descends(repo: &Repo, commit: &str, ancestor: &str) -> bool {
    repo.is_descendant(commit, ancestor)
        .unwrap_or_else(|e| panic!("is_descendant({commit}, {ancestor}): {e:?}"))
}

fn set(entries: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    entries
        .iter()
        .map(|(path, bytes)| ((*path).to_owned(), bytes.to_vec()))
        .collect()
}

/// Asserts a failed fetch is "unreachable" and names the URL.
fn assert_unreachable(result: Result<String, SyncError>, url: &str) {
    match result {
        Err(e) => {
            assert!(e.is_unreachable(), "expected unreachable, got {e:?}");
            match &e {
                SyncError::Unreachable { url: shown, .. } => assert_eq!(shown, url),
                other => panic!("expected Unreachable, got {other:?}"),
            }
        }
        Ok(head) => panic!("fetch from a vanished remote returned {head}"),
    }
}

// ---------------------------------------------------------------------------
// Fetching and reading files
// ---------------------------------------------------------------------------

#[test]
fn file_url_clone_fetch_and_read_exact_files() {
    let fx = Fixture::new();
    fx.write("cluster.yaml", b"name: test\n");
    fx.write("topics/orders.yaml", b"name: orders\npartitions: 6\n");
    fx.write("observability/rules/kafka/lag.yaml", b"groups: []\n");
    fx.write("secrets/blob.age", &[0, 159, 146, 150, 255]);
    fx.write("bin/hook.sh", b"#!/bin/sh\n");
    let hook = fx.work().join("bin/hook.sh");
    let mut perms = std::fs::metadata(&hook).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&hook, perms).expect("chmod");
    std::os::unix::fs::symlink("cluster.yaml", fx.work().join("link.yaml")).expect("symlink");
    std::os::unix::fs::symlink("/etc", fx.work().join("etc-link")).expect("symlink");
    std::os::unix::fs::symlink("topics", fx.work().join("topics-link")).expect("symlink");
    fx.git(&["add", "--all"]);
    // A submodule entry (gitlink) pointing at a commit nobody has.
    fx.git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        "160000,0123456789abcdef0123456789abcdef01234567,vendor/sub",
    ]);
    fx.git(&["commit", "--quiet", "-m", "first"]);
    let first = fx.head();
    fx.push();

    let mut repo = open(&fx.file_url(), &fx);
    assert_eq!(fetch(&mut repo), first);
    assert!(!fx.clone_is_shallow(), "file:// cannot be shallow");

    let expected = set(&[
        ("bin/hook.sh", b"#!/bin/sh\n"),
        ("cluster.yaml", b"name: test\n"),
        ("observability/rules/kafka/lag.yaml", b"groups: []\n"),
        ("secrets/blob.age", &[0, 159, 146, 150, 255]),
        ("topics/orders.yaml", b"name: orders\npartitions: 6\n"),
    ]);
    assert_eq!(files(&repo, &first), expected);

    // A second push: the next fetch returns the new head, both commits read.
    fx.write("topics/orders.yaml", b"name: orders\npartitions: 12\n");
    fx.write("topics/payments.yaml", b"name: payments\n");
    std::fs::remove_file(fx.work().join("cluster.yaml")).expect("rm");
    let second = fx.commit("second");
    fx.push();
    assert_eq!(fetch(&mut repo), second);
    let now = files(&repo, &second);
    assert_eq!(
        now.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "bin/hook.sh",
            "observability/rules/kafka/lag.yaml",
            "secrets/blob.age",
            "topics/orders.yaml",
            "topics/payments.yaml",
        ]
    );
    assert_eq!(now["topics/orders.yaml"], b"name: orders\npartitions: 12\n");
    assert_eq!(files(&repo, &first), expected, "old commit still readable");

    // Nothing new: the same head again.
    assert_eq!(fetch(&mut repo), second);

    // Reopening the existing clone needs no network to read what it holds.
    drop(repo);
    let reopened =
        Repo::open_or_clone("file:///nonexistent/elsewhere.git", "main", &fx.clone_dir())
            .expect("reopen the clone");
    assert_eq!(files(&reopened, &first), expected);
    assert!(descends(&reopened, &second, &first));
}

#[test]
fn commit_ids_are_checked() {
    let fx = Fixture::new();
    let head = fx.commit("only");
    fx.push();
    let mut repo = open(&fx.file_url(), &fx);
    fetch(&mut repo);

    let short = &head[..12];
    match repo.files_at(short) {
        Err(SyncError::BadCommitId { commit }) => assert_eq!(commit, short),
        other => panic!("expected BadCommitId, got {other:?}"),
    }
    let absent = "0123456789abcdef0123456789abcdef01234567";
    match repo.files_at(absent) {
        Err(SyncError::NotFound { commit }) => assert_eq!(commit, absent),
        other => panic!("expected NotFound, got {other:?}"),
    }
    match repo.is_descendant(absent, &head) {
        Err(SyncError::NotFound { commit }) => assert_eq!(commit, absent),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // An ancestor the (complete) history lacks is not an ancestor.
    assert!(!descends(&repo, &head, absent));
    // The root tree's id is an object but not a commit.
    let tree = fx.git(&["rev-parse", "HEAD^{tree}"]);
    assert!(
        matches!(repo.files_at(&tree), Err(SyncError::NotFound { .. })),
        "a tree id is not a commit"
    );
}

#[test]
fn oversize_blob_is_refused() {
    let fx = Fixture::new();
    let limit = usize::try_from(MAX_FILE_BYTES).expect("limit fits usize");
    assert_eq!(MAX_FILE_BYTES, 8 * 1024 * 1024);
    fx.write("data/exactly-limit.bin", &vec![b'x'; limit]);
    let at_limit = fx.commit("at the limit");
    fx.write("data/deep/too-big.bin", &vec![b'y'; limit + 1]);
    let over = fx.commit("over the limit");
    fx.push();

    let mut repo = open(&fx.file_url(), &fx);
    assert_eq!(fetch(&mut repo), over);
    let ok = files(&repo, &at_limit);
    assert_eq!(ok["data/exactly-limit.bin"].len(), limit);
    match repo.files_at(&over) {
        Err(SyncError::TooLarge {
            commit,
            path,
            bytes,
            limit: reported,
        }) => {
            assert_eq!(commit, over);
            assert_eq!(path, "data/deep/too-big.bin");
            assert_eq!(bytes, MAX_FILE_BYTES + 1);
            assert_eq!(reported, MAX_FILE_BYTES);
        }
        other => panic!("expected TooLarge, got {:?}", other.map(|f| f.len())),
    }
}

#[test]
fn file_url_descendants_and_force_push() {
    let fx = Fixture::new();
    let c1 = fx.commit("c1");
    fx.push();
    let mut repo = open(&fx.file_url(), &fx);
    assert_eq!(fetch(&mut repo), c1);
    let c2 = fx.commit("c2");
    let c3 = fx.commit("c3");
    fx.push();
    assert_eq!(fetch(&mut repo), c3);

    assert!(descends(&repo, &c3, &c1), "fast-forward over two commits");
    assert!(descends(&repo, &c3, &c2));
    assert!(descends(&repo, &c3, &c3), "a commit descends from itself");
    assert!(
        !descends(&repo, &c1, &c3),
        "an ancestor is not a descendant"
    );

    // Force-push an unrelated history.
    fx.git(&["checkout", "--quiet", "--orphan", "rewrite"]);
    fx.write("other.yaml", b"other: true\n");
    let u1 = fx.commit("unrelated");
    fx.force_push();
    assert_eq!(fetch(&mut repo), u1);
    assert!(!descends(&repo, &u1, &c3));
    assert!(!descends(&repo, &u1, &c1));
    // The history that was force-pushed away stays readable.
    assert!(files(&repo, &c3).is_empty());
    assert_eq!(files(&repo, &u1), set(&[("other.yaml", b"other: true\n")]));

    // A rollback to an older commit is not a descendant either.
    fx.git(&["checkout", "--quiet", "main"]);
    fx.git(&["reset", "--quiet", "--hard", &c2]);
    fx.force_push();
    assert_eq!(fetch(&mut repo), c2);
    assert!(!descends(&repo, &c2, &c3));
}

#[test]
fn missing_branch_and_invalid_branch() {
    let fx = Fixture::new();
    fx.commit("c1");
    fx.push();
    let mut repo = Repo::open_or_clone(&fx.file_url(), "release", &fx.clone_dir())
        .expect("open clone for another branch");
    match repo.fetch() {
        Err(e @ SyncError::BranchMissing { .. }) => {
            assert!(!e.is_unreachable());
            let SyncError::BranchMissing { url, branch } = e else {
                unreachable!()
            };
            assert_eq!(url, fx.file_url());
            assert_eq!(branch, "release");
        }
        other => panic!("expected BranchMissing, got {other:?}"),
    }
    match Repo::open_or_clone(&fx.file_url(), "bad..name", &fx.clone_dir()) {
        Err(SyncError::InvalidBranch { branch }) => assert_eq!(branch, "bad..name"),
        other => panic!("expected InvalidBranch, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The remote going away
// ---------------------------------------------------------------------------

#[test]
fn file_url_repo_deleted_is_unreachable_and_last_commit_stays_readable() {
    let fx = Fixture::new();
    fx.write("a.yaml", b"a\n");
    let c1 = fx.commit("c1");
    fx.push();
    let mut repo = open(&fx.file_url(), &fx);
    assert_eq!(fetch(&mut repo), c1);

    std::fs::remove_dir_all(fx.remote()).expect("delete the remote");
    assert_unreachable(repo.fetch(), &fx.file_url());
    assert_eq!(files(&repo, &c1), set(&[("a.yaml", b"a\n")]));
}

#[test]
fn git_daemon_killed_is_unreachable_and_last_commit_stays_readable() {
    let fx = Fixture::new();
    fx.write("a.yaml", b"a\n");
    let c1 = fx.commit("c1");
    fx.push();
    let mut daemon = GitDaemon::start(&fx.srv());
    let url = daemon.url("remote.git");
    let mut repo = open(&url, &fx);
    assert_eq!(fetch(&mut repo), c1);

    daemon.stop();
    assert_unreachable(repo.fetch(), &url);
    assert_eq!(files(&repo, &c1), set(&[("a.yaml", b"a\n")]));
    assert!(descends(&repo, &c1, &c1));
}

#[test]
fn git_daemon_repo_deleted_is_unreachable_and_last_commit_stays_readable() {
    let fx = Fixture::new();
    fx.write("a.yaml", b"a\n");
    let c1 = fx.commit("c1");
    fx.push();
    let daemon = GitDaemon::start(&fx.srv());
    let url = daemon.url("remote.git");
    let mut repo = open(&url, &fx);
    assert_eq!(fetch(&mut repo), c1);

    std::fs::remove_dir_all(fx.remote()).expect("delete the remote");
    assert_unreachable(repo.fetch(), &url);
    assert_eq!(files(&repo, &c1), set(&[("a.yaml", b"a\n")]));
    drop(daemon);
}

// ---------------------------------------------------------------------------
// git daemon: shallow clone, incremental fetches, ancestry
// ---------------------------------------------------------------------------

#[test]
fn git_daemon_shallow_clone_then_incremental_fetches() {
    let fx = Fixture::new();
    fx.write("v.yaml", b"v: 1\n");
    let c1 = fx.commit("c1");
    fx.write("v.yaml", b"v: 2\n");
    let c2 = fx.commit("c2");
    fx.push();
    let mut daemon = GitDaemon::start(&fx.srv());
    let url = daemon.url("remote.git");
    let mut repo = open(&url, &fx);

    assert_eq!(fetch(&mut repo), c2);
    assert!(
        fx.clone_is_shallow(),
        "the first fetch over git:// is depth 1"
    );
    assert!(
        matches!(repo.files_at(&c1), Err(SyncError::NotFound { .. })),
        "c1 is behind the shallow boundary"
    );
    assert_eq!(files(&repo, &c2), set(&[("v.yaml", b"v: 2\n")]));

    fx.write("v.yaml", b"v: 3\n");
    let c3 = fx.commit("c3");
    fx.write("v.yaml", b"v: 4\n");
    let c4 = fx.commit("c4");
    fx.push();
    assert_eq!(fetch(&mut repo), c4);
    assert_eq!(files(&repo, &c3), set(&[("v.yaml", b"v: 3\n")]));

    // Force-push an unrelated history; the remote then goes away, so these
    // answers must come from the clone alone.
    fx.git(&["checkout", "--quiet", "--orphan", "rewrite"]);
    fx.write("v.yaml", b"rewritten\n");
    let u1 = fx.commit("u1");
    fx.force_push();
    assert_eq!(fetch(&mut repo), u1);
    daemon.stop();

    assert!(
        descends(&repo, &c4, &c2),
        "fast-forward from the shallow head"
    );
    assert!(descends(&repo, &c4, &c3));
    assert!(
        !descends(&repo, &u1, &c4),
        "force-push of unrelated history"
    );
    assert!(!descends(&repo, &u1, &c2));
    assert!(fx.clone_is_shallow(), "no unshallow was needed for those");
    assert_eq!(files(&repo, &c4), set(&[("v.yaml", b"v: 4\n")]));
}

#[test]
fn git_daemon_shallow_clone_fetches_history_to_find_an_older_ancestor() {
    let fx = Fixture::new();
    let c1 = fx.commit("c1");
    let c2 = fx.commit("c2");
    let c3 = fx.commit("c3");
    fx.push();
    let mut daemon = GitDaemon::start(&fx.srv());
    let mut repo = open(&daemon.url("remote.git"), &fx);
    assert_eq!(fetch(&mut repo), c3);
    assert!(fx.clone_is_shallow());

    // The answer needs history behind the boundary, and the remote is down.
    let port = daemon.port;
    daemon.stop();
    match repo.is_descendant(&c3, &c1) {
        Err(e) => assert!(e.is_unreachable(), "expected unreachable, got {e:?}"),
        Ok(answer) => panic!("decided {answer} without the history"),
    }
    assert!(fx.clone_is_shallow());

    // Back up (same port): the full history is fetched once, then decided.
    let _daemon = GitDaemon::start_on(&fx.srv(), Some(port));
    assert!(descends(&repo, &c3, &c1));
    assert!(
        !fx.clone_is_shallow(),
        "the clone now holds the full history"
    );
    assert!(descends(&repo, &c3, &c2));
    assert!(!descends(&repo, &c1, &c3));
    assert!(!descends(
        &repo,
        &c3,
        "0123456789abcdef0123456789abcdef01234567"
    ));
}

#[test]
fn git_daemon_rollback_inside_shallow_history_is_refused() {
    let fx = Fixture::new();
    let c1 = fx.commit("c1");
    let c2 = fx.commit("c2");
    fx.push();
    let daemon = GitDaemon::start(&fx.srv());
    let mut repo = open(&daemon.url("remote.git"), &fx);
    assert_eq!(fetch(&mut repo), c2);

    // Rewrite on top of c1 (behind the boundary): the new head's history is
    // complete in the clone, and it does not contain c2.
    fx.git(&["reset", "--quiet", "--hard", &c1]);
    let r = fx.commit("rewritten on c1");
    fx.force_push();
    assert_eq!(fetch(&mut repo), r);
    assert!(!descends(&repo, &r, &c2));
    assert!(descends(&repo, &r, &c1));
}

// ---------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------

/// Flips one base64 character inside the signature blob of a raw commit's
/// `gpgsig` header (the second-to-last armored line: signature bytes).
fn corrupt_signature(raw: &str) -> String {
    let mut lines: Vec<String> = raw.split('\n').map(str::to_owned).collect();
    let end = lines
        .iter()
        .position(|l| l == " -----END SSH SIGNATURE-----")
        .expect("an SSH-signed commit");
    let line = &mut lines[end - 1];
    let mut chars: Vec<char> = line.chars().collect();
    let at = chars.len() - 10;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    *line = chars.into_iter().collect();
    lines.join("\n")
}

/// Adds a (fake) OpenPGP signature header to an unsigned raw commit.
fn add_gpg_signature(raw: &str) -> String {
    let (headers, message) = raw.split_once("\n\n").expect("commit headers");
    format!(
        "{headers}\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n iQEzBAABCAAdFiEEfakefakefake\n =abcd\n -----END PGP SIGNATURE-----\n\n{message}"
    )
}

#[test]
fn signatures_are_verified() {
    let fx = Fixture::new();
    let ops = fx.keygen("ed25519", "ops", "ops@example");
    let other = fx.keygen("ed25519", "other", "mallory@example");
    let ecdsa = fx.keygen("ecdsa", "ecdsa", "ecdsa@example");
    let rsa = fx.keygen("rsa", "rsa", "rsa@example");

    fx.write("a.yaml", b"1\n");
    let by_ops = fx.commit_signed(&ops, "signed by ops");
    fx.write("a.yaml", b"2\n");
    let unsigned = fx.commit("not signed");
    fx.write("a.yaml", b"3\n");
    let by_other = fx.commit_signed(&other, "signed by other");

    fx.write("a.yaml", b"4\n");
    fx.commit_signed(&ops, "to be tampered with");
    let bad_sig = fx.write_commit(&corrupt_signature(&fx.raw_commit("HEAD")));

    fx.write("a.yaml", b"5\n");
    let genuine = fx.commit_signed(&ops, "apply the reviewed change");
    let edited = fx
        .raw_commit(&genuine)
        .replace("apply the reviewed change", "apply something else");
    let bad_payload = fx.write_commit(&edited);

    fx.write("a.yaml", b"6\n");
    fx.commit("will carry a GPG signature");
    let gpg = fx.write_commit(&add_gpg_signature(&fx.raw_commit("HEAD")));

    fx.write("a.yaml", b"7\n");
    let by_ecdsa = fx.commit_signed(&ecdsa, "signed with ecdsa");
    fx.write("a.yaml", b"8\n");
    let by_rsa = fx.commit_signed(&rsa, "signed with rsa");
    fx.push();

    let mut repo = open(&fx.file_url(), &fx);
    assert_eq!(fetch(&mut repo), by_rsa);
    for commit in [&by_ops, &bad_sig, &bad_payload, &gpg, &by_ecdsa] {
        assert!(
            descends(&repo, &by_rsa, commit),
            "{commit} is in the history"
        );
    }

    let trusted =
        TrustedSigners::parse(&[ops.public.clone(), ecdsa.public.clone(), rsa.public.clone()])
            .expect("parse trusted keys");
    assert!(!trusted.is_empty());

    assert_eq!(
        repo.verify_signature(&by_ops, &trusted)
            .expect("trusted signer"),
        format!("ssh-ed25519 {} ops@example", ops.fingerprint)
    );
    assert_eq!(
        repo.verify_signature(&by_ecdsa, &trusted)
            .expect("ecdsa signer"),
        format!("ecdsa-sha2-nistp256 {} ecdsa@example", ecdsa.fingerprint)
    );
    assert_eq!(
        repo.verify_signature(&by_rsa, &trusted)
            .expect("rsa signer"),
        format!("ssh-rsa {} rsa@example", rsa.fingerprint)
    );

    match repo.verify_signature(&unsigned, &trusted) {
        Err(SyncError::Unsigned { commit }) => assert_eq!(commit, unsigned),
        other => panic!("expected Unsigned, got {other:?}"),
    }
    match repo.verify_signature(&by_other, &trusted) {
        Err(SyncError::UntrustedSigner {
            commit,
            fingerprint,
        }) => {
            assert_eq!(commit, by_other);
            assert_eq!(fingerprint, other.fingerprint);
        }
        other => panic!("expected UntrustedSigner, got {other:?}"),
    }
    for tampered in [&bad_sig, &bad_payload] {
        match repo.verify_signature(tampered, &trusted) {
            Err(SyncError::BadSignature { commit, reason }) => {
                assert_eq!(&commit, tampered);
                assert!(!reason.is_empty());
            }
            other => panic!("expected BadSignature for {tampered}, got {other:?}"),
        }
    }
    match repo.verify_signature(&gpg, &trusted) {
        Err(e @ SyncError::UnsupportedSignature { .. }) => {
            assert!(
                e.to_string().contains("only SSH signatures"),
                "clear message: {e}"
            );
            let SyncError::UnsupportedSignature { commit, .. } = e else {
                unreachable!()
            };
            assert_eq!(commit, gpg);
        }
        other => panic!("expected UnsupportedSignature, got {other:?}"),
    }

    // With no trusted keys every signer is untrusted.
    let nobody = TrustedSigners::parse(&[]).expect("empty list");
    assert!(nobody.is_empty());
    match repo.verify_signature(&by_ops, &nobody) {
        Err(SyncError::UntrustedSigner { fingerprint, .. }) => {
            assert_eq!(fingerprint, ops.fingerprint)
        }
        other => panic!("expected UntrustedSigner, got {other:?}"),
    }
}

#[test]
fn trusted_signers_parse_names_the_bad_line() {
    let fx = Fixture::new();
    let ops = fx.keygen("ed25519", "ops", "ops@example");
    let ok = TrustedSigners::parse(std::slice::from_ref(&ops.public)).expect("one good key");
    assert!(!ok.is_empty());

    for bad in ["", "ssh-ed25519 AAAA-not-base64 x", "not a key at all"] {
        let lines = vec![ops.public.clone(), ops.public.clone(), bad.to_owned()];
        match TrustedSigners::parse(&lines) {
            Err(SyncError::TrustedKey { index, reason }) => {
                assert_eq!(index, 2, "{bad:?}");
                assert!(!reason.is_empty());
            }
            other => panic!("expected TrustedKey for {bad:?}, got {other:?}"),
        }
    }
}

/// The daemon moves a `Repo` into `spawn_blocking` and errors into `anyhow`.
#[test]
fn repo_and_errors_cross_threads() {
    fn send<T: Send + 'static>() {}
    fn send_sync_error<T: std::error::Error + Send + Sync + 'static>() {}
    send::<Repo>();
    send::<TrustedSigners>();
    send_sync_error::<SyncError>();
}

// ---------------------------------------------------------------------------
// Remotes that hang: every fetch is bounded by the fetch timeout
// ---------------------------------------------------------------------------

/// What a [`HangingRemote`] does with each connection it accepts.
#[derive(Clone, Copy, Debug)]
enum Hang {
    /// Reads whatever comes and never answers (the TLS or SSH handshake, the
    /// git or HTTP request all wait for a first byte that never comes).
    Silent,
    /// Answers an HTTP request with the headers of a smart-HTTP ref
    /// advertisement and its first line, then nothing: a stall mid-response.
    AfterHttpHeaders,
    /// Answers an HTTP request with a status line, then one header byte
    /// every 50 ms for as long as the connection lasts: never quiet long
    /// enough for a per-read timeout to fire.
    HttpDrip,
}

/// A TCP server on 127.0.0.1 that accepts connections and hangs them as
/// `Hang` says. Dropping it closes every connection and the port.
struct HangingRemote {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HangingRemote {
    fn start(hang: Hang) -> HangingRemote {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let accepted = Arc::clone(&accepted);
            let stop = Arc::clone(&stop);
            move || {
                let mut connections = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            let stop = Arc::clone(&stop);
                            connections.push(std::thread::spawn(move || {
                                hang_up(stream, hang, &stop);
                            }));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => panic!("accept on 127.0.0.1:{port}: {e}"),
                    }
                }
                for connection in connections {
                    connection.join().expect("connection thread");
                }
            }
        });
        HangingRemote {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, scheme: &str) -> String {
        match scheme {
            "ssh" => format!("ssh://git@127.0.0.1:{}/remote.git", self.port),
            _ => format!("{scheme}://127.0.0.1:{}/remote.git", self.port),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for HangingRemote {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // Not while unwinding from a failed assertion: report that one.
            if thread.join().is_err() && !std::thread::panicking() {
                panic!("the hanging remote's thread panicked");
            }
        }
    }
}

/// Serves one connection as `hang` says until `stop`, then closes it.
fn hang_up(mut stream: TcpStream, hang: Hang, stop: &AtomicBool) {
    const ADVERTISEMENT_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
        Content-Type: application/x-git-upload-pack-advertisement\r\n\
        Cache-Control: no-cache\r\n\
        Content-Length: 4096\r\n\
        \r\n\
        001e# service=git-upload-pack\n0000";
    stream.set_nonblocking(false).expect("blocking stream");
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    let mut request = Vec::new();
    let mut buf = [0_u8; 4096];
    let mut answered = false;
    while !stop.load(Ordering::SeqCst) {
        match std::io::Read::read(&mut stream, &mut buf) {
            Ok(0) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
        let http_request = request.windows(4).any(|w| w == b"\r\n\r\n");
        let sent = match hang {
            Hang::Silent => Ok(()),
            Hang::AfterHttpHeaders if http_request && !answered => {
                answered = true;
                stream.write_all(ADVERTISEMENT_HEAD)
            }
            Hang::HttpDrip if http_request && !answered => {
                answered = true;
                stream.write_all(b"HTTP/1.1 200 OK\r\nX-Drip: ")
            }
            Hang::HttpDrip if answered => stream.write_all(b"."),
            Hang::AfterHttpHeaders | Hang::HttpDrip => Ok(()),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Asserts a fetch gave up with `TimedOut`, as unreachable, naming the URL
/// and the timeout.
fn assert_timed_out(result: Result<String, SyncError>, url: &str, timeout: Duration) {
    match result {
        Err(e) => {
            assert!(e.is_unreachable(), "expected unreachable, got {e:?}");
            match &e {
                SyncError::TimedOut {
                    url: shown,
                    timeout: limit,
                } => {
                    assert_eq!(shown, url);
                    assert_eq!(*limit, timeout);
                }
                other => panic!("expected TimedOut, got {other:?}"),
            }
            let message = e.to_string();
            assert!(
                message.contains(url) && message.contains("did not finish within"),
                "{message}"
            );
        }
        Ok(head) => panic!("fetch from a hanging remote returned {head}"),
    }
}

/// Fetches and asserts the fetch timed out no earlier than its timeout and
/// well within a generous bound.
fn assert_fetch_times_out(repo: &mut Repo, url: &str) {
    let timeout = repo.fetch_timeout();
    let started = Instant::now();
    let result = repo.fetch();
    let took = started.elapsed();
    assert_timed_out(result, url, timeout);
    assert!(
        took >= timeout,
        "gave up after {took:?}, before {timeout:?}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?} to give up");
}

/// A fresh clone of `url` in a temporary directory, with a 1 s fetch timeout.
fn open_with_short_timeout(url: &str) -> (tempfile::TempDir, Repo) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = Repo::open_or_clone(url, "main", &tmp.path().join("repo"))
        .unwrap_or_else(|e| panic!("open_or_clone {url}: {e:?}"))
        .with_fetch_timeout(Duration::from_secs(1));
    (tmp, repo)
}

/// Starts a silent remote, fetches from it over `scheme` and checks the
/// fetch times out and had connected.
fn silent_remote_times_out(scheme: &str) {
    let remote = HangingRemote::start(Hang::Silent);
    let url = remote.url(scheme);
    let (_tmp, mut repo) = open_with_short_timeout(&url);
    assert_fetch_times_out(&mut repo, &url);
    assert!(remote.accepted() >= 1, "the fetch never connected");
}

#[test]
fn silent_git_remote_times_out_and_the_last_commit_stays_readable() {
    let fx = Fixture::new();
    fx.write("a.yaml", b"a\n");
    let c1 = fx.commit("c1");
    fx.push();
    let mut repo = open(&fx.file_url(), &fx);
    assert_eq!(fetch(&mut repo), c1);
    assert_eq!(
        repo.fetch_timeout(),
        kraftops_agent::sync::DEFAULT_FETCH_TIMEOUT
    );
    drop(repo);

    // The configured URL now points at a remote that accepts and says nothing.
    let remote = HangingRemote::start(Hang::Silent);
    let url = remote.url("git");
    let mut repo = open(&url, &fx).with_fetch_timeout(Duration::from_secs(2));
    assert_fetch_times_out(&mut repo, &url);
    assert!(remote.accepted() >= 1, "the fetch never connected");
    assert_eq!(files(&repo, &c1), set(&[("a.yaml", b"a\n")]));
    assert!(descends(&repo, &c1, &c1));
}

#[test]
fn silent_http_remote_times_out() {
    silent_remote_times_out("http");
}

/// The TLS handshake (OpenSSL) waits for a ServerHello that never comes.
#[test]
fn silent_https_remote_times_out() {
    silent_remote_times_out("https");
}

/// The SSH handshake (libssh2) waits for a server banner that never comes.
#[test]
fn silent_ssh_remote_times_out() {
    silent_remote_times_out("ssh");
}

#[test]
fn http_remote_stalling_mid_response_times_out() {
    let remote = HangingRemote::start(Hang::AfterHttpHeaders);
    let url = remote.url("http");
    let (_tmp, mut repo) = open_with_short_timeout(&url);
    assert_fetch_times_out(&mut repo, &url);
    assert!(remote.accepted() >= 1, "the fetch never connected");
}

#[test]
fn http_remote_dripping_its_answer_times_out() {
    let remote = HangingRemote::start(Hang::HttpDrip);
    let url = remote.url("http");
    let (_tmp, mut repo) = open_with_short_timeout(&url);
    assert_fetch_times_out(&mut repo, &url);
    assert!(remote.accepted() >= 1, "the fetch never connected");
}

#[test]
fn hung_fetches_are_capped_and_end_when_the_remote_closes() {
    let remote = HangingRemote::start(Hang::Silent);
    let url = remote.url("git");
    let (_tmp, repo) = open_with_short_timeout(&url);
    let mut repo = repo.with_fetch_timeout(Duration::from_millis(500));
    for _ in 0..kraftops_agent::sync::MAX_HUNG_FETCHES {
        assert_fetch_times_out(&mut repo, &url);
    }
    // As many fetches as allowed still hang: the next fails at once.
    let started = Instant::now();
    match repo.fetch() {
        Err(e @ SyncError::FetchesHung { .. }) => {
            assert!(e.is_unreachable(), "{e:?}");
            let message = e.to_string();
            assert!(message.contains(&url), "{message}");
            assert!(
                message.starts_with(&format!(
                    "{} earlier fetches",
                    kraftops_agent::sync::MAX_HUNG_FETCHES
                )),
                "{message}"
            );
        }
        other => panic!("expected FetchesHung, got {other:?}"),
    }
    assert!(started.elapsed() < repo.fetch_timeout());
    assert_eq!(
        remote.accepted(),
        kraftops_agent::sync::MAX_HUNG_FETCHES,
        "no new connection once the cap is reached"
    );

    // The remote closes its connections and its port: the hung fetches end,
    // and fetching resumes (and finds the port closed).
    drop(remote);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match repo.fetch() {
            Err(SyncError::FetchesHung { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            result => {
                assert_unreachable(result, &url);
                break;
            }
        }
    }
}
