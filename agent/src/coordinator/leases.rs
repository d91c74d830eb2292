//! Restart leases: per role a semaphore of `max_unavailable` slots, each
//! grant with an owner and a fencing id that grows with every grant; grants
//! a holder halted; and the history of what happened to them. Which grant
//! may be made is decided by the caller (`super::rollout`); this table only
//! keeps the grants and their rules of renewal, release and expiry.
//!
//! Halted grants and the history survive a coordinator restart: the table
//! hands them out as [`Kept`] to be written after every change, and is
//! rebuilt from them at start ([`LeaseTable::restore`]).

use std::collections::{BTreeMap, VecDeque};

use super::halt_record::{Kept, KeptHalt, Unread};
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
#[derive(Clone, Debug)]
pub(crate) struct LeaseTable {
    last_fencing: u64,
    grants: BTreeMap<String, Vec<Grant>>,
    /// Newest first.
    history: VecDeque<LeaseEvent>,
    /// Set when this run could not read the record of halts it started
    /// from: every role not resumed since counts as halted.
    unread: Option<Unread>,
    /// Halts or history changed since the record was last written.
    unsaved: bool,
}

impl LeaseTable {
    /// `last_fencing` is the id before the first grant: the coordinator
    /// derives it from its start time so ids keep growing across restarts.
    pub(crate) fn new(last_fencing: u64) -> Self {
        Self {
            last_fencing,
            grants: BTreeMap::new(),
            history: VecDeque::new(),
            unread: None,
            unsaved: false,
        }
    }

    /// The table a restarted coordinator continues from: the halted grants
    /// and history of `kept`, fencing ids above both `first_fencing` and
    /// the last id `kept` granted. Grants that were not halted are not
    /// kept: the restart grace outlasts them.
    pub(crate) fn restore(kept: Kept, first_fencing: u64) -> Self {
        let mut grants: BTreeMap<String, Vec<Grant>> = BTreeMap::new();
        for halt in kept.halts {
            grants.entry(halt.role).or_default().push(Grant {
                holder: halt.holder,
                fencing: halt.fencing,
                granted_at: halt.granted_at,
                expires_at: halt.expires_at,
                revision: halt.revision,
                halted: Some(halt.halt),
                halted_under: halt.halted_under,
                expiry_recorded: false,
            });
        }
        for role_grants in grants.values_mut() {
            role_grants.sort_by_key(|g| g.fencing);
        }
        let mut history: VecDeque<LeaseEvent> = kept.history.into();
        history.truncate(HISTORY);
        let last_fencing = grants
            .values()
            .flatten()
            .map(|g| g.fencing)
            .chain(history.iter().map(|e| e.fencing))
            .chain([kept.last_fencing, first_fencing])
            .max()
            .unwrap_or(first_fencing);
        Self {
            last_fencing,
            grants,
            history,
            unread: kept.unread,
            unsaved: false,
        }
    }

    /// What a restart must not lose: the halted grants, the history, the
    /// last fencing id and an unread record's halt.
    pub(crate) fn kept(&self) -> Kept {
        Kept {
            last_fencing: self.last_fencing,
            halts: self
                .grants
                .iter()
                .flat_map(|(role, grants)| {
                    grants.iter().filter_map(move |g| {
                        Some(KeptHalt {
                            role: role.clone(),
                            holder: g.holder.clone(),
                            fencing: g.fencing,
                            granted_at: g.granted_at,
                            expires_at: g.expires_at,
                            revision: g.revision.clone(),
                            halt: g.halted.clone()?,
                            halted_under: g.halted_under.clone(),
                        })
                    })
                })
                .collect(),
            history: self.history.iter().cloned().collect(),
            unread: self.unread.clone(),
        }
    }

    /// Whether halts or history changed since [`LeaseTable::mark_saved`].
    pub(crate) fn unsaved(&self) -> bool {
        self.unsaved
    }

    pub(crate) fn mark_saved(&mut self) {
        self.unsaved = false;
    }

    /// The record this run started from could not be read (`reason`, as a
    /// caller may read it): every role counts as halted until it is resumed
    /// or a view of another revision than `under` arrives.
    pub(crate) fn halt_all_unread(&mut self, reason: String, under: Option<String>, now: u64) {
        self.unread = Some(Unread {
            reason,
            at: now,
            under,
            resumed: Vec::new(),
        });
        self.unsaved = true;
    }

    /// Why `role` counts as halted for want of a readable record, if it
    /// does.
    pub(crate) fn unread_halt(&self, role: &str) -> Option<&Unread> {
        self.unread
            .as_ref()
            .filter(|u| !u.resumed.iter().any(|r| r == role))
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
        self.unsaved = true;
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

    /// Halts the grant `fencing` of `node`: it stops expiring and the role
    /// grants nothing until the halt is cleared. Halting twice keeps the
    /// first halt.
    ///
    /// A grant that expired while its holder rolled back (the rollback can
    /// outlast a short TTL) is halted too, as long as it stands: any grant
    /// of the role made after it expired would have removed it, so nobody
    /// has restarted under the role since, and a halt only stops restarts.
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

    /// Clears the halts of `role` (every role when `None`), an unread
    /// record's included.
    pub(crate) fn resume(&mut self, role: Option<&str>, by: &str, now: u64) -> usize {
        let mut cleared = 0;
        match (role, &mut self.unread) {
            (_, None) => {}
            (None, Some(_)) => {
                self.unread = None;
                cleared += 1;
            }
            (Some(role), Some(unread)) => {
                if !unread.resumed.iter().any(|r| r == role) {
                    unread.resumed.push(role.to_owned());
                    cleared += 1;
                }
            }
        }
        if cleared > 0 {
            self.unsaved = true;
        }
        cleared
            + self.clear_halts(
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
        let mut cleared = 0;
        if self
            .unread
            .as_ref()
            .is_some_and(|u| u.under.as_deref() != revision)
        {
            self.unread = None;
            self.unsaved = true;
            cleared += 1;
        }
        cleared
            + self.clear_halts(
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

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_700_000_000;

    /// broker-1 granted and halted under view revision "r1", broker-2's
    /// controller grant live, released history before.
    fn halted_table() -> (LeaseTable, Lease) {
        let mut table = LeaseTable::new(T * 1_000_000);
        let first = table.grant("broker", "broker-3", 60, None, T);
        table
            .release("broker", "broker-3", first.fencing, T + 1)
            .expect("release");
        let granted = table.grant("broker", "broker-1", 60, Some("c1".to_owned()), T + 2);
        table
            .halt(
                "broker",
                "broker-1",
                granted.fencing,
                Some("c2".to_owned()),
                "kafka.service not healthy within 10m",
                Some("r1"),
                T + 3,
            )
            .expect("halt");
        table.grant("controller", "controller-1", 60, None, T + 4);
        (table, granted)
    }

    #[test]
    fn a_grant_that_expired_during_the_rollback_is_halted_unless_the_role_granted_since() {
        let mut table = LeaseTable::new(T * 1_000_000);
        let granted = table.grant("broker", "broker-1", 2, None, T);
        // Its holder's rollback outlasted the 2 s TTL.
        assert!(table.live_grants("broker", T + 5).is_empty());
        let halted = table
            .halt(
                "broker",
                "broker-1",
                granted.fencing,
                None,
                "kafka.service not healthy",
                None,
                T + 5,
            )
            .expect("a late halt of a grant nobody replaced");
        assert!(halted.halted.is_some());
        let live = table.live_grants("broker", T + 1_000);
        assert_eq!(live.len(), 1, "halted, the grant no longer expires");
        assert_eq!(live[0].holder, "broker-1");
        let kinds: Vec<LeaseEventKind> = table.history().iter().map(|e| e.event).collect();
        assert_eq!(
            &kinds[..3],
            &[
                LeaseEventKind::Halted,
                LeaseEventKind::Expired,
                LeaseEventKind::Granted
            ],
            "newest first"
        );

        // Once the role granted again, the expired grant is gone: a late
        // halt of it is refused and the new holder is not halted.
        let mut table = LeaseTable::new(T * 1_000_000);
        let first = table.grant("broker", "broker-1", 2, None, T);
        table.grant("broker", "broker-2", 60, None, T + 5);
        let late = table.halt(
            "broker",
            "broker-1",
            first.fencing,
            None,
            "kafka.service not healthy",
            None,
            T + 6,
        );
        assert!(
            matches!(late, Err(Refusal::LeaseNotHeld { .. })),
            "{late:?}"
        );
        assert!(table.halted("broker").is_empty());
    }

    #[test]
    fn halts_history_and_fencing_survive_a_restore() {
        let (table, granted) = halted_table();
        assert!(table.unsaved());
        let kept = table.kept();
        // Only the halted grant is kept; the live one is covered by the
        // restart grace.
        assert_eq!(kept.halts.len(), 1);
        assert_eq!(kept.halts[0].halted_under.as_deref(), Some("r1"));

        // Restarted a second later: the start-based fencing is lower than
        // the last id granted only if the clock went back.
        let restored = LeaseTable::restore(kept.clone(), 1);
        assert!(!restored.unsaved());
        assert_eq!(restored.kept(), kept);
        assert_eq!(restored.history(), table.history());
        let halted = restored.halted("broker");
        assert_eq!(halted.len(), 1);
        assert_eq!(halted[0].holder, "broker-1");
        assert_eq!(halted[0].fencing, granted.fencing);
        assert_eq!(halted[0].revision.as_deref(), Some("c1"));
        let halt = halted[0].halted.as_ref().expect("halted");
        assert_eq!(halt.reason, "kafka.service not healthy within 10m");
        assert_eq!(halt.revision.as_deref(), Some("c2"));
        assert_eq!(halt.at, T + 3);
        // The controller grant was not halted: gone.
        assert!(restored.live_grants("controller", T + 5).is_empty());
        // A halted grant is live long after its TTL, and its holder can
        // still renew it.
        let mut restored = restored;
        assert_eq!(restored.live_grants("broker", T + 10_000).len(), 1);
        let renewed = restored
            .renew("broker", "broker-1", granted.fencing, 60, T + 10_000)
            .expect("renew");
        assert!(renewed.halted.is_some());

        // Fencing ids keep growing even from a clock that went back.
        let next = restored.grant("connect", "connect-1", 60, None, T + 10_001);
        assert_eq!(next.fencing, kept.last_fencing + 1);
        let later = LeaseTable::restore(kept.clone(), (T + 99) * 1_000_000);
        assert_eq!(later.kept().last_fencing, (T + 99) * 1_000_000);
    }

    #[test]
    fn a_restored_halt_is_cleared_by_a_new_commit_or_a_resume_only() {
        let (table, _) = halted_table();
        let mut restored = LeaseTable::restore(table.kept(), 0);
        assert_eq!(restored.new_revision(Some("r1"), T + 10), 0);
        assert_eq!(restored.halted("broker").len(), 1);
        assert!(!restored.unsaved());
        assert_eq!(restored.new_revision(Some("r2"), T + 11), 1);
        assert!(restored.halted("broker").is_empty());
        assert!(restored.unsaved());
        assert_eq!(
            restored.history()[0].event,
            LeaseEventKind::ClearedByNewCommit
        );

        let mut restored = LeaseTable::restore(table.kept(), 0);
        assert_eq!(restored.resume(Some("controller"), "broker-2", T + 10), 0);
        assert_eq!(restored.resume(Some("broker"), "broker-2", T + 10), 1);
        assert!(restored.halted("broker").is_empty());
        assert_eq!(restored.kept().halts, Vec::new());
    }

    #[test]
    fn an_unread_record_halts_every_role_until_resumed_or_a_new_commit() {
        let mut table = LeaseTable::new(0);
        assert!(table.unread_halt("broker").is_none());
        table.halt_all_unread("unreadable".to_owned(), Some("r1".to_owned()), T);
        assert!(table.unsaved());
        for role in ["controller", "broker", "connect"] {
            assert_eq!(
                table.unread_halt(role).map(|u| u.reason.as_str()),
                Some("unreadable")
            );
        }
        // It is kept, so a second restart does not forget it.
        let mut table = LeaseTable::restore(table.kept(), 0);
        assert!(table.unread_halt("broker").is_some());

        // Resuming one role frees that role only; resuming it again clears
        // nothing.
        assert_eq!(table.resume(Some("broker"), "broker-1", T + 1), 1);
        assert!(table.unread_halt("broker").is_none());
        assert!(table.unread_halt("controller").is_some());
        assert_eq!(table.resume(Some("broker"), "broker-1", T + 1), 0);
        let kept = LeaseTable::restore(table.kept(), 0);
        assert!(kept.unread_halt("broker").is_none());
        assert!(kept.unread_halt("controller").is_some());

        // The same commit again clears nothing; another one clears it all.
        assert_eq!(table.new_revision(Some("r1"), T + 2), 0);
        assert!(table.unread_halt("controller").is_some());
        assert_eq!(table.new_revision(Some("r2"), T + 2), 1);
        assert!(table.unread_halt("controller").is_none());

        // Resuming every role clears it too.
        let mut table = LeaseTable::new(0);
        table.halt_all_unread("unreadable".to_owned(), None, T);
        assert_eq!(table.resume(None, "broker-1", T + 1), 1);
        assert!(table.unread_halt("connect").is_none());
        assert_eq!(table.kept().unread, None);
    }
}
