//! Keeps README.md and ARCHITECTURE.md true to the tree: every path the
//! code map names exists, and the README's commands point at real files.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Backticked words of a line.
fn code_spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

#[test]
fn every_path_in_the_architecture_code_map_exists() {
    let root = workspace();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut crate_dir: Option<PathBuf> = None;
    let mut checked = 0;
    let mut missing = Vec::new();
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            crate_dir = code_spans(heading)
                .first()
                .map(|dir| root.join(dir.trim_end_matches('/')));
            continue;
        }
        if line.starts_with("## ") {
            crate_dir = None;
        }
        let Some(dir) = &crate_dir else { continue };
        for span in code_spans(line) {
            let looks_like_path = ["src/", "examples/", "schema/", "tests/", "benches/"]
                .iter()
                .any(|p| span.starts_with(p));
            if looks_like_path {
                checked += 1;
                if !dir.join(span.trim_end_matches('/')).exists() {
                    missing.push(format!("{}/{span}", dir.display()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:#?}"
    );
    assert!(
        checked >= 15,
        "only {checked} paths checked; did the code map's format change?"
    );
}

#[test]
fn readme_commands_point_at_real_files() {
    let root = workspace();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    for path in [
        "scripts/local",
        "scripts/test",
        "scripts/kafka-dist",
        "desired-state/examples/seed",
        "desired-state/examples/seed.local.yaml",
        "desired-state/schema",
    ] {
        assert!(readme.contains(path), "README.md no longer mentions {path}");
        assert!(
            Path::new(&root.join(path)).exists(),
            "README.md mentions {path}, which does not exist"
        );
    }
    // The two set-up commands, in this order.
    let first = readme
        .find("\nscripts/local up\n")
        .expect("README.md's first command is `scripts/local up`");
    let second = readme
        .find("\nscripts/test\n")
        .expect("README.md's second command is `scripts/test`");
    assert!(
        first < second,
        "`scripts/local up` comes before `scripts/test`"
    );
    let local = std::fs::read_to_string(root.join("scripts/local")).expect("scripts/local");
    assert!(
        local.contains("local up")
            && local.contains("example=desired-state/examples/seed\n")
            && local.contains("--override \"$example.local.yaml\""),
        "scripts/local up brings the example up with its override"
    );
    let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    assert!(
        ci.contains("scripts/test"),
        ".ci/run must run the README's test command"
    );
}
