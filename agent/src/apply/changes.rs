//! The one place that decides what a change to a managed input asks of its
//! unit. The plan says *what* a change needs (`OnChange`, data); this says
//! *how* the agent carries it out today.

use roles::OnChange;

/// What the applier does about a changed file, artifact or unit definition
/// whose unit is running. (A unit that is not running needs nothing: it reads
/// the new inputs when it starts, and units with `start = true` are started
/// by the apply itself.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeAction<'a> {
    /// Nothing to do.
    Nothing,
    /// Reload the unit now, during the apply: safe without a restart lease.
    ReloadNow(&'a str),
    /// Restart the unit later, under the coordinator's restart lease: recorded
    /// as a pending restart (persisted), carried out by `Applier::restart`.
    RestartWithLease(&'a str),
    /// Kafka's own configuration changed: recorded (with the file as it was)
    /// as pending Kafka work; after the apply the agent applies what Kafka
    /// can take live through the Admin API and turns the rest into a restart.
    KafkaConfig(&'a str),
    /// A listener keystore or truststore was rewritten: recorded as pending
    /// Kafka work; the agent makes Kafka re-read it through the Admin API, and
    /// restarts (under the lease) only if that fails.
    KafkaReload(&'a str),
}

/// The action for a change class.
pub fn change_action(on_change: &OnChange) -> ChangeAction<'_> {
    match on_change {
        OnChange::Nothing => ChangeAction::Nothing,
        OnChange::Reload(unit) => ChangeAction::ReloadNow(unit),
        OnChange::Restart(unit) => ChangeAction::RestartWithLease(unit),
        OnChange::KafkaDynamicReload(unit) => ChangeAction::KafkaReload(unit),
        OnChange::KafkaConfig(unit) => ChangeAction::KafkaConfig(unit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_maps_to_one_action() {
        let u = "kafka.service".to_owned();
        assert_eq!(change_action(&OnChange::Nothing), ChangeAction::Nothing);
        assert_eq!(
            change_action(&OnChange::Reload(u.clone())),
            ChangeAction::ReloadNow("kafka.service")
        );
        assert_eq!(
            change_action(&OnChange::Restart(u.clone())),
            ChangeAction::RestartWithLease("kafka.service")
        );
        assert_eq!(
            change_action(&OnChange::KafkaDynamicReload(u.clone())),
            ChangeAction::KafkaReload("kafka.service")
        );
        assert_eq!(
            change_action(&OnChange::KafkaConfig(u)),
            ChangeAction::KafkaConfig("kafka.service")
        );
    }
}
