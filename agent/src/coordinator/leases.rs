//! Restart leases: one per role, FleetLock-like (a semaphore of one slot
//! with an owner), with fencing ids that grow with every grant.

use std::collections::BTreeMap;

use super::refusal::Refusal;
use crate::protocol::Lease;

#[derive(Clone, Debug)]
struct Grant {
    holder: String,
    fencing: u64,
    /// Unix seconds; the lease is valid while `now < expires_at`.
    expires_at: u64,
}

impl Grant {
    fn live(&self, now: u64) -> bool {
        now < self.expires_at
    }

    fn lease(&self, role: &str, now: u64) -> Lease {
        Lease {
            role: role.to_owned(),
            holder: self.holder.clone(),
            fencing: self.fencing,
            expires_in_seconds: self.expires_at.saturating_sub(now),
        }
    }
}

/// The leases of every role. Expired grants stay until replaced or
/// released; they count as free.
#[derive(Debug)]
pub(crate) struct LeaseTable {
    last_fencing: u64,
    grants: BTreeMap<String, Grant>,
}

impl LeaseTable {
    /// `last_fencing` is the id before the first grant: the coordinator
    /// derives it from its start time so ids keep growing across restarts.
    pub(crate) fn new(last_fencing: u64) -> Self {
        Self {
            last_fencing,
            grants: BTreeMap::new(),
        }
    }

    /// Grants the lease of `role` to `node` for `ttl` seconds, or returns
    /// the node's current lease if it already holds it (unchanged: renewing
    /// is `renew`).
    pub(crate) fn acquire(
        &mut self,
        role: &str,
        node: &str,
        ttl: u64,
        now: u64,
    ) -> Result<Lease, Refusal> {
        if let Some(grant) = self.grants.get(role).filter(|g| g.live(now)) {
            if grant.holder == node {
                return Ok(grant.lease(role, now));
            }
            return Err(Refusal::LeaseHeld {
                role: role.to_owned(),
                holder: grant.holder.clone(),
                expires_in_seconds: grant.expires_at.saturating_sub(now),
            });
        }
        self.last_fencing = self.last_fencing.saturating_add(1);
        let grant = Grant {
            holder: node.to_owned(),
            fencing: self.last_fencing,
            expires_at: now.saturating_add(ttl),
        };
        let lease = grant.lease(role, now);
        self.grants.insert(role.to_owned(), grant);
        Ok(lease)
    }

    /// Extends the live grant `fencing` of `node` to `ttl` seconds from now.
    pub(crate) fn renew(
        &mut self,
        role: &str,
        node: &str,
        fencing: u64,
        ttl: u64,
        now: u64,
    ) -> Result<Lease, Refusal> {
        let Some(grant) = self.grants.get_mut(role) else {
            return Err(Refusal::LeaseNotHeld {
                role: role.to_owned(),
            });
        };
        if grant.fencing != fencing || grant.holder != node {
            return Err(Refusal::FencingMismatch {
                role: role.to_owned(),
                presented: fencing,
            });
        }
        // An expired lease is not revived: between expiry and now another
        // node was entitled to take it, so its holder must acquire anew and
        // get a new fencing id.
        if !grant.live(now) {
            return Err(Refusal::LeaseExpired {
                role: role.to_owned(),
            });
        }
        grant.expires_at = now.saturating_add(ttl);
        Ok(grant.lease(role, now))
    }

    /// Releases grant `fencing` of `node`, live or expired. Releasing a role
    /// nobody holds succeeds, so a retried release is harmless.
    pub(crate) fn release(&mut self, role: &str, node: &str, fencing: u64) -> Result<(), Refusal> {
        match self.grants.get(role) {
            None => Ok(()),
            Some(grant) if grant.fencing == fencing && grant.holder == node => {
                self.grants.remove(role);
                Ok(())
            }
            Some(_) => Err(Refusal::FencingMismatch {
                role: role.to_owned(),
                presented: fencing,
            }),
        }
    }

    /// The live leases, by role.
    pub(crate) fn live(&self, now: u64) -> Vec<Lease> {
        self.grants
            .iter()
            .filter(|(_, grant)| grant.live(now))
            .map(|(role, grant)| grant.lease(role, now))
            .collect()
    }
}
