//! Reading a commit's tree straight from git objects into a
//! [`desired_state::FileSet`], with no work tree and no checkout.

use desired_state::FileSet;
use git2::{FileMode, ObjectType, Repository, Tree};

use super::{SyncError, git_error};

/// Largest file read from a commit; the same limit `desired_state` applies
/// to files on disk. A bigger blob is a mistake, not configuration.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Every regular file under `tree`, keyed by its `/`-separated path.
/// Symlinks and submodules are skipped, never followed.
pub(super) fn read_tree(
    repo: &Repository,
    commit: &str,
    tree: Tree<'_>,
) -> Result<FileSet, SyncError> {
    let odb = repo
        .odb()
        .map_err(git_error(format!("open the object database for {commit}")))?;
    let link_mode = i32::from(FileMode::Link);
    let mut files = FileSet::new();
    // An explicit stack: a hostile repository cannot nest trees deep enough
    // to overflow the thread's stack.
    let mut pending = vec![(String::new(), tree)];
    while let Some((dir, tree)) = pending.pop() {
        for entry in tree.iter() {
            let name =
                std::str::from_utf8(entry.name_bytes()).map_err(|_| SyncError::NonUtf8Path {
                    commit: commit.to_owned(),
                    path: join(&dir, &String::from_utf8_lossy(entry.name_bytes())),
                })?;
            let path = join(&dir, name);
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    let sub = repo
                        .find_tree(entry.id())
                        .map_err(git_error(format!("read tree {path} of {commit}")))?;
                    pending.push((path, sub));
                }
                Some(ObjectType::Blob) if entry.filemode() == link_mode => {
                    tracing::debug!(commit, path, "skipping symlink");
                }
                Some(ObjectType::Blob) => {
                    let (size, _) = odb
                        .read_header(entry.id())
                        .map_err(git_error(format!("read the size of {path} in {commit}")))?;
                    let bytes = u64::try_from(size).unwrap_or(u64::MAX);
                    if bytes > MAX_FILE_BYTES {
                        return Err(SyncError::TooLarge {
                            commit: commit.to_owned(),
                            path,
                            bytes,
                            limit: MAX_FILE_BYTES,
                        });
                    }
                    let blob = repo
                        .find_blob(entry.id())
                        .map_err(git_error(format!("read {path} in {commit}")))?;
                    files.insert(path, blob.content().to_vec());
                }
                Some(ObjectType::Commit) => {
                    tracing::debug!(commit, path, "skipping submodule");
                }
                other => {
                    tracing::debug!(commit, path, kind = ?other, "skipping unexpected tree entry");
                }
            }
        }
    }
    Ok(files)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}
