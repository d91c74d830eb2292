//! The cluster's status for people: an aligned text table for a terminal
//! (`kraftops-agent status`) and a small read-only HTML page (`GET /` on the
//! coordinator), both rendered from one [`StatusSnapshot`] so they show the
//! same rows.
//!
//! Every value shown comes from reports, Kafka or git, so none is trusted:
//! control characters are replaced before a terminal sees them, and the
//! page escapes every value (it has no script at all, and says so in its
//! Content-Security-Policy).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use super::Coordinator;
use super::cluster_api::{ConnectorList, TopicList, connector_list, topic_list};
use crate::protocol::{NodeView, Phase, RolloutView};

/// How often the page reloads itself.
pub const REFRESH_SECONDS: u32 = 10;
/// How long the page waits for Kafka's topic list before it shows the
/// rest without it.
const PAGE_KAFKA_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest value a table cell shows.
const CELL_LIMIT: usize = 72;

/// Everything the table and the page show. Topics and connectors come
/// from the cluster API, which can fail on its own (Kafka down): then the
/// error is shown in their place.
#[derive(Clone, Debug)]
pub struct StatusSnapshot {
    pub cluster: String,
    /// Unix seconds, for certificate expiry.
    pub now: u64,
    pub nodes: Vec<NodeView>,
    pub rollout: RolloutView,
    pub topics: Result<TopicList, String>,
    pub connectors: Result<ConnectorList, String>,
}

/// How a cell reads at a glance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub tone: Tone,
}

impl Cell {
    fn plain(text: impl AsRef<str>) -> Self {
        Self {
            text: clean(text.as_ref()),
            tone: Tone::Plain,
        }
    }

    fn toned(text: impl AsRef<str>, tone: Tone) -> Self {
        Self {
            text: clean(text.as_ref()),
            tone,
        }
    }
}

/// One section: a title, a line or two about it, and its rows.
#[derive(Clone, Debug)]
pub struct Section {
    pub title: &'static str,
    pub notes: Vec<String>,
    pub headers: Vec<&'static str>,
    /// Each row's key (the node's or the topic's name) and its cells.
    pub rows: Vec<(String, Vec<Cell>)>,
}

/// Control characters (a terminal escape among them) become spaces; long
/// values are cut, so one bad report cannot break the table.
fn clean(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.chars().count() > CELL_LIMIT {
        out = out.chars().take(CELL_LIMIT - 1).collect();
        out.push('…');
    }
    out
}

fn short(revision: Option<&str>) -> String {
    revision.map_or_else(|| "-".to_owned(), |r| r.chars().take(12).collect())
}

fn phase_name(phase: Phase) -> String {
    serde_json::to_value(phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{phase:?}"))
}

fn phase_tone(phase: Phase) -> Tone {
    match phase {
        Phase::Converged => Tone::Good,
        Phase::Refused | Phase::RepoUnreachable | Phase::Failed => Tone::Bad,
        _ => Tone::Warn,
    }
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// Days until the node's first certificate expires (negative: expired).
pub fn cert_days(node: &NodeView, now: u64) -> Option<i64> {
    let not_after = node
        .report
        .as_ref()?
        .certificates
        .iter()
        .map(|c| c.not_after)
        .min()?;
    let seconds =
        i64::try_from(not_after).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(i64::MAX);
    Some(seconds.div_euclid(86_400))
}

fn nodes_section(s: &StatusSnapshot) -> Section {
    let rows = s
        .nodes
        .iter()
        .map(|n| {
            let report = n.report.as_ref();
            let phase = report.map_or_else(
                || Cell::toned("not reported", Tone::Warn),
                |r| Cell::toned(phase_name(r.phase), phase_tone(r.phase)),
            );
            let units = report.map_or_else(
                || Cell::plain("-"),
                |r| {
                    let up = r
                        .units
                        .iter()
                        .filter(|u| u.active_state == "active")
                        .count();
                    let tone = if up == r.units.len() {
                        Tone::Plain
                    } else {
                        Tone::Bad
                    };
                    Cell::toned(format!("{up}/{}", r.units.len()), tone)
                },
            );
            let cert = match cert_days(n, s.now) {
                None => Cell::plain("-"),
                Some(d) if d < 0 => Cell::toned("expired", Tone::Bad),
                Some(d) if d < 14 => Cell::toned(format!("{d}d"), Tone::Warn),
                Some(d) => Cell::plain(format!("{d}d")),
            };
            let waiting = report
                .and_then(|r| r.waiting.as_ref())
                .map_or_else(|| "-".to_owned(), |w| w.reason.clone());
            let age = n
                .age_seconds
                .map_or_else(|| "-".to_owned(), |a| format!("{a}s"));
            (
                n.node.clone(),
                vec![
                    Cell::plain(&n.node),
                    Cell::plain(&n.role),
                    Cell::plain(short(report.and_then(|r| r.revision_applied.as_deref()))),
                    phase,
                    units,
                    cert,
                    Cell::plain(age),
                    Cell::plain(waiting),
                ],
            )
        })
        .collect();
    Section {
        title: "Nodes",
        notes: Vec::new(),
        headers: vec![
            "NODE", "ROLE", "REVISION", "PHASE", "UNITS", "CERT", "AGE", "WAITING",
        ],
        rows,
    }
}

fn rollout_section(s: &StatusSnapshot) -> Section {
    let r = &s.rollout;
    let window = if r.window.windows == 0 {
        "any time".to_owned()
    } else if r.window.open {
        "a maintenance window is open".to_owned()
    } else {
        "outside the maintenance windows".to_owned()
    };
    let mut notes = vec![format!(
        "revision {}, {}, restarts {window}",
        short(r.revision.as_deref()),
        if r.paused { "paused" } else { "not paused" },
    )];
    notes.push(match &r.metadata_version {
        None => "metadata.version: not set in git".to_owned(),
        Some(mv) => {
            let mut line = format!(
                "metadata.version: {} wanted (level {}), Kafka at {}: {}",
                mv.desired,
                mv.desired_level
                    .map_or_else(|| "?".to_owned(), |l| l.to_string()),
                mv.finalized_level
                    .map_or_else(|| "?".to_owned(), |l| l.to_string()),
                mv.state
            );
            if let Some(detail) = &mv.detail {
                let _ = write!(line, " ({detail})");
            }
            line
        }
    });
    let rows = r
        .roles
        .iter()
        .map(|role| {
            let holders: Vec<String> = role
                .holders
                .iter()
                .map(|h| format!("{} ({}s)", h.node, h.expires_in_seconds))
                .collect();
            let halted: Vec<String> = role
                .halted
                .iter()
                .map(|h| format!("{}: {}", h.node, h.reason))
                .collect();
            let waiting: Vec<String> = role.waiting.iter().map(|w| w.node.clone()).collect();
            (
                role.role.clone(),
                vec![
                    Cell::plain(&role.role),
                    Cell::plain(role.max_unavailable.to_string()),
                    Cell::plain(or_dash(&holders.join(", "))),
                    if halted.is_empty() {
                        Cell::plain("-")
                    } else {
                        Cell::toned(halted.join("; "), Tone::Bad)
                    },
                    Cell::plain(or_dash(&waiting.join(", "))),
                ],
            )
        })
        .collect();
    Section {
        title: "Rollout",
        notes: notes.into_iter().map(|n| clean(&n)).collect(),
        headers: vec!["ROLE", "MAX", "HOLDERS", "HALTED", "WAITING"],
        rows,
    }
}

fn topics_section(s: &StatusSnapshot) -> Section {
    let mut section = Section {
        title: "Topics",
        notes: Vec::new(),
        headers: vec!["TOPIC", "MANAGED", "PARTITIONS", "RF", "URP", "OFFLINE"],
        rows: Vec::new(),
    };
    match &s.topics {
        Err(e) => section.notes.push(clean(e)),
        Ok(list) => {
            for t in &list.topics {
                let managed = if t.internal {
                    Cell::plain("internal")
                } else if t.managed {
                    Cell::plain("yes")
                } else {
                    Cell::toned("no", Tone::Warn)
                };
                let count = |n: usize| {
                    Cell::toned(n.to_string(), if n > 0 { Tone::Bad } else { Tone::Plain })
                };
                section.rows.push((
                    t.name.clone(),
                    vec![
                        Cell::plain(&t.name),
                        managed,
                        Cell::plain(t.partitions.to_string()),
                        Cell::plain(t.replication_factor.to_string()),
                        count(t.under_replicated),
                        count(t.offline),
                    ],
                ));
            }
            for d in &list.declared_not_in_kafka {
                section.notes.push(clean(&format!(
                    "{} is declared in {} but not in Kafka yet",
                    d.name, d.file
                )));
            }
        }
    }
    section
}

fn connectors_section(s: &StatusSnapshot) -> Section {
    let mut section = Section {
        title: "Connectors",
        notes: Vec::new(),
        headers: vec!["CONNECTOR", "DECLARED", "STATE", "TASKS", "PROBLEM"],
        rows: Vec::new(),
    };
    match &s.connectors {
        Err(e) => section.notes.push(clean(e)),
        Ok(list) => {
            section.notes.extend(list.note.iter().map(|n| clean(n)));
            section.notes.extend(
                list.error
                    .iter()
                    .map(|e| clean(&format!("Connect could not be listed: {e}"))),
            );
            for c in &list.connectors {
                let running = c.tasks.iter().filter(|t| t.state == "RUNNING").count();
                let state = c.state.clone().unwrap_or_else(|| "-".to_owned());
                let tone = match state.as_str() {
                    "RUNNING" => Tone::Good,
                    "FAILED" | "UNASSIGNED" => Tone::Bad,
                    _ => Tone::Warn,
                };
                let problem = c
                    .refusal
                    .first()
                    .or(c.error.as_ref())
                    .or(c.trace.as_ref())
                    .cloned()
                    .unwrap_or_else(|| "-".to_owned());
                section.rows.push((
                    c.name.clone(),
                    vec![
                        Cell::plain(&c.name),
                        Cell::plain(c.declared_state.as_deref().unwrap_or("not in git")),
                        Cell::toned(state, tone),
                        Cell::plain(format!("{running}/{}", c.tasks.len())),
                        Cell::plain(problem),
                    ],
                ));
            }
        }
    }
    section
}

/// The page's and the table's sections, in order.
pub fn sections(s: &StatusSnapshot) -> Vec<Section> {
    vec![
        nodes_section(s),
        rollout_section(s),
        topics_section(s),
        connectors_section(s),
    ]
}

// ------------------------------------------------------------------ text

fn ansi(tone: Tone) -> Option<&'static str> {
    match tone {
        Tone::Plain => None,
        Tone::Good => Some("\x1b[32m"),
        Tone::Warn => Some("\x1b[33m"),
        Tone::Bad => Some("\x1b[31m"),
    }
}

/// The status as aligned plain-text tables: two spaces between columns,
/// no trailing spaces. With `colour`, tones are ANSI colours (the padding
/// stays outside them, so columns align either way).
pub fn render_table(s: &StatusSnapshot, colour: bool) -> String {
    let mut out = String::new();
    if !s.cluster.is_empty() {
        let _ = writeln!(out, "cluster {}", clean(&s.cluster));
    }
    for (i, section) in sections(s).into_iter().enumerate() {
        if i > 0 || !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(out, "{}", section.title.to_uppercase());
        for note in &section.notes {
            let _ = writeln!(out, "  {note}");
        }
        if section.rows.is_empty() {
            if section.notes.is_empty() {
                out.push_str("  (none)\n");
            }
            continue;
        }
        let mut widths: Vec<usize> = section.headers.iter().map(|h| h.chars().count()).collect();
        for (_, cells) in &section.rows {
            for (i, cell) in cells.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.text.chars().count());
                }
            }
        }
        let header_cells: Vec<Cell> = section.headers.iter().map(Cell::plain).collect();
        for cells in std::iter::once(&header_cells).chain(section.rows.iter().map(|(_, c)| c)) {
            let mut line = String::new();
            let last = cells.len().saturating_sub(1);
            for (i, cell) in cells.iter().enumerate() {
                match ansi(cell.tone).filter(|_| colour) {
                    Some(code) => {
                        let _ = write!(line, "{code}{}\x1b[0m", cell.text);
                    }
                    None => line.push_str(&cell.text),
                }
                if i < last {
                    let pad = widths.get(i).copied().unwrap_or(0) - cell.text.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

// ------------------------------------------------------------------ HTML

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn tone_class(tone: Tone) -> &'static str {
    match tone {
        Tone::Plain => "",
        Tone::Good => " class=\"good\"",
        Tone::Warn => " class=\"warn\"",
        Tone::Bad => " class=\"bad\"",
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin-bottom:1em}\
th,td{text-align:left;padding:.2em .8em;border-bottom:1px solid #ddd;font-size:.9em}\
th{background:#f4f4f4}td{font-family:ui-monospace,monospace}\
.good{color:#176117}.warn{color:#8a5a00}.bad{color:#a31515;font-weight:bold}\
p.note{margin:.2em 0;color:#555}";

/// The read-only status page: server-rendered, no script, reloaded every
/// [`REFRESH_SECONDS`] by a meta refresh. Rows carry ids
/// (`node-<name>`, `topic-<name>`, …) so they can be found.
pub fn render_html(s: &StatusSnapshot) -> String {
    let cluster = escape_html(&s.cluster);
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\n\
         <title>kraftops: {cluster}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>kraftops: {cluster}</h1>\n<p class=\"note\">As of {} UTC; this page reloads every {REFRESH_SECONDS} s.</p>\n",
        escape_html(&desired_state::format_utc(s.now)),
    );
    for section in sections(s) {
        let id = section.title.to_lowercase();
        let _ = writeln!(
            out,
            "<section id=\"{id}\">\n<h2>{}</h2>",
            escape_html(section.title)
        );
        for note in &section.notes {
            let _ = writeln!(out, "<p class=\"note\">{}</p>", escape_html(note));
        }
        if section.rows.is_empty() {
            if section.notes.is_empty() {
                out.push_str("<p class=\"note\">(none)</p>\n");
            }
            out.push_str("</section>\n");
            continue;
        }
        out.push_str("<table>\n<thead><tr>");
        for h in &section.headers {
            let _ = write!(out, "<th>{}</th>", escape_html(&h.to_lowercase()));
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        let prefix = id.trim_end_matches('s');
        for (key, cells) in &section.rows {
            let _ = write!(out, "<tr id=\"{prefix}-{}\">", escape_html(key));
            for cell in cells {
                let _ = write!(
                    out,
                    "<td{}>{}</td>",
                    tone_class(cell.tone),
                    escape_html(&cell.text)
                );
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody>\n</table>\n</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// `GET /`: the status page.
pub(crate) async fn page(State(coordinator): State<Arc<Coordinator>>) -> Response {
    let snapshot = StatusSnapshot {
        cluster: coordinator.cluster(),
        now: crate::certs::unix_now(),
        nodes: coordinator.nodes(),
        rollout: coordinator.rollout(),
        topics: match tokio::time::timeout(PAGE_KAFKA_WAIT, topic_list(&coordinator)).await {
            Ok(listed) => listed.map_err(|f| f.body().error.message.clone()),
            Err(_) => Err(format!(
                "Kafka did not answer within {} s",
                PAGE_KAFKA_WAIT.as_secs()
            )),
        },
        connectors: connector_list(&coordinator).map_err(|f| f.body().error.message.clone()),
    };
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        render_html(&snapshot),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::coordinator::cluster_api::{
        ConnectorList, ConnectorView, DeclaredTopicRef, TaskView, TopicList, TopicSummary,
    };
    use crate::protocol::{
        CertificateStatus, HaltedGrant, LeaseHolder, MetadataVersionView, RoleRollout,
        StatusReport, UnitStatus, Waiting, WaitingNode, WindowView,
    };

    const NOW: u64 = 1_800_000_000;
    const REV: &str = "0123456789abcdef0123456789abcdef01234567";

    fn report(node: &str, role: &str, phase: Phase, units_up: usize, units: usize) -> StatusReport {
        StatusReport {
            node: node.to_owned(),
            role: role.to_owned(),
            revision_seen: Some(REV.to_owned()),
            revision_applied: Some(REV.to_owned()),
            signer: None,
            phase,
            units: (0..units)
                .map(|i| UnitStatus {
                    name: format!("unit-{i}.service"),
                    active_state: if i < units_up { "active" } else { "failed" }.to_owned(),
                    sub_state: "running".to_owned(),
                })
                .collect(),
            certificates: vec![
                CertificateStatus {
                    name: "node".to_owned(),
                    not_after: NOW + 30 * 86_400 + 100,
                },
                CertificateStatus {
                    name: "later".to_owned(),
                    not_after: NOW + 80 * 86_400,
                },
            ],
            last_error: None,
            drift: Vec::new(),
            reported_at: NOW,
            waiting: None,
            restarts: Vec::new(),
        }
    }

    fn snapshot() -> StatusSnapshot {
        let mut waiting = report("broker-2", "broker", Phase::WaitingForLease, 2, 3);
        waiting.waiting = Some(Waiting {
            reason: "lease held by broker-1\x1b[31m <script>alert(1)</script>\nsecond line"
                .to_owned(),
            since: NOW - 30,
        });
        let nodes = vec![
            NodeView {
                node: "broker-1".to_owned(),
                role: "broker".to_owned(),
                report: Some(report("broker-1", "broker", Phase::Converged, 3, 3)),
                age_seconds: Some(4),
            },
            NodeView {
                node: "broker-2".to_owned(),
                role: "broker".to_owned(),
                report: Some(waiting),
                age_seconds: Some(2),
            },
            NodeView {
                node: "controller-a-long-name".to_owned(),
                role: "controller".to_owned(),
                report: None,
                age_seconds: None,
            },
        ];
        let rollout = RolloutView {
            revision: Some(REV.to_owned()),
            paused: false,
            window: WindowView {
                windows: 0,
                open: true,
                closes_at: None,
                next_open: None,
            },
            roles: vec![RoleRollout {
                role: "broker".to_owned(),
                max_unavailable: 1,
                max_unavailable_per_az: None,
                holders: vec![LeaseHolder {
                    node: "broker-1".to_owned(),
                    az: "a".to_owned(),
                    fencing: 7,
                    revision: Some(REV.to_owned()),
                    granted_at: NOW - 10,
                    expires_in_seconds: 290,
                }],
                halted: vec![HaltedGrant {
                    node: "broker-1".to_owned(),
                    fencing: 7,
                    revision: Some(REV.to_owned()),
                    reason: "did not get healthy".to_owned(),
                    at: NOW,
                }],
                waiting: vec![WaitingNode {
                    node: "broker-2".to_owned(),
                    phase: Phase::WaitingForLease,
                    reason: None,
                    since: None,
                    age_seconds: 2,
                }],
            }],
            nodes: Vec::new(),
            history: Vec::new(),
            metadata_version: Some(MetadataVersionView {
                desired: "4.1".to_owned(),
                desired_level: Some(27),
                finalized_level: Some(26),
                state: "waiting".to_owned(),
                detail: None,
                checked_at: NOW,
            }),
        };
        let topic = |name: &str, managed: bool, urp: usize| TopicSummary {
            name: name.to_owned(),
            internal: name.starts_with("__"),
            managed,
            declared_in: managed.then(|| "topics/app.yaml".to_owned()),
            partitions: 6,
            replication_factor: 3,
            under_replicated: urp,
            offline: 0,
        };
        StatusSnapshot {
            cluster: "kafka-test".to_owned(),
            now: NOW,
            nodes,
            rollout,
            topics: Ok(TopicList {
                topics: vec![
                    topic("__consumer_offsets", false, 0),
                    topic("orders", true, 2),
                    topic("scratch", false, 0),
                ],
                count: 3,
                declared_not_in_kafka: vec![DeclaredTopicRef {
                    name: "future".to_owned(),
                    file: "topics/app.yaml".to_owned(),
                }],
            }),
            connectors: Ok(ConnectorList {
                connect: true,
                note: None,
                error: None,
                connectors: vec![ConnectorView {
                    name: "datagen".to_owned(),
                    declared_in: Some("connectors/datagen.yaml:3:5".to_owned()),
                    declared_state: Some("running".to_owned()),
                    state: Some("RUNNING".to_owned()),
                    worker: Some("connect-1:8083".to_owned()),
                    trace: None,
                    tasks: vec![
                        TaskView {
                            id: 0,
                            state: "RUNNING".to_owned(),
                            worker: "connect-1:8083".to_owned(),
                            trace: None,
                        },
                        TaskView {
                            id: 1,
                            state: "FAILED".to_owned(),
                            worker: "connect-1:8083".to_owned(),
                            trace: Some("boom".to_owned()),
                        },
                    ],
                    restarts: 1,
                    last_action: None,
                    error: None,
                    refusal: Vec::new(),
                }],
                count: 1,
            }),
        }
    }

    /// The lines of one section's table: header first.
    fn table_lines<'a>(text: &'a str, title: &str) -> Vec<&'a str> {
        let mut lines = text.lines().skip_while(|l| *l != title).skip(1);
        let mut out = Vec::new();
        for line in lines.by_ref() {
            if line.is_empty() {
                break;
            }
            if !line.starts_with("  ") {
                out.push(line);
            }
        }
        out
    }

    /// The column each header starts at (headers are single words).
    fn columns(header: &str) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut previous = ' ';
        for (i, c) in header.chars().enumerate() {
            if c != ' ' && previous == ' ' {
                let word: String = header.chars().skip(i).take_while(|c| *c != ' ').collect();
                out.push((word, i));
            }
            previous = c;
        }
        out
    }

    /// The text of `line` from char `at` up to the next two spaces.
    fn cell_at(line: &str, at: usize) -> String {
        let rest: String = line.chars().skip(at).collect();
        rest.split("  ").next().unwrap_or("").to_owned()
    }

    fn row<'a>(lines: &[&'a str], key: &str) -> &'a str {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no row {key} in {lines:#?}"))
    }

    #[test]
    fn every_node_has_a_row_with_its_values_under_the_headers() {
        let text = render_table(&snapshot(), false);
        let lines = table_lines(&text, "NODES");
        let cols: BTreeMap<String, usize> = columns(lines[0]).into_iter().collect();
        for h in [
            "NODE", "ROLE", "REVISION", "PHASE", "UNITS", "CERT", "WAITING",
        ] {
            assert!(cols.contains_key(h), "{h} in {}", lines[0]);
        }
        assert_eq!(lines.len(), 1 + 3, "a header and one row per node:\n{text}");
        let b1 = row(&lines, "broker-1");
        assert_eq!(cell_at(b1, cols["ROLE"]), "broker");
        assert_eq!(cell_at(b1, cols["REVISION"]), &REV[..12]);
        assert_eq!(cell_at(b1, cols["PHASE"]), "converged");
        assert_eq!(cell_at(b1, cols["UNITS"]), "3/3");
        assert_eq!(cell_at(b1, cols["CERT"]), "30d", "the earliest certificate");
        let b2 = row(&lines, "broker-2");
        assert_eq!(cell_at(b2, cols["PHASE"]), "waiting_for_lease");
        assert_eq!(cell_at(b2, cols["UNITS"]), "2/3");
        assert!(cell_at(b2, cols["WAITING"]).starts_with("lease held by broker-1"));
        let c = row(&lines, "controller-a-long-name");
        assert_eq!(cell_at(c, cols["ROLE"]), "controller");
        assert_eq!(cell_at(c, cols["REVISION"]), "-");
        assert_eq!(cell_at(c, cols["PHASE"]), "not reported");
        for line in &lines {
            assert_eq!(line.trim_end(), *line, "no trailing spaces");
        }
    }

    #[test]
    fn rollout_topics_and_connectors_are_shown() {
        let text = render_table(&snapshot(), false);
        let rollout = table_lines(&text, "ROLLOUT");
        let cols: BTreeMap<String, usize> = columns(rollout[0]).into_iter().collect();
        let broker = row(&rollout, "broker");
        assert_eq!(cell_at(broker, cols["HOLDERS"]), "broker-1 (290s)");
        assert!(cell_at(broker, cols["HALTED"]).contains("did not get healthy"));
        assert_eq!(cell_at(broker, cols["WAITING"]), "broker-2");
        assert!(text.contains("metadata.version: 4.1 wanted (level 27), Kafka at 26: waiting"));

        let topics = table_lines(&text, "TOPICS");
        let cols: BTreeMap<String, usize> = columns(topics[0]).into_iter().collect();
        assert_eq!(topics.len(), 1 + 3);
        assert_eq!(cell_at(row(&topics, "orders"), cols["MANAGED"]), "yes");
        assert_eq!(cell_at(row(&topics, "orders"), cols["URP"]), "2");
        assert_eq!(cell_at(row(&topics, "scratch"), cols["MANAGED"]), "no");
        assert_eq!(
            cell_at(row(&topics, "__consumer_offsets"), cols["MANAGED"]),
            "internal"
        );
        assert!(text.contains("future is declared in topics/app.yaml but not in Kafka yet"));

        let connectors = table_lines(&text, "CONNECTORS");
        let cols: BTreeMap<String, usize> = columns(connectors[0]).into_iter().collect();
        let datagen = row(&connectors, "datagen");
        assert_eq!(cell_at(datagen, cols["STATE"]), "RUNNING");
        assert_eq!(cell_at(datagen, cols["TASKS"]), "1/2");
    }

    #[test]
    fn control_characters_never_reach_the_terminal_and_colour_keeps_alignment() {
        let plain = render_table(&snapshot(), false);
        assert!(!plain.contains('\x1b'), "no escape without colour");
        let reason_lines: Vec<&str> = plain.lines().filter(|l| l.contains("second")).collect();
        assert_eq!(reason_lines.len(), 1, "{plain}");
        assert!(
            reason_lines[0].starts_with("broker-2 "),
            "the reason stays on its node's row: {reason_lines:?}"
        );
        let coloured = render_table(&snapshot(), true);
        assert!(coloured.contains("\x1b[32mconverged\x1b[0m"));
        let mut stripped = String::new();
        let mut chars = coloured.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                stripped.push(c);
            }
        }
        assert_eq!(
            stripped, plain,
            "colour adds codes around cells, nothing else"
        );
    }

    #[test]
    fn kafka_unavailable_still_shows_nodes_and_says_why() {
        let mut s = snapshot();
        s.topics = Err("Kafka did not answer Metadata".to_owned());
        s.connectors = Err("no commit yet".to_owned());
        let text = render_table(&s, false);
        assert!(text.contains("broker-1"));
        assert!(text.contains("  Kafka did not answer Metadata"));
        assert!(text.contains("  no commit yet"));
    }

    #[test]
    fn the_page_escapes_values_refreshes_and_has_a_row_per_node_and_topic() {
        let html = render_html(&snapshot());
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains('\x1b'));
        for node in ["broker-1", "broker-2", "controller-a-long-name"] {
            assert!(html.contains(&format!("<tr id=\"node-{node}\"><td>{node}</td>")));
        }
        for topic in ["orders", "scratch", "__consumer_offsets"] {
            assert!(html.contains(&format!("<tr id=\"topic-{topic}\">")));
        }
        assert!(html.contains("<tr id=\"connector-datagen\">"));
        assert!(html.contains("<tr id=\"rollout-broker\">"));
        assert_eq!(escape_html("a&<>\"'b"), "a&amp;&lt;&gt;&quot;&#39;b");
    }
}
