//! The host side of local mode: commands, the bridge, network namespaces,
//! overlay mounts and the processes the harness starts. Every function
//! here is idempotent where it removes something, so `local down` can run
//! after a crash at any point.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Runs `cmd` and returns its stdout; a failure names the command and
/// carries its stderr.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd`, ignoring failure (cleanup of what may not exist).
pub(crate) fn run_quietly(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

pub(crate) fn link_exists(name: &str) -> bool {
    run_quietly(Command::new("ip").args(["link", "show", "dev", name]))
}

/// The bridge `name` with `address/prefix`, up.
pub(crate) fn ensure_bridge(name: &str, address: &str) -> anyhow::Result<()> {
    if !link_exists(name) {
        ip(&["link", "add", name, "type", "bridge"])?;
    }
    ip(&["addr", "replace", address, "dev", name])?;
    ip(&["link", "set", name, "up"])?;
    Ok(())
}

pub(crate) fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// A fresh network namespace `netns` joined to `bridge` by a veth pair
/// (`host_if` on the bridge, `eth0` inside) with `address` (CIDR form) on
/// `eth0`. No default route: the node reaches only the bridge's segment.
pub(crate) fn node_network(
    netns: &str,
    bridge: &str,
    host_if: &str,
    address: &str,
) -> anyhow::Result<()> {
    if netns_exists(netns) {
        ip(&["netns", "del", netns])?;
    }
    if link_exists(host_if) {
        ip(&["link", "del", host_if])?;
    }
    ip(&["netns", "add", netns])?;
    ip(&[
        "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns,
    ])?;
    ip(&["link", "set", host_if, "master", bridge, "up"])?;
    ip(&["-n", netns, "addr", "add", address, "dev", "eth0"])?;
    ip(&["-n", netns, "link", "set", "eth0", "up"])?;
    ip(&["-n", netns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Removes every network namespace whose name starts with `prefix`, and
/// the veths that went with them.
pub(crate) fn remove_namespaces(prefix: &str) -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix)
                && run_quietly(Command::new("ip").args(["netns", "del", &name]))
            {
                removed.push(name);
            }
        }
    }
    removed
}

/// Whether `path` is a mount point (an entry of /proc/self/mountinfo).
pub(crate) fn is_mounted(path: &Path) -> bool {
    mount_points().iter().any(|m| m.as_path() == path)
}

/// Every mount point, from /proc/self/mountinfo.
pub(crate) fn mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount(p)))
        .collect()
}

fn unescape_mount(p: &str) -> String {
    p.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\134", "\\")
}

/// An overlay of the host's root at `root` (upper and work dirs beside it).
pub(crate) fn mount_overlay(upper: &Path, work: &Path, root: &Path) -> anyhow::Result<()> {
    for d in [upper, work, root] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    if is_mounted(root) {
        return Ok(());
    }
    run(Command::new("mount")
        .args([
            "-t",
            "overlay",
            "overlay",
            "-o",
            &format!(
                "lowerdir=/,upperdir={},workdir={}",
                upper.display(),
                work.display()
            ),
        ])
        .arg(root))?;
    Ok(())
}

/// Unmounts every mount at or below `dir`, deepest first; lazily if busy.
pub(crate) fn unmount_below(dir: &Path) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    let mut done = Vec::new();
    for m in mounts {
        if run_quietly(Command::new("umount").arg(&m))
            || run_quietly(Command::new("umount").arg("-l").arg(&m))
        {
            done.push(m);
        }
    }
    done
}

/// Processes whose command line contains `needle` (as one argument or as
/// part of one), excluding this process.
pub(crate) fn processes_matching(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

pub(crate) fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
}

pub(crate) fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// SIGTERM to each of `pids`, then SIGKILL to whatever is left after
/// `grace`. Returns when all are gone (or after one more second).
pub(crate) fn terminate(pids: &[u32], grace: Duration) {
    use nix::sys::signal::Signal;
    for &p in pids {
        signal(p, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(200));
    }
    for &p in pids.iter().filter(|&&p| alive(p)) {
        signal(p, Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first child of `pid` (the container's PID 1 for systemd-nspawn).
pub(crate) fn first_child(pid: u32) -> Option<u32> {
    let dir = format!("/proc/{pid}/task");
    let tasks = fs::read_dir(dir).ok()?;
    for t in tasks.flatten() {
        if let Ok(children) = fs::read_to_string(t.path().join("children"))
            && let Some(first) = children.split_whitespace().next()
        {
            return first.parse().ok();
        }
    }
    None
}

/// Whether the filesystem at `path` is a tmpfs.
pub(crate) fn is_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}
