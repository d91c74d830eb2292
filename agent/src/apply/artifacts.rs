//! Downloads the plan needs (the Kafka distribution, the JMX exporter jar):
//! fetched, verified against a SHA-512 before anything changes, then
//! installed atomically. Tarballs unpack into a versioned sibling directory
//! and `install_to` is a symlink switched to it; single files are renamed
//! into place. Debian packages go through apt, on the node itself only.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use roles::{AptPackage, Artifact};
use sha2::{Digest, Sha512};

use super::atomic::{self, Ownership};
use super::command;
use super::error::{ApplyError, DownloadError};
use super::state::{ArtifactRecord, RunningVersion};
use super::{Applier, ApplyReport, ChangeAction, StatusCache, change_action};

/// A digest file is a few hundred bytes; anything much larger is not one.
const DIGEST_FILE_LIMIT: u64 = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Kafka's distribution is about 120 MB.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const APT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

// ------------------------------------------------------------ digests

/// A SHA-512 in any case, possibly spaced: 128 hex digits, lowercased.
fn normalize_sha512(text: &str) -> Option<String> {
    let hex: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    (hex.len() == 128 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// The SHA-512 a digest file gives for `file_name`, lowercased. Accepts
/// coreutils' `<hex>  <name>` (one or many lines; `*<name>` too; a lone
/// digest), BSD's `SHA512 (<name>) = <hex>`, and Apache's
/// `gpg --print-md SHA512` output (`<name>: 7A1B 2C3D …` spread over
/// several lines), in any case.
pub fn parse_sha512_file(text: &str, file_name: &str) -> Option<String> {
    // coreutils
    let mut candidates = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let Some(hex) = words
            .next()
            .and_then(|w| normalize_sha512(w).filter(|_| w.len() == 128))
        {
            candidates.push((hex, words.next().map(|n| n.trim_start_matches('*'))));
        }
    }
    if let Some((hex, _)) = candidates.iter().find(|(_, name)| *name == Some(file_name)) {
        return Some(hex.clone());
    }
    if let [(hex, _)] = candidates.as_slice() {
        return Some(hex.clone());
    }
    if !candidates.is_empty() {
        // Several digests, none for this file: do not guess.
        return None;
    }
    // BSD
    let trimmed = text.trim();
    if let Some(rest) = trimmed
        .strip_prefix("SHA512 (")
        .or_else(|| trimmed.strip_prefix("SHA512("))
    {
        return rest
            .rsplit_once('=')
            .and_then(|(_, hex)| normalize_sha512(hex));
    }
    // gpg --print-md: everything after the first colon is the digest.
    trimmed
        .split_once(':')
        .and_then(|(_, hex)| normalize_sha512(hex))
}

/// The last path segment of a URL, for matching digest file lines.
fn url_file_name(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

/// A readable stream of the bytes at `url`: `https://`, `file://` or a local path.
fn open_source(artifact: &str, url: &str, timeout: Duration) -> Result<Box<dyn Read>, ApplyError> {
    let download = |source: DownloadError| ApplyError::Download {
        artifact: artifact.to_owned(),
        url: url.to_owned(),
        source,
    };
    if let Some(path) = url.strip_prefix("file://") {
        let file = File::open(path).map_err(|e| download(e.into()))?;
        return Ok(Box::new(BufReader::new(file)));
    }
    if url.starts_with("https://") {
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            .build()
            .map_err(|e| download(e.into()))?;
        let response = client
            .get(url)
            .send()
            .and_then(reqwest::blocking::Response::error_for_status)
            .map_err(|e| download(e.into()))?;
        return Ok(Box::new(response));
    }
    if url.starts_with('/') && !url.contains("://") {
        let file = File::open(url).map_err(|e| download(e.into()))?;
        return Ok(Box::new(BufReader::new(file)));
    }
    Err(ApplyError::UnsupportedUrl {
        artifact: artifact.to_owned(),
        url: url.to_owned(),
    })
}

/// The digest the artifact must have: `sha512` when pinned in git, else the
/// one `sha512_url` publishes.
fn expected_digest(a: &Artifact) -> Result<String, ApplyError> {
    let digest_error = |reason: String| ApplyError::Digest {
        artifact: a.name.clone(),
        reason,
    };
    if let Some(pinned) = &a.sha512 {
        return normalize_sha512(pinned)
            .ok_or_else(|| digest_error("sha512 is not 128 hexadecimal digits".to_owned()));
    }
    let Some(url) = &a.sha512_url else {
        return Err(digest_error(
            "neither sha512 nor sha512_url is given".to_owned(),
        ));
    };
    let mut text = String::new();
    open_source(&a.name, url, CONNECT_TIMEOUT * 2)?
        .take(DIGEST_FILE_LIMIT + 1)
        .read_to_string(&mut text)
        .map_err(|e| ApplyError::Download {
            artifact: a.name.clone(),
            url: url.clone(),
            source: e.into(),
        })?;
    if text.len() as u64 > DIGEST_FILE_LIMIT {
        return Err(ApplyError::Download {
            artifact: a.name.clone(),
            url: url.clone(),
            source: DownloadError::TooLarge(DIGEST_FILE_LIMIT),
        });
    }
    parse_sha512_file(&text, url_file_name(&a.url))
        .ok_or_else(|| digest_error(format!("no SHA-512 for {} in {url}", url_file_name(&a.url))))
}

fn sha512_hex(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(Sha512::digest(bytes))
}

/// The SHA-512 of a regular file; `None` when it is missing or not a file.
fn sha512_of_file(path: &Path) -> Result<Option<String>, ApplyError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ApplyError::io("inspecting", path)(e)),
    };
    if !meta.is_file() {
        return Ok(None);
    }
    let mut file = File::open(path).map_err(ApplyError::io("reading", path))?;
    let mut hasher = Sha512::new();
    io::copy(&mut file, &mut hasher).map_err(ApplyError::io("reading", path))?;
    Ok(Some(hex::encode(hasher.finalize())))
}

/// Downloads into a new temporary file in `dir`, hashing on the way, and
/// keeps it only when its digest is `expected`.
fn download_verified(
    a: &Artifact,
    dir: &Path,
    expected: &str,
) -> Result<(File, PathBuf), ApplyError> {
    let (mut file, temp) = atomic::create_temp(dir, "download")?;
    let result = (|| {
        let mut source = open_source(&a.name, &a.url, DOWNLOAD_TIMEOUT)?;
        let mut hasher = Sha512::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ApplyError::Download {
                        artifact: a.name.clone(),
                        url: a.url.clone(),
                        source: e.into(),
                    });
                }
            };
            let chunk = buf.get(..n).unwrap_or_default();
            hasher.update(chunk);
            file.write_all(chunk)
                .map_err(ApplyError::io("writing", &temp))?;
        }
        let actual = hex::encode(hasher.finalize());
        if actual != expected {
            return Err(ApplyError::DigestMismatch {
                artifact: a.name.clone(),
                expected: expected.to_owned(),
                actual,
            });
        }
        file.sync_all().map_err(ApplyError::io("syncing", &temp))
    })();
    match result {
        Ok(()) => Ok((file, temp)),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

// ------------------------------------------------------------ tarballs

/// Unpacks a `.tar.gz` below `staging`, refusing any entry that could land
/// outside it (absolute paths, `..`, links leaving the archive's directory,
/// devices), and returns the archive's single top directory.
pub(crate) fn unpack_tarball(
    artifact: &str,
    archive: &Path,
    staging: &Path,
) -> Result<PathBuf, ApplyError> {
    let unpack_error = |path: &Path| {
        let path = path.to_owned();
        let artifact = artifact.to_owned();
        move |source| ApplyError::Unpack {
            artifact,
            path,
            source,
        }
    };
    let refuse = |entry: &Path, reason| ApplyError::UnsafeArchiveEntry {
        artifact: artifact.to_owned(),
        entry: entry.display().to_string(),
        reason,
    };
    let file = File::open(archive).map_err(unpack_error(archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    tar.set_preserve_permissions(false);
    tar.set_preserve_ownerships(false);
    tar.set_unpack_xattrs(false);
    tar.set_mask(0o022);
    let mut top: Option<std::ffi::OsString> = None;
    for entry in tar.entries().map_err(unpack_error(archive))? {
        let mut entry = entry.map_err(unpack_error(archive))?;
        let path = entry.path().map_err(unpack_error(archive))?.into_owned();
        let mut parts = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(p) => parts.push(p.to_owned()),
                Component::CurDir => {}
                Component::ParentDir => return Err(refuse(&path, "it has a `..` component")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refuse(&path, "it is an absolute path"));
                }
            }
        }
        let Some(first) = parts.first() else {
            continue; // "./"
        };
        match &top {
            None => top = Some(first.clone()),
            Some(t) if t != first => {
                return Err(ApplyError::ArchiveLayout {
                    artifact: artifact.to_owned(),
                    reason: format!(
                        "the archive has more than one top-level entry ({} and {})",
                        Path::new(t).display(),
                        Path::new(first).display()
                    ),
                });
            }
            Some(_) => {}
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            // fine anywhere inside
        } else if kind.is_file() || kind.is_contiguous() {
            if parts.len() == 1 {
                return Err(ApplyError::ArchiveLayout {
                    artifact: artifact.to_owned(),
                    reason: format!("top-level entry {} is not a directory", path.display()),
                });
            }
        } else if kind.is_symlink() || kind.is_hard_link() {
            let link = entry
                .link_name()
                .map_err(unpack_error(archive))?
                .ok_or_else(|| refuse(&path, "a link without a target"))?
                .into_owned();
            // Symlinks resolve from the link's directory, hard links from
            // the archive root: neither may leave the top directory.
            let mut depth: i64 = if kind.is_symlink() {
                parts.len() as i64 - 1
            } else {
                0
            };
            let mut first_part = true;
            for c in link.components() {
                match c {
                    Component::Normal(p) => {
                        if kind.is_hard_link() && first_part && Some(p) != top.as_deref() {
                            return Err(refuse(
                                &path,
                                "a hard link to outside the archive's directory",
                            ));
                        }
                        depth += 1;
                    }
                    Component::CurDir => {}
                    Component::ParentDir => depth -= 1,
                    Component::RootDir | Component::Prefix(_) => {
                        return Err(refuse(&path, "a link to an absolute path"));
                    }
                }
                first_part = false;
                if depth < 1 {
                    return Err(refuse(&path, "a link to outside the archive's directory"));
                }
            }
        } else {
            return Err(refuse(&path, "not a file, directory or link"));
        }
        let unpacked = entry.unpack_in(staging).map_err(unpack_error(staging))?;
        if !unpacked {
            return Err(refuse(&path, "it would land outside the target"));
        }
    }
    let top = top.ok_or_else(|| ApplyError::ArchiveLayout {
        artifact: artifact.to_owned(),
        reason: "the archive is empty".to_owned(),
    })?;
    let dir = staging.join(&top);
    if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return Err(ApplyError::ArchiveLayout {
            artifact: artifact.to_owned(),
            reason: format!("top-level entry {} is not a directory", dir.display()),
        });
    }
    Ok(dir)
}

/// fsync every file and directory below `dir` (and `dir`), so a renamed
/// install directory is complete after a power loss, not just a crash.
fn sync_tree(dir: &Path) -> Result<(), ApplyError> {
    for entry in fs::read_dir(dir).map_err(ApplyError::io("listing", dir))? {
        let entry = entry.map_err(ApplyError::io("listing", dir))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(ApplyError::io("inspecting", &path))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(ApplyError::io("syncing", &path))?;
        }
    }
    atomic::fsync_dir(dir)
}

/// `<install_to>-<first 12 digits of the SHA-512>`: the file name of the
/// versioned directory a tarball unpacks into (a sibling of `install_to`).
fn versioned_name(install_to: &Path, sha512: &str) -> String {
    let base = install_to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{base}-{}", sha512.get(..12).unwrap_or(sha512))
}

/// The node path of a sibling of `node_path` called `name`.
fn sibling(node_path: &str, name: &str) -> String {
    match node_path.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => name.to_owned(),
    }
}

fn link_target(path: &Path) -> Option<String> {
    fs::read_link(path)
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

// ------------------------------------------------------------ apt

/// The apt source list file the agent writes for an apt artifact.
pub(crate) fn apt_source_path(artifact: &str) -> String {
    format!("/etc/apt/sources.list.d/kraftops-{artifact}.list")
}

/// The installed version of `package`, if it is installed.
fn dpkg_version(artifact: &str, pkg: &AptPackage) -> Result<Option<String>, ApplyError> {
    let mut cmd = Command::new("dpkg-query");
    cmd.args(["--show", "--showformat=${Status}\t${Version}", "--"])
        .arg(&pkg.package);
    match command::run(cmd, Duration::from_secs(60)) {
        Ok(out) => {
            let (status, version) = out.stdout.split_once('\t').unwrap_or((&out.stdout, ""));
            Ok(status
                .ends_with(" installed")
                .then(|| version.trim().to_owned()))
        }
        // Exit status 1: no such package known to dpkg.
        Err(super::error::CommandError::Failed { status, .. }) if status == "exit status: 1" => {
            Ok(None)
        }
        Err(source) => Err(ApplyError::Apt {
            artifact: artifact.to_owned(),
            package: pkg.package.clone(),
            source,
        }),
    }
}

// ------------------------------------------------------------ installing

impl Applier {
    /// Installs one artifact if it is not installed with its digest already.
    /// Verification happens before anything on disk changes; the restart
    /// the artifact's `on_change` asks for is recorded before the switch.
    pub(super) fn install_artifact(
        &mut self,
        a: &Artifact,
        status: &mut StatusCache,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        if let Some(pkg) = &a.apt {
            return self.install_apt(a, pkg, status, report);
        }
        let target = atomic::rooted(&self.root, &a.install_to)?;
        let dir = atomic::parent(&target).to_owned();
        if let Some(record) = self.state.artifacts.get(&a.name)
            && record.url == a.url
            && record.sha512_url == a.sha512_url
            && record.install_to == a.install_to
            && a.sha512
                .as_deref()
                .is_none_or(|pin| normalize_sha512(pin).as_deref() == Some(record.sha512.as_str()))
            && self.artifact_intact(a, record)?
        {
            tracing::debug!(artifact = %a.name, path = %a.install_to, "artifact already installed");
            return Ok(());
        }
        let expected = expected_digest(a)?;
        if let Some(record) = self.state.artifacts.get(&a.name)
            && record.sha512 == expected
            && record.install_to == a.install_to
            && self.artifact_intact(a, record)?
        {
            // Same bytes from another URL: nothing to install.
            let record = ArtifactRecord {
                url: a.url.clone(),
                sha512_url: a.sha512_url.clone(),
                ..record.clone()
            };
            self.state.artifacts.insert(a.name.clone(), record);
            return self.save_state();
        }
        atomic::ensure_dir_all(&dir)?;
        let changed = if a.unpack && dir.join(versioned_name(&target, &expected)).is_dir() {
            // Unpacked and verified before (an apply stopped before the
            // switch): no need to download it again.
            self.install_tarball(a, &target, None, &expected, status)?
        } else {
            tracing::info!(artifact = %a.name, url = %a.url, path = %a.install_to, "downloading artifact");
            let (file, temp) = download_verified(a, &dir, &expected)?;
            if a.unpack {
                drop(file);
                let result = self.install_tarball(a, &target, Some(&temp), &expected, status);
                let _ = fs::remove_file(&temp);
                result?
            } else {
                self.install_single_file(a, &target, file, &temp, &expected, status)?
            }
        };
        if changed {
            tracing::info!(artifact = %a.name, path = %a.install_to, sha512 = %expected, "installed artifact");
            report.artifacts_installed.push(a.name.clone());
        }
        Ok(())
    }

    /// Whether what `record` says is installed is still there.
    fn artifact_intact(&self, a: &Artifact, record: &ArtifactRecord) -> Result<bool, ApplyError> {
        let target = atomic::rooted(&self.root, &a.install_to)?;
        if a.unpack {
            let Some(dir) = &record.dir else {
                return Ok(false);
            };
            let name = dir.rsplit('/').next().unwrap_or(dir);
            let dir = atomic::rooted(&self.root, dir)?;
            Ok(link_target(&target).as_deref() == Some(name) && dir.is_dir())
        } else {
            Ok(sha512_of_file(&target)?.as_deref() == Some(record.sha512.as_str()))
        }
    }

    fn install_tarball(
        &mut self,
        a: &Artifact,
        target: &Path,
        archive: Option<&Path>,
        sha512: &str,
        status: &mut StatusCache,
    ) -> Result<bool, ApplyError> {
        let dir = atomic::parent(target).to_owned();
        let name = versioned_name(target, sha512);
        let versioned = dir.join(&name);
        let versioned_node = sibling(&a.install_to, &name);
        match fs::symlink_metadata(target) {
            Ok(m) if !m.file_type().is_symlink() => {
                return Err(ApplyError::NotASymlink {
                    artifact: a.name.clone(),
                    path: target.to_owned(),
                });
            }
            _ => {}
        }
        // The versioned directory appears only by renaming a complete,
        // synced staging directory, so one that exists is complete.
        if !versioned.is_dir() {
            let Some(archive) = archive else {
                return Err(ApplyError::io("finding", &versioned)(
                    io::ErrorKind::NotFound.into(),
                ));
            };
            let staging = dir.join(atomic::temp_name("unpack"));
            fs::DirBuilder::new()
                .create(&staging)
                .map_err(ApplyError::io("creating directory", &staging))?;
            let result = (|| {
                let top = unpack_tarball(&a.name, archive, &staging)?;
                sync_tree(&top)?;
                fs::rename(&top, &versioned)
                    .map_err(ApplyError::io("renaming into place", &versioned))?;
                atomic::fsync_dir(&dir)
            })();
            let _ = fs::remove_dir_all(&staging);
            result?;
        }
        let current = link_target(target);
        let changed = current.as_deref() != Some(name.as_str());
        let old = self.state.artifacts.get(&a.name).cloned();
        let mut running = old.as_ref().and_then(|o| o.running.clone());
        if changed {
            self.note_change(&a.on_change, status, target)?;
            // The running unit keeps the version it started from until its
            // restart (pending now): remember that directory, unless an
            // earlier switch already did.
            if let ChangeAction::RestartWithLease(unit) = change_action(&a.on_change)
                && self.state.pending_restarts.contains(unit)
            {
                if running.is_none()
                    && let Some(started) = old.as_ref().and_then(|o| o.dir.clone())
                {
                    running = Some(RunningVersion {
                        unit: unit.to_owned(),
                        dir: started,
                    });
                }
            } else if let Some(r) = running.take() {
                // Not running: it starts from the new version.
                self.state.garbage.insert(r.dir);
            }
            if let Some(old) = self.state.artifacts.get_mut(&a.name) {
                old.running.clone_from(&running);
            }
            self.save_state()?;
            atomic::switch_symlink(target, &name)?;
        }
        let mut previous = old.as_ref().and_then(|o| o.previous.clone());
        if let Some(old_dir) = old.as_ref().and_then(|o| o.dir.clone())
            && old_dir != versioned_node
        {
            // Keep one version back for a rollback; the one before goes
            // (once no running unit needs it).
            if let Some(p) = previous.take()
                && p != versioned_node
            {
                self.state.garbage.insert(p);
            }
            previous = Some(old_dir);
        }
        self.state.artifacts.insert(
            a.name.clone(),
            ArtifactRecord {
                url: a.url.clone(),
                sha512_url: a.sha512_url.clone(),
                sha512: sha512.to_owned(),
                install_to: a.install_to.clone(),
                dir: Some(versioned_node),
                previous,
                running,
            },
        );
        self.save_state()?;
        self.collect_garbage()?;
        Ok(changed)
    }

    fn install_single_file(
        &mut self,
        a: &Artifact,
        target: &Path,
        file: File,
        temp: &Path,
        sha512: &str,
        status: &mut StatusCache,
    ) -> Result<bool, ApplyError> {
        let changed = sha512_of_file(target)?.as_deref() != Some(sha512);
        if changed {
            let root = self.accounts()?.resolve("root", "root", &a.install_to);
            let (uid, gid) = match root {
                Ok(ids) => ids,
                Err(e) => {
                    let _ = fs::remove_file(temp);
                    return Err(e);
                }
            };
            if let Err(e) = self
                .note_change(&a.on_change, status, target)
                .and_then(|()| self.save_state())
            {
                let _ = fs::remove_file(temp);
                return Err(e);
            }
            atomic::commit_temp(
                file,
                temp,
                target,
                Ownership {
                    uid,
                    gid,
                    mode: 0o644,
                },
            )?;
        } else {
            drop(file);
            let _ = fs::remove_file(temp);
        }
        self.state.artifacts.insert(
            a.name.clone(),
            ArtifactRecord {
                url: a.url.clone(),
                sha512_url: a.sha512_url.clone(),
                sha512: sha512.to_owned(),
                install_to: a.install_to.clone(),
                dir: None,
                previous: None,
                running: None,
            },
        );
        self.save_state()?;
        Ok(changed)
    }

    fn install_apt(
        &mut self,
        a: &Artifact,
        pkg: &AptPackage,
        status: &mut StatusCache,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        if self.root != Path::new("/") {
            return Err(ApplyError::AptNeedsHostRoot {
                artifact: a.name.clone(),
                package: pkg.package.clone(),
                root: self.root.clone(),
            });
        }
        let installed = dpkg_version(&a.name, pkg)?;
        let up_to_date = match (&installed, &pkg.version) {
            (Some(have), Some(want)) => have == want,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if up_to_date {
            return Ok(());
        }
        let apt = |args: &[&str]| {
            let mut cmd = Command::new("apt-get");
            cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
            command::run(cmd, APT_TIMEOUT).map_err(|source| ApplyError::Apt {
                artifact: a.name.clone(),
                package: pkg.package.clone(),
                source,
            })
        };
        let spec = match &pkg.version {
            Some(v) => format!("{}={v}", pkg.package),
            None => pkg.package.clone(),
        };
        tracing::info!(artifact = %a.name, package = %spec, "installing apt package");
        apt(&["update", "-q"])?;
        self.note_change(&a.on_change, status, Path::new(&a.install_to))?;
        self.save_state()?;
        apt(&[
            "install",
            "-q",
            "-y",
            "--no-install-recommends",
            "-o",
            "Dpkg::Options::=--force-confold",
            "--",
            &spec,
        ])?;
        report.artifacts_installed.push(a.name.clone());
        Ok(())
    }

    /// `unit` (re)started or stopped for good: the versions it was running
    /// from before are no longer needed by it (collected at the next apply).
    pub(super) fn forget_running_version(&mut self, unit: &str) {
        for record in self.state.artifacts.values_mut() {
            if record.running.as_ref().is_some_and(|r| r.unit == unit)
                && let Some(r) = record.running.take()
            {
                self.state.garbage.insert(r.dir);
            }
        }
    }

    /// Deletes old versioned directories recorded as no longer needed.
    /// A directory still in use (the current version, the one kept for a
    /// rollback, or the one a unit waiting for its restart runs from) is
    /// kept in the garbage set until it is no longer used.
    pub(super) fn collect_garbage(&mut self) -> Result<(), ApplyError> {
        let in_use: Vec<String> = self
            .state
            .artifacts
            .values()
            .flat_map(|r| {
                r.dir
                    .iter()
                    .chain(r.previous.iter())
                    .chain(r.running.iter().map(|v| &v.dir))
                    .cloned()
            })
            .collect();
        for node_path in self.state.garbage.clone() {
            if in_use.contains(&node_path) {
                // Still used: stays garbage, collected once it is not.
                continue;
            }
            let path = atomic::rooted(&self.root, &node_path)?;
            match fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(path = %node_path, "removed old artifact version");
                    atomic::fsync_dir(atomic::parent(&path))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ApplyError::io("removing", path)(e)),
            }
            self.state.garbage.remove(&node_path);
        }
        self.save_state()
    }

    /// Rooted paths of artifacts whose installed bytes are not what the
    /// state records (drift), for artifacts the state knows.
    pub(super) fn artifact_drift(&self, a: &Artifact) -> Option<PathBuf> {
        if a.apt.is_some() {
            return None;
        }
        let record = self.state.artifacts.get(&a.name)?;
        let target = atomic::rooted(&self.root, &a.install_to).ok()?;
        match self.artifact_intact(a, record) {
            Ok(true) => None,
            _ => Some(target),
        }
    }
}

/// The SHA-512 of some bytes, lowercase hex (for tests and reports).
pub fn sha512_digest(bytes: &[u8]) -> String {
    sha512_hex(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "7a1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcdef7a1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcdef";

    #[test]
    fn digest_files_in_every_common_format() {
        let name = "kafka_2.13-4.1.1.tgz";
        assert_eq!(
            parse_sha512_file(&format!("{HEX}  {name}\n"), name).as_deref(),
            Some(HEX)
        );
        assert_eq!(
            parse_sha512_file(&format!("{}\n", HEX.to_uppercase()), name).as_deref(),
            Some(HEX)
        );
        assert_eq!(
            parse_sha512_file(&format!("{HEX} *{name}\n"), name).as_deref(),
            Some(HEX)
        );
        let other = "0".repeat(128);
        assert_eq!(
            parse_sha512_file(&format!("{other}  other.tgz\n{HEX}  {name}\n"), name).as_deref(),
            Some(HEX)
        );
        assert_eq!(
            parse_sha512_file(&format!("{other}  a.tgz\n{HEX}  b.tgz\n"), name),
            None
        );
        assert_eq!(
            parse_sha512_file(&format!("SHA512 ({name}) = {HEX}\n"), name).as_deref(),
            Some(HEX)
        );
        // gpg --print-md SHA512, as Apache publishes it.
        let up = HEX.to_uppercase();
        let groups: Vec<&str> = (0..16).filter_map(|i| up.get(i * 8..i * 8 + 8)).collect();
        let gpg = format!(
            "{name}: {}\n                      {}\n",
            groups.get(..8).unwrap_or_default().join(" "),
            groups.get(8..).unwrap_or_default().join(" ")
        );
        assert_eq!(parse_sha512_file(&gpg, name).as_deref(), Some(HEX));
        assert_eq!(parse_sha512_file("not a digest", name), None);
        assert_eq!(
            parse_sha512_file(&format!("{name}: {}", &up[..100]), name),
            None
        );
    }

    #[test]
    fn url_file_names() {
        assert_eq!(url_file_name("https://a/b/kafka.tgz?x=1"), "kafka.tgz");
        assert_eq!(url_file_name("file:///tmp/x.tgz"), "x.tgz");
    }
}
