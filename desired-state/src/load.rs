//! Loading a repository: files in, [`Model`] or every problem out.
//!
//! Parsing is pure: [`load_files`] takes the repository as a map of path →
//! bytes (from a directory, or later a git tree). [`load_dir`] is the only
//! function here that touches the filesystem, and it only reads.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::located::{Located, Pos};
use crate::model::*;
use crate::secrets::EncryptedSecret;
use crate::types::Name;
use crate::validate;
use crate::{Dashboard, InFile, Model};

/// The repository's files: path relative to the root (with `/`) → contents.
pub type FileSet = BTreeMap<String, Vec<u8>>;

/// Directories whose files kraftops reads, with the one extension each accepts.
const DIRS: &[(&str, &str)] = &[
    ("topics", ".yaml"),
    ("users", ".yaml"),
    ("connectors", ".yaml"),
    ("observability/rules", ".yaml"),
    ("observability/dashboards", ".json"),
    ("secrets", ".age"),
];

/// Largest file kraftops reads; a bigger one is a mistake, not a config.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Reads the files kraftops cares about from `root` and loads them.
pub fn load_dir(root: &Path) -> Result<Model, Diagnostics> {
    let mut files = FileSet::new();
    let mut problems = Vec::new();
    let mut read = |rel: String, files: &mut FileSet| {
        let path = root.join(&rel);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() > MAX_FILE_BYTES => {
                problems.push(Diagnostic::file(&rel, format!("file is {} bytes; the limit is {MAX_FILE_BYTES}", meta.len())));
            }
            Ok(_) => match std::fs::read(&path) {
                Ok(bytes) => {
                    files.insert(rel, bytes);
                }
                Err(e) => problems.push(Diagnostic::file(&rel, format!("cannot read: {e}"))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(Diagnostic::file(&rel, format!("cannot read: {e}"))),
        }
    };
    if !root.is_dir() {
        return Err(Diagnostics(vec![Diagnostic::file(root.display().to_string(), "is not a directory")]));
    }
    for top in ["cluster.yaml", "nodes.yaml"] {
        read(top.to_owned(), &mut files);
    }
    for (dir, _) in DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        for name in names {
            read(format!("{dir}/{name}"), &mut files);
        }
    }
    // The CA certificate path is configured in cluster.yaml; read it if the
    // file parses far enough to say where it is.
    if let Some(bytes) = files.get("cluster.yaml")
        && let Ok(text) = std::str::from_utf8(bytes)
        && let Ok(cluster) = parse::<ClusterFile>("cluster.yaml", text)
    {
        read(cluster.security.ca.certificate.value.as_str().to_owned(), &mut files);
    }
    match load_files(&files) {
        Ok(model) if problems.is_empty() => Ok(model),
        Ok(_) => Err(Diagnostics(problems).sorted()),
        Err(mut d) => {
            d.0.extend(problems);
            Err(d.sorted())
        }
    }
}

/// Parses one YAML file into `T`, turning the parser's error into a
/// diagnostic at its line and column.
fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, Diagnostic> {
    let options = serde_saphyr::options! {
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options::<T>(text, options).map_err(|e| {
        let e = e.without_snippet();
        let message = e.to_string();
        match e.location() {
            Some(loc) => {
                let suffix = format!(" at line {}, column {}", loc.line(), loc.column());
                let message = message.strip_suffix(&suffix).unwrap_or(&message).to_owned();
                Diagnostic::at(file, Pos { line: loc.line(), column: loc.column() }, message)
            }
            None => Diagnostic::file(file, message),
        }
    })
}

fn text<'a>(file: &str, bytes: &'a [u8], problems: &mut Vec<Diagnostic>) -> Option<&'a str> {
    match std::str::from_utf8(bytes) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(Diagnostic::file(file, format!("is not UTF-8 text (invalid byte at offset {})", e.valid_up_to())));
            None
        }
    }
}

/// Loads and validates a repository given as a set of files. Returns the
/// model, or every problem found: parse errors of every file, then all
/// cross-checks over what did parse.
pub fn load_files(files: &FileSet) -> Result<Model, Diagnostics> {
    let mut problems = Vec::new();

    let required = |name: &str, problems: &mut Vec<Diagnostic>| -> Option<String> {
        match files.get(name) {
            None => {
                problems.push(Diagnostic::file(name, "is missing; every desired-state repository has one"));
                None
            }
            Some(bytes) => text(name, bytes, problems).map(str::to_owned),
        }
    };
    let cluster_text = required("cluster.yaml", &mut problems);
    let nodes_text = required("nodes.yaml", &mut problems);
    let cluster = cluster_text.and_then(|t| parse::<ClusterFile>("cluster.yaml", &t).map_err(|d| problems.push(d)).ok());
    let nodes = nodes_text.and_then(|t| parse::<NodesFile>("nodes.yaml", &t).map_err(|d| problems.push(d)).ok());

    let mut topics = Vec::new();
    let mut users = Vec::new();
    let mut connectors = Vec::new();
    let mut rules = Vec::new();
    let mut dashboards = Vec::new();
    let mut secrets = BTreeMap::new();

    for (path, bytes) in files {
        let Some((dir, ext)) = DIRS.iter().find(|(dir, _)| path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/') && !rest[1..].contains('/'))) else {
            continue;
        };
        if !path.ends_with(ext) {
            problems.push(Diagnostic::file(path, format!("unexpected file in {dir}/: only *{ext} files belong here")));
            continue;
        }
        if *dir == "secrets" {
            let stem = &path["secrets/".len()..path.len() - ".age".len()];
            match Name::try_from(stem) {
                Err(e) => problems.push(Diagnostic::file(path, format!("secret file name: {e}"))),
                Ok(name) => match EncryptedSecret::parse(path.clone(), bytes.clone()) {
                    Ok(s) => {
                        secrets.insert(name, s);
                    }
                    Err(e) => problems.push(Diagnostic::file(path, format!("{}", ErrorTail(&e)))),
                },
            }
            continue;
        }
        let Some(text) = text(path, bytes, &mut problems) else { continue };
        match *dir {
            "topics" => match parse::<TopicsFile>(path, text) {
                Ok(f) => topics.extend(f.topics.into_iter().map(|item| InFile { file: path.clone(), item })),
                Err(d) => problems.push(d),
            },
            "users" => match parse::<UsersFile>(path, text) {
                Ok(f) => users.extend(f.users.into_iter().map(|item| InFile { file: path.clone(), item })),
                Err(d) => problems.push(d),
            },
            "connectors" => match parse::<ConnectorsFile>(path, text) {
                Ok(f) => connectors.extend(f.connectors.into_iter().map(|item| InFile { file: path.clone(), item })),
                Err(d) => problems.push(d),
            },
            "observability/rules" => match parse::<RulesFile>(path, text) {
                Ok(f) => rules.push(InFile { file: path.clone(), item: Located::unplaced(f) }),
                Err(d) => problems.push(d),
            },
            "observability/dashboards" => match Dashboard::parse(path, text) {
                Ok(d) => dashboards.push(d),
                Err(d) => problems.push(d),
            },
            _ => {}
        }
    }

    let (Some(cluster), Some(nodes)) = (cluster, nodes) else {
        return Err(Diagnostics(problems).sorted());
    };
    let ca_path = cluster.security.ca.certificate.value.as_str().to_owned();
    let ca_certificate = match files.get(&ca_path) {
        None => {
            problems.push(Diagnostic::at(
                "cluster.yaml",
                cluster.security.ca.certificate.pos,
                format!("CA certificate {ca_path} does not exist in the repository"),
            ));
            String::new()
        }
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") && pem.contains("-----END CERTIFICATE-----") => pem.to_owned(),
            _ => {
                problems.push(Diagnostic::file(&ca_path, "is not a PEM certificate (expected -----BEGIN CERTIFICATE-----)"));
                String::new()
            }
        },
    };

    let model = Model {
        cluster,
        nodes: nodes.nodes,
        topics,
        users,
        connectors,
        rules,
        dashboards,
        secrets,
        ca_certificate,
    };
    problems.extend(validate::validate(&model));
    if problems.is_empty() { Ok(model) } else { Err(Diagnostics(problems).sorted()) }
}

/// Displays an error's own message without repeating the file name that
/// the diagnostic already carries.
struct ErrorTail<'a>(&'a crate::secrets::SecretError);

impl std::fmt::Display for ErrorTail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let full = self.0.to_string();
        let tail = full.split_once(": ").map_or(full.as_str(), |(_, t)| t);
        f.write_str(tail)
    }
}
