//! Only kraftops-bootstrap links the AWS SDK: every other crate of the
//! workspace stays free of it (checked on the resolved crate graph, every
//! dependency kind, so it fails as soon as e.g. the agent adds it).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::process::Command;

const AWS: &[&str] = &["aws-sdk-ec2", "aws-config"];
const OWNER: &str = "kraftops-bootstrap";

#[test]
fn only_kraftops_bootstrap_depends_on_the_aws_sdk() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    // Every edge of the resolved graph, whatever its kind (normal, build, dev).
    let deps: BTreeMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let id = n["id"].as_str().unwrap();
            let to = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["pkg"].as_str().unwrap())
                .collect();
            (id, to)
        })
        .collect();
    // The path from `from` to an AWS crate, if there is one.
    let path_to_aws = |from: &str| -> Option<Vec<&str>> {
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut seen = BTreeSet::from([from]);
        let mut queue = VecDeque::from([from]);
        while let Some(id) = queue.pop_front() {
            if AWS.contains(&names[id]) {
                let mut path = vec![names[id]];
                let mut at = id;
                while let Some(p) = parent.get(at) {
                    path.push(names[p]);
                    at = p;
                }
                path.reverse();
                return Some(path);
            }
            for &next in deps.get(id).into_iter().flatten() {
                if seen.insert(next) {
                    parent.insert(next, id);
                    queue.push_back(next);
                }
            }
        }
        None
    };

    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(members.len() >= 4, "{members:?}");
    let mut offenders = Vec::new();
    let mut owner_links = false;
    for member in members {
        match (names[member], path_to_aws(member)) {
            (OWNER, path) => owner_links = path.is_some(),
            (_, Some(path)) => offenders.push(path.join(" → ")),
            (_, None) => {}
        }
    }
    assert!(
        owner_links,
        "{OWNER} itself must reach aws-sdk-ec2 (else this test checks nothing)"
    );
    assert!(
        offenders.is_empty(),
        "only {OWNER} may depend on the AWS SDK, but:\n  {}",
        offenders.join("\n  ")
    );
}
