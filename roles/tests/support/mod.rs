//! The example repository, loaded and decrypted, for the roles tests and
//! benchmarks (`mod support;` in each; a file of its own is not a test).

#![allow(dead_code)]

use std::path::PathBuf;

use desired_state::{FileSet, Identity, Model};
use roles::Secrets;

pub fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed")
}

/// The example's files, as `desired_state::load_files` takes them.
pub fn example_files() -> FileSet {
    desired_state::read_repository(&example_dir()).unwrap_or_else(|d| panic!("{d}"))
}

/// The example-only age identity that decrypts the example's secrets.
pub fn example_identity() -> Identity {
    let path = example_dir().with_file_name("seed.example-only.age-identity");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Identity::parse(&text).expect("the example identity parses")
}

/// The example repository loaded, and its secrets decrypted.
pub fn load_example() -> (Model, Secrets) {
    let model = desired_state::load_dir(&example_dir()).unwrap_or_else(|d| panic!("{d}"));
    let secrets = model
        .decrypt_all(&example_identity())
        .expect("the example's secrets decrypt");
    (model, secrets)
}
