//! The rollout policy of `rollout:` in cluster.yaml as the coordinator
//! applies it to restart leases: pause, maintenance windows, halted roles,
//! the order of roles, and the per-role and per-AZ budgets. Also the
//! `GET /v1/rollout` view.

use desired_state::{MaintenanceWindow, window_state};

use super::State;
use super::refusal::Refusal;
use crate::protocol::{
    HaltedGrant, Lease, LeaseHolder, NodeRollout, Phase, RoleRollout, RolloutView, WaitingNode,
    WindowView,
};

/// A report younger than this (by the coordinator's clock) speaks for its
/// node in the order of roles; an older one, or none, does not block: a dead
/// node must not freeze the cluster (the agents' Kafka gates protect it).
pub const FRESH_REPORT_SECONDS: u64 = 120;

/// The rollout policy from `rollout:` in cluster.yaml, as the coordinator
/// needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutRules {
    /// Live grants per role at most (at least 1).
    pub max_unavailable: u16,
    /// Live grants per role and AZ at most; `None`: only `max_unavailable`.
    pub max_unavailable_per_az: Option<u16>,
    /// When leases may be granted; empty: at any time.
    pub windows: Vec<MaintenanceWindow>,
    /// No lease is granted while true.
    pub paused: bool,
}

impl Default for RolloutRules {
    fn default() -> Self {
        Self {
            max_unavailable: 1,
            max_unavailable_per_az: None,
            windows: Vec::new(),
            paused: false,
        }
    }
}

impl RolloutRules {
    /// The rules of `policy` (cluster.yaml's `rollout:`).
    pub fn of(policy: &desired_state::RolloutPolicy) -> Self {
        Self {
            max_unavailable: *policy.max_unavailable,
            max_unavailable_per_az: policy.max_unavailable_per_az.as_deref().copied(),
            windows: policy.maintenance_windows.clone(),
            paused: policy.paused,
        }
    }
}

/// A commit id as operators read it.
pub(crate) fn short(revision: &str) -> &str {
    revision.get(..7).unwrap_or(revision)
}

/// Where a role restarts in a rollout: controllers, then brokers, then
/// Connect. Other roles (observability) take no part in the order.
fn rank(role: &str) -> Option<u8> {
    match role {
        "controller" => Some(0),
        "broker" => Some(1),
        "connect" => Some(2),
        _ => None,
    }
}

fn phase_name(phase: Phase) -> String {
    serde_json::to_value(phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What an acquire may do, once its caller is authenticated and outside
/// the restart grace.
pub(crate) enum Admission {
    /// The caller holds a live grant of the role already: it is returned
    /// unchanged.
    Holding(Lease),
    /// A slot may be granted.
    Grant,
}

/// Checks, in order: pause, maintenance windows, a halted role, the order
/// of roles, then the role's and the AZ's budget.
pub(crate) fn admit(
    state: &State,
    role: &str,
    node: &str,
    revision: Option<&str>,
    now: u64,
) -> Result<Admission, Refusal> {
    let rules = &state.roster.rollout;
    if rules.paused {
        return Err(Refusal::RolloutPaused);
    }
    let window = window_state(&rules.windows, now);
    if !window.open {
        return Err(Refusal::OutsideWindows {
            next_open: window.next_open,
            now,
        });
    }
    if let Some(halted) = state.leases.halted(role).first()
        && let Some(halt) = &halted.halted
    {
        return Err(Refusal::RolloutHalted {
            role: role.to_owned(),
            node: halted.holder.clone(),
            revision: halt.revision.clone(),
            reason: halt.reason.clone(),
        });
    }
    if let Some(unread) = state.leases.unread_halt(role) {
        return Err(Refusal::HaltsUnread {
            role: role.to_owned(),
            reason: unread.reason.clone(),
        });
    }
    check_order(state, role, revision, now)?;

    if let Some(lease) = state.leases.held_by(role, node, now) {
        return Ok(Admission::Holding(lease));
    }
    let live = state.leases.live_grants(role, now);
    if live.len() >= usize::from(rules.max_unavailable) {
        return Err(Refusal::LeaseHeld {
            role: role.to_owned(),
            holders: live
                .iter()
                .map(|g| (g.holder.clone(), g.expires_in(now)))
                .collect(),
        });
    }
    if let Some(per_az) = rules.max_unavailable_per_az {
        let az = &state.roster.entry(node)?.az;
        let same_az: Vec<String> = live
            .iter()
            .filter(|g| {
                state
                    .roster
                    .nodes
                    .get(&g.holder)
                    .is_some_and(|e| &e.az == az)
            })
            .map(|g| g.holder.clone())
            .collect();
        if same_az.len() >= usize::from(per_az) {
            return Err(Refusal::AzBudgetUsed {
                role: role.to_owned(),
                az: az.clone(),
                holders: same_az,
            });
        }
    }
    Ok(Admission::Grant)
}

/// A node of an earlier role blocks the grant while it holds its role's
/// lease, or while its fresh report says it waits for one or restarts, or
/// (when the request names a revision) has not applied that revision yet.
fn check_order(state: &State, role: &str, revision: Option<&str>, now: u64) -> Result<(), Refusal> {
    let Some(mine) = rank(role) else {
        return Ok(());
    };
    for (node, entry) in &state.roster.nodes {
        let Some(theirs) = rank(&entry.role) else {
            continue;
        };
        if theirs >= mine {
            continue;
        }
        let busy = |detail: String| Refusal::EarlierRoleBusy {
            earlier_role: entry.role.clone(),
            node: node.clone(),
            detail,
        };
        if state
            .leases
            .live_grants(&entry.role, now)
            .iter()
            .any(|g| &g.holder == node)
        {
            return Err(busy(format!("holds the {} lease", entry.role)));
        }
        let Some(received) = state
            .reports
            .get(node)
            .filter(|r| now.saturating_sub(r.received_at) < FRESH_REPORT_SECONDS)
        else {
            continue;
        };
        let report = &received.report;
        if matches!(report.phase, Phase::WaitingForLease | Phase::Restarting) {
            return Err(busy(format!("is {}", phase_name(report.phase))));
        }
        if let Some(wanted) = revision
            && report.revision_applied.as_deref() != Some(wanted)
        {
            return Err(busy(format!("has not applied {} yet", short(wanted))));
        }
    }
    Ok(())
}

/// The node of a halt the coordinator could not read back, in the view.
const UNKNOWN_NODE: &str = "(unknown)";

/// Roles in rollout order, then the others by name.
fn role_order(a: &str, b: &str) -> std::cmp::Ordering {
    (rank(a).unwrap_or(u8::MAX), a).cmp(&(rank(b).unwrap_or(u8::MAX), b))
}

/// `GET /v1/rollout`.
pub(crate) fn view(state: &State, now: u64) -> RolloutView {
    let rules = &state.roster.rollout;
    let window = window_state(&rules.windows, now);
    let mut roles: Vec<String> = state
        .roster
        .nodes
        .values()
        .map(|e| e.role.clone())
        .collect();
    roles.sort_by(|a, b| role_order(a, b));
    roles.dedup();
    let roles = roles
        .into_iter()
        .map(|role| {
            let holders = state
                .leases
                .live_grants(&role, now)
                .into_iter()
                .map(|g| LeaseHolder {
                    node: g.holder.clone(),
                    az: state
                        .roster
                        .nodes
                        .get(&g.holder)
                        .map(|e| e.az.clone())
                        .unwrap_or_default(),
                    fencing: g.fencing,
                    revision: g.revision.clone(),
                    granted_at: g.granted_at,
                    expires_in_seconds: g.expires_in(now),
                })
                .collect();
            let halted = state
                .leases
                .halted(&role)
                .into_iter()
                .filter_map(|g| {
                    let halt = g.halted.as_ref()?;
                    Some(HaltedGrant {
                        node: g.holder.clone(),
                        fencing: g.fencing,
                        revision: halt.revision.clone(),
                        reason: halt.reason.clone(),
                        at: halt.at,
                    })
                })
                // A halt the unread record may have held has no node.
                .chain(state.leases.unread_halt(&role).map(|u| HaltedGrant {
                    node: UNKNOWN_NODE.to_owned(),
                    fencing: 0,
                    revision: None,
                    reason: u.reason.clone(),
                    at: u.at,
                }))
                .collect();
            let waiting = state
                .roster
                .nodes
                .iter()
                .filter(|(_, e)| e.role == role)
                .filter_map(|(node, _)| {
                    let received = state.reports.get(node)?;
                    let report = &received.report;
                    if report.waiting.is_none() && report.phase != Phase::WaitingForLease {
                        return None;
                    }
                    Some(WaitingNode {
                        node: node.clone(),
                        phase: report.phase,
                        reason: report.waiting.as_ref().map(|w| w.reason.clone()),
                        since: report.waiting.as_ref().map(|w| w.since),
                        age_seconds: now.saturating_sub(received.received_at),
                    })
                })
                .collect();
            RoleRollout {
                role,
                max_unavailable: rules.max_unavailable,
                max_unavailable_per_az: rules.max_unavailable_per_az,
                holders,
                halted,
                waiting,
            }
        })
        .collect();
    let nodes = state
        .roster
        .nodes
        .iter()
        .map(|(node, entry)| {
            let received = state.reports.get(node);
            let report = received.map(|r| &r.report);
            NodeRollout {
                node: node.clone(),
                role: entry.role.clone(),
                az: entry.az.clone(),
                phase: report.map(|r| r.phase),
                revision_applied: report.and_then(|r| r.revision_applied.clone()),
                waiting: report.and_then(|r| r.waiting.clone()),
                age_seconds: received.map(|r| now.saturating_sub(r.received_at)),
            }
        })
        .collect();
    RolloutView {
        revision: state.roster.revision.clone(),
        paused: rules.paused,
        window: WindowView {
            windows: rules.windows.len(),
            open: window.open,
            closes_at: window.closes_at,
            next_open: window.next_open,
        },
        roles,
        nodes,
        history: state.leases.history(),
        metadata_version: state.metadata_version.clone(),
    }
}
