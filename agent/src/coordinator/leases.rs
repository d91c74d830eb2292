//! Restart leases: per role a semaphore of `max_unavailable` slots, each
//! grant with an owner and a fencing id that grows with every grant; grants
//! a holder halted; and the history of what happened to them. Which grant
//! may be made is decided by the caller (`super::rollout`); this table only
//! keeps the grants and their rules of renewal, release and expiry.

use std::collections::{BTreeMap, VecDeque};

use super::refusal::Refusal;
use crate::protocol::{Halt, Lease, LeaseEvent, LeaseEventKind};

/// How many lease events the history keeps.
pub(crate) const HISTORY: usize = 200;

#[derive(Clone, Debug)]
pub(crate) struct Grant {
    pub(crate) holder: String,
    pub(crate) fencing: u64,
    pub(crate) granted_at: u64,
    /// Unix seconds; the lease is valid while `now < expires_at` (or halted).
    pub(crate) expires_at: u64,
    pub(crate) revision: Option<String>,
    pub(crate) halted: Option<Halt>,
    /// The view's revision when the grant was halted: a view of another
    /// revision (a new commit) clears the halt.
    halted_under: Option<String>,
    /// Its expiry is in the history already.
    expiry_recorded: bool,
}

impl Grant {
    /// Live: not expired, or halted (a halted grant does not expire).
    pub(crate) fn live(&self, now: u64) -> bool {
        self.halted.is_some() || now < self.expires_at
    }

    pub(crate) fn expires_in(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now)
    }
}

/// The grants of every role. Expired grants stay (so their holder is told
/// "expired" rather than "not held") until their role grants again or their
/// holder releases them; they count as free.
#[derive(Debug)]
pub(crate) struct LeaseTable {
    last_fencing: u64,
    grants: BTreeMap<String, Vec<Grant>>,
    /// Newest first.
    history: VecDeque<LeaseEvent>,
}

impl LeaseTable {
    /// `last_fencing` is the id before the first grant: the coordinator
    /// derives it from its start time so ids keep growing across restarts.
    pub(crate) fn new(last_fencing: u64) -> Self {
        Self {
            last_fencing,
            grants: BTreeMap::new(),
            history: VecDeque::new(),
        }
    }

    fn record(
        &mut self,
        role: &str,
        grant: &Grant,
        event: LeaseEventKind,
        at: u64,
        reason: Option<String>,
    ) {
        let entry = LeaseEvent {
            at,
            role: role.to_owned(),
            node: grant.holder.clone(),
            event,
            fencing: grant.fencing,
            revision: grant.revision.clone(),
            reason,
        };
        // An expiry noticed late is older than events recorded since: keep
        // the history in time order.
        let position = self
            .history
            .iter()
            .position(|e| e.at <= at)
            .unwrap_or(self.history.len());
        self.history.insert(position, entry);
        self.history.truncate(HISTORY);
    }

    /// Records the expiry of every grant that expired since the last call.
    pub(crate) fn note_expiries(&mut self, now: u64) {
        let mut expired = Vec::new();
        for (role, grants) in &mut self.grants {
            for grant in grants.iter_mut() {
                if !grant.live(now) && !grant.expiry_recorded {
                    grant.expiry_recorded = true;
                    expired.push((role.clone(), grant.clone()));
                }
            }
        }
        for (role, grant) in expired {
            self.record(
                &role,
                &grant,
                LeaseEventKind::Expired,
                grant.expires_at,
                None,
            );
        }
    }

    /// The live grants of `role`, oldest first.
    pub(crate) fn live_grants(&self, role: &str, now: u64) -> Vec<&Grant> {
        self.grants
            .get(role)
            .map(|grants| grants.iter().filter(|g| g.live(now)).collect())
            .unwrap_or_default()
    }

    /// The halted grants of `role`.
    pub(crate) fn halted(&self, role: &str) -> Vec<&Grant> {
        self.grants
            .get(role)
            .map(|grants| grants.iter().filter(|g| g.halted.is_some()).collect())
            .unwrap_or_default()
    }

    fn lease(&self, role: &str, grant: &Grant, now: u64) -> Lease {
        Lease {
            role: role.to_owned(),
            holder: grant.holder.clone(),
            fencing: grant.fencing,
            expires_in_seconds: grant.expires_in(now),
            others: self
                .live_grants(role, now)
                .into_iter()
                .filter(|g| g.fencing != grant.fencing)
                .map(|g| g.holder.clone())
                .collect(),
            revision: grant.revision.clone(),
            halted: grant.halted.clone(),
        }
    }

    /// `node`'s live lease of `role`, if it holds one.
    pub(crate) fn held_by(&self, role: &str, node: &str, now: u64) -> Option<Lease> {
        let grant = self
            .live_grants(role, now)
            .into_iter()
            .find(|g| g.holder == node)?;
        Some(self.lease(role, grant, now))
    }

    /// Grants `node` a slot of `role` for `ttl` seconds, with a new fencing
    /// id. The caller has checked that a slot is free. Expired grants of the
    /// role are dropped: their holders must acquire anew.
    pub(crate) fn grant(
        &mut self,
        role: &str,
        node: &str,
        ttl: u64,
        revision: Option<String>,
        now: u64,
    ) -> Lease {
        self.note_expiries(now);
        self.last_fencing = self.last_fencing.saturating_add(1);
        let grant = Grant {
            holder: node.to_owned(),
            fencing: self.last_fencing,
            granted_at: now,
            expires_at: now.saturating_add(ttl),
            revision,
            halted: None,
            halted_under: None,
            expiry_recorded: false,
        };
        let grants = self.grants.entry(role.to_owned()).or_default();
        grants.retain(|g| g.live(now) && g.holder != node);
        grants.push(grant.clone());
        self.record(role, &grant, LeaseEventKind::Granted, now, None);
        self.lease(role, &grant, now)
    }

    /// `node`'s grant of `role` with id `fencing`, or why there is none.
    fn find(&mut self, role: &str, node: &str, fencing: u64) -> Result<&mut Grant, Refusal> {
        let grants = self
            .grants
            .get_mut(role)
            .ok_or_else(|| Refusal::LeaseNotHeld {
                role: role.to_owned(),
            })?;
        let mut mine = grants.iter_mut().filter(|g| g.holder == node).peekable();
        if mine.peek().is_none() {
            return Err(Refusal::LeaseNotHeld {
                role: role.to_owned(),
            });
        }
        mine.find(|g| g.fencing == fencing)
            .ok_or_else(|| Refusal::FencingMismatch {
                role: role.to_owned(),
                presented: fencing,
            })
    }

    /// Extends the live grant `fencing` of `node` to `ttl` seconds from now.
    /// A halted grant is returned as it is (it does not expire).
    pub(crate) fn renew(
        &mut self,
        role: &str,
        node: &str,
        fencing: u64,
        ttl: u64,
        now: u64,
    ) -> Result<Lease, Refusal> {
        self.note_expiries(now);
        let grant = self.find(role, node, fencing)?;
        // An expired lease is not revived: between expiry and now another
        // node was entitled to its slot, so its holder must acquire anew and
        // get a new fencing id.
        if !grant.live(now) {
            return Err(Refusal::LeaseExpired {
                role: role.to_owned(),
            });
        }
        if grant.halted.is_none() {
            grant.expires_at = now.saturating_add(ttl);
        }
        let grant = grant.clone();
        Ok(self.lease(role, &grant, now))
    }

    /// Releases grant `fencing` of `node`, live, expired or halted (which
    /// clears the halt). Releasing a grant that is gone succeeds, so a
    /// retried release is harmless; a fencing id other than the one of the
    /// grant `node` holds is refused.
    pub(crate) fn release(
        &mut self,
        role: &str,
        node: &str,
        fencing: u64,
        now: u64,
    ) -> Result<(), Refusal> {
        self.note_expiries(now);
        match self.find(role, node, fencing) {
            Ok(_) => {}
            Err(Refusal::LeaseNotHeld { .. }) => return Ok(()),
            Err(refusal) => return Err(refusal),
        }
        let grants = self.grants.entry(role.to_owned()).or_default();
        let Some(index) = grants
            .iter()
            .position(|g| g.holder == node && g.fencing == fencing)
        else {
            return Ok(());
        };
        let grant = grants.remove(index);
        if grant.live(now) {
            let reason = grant
                .halted
                .as_ref()
                .map(|_| "released while halted; the halt is cleared".to_owned());
            self.record(role, &grant, LeaseEventKind::Released, now, reason);
        }
        Ok(())
    }

    /// Halts the live grant `fencing` of `node`: it stops expiring and the
    /// role grants nothing until the halt is cleared. Halting twice keeps
    /// the first halt.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn halt(
        &mut self,
        role: &str,
        node: &str,
        fencing: u64,
        revision: Option<String>,
        reason: &str,
        view_revision: Option<&str>,
        now: u64,
    ) -> Result<Lease, Refusal> {
        self.note_expiries(now);
        let grant = self.find(role, node, fencing)?;
        if !grant.live(now) {
            return Err(Refusal::LeaseExpired {
                role: role.to_owned(),
            });
        }
        if grant.halted.is_some() {
            let grant = grant.clone();
            return Ok(self.lease(role, &grant, now));
        }
        grant.halted = Some(Halt {
            reason: reason.to_owned(),
            revision: revision.or_else(|| grant.revision.clone()),
            at: now,
        });
        grant.halted_under = view_revision.map(str::to_owned);
        let grant = grant.clone();
        self.record(
            role,
            &grant,
            LeaseEventKind::Halted,
            now,
            Some(reason.to_owned()),
        );
        Ok(self.lease(role, &grant, now))
    }

    /// Removes the halted grants `clear` picks, recording `event` with
    /// `reason`. Returns how many were cleared.
    fn clear_halts(
        &mut self,
        mut clear: impl FnMut(&str, &Grant) -> bool,
        event: LeaseEventKind,
        reason: &str,
        now: u64,
    ) -> usize {
        let mut cleared = Vec::new();
        for (role, grants) in &mut self.grants {
            grants.retain(|g| {
                let remove = g.halted.is_some() && clear(role, g);
                if remove {
                    cleared.push((role.clone(), g.clone()));
                }
                !remove
            });
        }
        for (role, grant) in &cleared {
            self.record(role, grant, event, now, Some(reason.to_owned()));
        }
        cleared.len()
    }

    /// Clears the halts of `role` (every role when `None`).
    pub(crate) fn resume(&mut self, role: Option<&str>, by: &str, now: u64) -> usize {
        self.clear_halts(
            |r, _| role.is_none_or(|wanted| wanted == r),
            LeaseEventKind::Resumed,
            &format!("resumed by {by}"),
            now,
        )
    }

    /// A new view of `revision`: clears every halt made under another one.
    pub(crate) fn new_revision(&mut self, revision: Option<&str>, now: u64) -> usize {
        let reason = match revision {
            Some(r) => format!("new commit {}", super::rollout::short(r)),
            None => "new commit".to_owned(),
        };
        self.clear_halts(
            |_, g| g.halted_under.as_deref() != revision,
            LeaseEventKind::ClearedByNewCommit,
            &reason,
            now,
        )
    }

    /// The live leases (halted ones included), by role, oldest grant first.
    pub(crate) fn live(&self, now: u64) -> Vec<Lease> {
        self.grants
            .iter()
            .flat_map(|(role, grants)| {
                grants
                    .iter()
                    .filter(|g| g.live(now))
                    .map(move |g| self.lease(role, g, now))
            })
            .collect()
    }

    /// The history, newest first.
    pub(crate) fn history(&self) -> Vec<LeaseEvent> {
        self.history.iter().cloned().collect()
    }
}
