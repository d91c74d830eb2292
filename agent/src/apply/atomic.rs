//! Crash-safe filesystem primitives: the canonical atomic write (afterburn's
//! sequence), atomic symlink switches, and finding a plan's paths below the
//! root. A reader of a managed path sees the old bytes or the new bytes,
//! never a mix, whenever the agent is killed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::ApplyError;

/// Every temporary file, directory or symlink the agent makes starts with
/// this, so a later apply can remove what a killed one left behind.
pub const TEMP_PREFIX: &str = ".kraftops-tmp-";

/// A fresh temporary name (unique within this process; stale ones from
/// earlier processes are removed before an apply writes into a directory).
pub(crate) fn temp_name(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{what}-{}-{n}", std::process::id())
}

/// `<root>/<path without its leading slash>`, refusing anything but a clean
/// absolute path (no `..`, `.`, empty components or NUL).
pub(crate) fn rooted(root: &Path, path: &str) -> Result<PathBuf, ApplyError> {
    let invalid = |reason| ApplyError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    let rel = path
        .strip_prefix('/')
        .ok_or_else(|| invalid("not an absolute path"))?;
    if rel.is_empty() {
        return Err(invalid("the root itself cannot be managed"));
    }
    if path.contains('\0') {
        return Err(invalid("contains NUL"));
    }
    if rel
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(invalid("not a clean path (empty, `.` or `..` component)"));
    }
    Ok(root.join(rel))
}

/// The parent directory of a rooted path (which always has one).
pub(crate) fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// Creates `dir` and its missing parents (mode 0755, owned by the agent).
pub(crate) fn ensure_dir_all(dir: &Path) -> Result<(), ApplyError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(ApplyError::io("creating directory", dir))
}

/// fsync a directory, making a rename or unlink inside it durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), ApplyError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ApplyError::io("syncing directory", dir))
}

/// Creates a new temporary file in `dir`, mode 0600 while it is written.
pub(crate) fn create_temp(dir: &Path, what: &str) -> Result<(File, PathBuf), ApplyError> {
    let path = dir.join(temp_name(what));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(ApplyError::io("creating temporary file", &path))?;
    Ok((file, path))
}

/// Owner, group and mode of an installed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ownership {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// Finishes a temporary file written by the caller: owner, group, mode,
/// fsync, rename over `target`, fsync the directory. On error the temporary
/// file is removed.
pub(crate) fn commit_temp(
    file: File,
    temp: &Path,
    target: &Path,
    own: Ownership,
) -> Result<(), ApplyError> {
    let result = (|| {
        std::os::unix::fs::fchown(&file, Some(own.uid), Some(own.gid))
            .map_err(ApplyError::io("setting the owner of", temp))?;
        // After chown: chown clears set-id bits.
        file.set_permissions(fs::Permissions::from_mode(own.mode))
            .map_err(ApplyError::io("setting the mode of", temp))?;
        file.sync_all().map_err(ApplyError::io("syncing", temp))?;
        drop(file);
        fs::rename(temp, target).map_err(ApplyError::io("renaming into place", target))
    })();
    if result.is_err() {
        let _ = fs::remove_file(temp);
    }
    result?;
    fsync_dir(parent(target))
}

/// The canonical atomic write: temporary file in the same directory
/// (create_new, 0600), write, owner/group/mode, fsync, rename over the
/// target, fsync the directory. The directory must exist.
pub(crate) fn write_atomic(
    target: &Path,
    contents: &[u8],
    own: Ownership,
) -> Result<(), ApplyError> {
    let (mut file, temp) = create_temp(parent(target), "write")?;
    if let Err(e) = file.write_all(contents) {
        let _ = fs::remove_file(&temp);
        return Err(ApplyError::io("writing", temp)(e));
    }
    commit_temp(file, &temp, target, own)
}

/// [`write_atomic`] of a file owned by this process's user, creating its
/// directory first.
pub(crate) fn write_own(target: &Path, contents: &[u8], mode: u32) -> Result<(), ApplyError> {
    ensure_dir_all(parent(target))?;
    let own = Ownership {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        mode,
    };
    write_atomic(target, contents, own)
}

/// Reads a regular file without following a symlink at its last component;
/// `None` when it is missing or not a regular file.
pub(crate) fn read_regular(path: &Path) -> Result<Option<Vec<u8>>, ApplyError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if is_missing_or_link(&e) => return Ok(None),
        Err(e) => return Err(ApplyError::io("reading", path)(e)),
    };
    let meta = file.metadata().map_err(ApplyError::io("reading", path))?;
    if !meta.is_file() {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)
        .map_err(ApplyError::io("reading", path))?;
    Ok(Some(bytes))
}

fn is_missing_or_link(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || e.raw_os_error() == Some(nix::libc::ELOOP)
        || e.raw_os_error() == Some(nix::libc::ENOTDIR)
}

/// Whether `path` is a regular file with exactly these bytes, owner, group
/// and permission bits.
pub(crate) fn matches(path: &Path, contents: &[u8], own: Ownership) -> Result<bool, ApplyError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ApplyError::io("inspecting", path)(e)),
    };
    if !meta.is_file()
        || meta.uid() != own.uid
        || meta.gid() != own.gid
        || meta.mode() & 0o7777 != own.mode
        || meta.len() != contents.len() as u64
    {
        return Ok(false);
    }
    Ok(read_regular(path)?.is_some_and(|bytes| bytes == contents))
}

/// Removes a file (not a directory); `false` when it was already gone.
pub(crate) fn remove_file(path: &Path) -> Result<bool, ApplyError> {
    match fs::remove_file(path) {
        Ok(()) => {
            fsync_dir(parent(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ApplyError::io("removing", path)(e)),
    }
}

/// Points the symlink `link` at `target` (a name relative to the link's
/// directory) atomically: a new symlink under a temporary name, renamed over.
pub(crate) fn switch_symlink(link: &Path, target: &str) -> Result<(), ApplyError> {
    let dir = parent(link);
    let temp = dir.join(temp_name("link"));
    std::os::unix::fs::symlink(target, &temp).map_err(ApplyError::io("creating symlink", &temp))?;
    if let Err(e) = fs::rename(&temp, link) {
        let _ = fs::remove_file(&temp);
        return Err(ApplyError::io("switching symlink", link)(e));
    }
    fsync_dir(dir)
}

/// Removes every `.kraftops-tmp-*` entry (file, symlink or directory) a
/// killed apply left in `dir`; the number removed. A missing `dir` has none.
pub(crate) fn clean_temp_files(dir: &Path) -> Result<usize, ApplyError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            return Ok(0);
        }
        Err(e) => return Err(ApplyError::io("listing", dir)(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(ApplyError::io("listing", dir))?;
        if !entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes())
        {
            continue;
        }
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(ApplyError::io("inspecting", &path))?
            .is_dir();
        let result = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match result {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ApplyError::io("removing stale temporary", path)(e)),
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed temporary files of an interrupted apply");
        fsync_dir(dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooted_accepts_only_clean_absolute_paths() {
        let root = Path::new("/r");
        assert_eq!(
            rooted(root, "/etc/kafka/a").ok(),
            Some(PathBuf::from("/r/etc/kafka/a"))
        );
        for bad in [
            "etc/a",
            "/",
            "/etc//a",
            "/etc/../a",
            "/etc/./a",
            "/etc/a/",
            "/a\0b",
        ] {
            assert!(rooted(root, bad).is_err(), "{bad:?} must be refused");
        }
    }
}
