//! Test support: moto's EC2 emulator as a real process, the real
//! `kraftops-bootstrap` binary, the example repository, and reading EC2
//! state back with the Rust SDK.

#![allow(dead_code, clippy::unwrap_used, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::Filter;

pub const REGION: &str = "eu-central-1";
pub const MOTO_SEED: u32 = 4242;

/// The example repository and its (example-only) identity.
pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed")
}

pub fn identity_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../desired-state/examples/seed.example-only.age-identity")
}

/// Where moto_server is: `KRAFTOPS_MOTO_SERVER`, or the venv
/// `scripts/install-moto` makes. Missing is a failure, not a skip.
pub fn moto_server() -> PathBuf {
    let path = std::env::var_os("KRAFTOPS_MOTO_SERVER").map_or_else(
        || {
            let venv = std::env::var_os("KRAFTOPS_VENV")
                .map_or_else(|| PathBuf::from("/var/cache/kraftops/venv"), PathBuf::from);
            venv.join("bin/moto_server")
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "moto_server not found at {}: run scripts/install-moto (it installs moto[server,ec2]==5.2.5 into \
         ${{KRAFTOPS_VENV:-/var/cache/kraftops/venv}}), or set KRAFTOPS_MOTO_SERVER to a moto_server",
        path.display()
    );
    path
}

/// The images the emulator knows: two Debian 12 builds of the example's
/// owner (the newer must win), a newer image of another name, and an image
/// of the right name from another owner.
const IMAGES: &str = r#"[
  {"ami_id": "ami-0deb12old", "name": "debian-12-amd64-20250101-1980", "owner_id": "136693071363",
   "creation_date": "2025-01-01T10:00:00.000Z", "root_device_name": "/dev/xvda", "root_device_type": "ebs",
   "state": "available", "public": true, "architecture": "x86_64", "virtualization_type": "hvm",
   "image_type": "machine", "hypervisor": "xen", "sriov": "simple", "description": "Debian 12 (20250101-1980)"},
  {"ami_id": "ami-0deb12new", "name": "debian-12-amd64-20251101-2288", "owner_id": "136693071363",
   "creation_date": "2025-11-01T10:00:00.000Z", "root_device_name": "/dev/xvda", "root_device_type": "ebs",
   "state": "available", "public": true, "architecture": "x86_64", "virtualization_type": "hvm",
   "image_type": "machine", "hypervisor": "xen", "sriov": "simple", "description": "Debian 12 (20251101-2288)"},
  {"ami_id": "ami-0deb13", "name": "debian-13-amd64-20251201-1", "owner_id": "136693071363",
   "creation_date": "2025-12-01T10:00:00.000Z", "root_device_name": "/dev/xvda", "root_device_type": "ebs",
   "state": "available", "public": true, "architecture": "x86_64", "virtualization_type": "hvm",
   "image_type": "machine", "hypervisor": "xen", "sriov": "simple", "description": "Debian 13"},
  {"ami_id": "ami-0impostor", "name": "debian-12-amd64-20260101-9999", "owner_id": "999999999999",
   "creation_date": "2026-01-01T10:00:00.000Z", "root_device_name": "/dev/sda1", "root_device_type": "ebs",
   "state": "available", "public": true, "architecture": "x86_64", "virtualization_type": "hvm",
   "image_type": "machine", "hypervisor": "xen", "sriov": "simple", "description": "not Debian's"}
]"#;

/// The image the example must resolve to.
pub const NEWEST_DEBIAN_12: &str = "ami-0deb12new";

/// A moto_server on 127.0.0.1, killed when dropped.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    pub recording: PathBuf,
}

fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    l.local_addr().unwrap().port()
}

impl Moto {
    /// Starts a fresh emulator on a free port.
    pub fn start() -> Moto {
        Self::start_on(free_port()).unwrap()
    }

    /// Starts an emulator on `port`; `None` if it could not listen there.
    pub fn start_on(port: u16) -> Option<Moto> {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images.json");
        std::fs::write(&images, IMAGES).unwrap();
        let recording = dir.path().join("recording.jsonl");
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_AMIS_PATH", &images)
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .env_remove("MOTO_ENABLE_RECORDING")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut moto = Moto {
            child: Some(child),
            port,
            dir,
            recording,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                moto.warm_up();
                return Some(moto);
            }
            if let Some(child) = moto.child.as_mut()
                && child.try_wait().unwrap().is_some()
            {
                moto.child = None;
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port} within 60 s:\n{}",
                moto.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// SIGKILL: the emulator and everything it held in memory are gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A request to moto's own API (`/moto-api/...`).
    pub fn api(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        self.request(method, path, "", body)
    }

    fn request(&self, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// moto imports its EC2 code on the first EC2 request (about 9 s on
    /// a 2-core machine); do that now, in a region the tests do not use, so
    /// the timings of the commands under test are their own.
    fn warm_up(&self) {
        let auth = "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-west-2/ec2/aws4_request, SignedHeaders=host, Signature=0\r\n\
                    Content-Type: application/x-www-form-urlencoded\r\n";
        let (status, body) = self.request(
            "POST",
            "/",
            auth,
            b"Action=DescribeRegions&Version=2016-11-15",
        );
        assert_eq!(status, 200, "warm-up DescribeRegions: {body}");
    }

    /// Makes moto's ids deterministic from here on.
    pub fn seed(&self, seed: u32) {
        let (status, body) = self.api("POST", &format!("/moto-api/seed?a={seed}"), b"");
        assert_eq!(status, 200, "seed: {body}");
    }

    pub fn start_recording(&self) {
        let (status, body) = self.api("POST", "/moto-api/recorder/start-recording", b"");
        assert_eq!(status, 200, "start-recording: {body}");
    }

    /// Loads a recording and replays every request in it.
    pub fn replay(&self, recording: &[u8]) {
        let (status, body) = self.api("POST", "/moto-api/recorder/upload-recording", recording);
        assert_eq!(status, 200, "upload-recording: {body}");
        let (status, body) = self.api("POST", "/moto-api/recorder/replay-recording", b"");
        assert_eq!(status, 200, "replay-recording: {body}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command line for the real binary, with static fake credentials and
/// nothing from this machine's AWS configuration.
pub fn bootstrap_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kraftops-bootstrap"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", "/nonexistent/config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null());
    cmd
}

/// Runs the binary to the end.
pub fn bootstrap(args: &[&str]) -> Output {
    let out = bootstrap_command(args).output().unwrap();
    eprintln!(
        "$ kraftops-bootstrap {}\n--- exit {:?}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `apply`, `plan` or `destroy` of `dir` against `endpoint`.
pub fn run(command: &str, dir: &Path, endpoint: &str, extra: &[&str]) -> Output {
    let identity = identity_file();
    let mut args = vec![command, dir.to_str().unwrap(), "--endpoint-url", endpoint];
    if command != "destroy" {
        args.extend(["--identity", identity.to_str().unwrap()]);
    }
    args.extend(extra);
    bootstrap(&args)
}

pub fn assert_success(o: &Output) {
    assert!(
        o.status.success(),
        "failed ({:?}):\n{}\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

/// Copies the example repository into a temporary directory.
pub fn example_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example_dir(), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Replaces `from` (which must occur) by `to` in a repository file.
pub fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no {from:?}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

/// The 1-based line and column of `value` on the first line containing `line_has`.
pub fn position(dir: &Path, file: &str, line_has: &str, value: &str) -> (usize, usize) {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let (n, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(line_has))
        .unwrap();
    (n + 1, line.find(value).unwrap() + 1)
}

/// An SDK client for the emulator.
pub fn client(endpoint: &str) -> aws_sdk_ec2::Client {
    let config = aws_sdk_ec2::config::Builder::new()
        .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
        .region(aws_sdk_ec2::config::Region::new(REGION))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn cluster_filter(cluster: &str) -> Filter {
    Filter::builder()
        .name("tag:kraftops:cluster")
        .values(cluster)
        .build()
}

/// What is tagged for a cluster, as counts and ids (live machines only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub vpcs: Vec<String>,
    pub subnets: Vec<String>,
    pub internet_gateways: Vec<String>,
    pub route_tables: Vec<String>,
    pub security_groups: Vec<String>,
    /// (node tag, instance id, state) of machines not terminated.
    pub instances: Vec<(String, String, String)>,
    pub volumes: Vec<String>,
}

impl Inventory {
    pub fn is_empty(&self) -> bool {
        self.vpcs.is_empty()
            && self.subnets.is_empty()
            && self.internet_gateways.is_empty()
            && self.route_tables.is_empty()
            && self.security_groups.is_empty()
            && self.instances.is_empty()
    }
}

pub async fn inventory(c: &aws_sdk_ec2::Client, cluster: &str) -> Inventory {
    let f = cluster_filter(cluster);
    let mut vpcs: Vec<String> = c
        .describe_vpcs()
        .filters(f.clone())
        .send()
        .await
        .unwrap()
        .vpcs()
        .iter()
        .filter_map(|v| v.vpc_id().map(str::to_owned))
        .collect();
    let mut subnets: Vec<String> = c
        .describe_subnets()
        .filters(f.clone())
        .send()
        .await
        .unwrap()
        .subnets()
        .iter()
        .filter_map(|v| v.subnet_id().map(str::to_owned))
        .collect();
    let mut internet_gateways: Vec<String> = c
        .describe_internet_gateways()
        .filters(f.clone())
        .send()
        .await
        .unwrap()
        .internet_gateways()
        .iter()
        .filter_map(|v| v.internet_gateway_id().map(str::to_owned))
        .collect();
    let mut route_tables: Vec<String> = c
        .describe_route_tables()
        .filters(f.clone())
        .send()
        .await
        .unwrap()
        .route_tables()
        .iter()
        .filter_map(|v| v.route_table_id().map(str::to_owned))
        .collect();
    let mut security_groups: Vec<String> = c
        .describe_security_groups()
        .filters(f.clone())
        .send()
        .await
        .unwrap()
        .security_groups()
        .iter()
        .filter_map(|v| v.group_id().map(str::to_owned))
        .collect();
    let mut instances: Vec<(String, String, String)> = c
        .describe_instances()
        .filters(f.clone())
        .send()
        .await
        .unwrap()
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
        .map(|i| {
            let node = i
                .tags()
                .iter()
                .find(|t| t.key() == Some("kraftops:node"))
                .and_then(|t| t.value())
                .unwrap_or_default()
                .to_owned();
            (
                node,
                i.instance_id().unwrap_or_default().to_owned(),
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let mut volumes: Vec<String> = c
        .describe_volumes()
        .filters(f)
        .send()
        .await
        .unwrap()
        .volumes()
        .iter()
        .filter_map(|v| v.volume_id().map(str::to_owned))
        .collect();
    vpcs.sort();
    subnets.sort();
    internet_gateways.sort();
    route_tables.sort();
    security_groups.sort();
    instances.sort();
    volumes.sort();
    Inventory {
        vpcs,
        subnets,
        internet_gateways,
        route_tables,
        security_groups,
        instances,
        volumes,
    }
}

/// A TCP listener that stands in for an AWS endpoint: it counts the
/// connections made to it and closes each at once (so a client that does
/// call fails fast instead of waiting for an answer).
pub struct Tripwire {
    pub addr: SocketAddr,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Tripwire {
    pub fn new() -> Tripwire {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(stream);
            }
        });
        Tripwire { addr, count }
    }
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// How many connections were made so far.
    pub fn connections(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Reads a child's stderr line by line on a thread.
pub fn lines_of(stream: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
