//! Loading a repository: files in, [`Model`] or every problem out.
//!
//! Parsing is pure: [`load_files`] takes the repository as a map of path →
//! bytes (from a directory, or later a git tree). [`load_dir`] is the only
//! function here that touches the filesystem, and it only reads.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::{DeserializeOwned, IgnoredAny};

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
    let (files, problems) = read(root)?;
    match load_files(&files) {
        Ok(model) if problems.is_empty() => Ok(model),
        Ok(_) => Err(Diagnostics(problems).sorted()),
        Err(mut d) => {
            d.0.extend(problems);
            Err(d.sorted())
        }
    }
}

/// Reads the files kraftops cares about from `root` into a [`FileSet`],
/// without loading them: what [`load_files`] takes.
pub fn read_repository(root: &Path) -> Result<FileSet, Diagnostics> {
    match read(root)? {
        (files, problems) if problems.is_empty() => Ok(files),
        (_, problems) => Err(Diagnostics(problems).sorted()),
    }
}

/// The repository's known files, and the problems met reading them.
fn read(root: &Path) -> Result<(FileSet, Vec<Diagnostic>), Diagnostics> {
    let mut files = FileSet::new();
    let mut problems = Vec::new();
    let mut read = |rel: String, files: &mut FileSet| {
        let path = root.join(&rel);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() > MAX_FILE_BYTES => {
                problems.push(Diagnostic::file(
                    &rel,
                    format!(
                        "file is {} bytes; the limit is {MAX_FILE_BYTES}",
                        meta.len()
                    ),
                ));
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
        return Err(Diagnostics(vec![Diagnostic::file(
            root.display().to_string(),
            "is not a directory",
        )]));
    }
    for top in ["cluster.yaml", "nodes.yaml"] {
        read(top.to_owned(), &mut files);
    }
    for (dir, _) in DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
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
        read(
            cluster.security.ca.certificate.value.as_str().to_owned(),
            &mut files,
        );
    }
    Ok((files, problems))
}

/// Parses one YAML file into `T`, turning the parser's error into a
/// diagnostic at its line and column.
fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, Diagnostic> {
    let options = || {
        serde_saphyr::options! {
            with_snippet: false,
        }
    };
    serde_saphyr::from_str_with_options::<T>(text, options()).map_err(|e| {
        // The typed parse reads the document as a stream and may stop at a
        // consequence of a syntax error (a mapping cut short by a bad indent
        // is "missing field"); report the syntax error itself when there is one.
        let syntax = serde_saphyr::from_str_with_options::<IgnoredAny>(text, options()).err();
        diagnostic(file, text, syntax.as_ref().unwrap_or(&e))
    })
}

fn diagnostic(file: &str, text: &str, e: &serde_saphyr::Error) -> Diagnostic {
    let e = e.without_snippet();
    let Some(loc) = e.location() else {
        return Diagnostic::file(file, e.to_string());
    };
    let pos = Pos {
        line: loc.line(),
        column: loc.column(),
    };
    let message = match e {
        serde_saphyr::Error::InvalidScalar { ty, .. } => invalid_scalar(ty, scalar_at(text, pos)),
        _ => {
            let message = e.to_string();
            let suffix = format!(" at line {}, column {}", loc.line(), loc.column());
            let message = message.strip_suffix(&suffix).unwrap_or(&message).to_owned();
            match (e, unclosed_flow(text, pos)) {
                (serde_saphyr::Error::ExternalMessage { .. }, Some((bracket, open)))
                    if open.line < pos.line =>
                {
                    format!("{message}; the `{bracket}` at {open} is still open here")
                }
                _ => message,
            }
        }
    };
    Diagnostic::at(file, pos, message)
}

/// What a scalar of Rust type `ty` should have looked like.
fn invalid_scalar(ty: &str, found: &str) -> String {
    let expected = match ty {
        "u8" => format!("a whole number from 0 to {}", u8::MAX),
        "u16" => format!("a whole number from 0 to {}", u16::MAX),
        "u32" => format!("a whole number from 0 to {}", u32::MAX),
        "u64" => format!("a whole number from 0 to {}", u64::MAX),
        "i8" | "i16" | "i32" | "i64" => "a whole number".to_owned(),
        "bool" | "boolean" => "true or false".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        other => format!("a {other}"),
    };
    format!("expected {expected}, found `{found}`")
}

/// The scalar that starts at `pos`, as written (quotes included).
fn scalar_at(text: &str, pos: Pos) -> &str {
    let Some(line) = text.lines().nth(pos.line.saturating_sub(1) as usize) else {
        return "";
    };
    let start = line
        .char_indices()
        .nth(pos.column.saturating_sub(1) as usize)
        .map_or(line.len(), |(i, _)| i);
    let rest = &line[start..];
    let end = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => rest[1..].find(q).map_or(rest.len(), |i| i + 2),
        _ => rest
            .find([',', ']', '}'])
            .or_else(|| rest.find(" #"))
            .unwrap_or(rest.len()),
    };
    rest[..end].trim_end()
}

/// The innermost flow collection (`[` or `{`) still open at `at`, with where
/// it was opened. A syntax error inside one is found where the parser gives
/// up, often lines below the bracket that was never closed. A heuristic for
/// a hint only: it knows quotes, comments and block scalars, not all of YAML.
fn unclosed_flow(text: &str, at: Pos) -> Option<(char, Pos)> {
    let mut open: Vec<(char, Pos)> = Vec::new();
    // While inside a block scalar (`|` or `>`): the indentation of its key.
    let mut block_scalar: Option<usize> = None;
    for (index, line) in text.lines().enumerate().take(at.line as usize) {
        let line_no = index as u64 + 1;
        let indent = line.len() - line.trim_start().len();
        if let Some(key_indent) = block_scalar {
            if line.trim().is_empty() || indent > key_indent {
                continue;
            }
            block_scalar = None;
        }
        let mut value_start = true;
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        let mut chars = line.chars().enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            let column = i as u64 + 1;
            if line_no == at.line && column >= at.column {
                break;
            }
            if let Some(q) = quote {
                match c {
                    '\\' if q == '"' => {
                        chars.next();
                    }
                    c if c == q => quote = None,
                    _ => {}
                }
                prev = c;
                continue;
            }
            let flow = !open.is_empty();
            match c {
                '#' if prev == ' ' || i == 0 => break,
                '"' | '\'' if value_start => quote = Some(c),
                '[' | '{' if value_start || flow => {
                    open.push((
                        c,
                        Pos {
                            line: line_no,
                            column,
                        },
                    ));
                    value_start = true;
                }
                ']' | '}' if flow => {
                    open.pop();
                }
                ',' if flow => value_start = true,
                ':' | '-' if chars.peek().is_none_or(|(_, n)| *n == ' ') => value_start = true,
                '|' | '>' if value_start && !flow => {
                    let rest: String = chars.by_ref().map(|(_, c)| c).collect();
                    if rest.trim_start().is_empty()
                        || rest.trim_start().starts_with('#')
                        || rest
                            .chars()
                            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' '))
                    {
                        block_scalar = Some(indent);
                    }
                    break;
                }
                ' ' | '\t' => {}
                _ => value_start = false,
            }
            prev = c;
        }
    }
    open.pop()
}

fn text<'a>(file: &str, bytes: &'a [u8], problems: &mut Vec<Diagnostic>) -> Option<&'a str> {
    match std::str::from_utf8(bytes) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(Diagnostic::file(
                file,
                format!(
                    "is not UTF-8 text (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            ));
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
                problems.push(Diagnostic::file(
                    name,
                    "is missing; every desired-state repository has one",
                ));
                None
            }
            Some(bytes) => text(name, bytes, problems).map(str::to_owned),
        }
    };
    let cluster_text = required("cluster.yaml", &mut problems);
    let nodes_text = required("nodes.yaml", &mut problems);
    let cluster = cluster_text.as_deref().and_then(|t| {
        parse::<ClusterFile>("cluster.yaml", t)
            .map_err(|d| problems.push(d))
            .ok()
    });
    let nodes = nodes_text.and_then(|t| {
        parse::<NodesFile>("nodes.yaml", &t)
            .map_err(|d| problems.push(d))
            .ok()
    });

    let mut topics = Vec::new();
    let mut users = Vec::new();
    let mut connectors = Vec::new();
    let mut rules = Vec::new();
    let mut dashboards = Vec::new();
    let mut secrets = BTreeMap::new();
    let mut notes = validate::LoadNotes::default();

    for (path, bytes) in files {
        let Some((dir, ext)) = DIRS.iter().find(|(dir, _)| {
            path.strip_prefix(dir)
                .is_some_and(|rest| rest.starts_with('/') && !rest[1..].contains('/'))
        }) else {
            continue;
        };
        if !path.ends_with(ext) {
            problems.push(Diagnostic::file(
                path,
                format!("unexpected file in {dir}/: only *{ext} files belong here"),
            ));
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
                    Err(e) => {
                        problems.push(Diagnostic::file(path, format!("{}", ErrorTail(&e))));
                        notes.broken_secrets.insert(name);
                    }
                },
            }
            continue;
        }
        let Some(text) = text(path, bytes, &mut problems) else {
            notes.users_incomplete |= *dir == "users";
            continue;
        };
        match *dir {
            "topics" => match parse::<TopicsFile>(path, text) {
                Ok(f) => topics.extend(f.topics.into_iter().map(|item| InFile {
                    file: path.clone(),
                    item,
                })),
                Err(d) => problems.push(d),
            },
            "users" => match parse::<UsersFile>(path, text) {
                Ok(f) => users.extend(f.users.into_iter().map(|item| InFile {
                    file: path.clone(),
                    item,
                })),
                Err(d) => {
                    problems.push(d);
                    notes.users_incomplete = true;
                }
            },
            "connectors" => match parse::<ConnectorsFile>(path, text) {
                Ok(f) => connectors.extend(f.connectors.into_iter().map(|item| InFile {
                    file: path.clone(),
                    item,
                })),
                Err(d) => problems.push(d),
            },
            "observability/rules" => match parse::<RulesFile>(path, text) {
                Ok(f) => rules.push(InFile {
                    file: path.clone(),
                    item: Located::unplaced(f),
                }),
                Err(d) => problems.push(d),
            },
            "observability/dashboards" => match Dashboard::parse(path, text) {
                Ok(d) => dashboards.push(d),
                Err(d) => problems.push(d),
            },
            _ => {}
        }
    }

    if let (None, Some(nodes)) = (&cluster, &nodes) {
        // cluster.yaml is broken; the node list can still be checked alone.
        validate::check_node_list(&nodes.nodes, &mut problems);
    }
    let (Some(cluster), Some(nodes), Some(cluster_text)) = (cluster, nodes, cluster_text) else {
        return Err(Diagnostics(problems).sorted());
    };
    notes.port_positions = port_positions(&cluster_text);
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
            Ok(pem)
                if pem.contains("-----BEGIN CERTIFICATE-----")
                    && pem.contains("-----END CERTIFICATE-----") =>
            {
                pem.to_owned()
            }
            _ => {
                problems.push(Diagnostic::file(
                    &ca_path,
                    "is not a PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                ));
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
    problems.extend(validate::validate(&model, &notes));
    if problems.is_empty() {
        Ok(model)
    } else {
        Err(Diagnostics(problems).sorted())
    }
}

/// Where each key under `ports:` in cluster.yaml is: [`Ports`] keeps no
/// positions, but a port collision should point at the port that was set.
fn port_positions(cluster_text: &str) -> BTreeMap<String, Pos> {
    #[derive(serde::Deserialize)]
    struct PortsOnly {
        #[serde(default)]
        ports: BTreeMap<String, Located<IgnoredAny>>,
    }
    serde_saphyr::from_str::<PortsOnly>(cluster_text).map_or_else(
        |_| BTreeMap::new(),
        |p| p.ports.into_iter().map(|(k, v)| (k, v.pos)).collect(),
    )
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
