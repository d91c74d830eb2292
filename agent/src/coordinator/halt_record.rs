//! The record of halted rollouts and the lease history, kept in the
//! coordinator's state directory ([`HALT_FILE`], written atomically) so a
//! coordinator restart does not resume a rollout an agent halted after a
//! failed restart.
//!
//! Failure policy: a missing file is an empty record (the first start). A
//! file that cannot be read or parsed is not taken as "nothing halted": the
//! caller halts every role until an operator resumes or a new commit
//! arrives ([`Unread`]), because the record may have held a halt.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::{Halt, LeaseEvent};

/// The record's file name in the coordinator's state directory.
pub const HALT_FILE: &str = "rollout-halts.json";

const HALT_FILE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum HaltRecordError {
    #[error("reading the record of halted rollouts {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the record of halted rollouts {} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("writing the record of halted rollouts {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: Box<crate::apply::ApplyError>,
    },
}

/// What of the lease table survives a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Kept {
    /// The last fencing id granted: the next run's ids start above it even
    /// if the clock went back.
    pub(crate) last_fencing: u64,
    pub(crate) halts: Vec<KeptHalt>,
    /// Newest first.
    pub(crate) history: Vec<LeaseEvent>,
    pub(crate) unread: Option<Unread>,
}

/// A halted grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeptHalt {
    pub(crate) role: String,
    pub(crate) holder: String,
    pub(crate) fencing: u64,
    pub(crate) granted_at: u64,
    pub(crate) expires_at: u64,
    /// The revision the grant was requested for.
    pub(crate) revision: Option<String>,
    pub(crate) halt: Halt,
    /// The view's revision when it was halted: a view of another clears it.
    pub(crate) halted_under: Option<String>,
}

/// A run started with a record it could not read: every role counts as
/// halted (a halt may have been lost) until a resume of that role (or of
/// every role) or a view of another revision than `under`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Unread {
    /// Why, as callers may read it (the file's name, not its path).
    pub(crate) reason: String,
    pub(crate) at: u64,
    /// The view's revision at that start.
    pub(crate) under: Option<String>,
    /// Roles resumed since.
    pub(crate) resumed: Vec<String>,
}

/// The file's format.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HaltFile {
    version: u32,
    last_fencing: u64,
    halts: Vec<KeptHalt>,
    history: Vec<LeaseEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unread: Option<Unread>,
}

/// Reads the record at `path`; a missing file is an empty record.
pub(crate) fn load(path: &Path) -> Result<Kept, HaltRecordError> {
    let loaded = super::state_file::load(path, HALT_FILE_VERSION, |f: &HaltFile| f.version)
        .map_err(|e| match e {
            super::state_file::LoadError::Read(source) => HaltRecordError::Read {
                path: path.to_owned(),
                source,
            },
            super::state_file::LoadError::Corrupt(reason) => HaltRecordError::Corrupt {
                path: path.to_owned(),
                reason,
            },
        })?;
    let Some(file) = loaded else {
        return Ok(Kept::default());
    };
    Ok(Kept {
        last_fencing: file.last_fencing,
        halts: file.halts,
        history: file.history,
        unread: file.unread,
    })
}

/// Writes `kept` at `path` atomically (temporary file in the same
/// directory, fsync, rename, fsync the directory), mode 0600.
pub(crate) fn save(path: &Path, kept: &Kept) -> Result<(), HaltRecordError> {
    let file = HaltFile {
        version: HALT_FILE_VERSION,
        last_fencing: kept.last_fencing,
        halts: kept.halts.clone(),
        history: kept.history.clone(),
        unread: kept.unread.clone(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| HaltRecordError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    crate::apply::atomic::write_own(path, &bytes, 0o600).map_err(|source| HaltRecordError::Write {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::LeaseEventKind;

    fn sample() -> Kept {
        Kept {
            last_fencing: 1_700_000_000_000_007,
            halts: vec![KeptHalt {
                role: "broker".to_owned(),
                holder: "broker-2".to_owned(),
                fencing: 1_700_000_000_000_007,
                granted_at: 1_700_000_100,
                expires_at: 1_700_000_400,
                revision: Some("aaaa".to_owned()),
                halt: Halt {
                    reason: "kafka.service not healthy within 10m".to_owned(),
                    revision: Some("bbbb".to_owned()),
                    at: 1_700_000_200,
                },
                halted_under: Some("cccc".to_owned()),
            }],
            history: vec![LeaseEvent {
                at: 1_700_000_200,
                role: "broker".to_owned(),
                node: "broker-2".to_owned(),
                event: LeaseEventKind::Halted,
                fencing: 1_700_000_000_000_007,
                revision: Some("aaaa".to_owned()),
                reason: Some("kafka.service not healthy within 10m".to_owned()),
            }],
            unread: None,
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(HALT_FILE);
        let mut kept = sample();
        save(&path, &kept).expect("save");
        assert_eq!(load(&path).expect("load"), kept);

        kept.unread = Some(Unread {
            reason: "unreadable".to_owned(),
            at: 5,
            under: None,
            resumed: vec!["connect".to_owned()],
        });
        save(&path, &kept).expect("save");
        assert_eq!(load(&path).expect("load"), kept);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("metadata").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_missing_record_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            load(&dir.path().join(HALT_FILE)).expect("load"),
            Kept::default()
        );
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(HALT_FILE);
        for bytes in [
            &b"{\"version\": 1, \"halts\": ["[..],
            b"garbage",
            b"{\"version\": 2, \"last_fencing\": 0, \"halts\": [], \"history\": []}",
            b"{\"version\": 1, \"last_fencing\": 0, \"halts\": [], \"history\": [], \"extra\": 1}",
        ] {
            std::fs::write(&path, bytes).expect("write");
            let error = load(&path).expect_err("a corrupt record is an error");
            assert!(
                matches!(error, HaltRecordError::Corrupt { .. }),
                "{error:?}"
            );
            assert!(
                error.to_string().contains(&path.display().to_string()),
                "{error}"
            );
        }
        // A directory where the file should be cannot be read.
        std::fs::remove_file(&path).expect("remove");
        std::fs::create_dir(&path).expect("mkdir");
        assert!(matches!(load(&path), Err(HaltRecordError::Read { .. })));
    }
}
