//! Versioned JSON records in the coordinator's state directory (password
//! digests, halted rollouts, the connectors' restart memory): read the
//! same way, each reporting failures in its own error type.

use std::path::Path;

use serde::de::DeserializeOwned;

/// Why a record could not be read.
#[derive(Debug)]
pub(crate) enum LoadError {
    Read(std::io::Error),
    /// Not JSON of the record's format, or another version than `expected`.
    Corrupt(String),
}

/// Reads the record at `path`: `Ok(None)` when the file is missing, an
/// error when it cannot be read, is not JSON of `T`, or `version` of it is
/// not `expected`.
pub(crate) fn load<T: DeserializeOwned>(
    path: &Path,
    expected: u32,
    version: impl Fn(&T) -> u32,
) -> Result<Option<T>, LoadError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LoadError::Read(e)),
    };
    let file: T = serde_json::from_slice(&bytes).map_err(|e| LoadError::Corrupt(e.to_string()))?;
    let found = version(&file);
    if found != expected {
        return Err(LoadError::Corrupt(format!(
            "version {found} (this coordinator writes {expected})"
        )));
    }
    Ok(Some(file))
}
