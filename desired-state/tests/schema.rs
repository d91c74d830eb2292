//! The JSON Schemas in `desired-state/schema/` are what the model generates,
//! and the example repository validates against them, through the same
//! `# yaml-language-server: $schema=...` paths an editor follows.
//!
//! After changing the model, regenerate the schemas with
//! `KRAFTOPS_BLESS=1 cargo test -p desired-state --test schema`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const BLESS: &str = "KRAFTOPS_BLESS";
const MODELINE: &str = "# yaml-language-server: $schema=";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schema_dir() -> PathBuf {
    crate_dir().join("schema")
}

fn example() -> PathBuf {
    crate_dir().join("examples/seed")
}

/// The checked-in `*.schema.json` files, by file name.
fn checked_in() -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(schema_dir()) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".schema.json")))
        .map(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .expect("UTF-8 file name")
                .to_owned();
            (
                name,
                std::fs::read_to_string(&p).expect("schema file is readable"),
            )
        })
        .collect()
}

#[test]
fn checked_in_schemas_are_up_to_date() {
    let generated: BTreeMap<String, String> = desired_state::schema::all()
        .into_iter()
        .map(|(name, text)| (name.to_owned(), text))
        .collect();
    assert!(!generated.is_empty(), "schema::all() generates no schema");
    if std::env::var_os(BLESS).is_some() {
        std::fs::create_dir_all(schema_dir()).expect("create schema directory");
        for (name, text) in &generated {
            std::fs::write(schema_dir().join(name), text).expect("write schema");
        }
        for stale in checked_in()
            .keys()
            .filter(|name| !generated.contains_key(*name))
        {
            std::fs::remove_file(schema_dir().join(stale)).expect("remove stale schema");
        }
        return;
    }
    let on_disk = checked_in();
    let mut problems = Vec::new();
    for (name, text) in &generated {
        match on_disk.get(name) {
            None => problems.push(format!("{name} is missing")),
            Some(old) if old != text => {
                problems.push(format!("{name} differs from what the model generates"))
            }
            Some(_) => {}
        }
    }
    for name in on_disk.keys().filter(|name| !generated.contains_key(*name)) {
        problems.push(format!("{name} is no longer generated"));
    }
    assert!(
        problems.is_empty(),
        "the JSON Schemas in {} are out of date:\n  {}\nregenerate them with `{BLESS}=1 cargo test -p desired-state --test schema` and commit the result",
        schema_dir().display(),
        problems.join("\n  ")
    );
}

/// Which schema a repository file follows, by its path in the repository.
fn schema_for(rel: &str) -> Option<&'static str> {
    let in_dir = |dir: &str| {
        rel.strip_prefix(dir)
            .is_some_and(|rest| !rest.contains('/') && rest.ends_with(".yaml"))
    };
    match rel {
        "cluster.yaml" => Some("cluster.schema.json"),
        "nodes.yaml" => Some("nodes.schema.json"),
        _ if in_dir("topics/") => Some("topics.schema.json"),
        _ if in_dir("users/") => Some("users.schema.json"),
        _ if in_dir("connectors/") => Some("connectors.schema.json"),
        _ if in_dir("observability/rules/") => Some("rules.schema.json"),
        _ => None,
    }
}

/// Every YAML file of the example repository, by path relative to its root.
fn example_yaml_files() -> Vec<(String, PathBuf)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
        for entry in std::fs::read_dir(dir).expect("example directory is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let rel = path
                    .strip_prefix(root)
                    .expect("below the root")
                    .components()
                    .map(|c| c.as_os_str().to_str().expect("UTF-8"))
                    .collect::<Vec<_>>();
                out.push((rel.join("/"), path));
            }
        }
    }
    let mut files = Vec::new();
    walk(&example(), &example(), &mut files);
    files.sort();
    files
}

fn validator(schema_file: &str) -> jsonschema::Validator {
    let text =
        std::fs::read_to_string(schema_dir().join(schema_file)).expect("schema file is readable");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{schema_file} is not a valid JSON Schema: {e}"))
}

fn yaml_to_json(text: &str) -> serde_json::Value {
    serde_saphyr::from_str::<serde_json::Value>(text).expect("YAML parses")
}

/// The problems `schema_file` finds in `instance`, as `path: message`.
fn schema_errors(schema_file: &str, instance: &serde_json::Value) -> Vec<String> {
    validator(schema_file)
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn example_files_validate_against_their_schemas() {
    let mut problems = Vec::new();
    let mut covered = std::collections::BTreeSet::new();
    // Files kraftops does not read itself (promtool's rule tests) have no schema here.
    for (rel, path) in example_yaml_files() {
        let Some(schema_file) = schema_for(&rel) else {
            continue;
        };
        covered.insert(schema_file);
        let text = std::fs::read_to_string(&path).expect("example file is readable");
        for error in schema_errors(schema_file, &yaml_to_json(&text)) {
            problems.push(format!("{rel}: {error}"));
        }
    }
    assert!(
        problems.is_empty(),
        "the example does not validate against the JSON Schemas:\n  {}",
        problems.join("\n  ")
    );
    let all: std::collections::BTreeSet<&str> = desired_state::schema::all()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(covered, all, "the example should have a file of every kind");
}

#[test]
fn example_files_point_at_their_schema() {
    let mut problems = Vec::new();
    for (rel, path) in example_yaml_files() {
        let Some(schema_file) = schema_for(&rel) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).expect("example file is readable");
        let Some(target) = text.lines().next().and_then(|l| l.strip_prefix(MODELINE)) else {
            problems.push(format!("{rel}: the first line is not `{MODELINE}...`"));
            continue;
        };
        let dir = path.parent().expect("a file has a directory");
        let expected = schema_dir()
            .join(schema_file)
            .canonicalize()
            .expect("schema file exists");
        match dir.join(target).canonicalize() {
            Ok(found) if found == expected => {}
            Ok(found) => problems.push(format!(
                "{rel}: $schema={target} is {}, not {}",
                found.display(),
                expected.display()
            )),
            Err(e) => problems.push(format!("{rel}: $schema={target} does not resolve: {e}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_schemas_reject_what_the_loader_rejects() {
    // Guards the test above: a validator that accepts anything would pass it.
    let cluster = std::fs::read_to_string(example().join("cluster.yaml")).expect("cluster.yaml");
    let unknown_key = yaml_to_json(&cluster.replacen(
        "  install_dir: /opt/kafka\n",
        "  install_directory: /opt/kafka\n",
        1,
    ));
    assert_eq!(
        schema_errors("cluster.schema.json", &unknown_key).len(),
        1,
        "unknown key in kafka:"
    );

    let nodes = std::fs::read_to_string(example().join("nodes.yaml")).expect("nodes.yaml");
    let bad_role = yaml_to_json(&nodes.replacen("    role: connect\n", "    role: conect\n", 1));
    let errors = schema_errors("nodes.schema.json", &bad_role);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("/nodes/7/role: "), "{errors:?}");

    let topics =
        std::fs::read_to_string(example().join("topics/app.yaml")).expect("topics/app.yaml");
    let bad_name =
        yaml_to_json(&topics.replacen("  - name: test-topic\n", "  - name: bad/name\n", 1));
    let errors = schema_errors("topics.schema.json", &bad_name);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("/topics/1/name: "), "{errors:?}");
}
