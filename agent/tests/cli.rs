//! The `kraftops-agent validate` command as a repository's CI runs it: exit
//! status 0 for a valid repository, 1 with every problem printed as
//! `file:line:col: message` for a broken one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed")
}

fn agent(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kraftops-agent"))
        .args(args)
        .output()
        .expect("the agent binary runs")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Replaces the one occurrence of `from` in `file` below `root`.
fn edit(root: &Path, file: &str, from: &str, to: &str) {
    let path = root.join(file);
    let text = std::fs::read_to_string(&path).expect("read file to edit");
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} must occur once in {file}"
    );
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write edited file");
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

#[test]
fn validate_accepts_the_example() {
    let output = agent(&["validate".as_ref(), example().as_os_str()]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout(&output)
            .trim_end()
            .ends_with(": valid (9 nodes, 2 topics, 4 users, 1 connectors)"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn validate_reports_every_problem_with_its_position_and_exits_1() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let repo = dir.path().join("repo");
    copy_dir(&example(), &repo);
    edit(&repo, "nodes.yaml", "    node_id: 3\n", "    node_id: 1\n");
    edit(
        &repo,
        "topics/app.yaml",
        "    partitions: 6\n",
        "    partitions: six\n",
    );
    edit(
        &repo,
        "cluster.yaml",
        "  scram_iterations: 8192\n",
        "  scram_iterations: 100\n",
    );

    let output = agent(&["validate".as_ref(), repo.as_os_str()]);

    assert_eq!(
        output.status.code(),
        Some(1),
        "stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout(&output),
        "cluster.yaml:38:21: scram_iterations 100 is outside what Kafka accepts (4096 to 16384)\n\
         nodes.yaml:18:14: duplicate node_id; already used by the node at nodes.yaml:6:14\n\
         topics/app.yaml:5:17: expected a whole number from 0 to 4294967295, found `six`\n\
         3 problems found\n"
    );
}

#[test]
fn validate_reports_a_missing_file_without_a_position() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let repo = dir.path().join("repo");
    copy_dir(&example(), &repo);
    std::fs::remove_file(repo.join("pki/ca.pem")).expect("remove the CA certificate");
    std::fs::write(repo.join("topics/readme.txt"), "not a topic file\n")
        .expect("write a stray file");

    let output = agent(&["validate".as_ref(), repo.as_os_str()]);

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output),
        "cluster.yaml:32:18: CA certificate pki/ca.pem does not exist in the repository\n\
         topics/readme.txt: unexpected file in topics/: only *.yaml files belong here\n\
         2 problems found\n"
    );
}
