//! What a new commit may not change relative to the commit a node runs:
//! checks that need both models and their secret values, which no
//! validation of one commit can make. Pure: the agent calls
//! [`check_transition`] before it accepts a commit, the coordinator before
//! it follows one.
//!
//! The SCRAM users the cluster itself logs in as cannot change their
//! password in place. Kafka keeps one SCRAM-SHA-512 credential per user, the
//! brokers read their password from `/etc/kafka/secrets.properties` only at
//! start, and the coordinator sets the credential in Kafka at a moment of
//! its own: during a rolling restart, brokers holding the password Kafka
//! does not have cannot open inter-broker connections, so replication stops
//! and the roll halts behind its under-replication gate. The admin user has
//! the same knot: the coordinator logs in as it with git's password, so it
//! cannot log in with the new one to set it. The procedure that works is a
//! switch to a second user, whose credential is in Kafka before anyone
//! logs in as it; [`check_transition`] enforces its order.

use desired_state::types::UserName;
use desired_state::{Diagnostic, InFile, Located, Model, User};

use crate::Secrets;

const CLUSTER_FILE: &str = "cluster.yaml";

/// A model with the decrypted values of its secrets.
/// Its `Debug` shows no secret ([`desired_state::SecretValue`] is redacted).
#[derive(Clone, Copy, Debug)]
pub struct Commit<'a> {
    pub model: &'a Model,
    pub secrets: &'a Secrets,
}

/// One SCRAM user the cluster logs in as.
struct Login {
    /// The cluster.yaml key naming it.
    key: &'static str,
    /// What breaks when the password Kafka holds is not the one in use.
    consequence: &'static str,
    /// The ACLs the other user needs while both are in use, in `users/` syntax.
    interim_acls: &'static str,
}

const INTER_BROKER: Login = Login {
    key: "security.inter_broker_user",
    consequence: "brokers restart one at a time with the new password while the coordinator sets the credential in Kafka at another moment, and brokers holding the password Kafka does not have cannot open inter-broker connections (replication stops, the roll halts)",
    interim_acls: "`{resource: cluster, operations: [cluster_action]}`",
};

const ADMIN: Login = Login {
    key: "security.admin_user",
    consequence: "the coordinator logs in to Kafka as this user with the password in git, so it could not log in to set the new credential, and the agents' restart gates, which log in as it too, would stop every restart",
    interim_acls: "`all` on `cluster`, and on `topic`, `group` and `transactional_id` named `*`",
};

fn logins(model: &Model) -> [(Login, &Located<UserName>); 2] {
    let security = &model.cluster.security;
    [
        (INTER_BROKER, &security.inter_broker_user),
        (ADMIN, &security.admin_user),
    ]
}

fn user<'m>(model: &'m Model, name: &UserName) -> Option<&'m InFile<User>> {
    model.users.iter().find(|u| *u.name == *name)
}

/// The password `name` logs in with at `commit`; `None` when the user or
/// its secret is missing (validation and rendering report that).
fn password<'a>(commit: Commit<'a>, name: &UserName) -> Option<&'a str> {
    let u = user(commit.model, name)?;
    commit.secrets.get(&*u.password_secret).map(|v| v.expose())
}

fn at_key(located: &Located<UserName>, message: String) -> Diagnostic {
    if located.pos.line > 0 {
        Diagnostic::at(CLUSTER_FILE, located.pos, message)
    } else {
        Diagnostic::file(CLUSTER_FILE, message)
    }
}

/// The problems of moving from the `applied` commit to `next`, each at the
/// `file:line:col` to change; empty when `next` may be applied. Compares
/// the decrypted passwords of the inter-broker and admin users:
///
/// - the same user with another password is refused (put the password back,
///   or switch users);
/// - a switch to another user is refused unless `applied` already defines
///   that user, not marked for deletion, with the same password (its
///   credential must be in Kafka before anyone logs in as it), and while
///   `next` marks the previous user `delete: true` (nodes not yet restarted
///   still log in as it).
pub fn check_transition(applied: Commit<'_>, next: Commit<'_>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for ((login, before), (_, after)) in logins(applied.model).into_iter().zip(logins(next.model)) {
        let key = login.key;
        if before.value == after.value {
            let name = &after.value;
            let (Some(old), Some(new), Some(u)) = (
                password(applied, name),
                password(next, name),
                user(next.model, name),
            ) else {
                continue;
            };
            if old != new {
                out.push(Diagnostic::at(
                    &u.file,
                    u.password_secret.pos,
                    format!(
                        "the password of user {name}, the {key}, changes in place (secrets/{}.age): {}. Put the previous password back, then rotate by switching users: (1) add a user with the new password, and give it and {name} {} so brokers accept both while they roll, and wait until the coordinator reports the new user's credential set; (2) point {key} at the new user; (3) once every node runs that commit, remove those ACLs and mark {name} `delete: true`",
                        u.password_secret.as_str(),
                        login.consequence,
                        login.interim_acls,
                    ),
                ));
            }
            continue;
        }
        let (old_name, new_name) = (&before.value, &after.value);
        let ready = match (
            user(applied.model, new_name),
            password(applied, new_name),
            password(next, new_name),
        ) {
            (Some(u), Some(old), Some(new)) => !*u.delete && old == new,
            _ => false,
        };
        if !ready {
            out.push(at_key(
                after,
                format!(
                    "{key} switches from {old_name} to {new_name}, but the running commit does not define {new_name} with this password, so its credential may not be in Kafka when nodes start logging in as it: first add {new_name} (with {} for both users) in a commit of its own, wait until the coordinator reports its credential set, then switch",
                    login.interim_acls
                ),
            ));
        }
        if let Some(u) = user(next.model, old_name)
            && *u.delete
        {
            out.push(Diagnostic::at(
                &u.file,
                u.delete.pos,
                format!(
                    "user {old_name} was the {key} until this commit and nodes not yet restarted still log in as it: delete it in a later commit, once every node runs the switch to {new_name}"
                ),
            ));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use desired_state::{FileSet, SecretValue};

    use super::*;

    fn example_files() -> FileSet {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed");
        desired_state::read_repository(&dir).expect("the example reads")
    }

    fn load(files: &FileSet) -> Model {
        desired_state::load_files(files).unwrap_or_else(|d| panic!("{d}"))
    }

    /// Secret values by name: the example's names, made-up values (the
    /// check compares values; it never decrypts).
    fn secrets(model: &Model, overrides: &[(&str, &str)]) -> Secrets {
        model
            .secrets
            .keys()
            .map(|name| {
                let value = overrides
                    .iter()
                    .find(|(n, _)| *n == name.as_str())
                    .map_or_else(
                        || format!("value of {}", name.as_str()),
                        |(_, v)| (*v).to_owned(),
                    );
                (name.clone(), SecretValue::new(value))
            })
            .collect()
    }

    fn edit(files: &mut FileSet, path: &str, from: &str, to: &str) {
        let text = String::from_utf8(files[path].clone()).expect("utf8");
        assert!(text.contains(from), "{path} lacks {from:?}");
        files.insert(path.to_owned(), text.replacen(from, to, 1).into_bytes());
    }

    fn check((a, sa): (&Model, &Secrets), (b, sb): (&Model, &Secrets)) -> Vec<String> {
        check_transition(
            Commit {
                model: a,
                secrets: sa,
            },
            Commit {
                model: b,
                secrets: sb,
            },
        )
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    /// The line and column of `needle` in `path` of the example, 1-based.
    fn position(files: &FileSet, path: &str, needle: &str) -> (usize, usize) {
        let text = String::from_utf8(files[path].clone()).expect("utf8");
        let offset = text.find(needle).expect("needle");
        let line = text[..offset].matches('\n').count() + 1;
        let column = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, column)
    }

    #[test]
    fn the_same_commit_and_a_change_to_other_users_pass() {
        let files = example_files();
        let model = load(&files);
        let s = secrets(&model, &[]);
        assert!(check((&model, &s), (&model, &s)).is_empty());
        // A client's password may change: it is not a login of the cluster.
        let other = secrets(&model, &[("client-password", "rotated")]);
        assert!(check((&model, &s), (&model, &other)).is_empty());
        // The same password under another secret name is no change.
        let mut renamed = files.clone();
        edit(
            &mut renamed,
            "users/platform.yaml",
            "password_secret: broker-password",
            "password_secret: client-password",
        );
        let renamed = load(&renamed);
        let same = secrets(&renamed, &[("client-password", "value of broker-password")]);
        assert!(check((&model, &s), (&renamed, &same)).is_empty());
    }

    #[test]
    fn an_inter_broker_password_changed_in_place_is_refused_at_its_secret() {
        let files = example_files();
        let model = load(&files);
        let s = secrets(&model, &[]);
        let rotated = secrets(&model, &[("broker-password", "new")]);
        let problems = check((&model, &s), (&model, &rotated));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        let (line, column) = position(&files, "users/platform.yaml", "broker-password");
        let p = &problems[0];
        assert!(
            p.starts_with(&format!("users/platform.yaml:{line}:{column}: ")),
            "{p}"
        );
        for part in [
            "the password of user broker, the security.inter_broker_user, changes in place",
            "secrets/broker-password.age",
            "inter-broker connections",
            "Put the previous password back",
            "point security.inter_broker_user at the new user",
            "cluster_action",
        ] {
            assert!(p.contains(part), "{part:?} missing from {p}");
        }
        assert!(
            !p.contains("new:") && !p.contains("value of"),
            "no secret in {p}"
        );
        // Pointing the user at another secret with another value is the same change.
        let mut moved = files.clone();
        edit(
            &mut moved,
            "users/platform.yaml",
            "password_secret: broker-password",
            "password_secret: client-password",
        );
        let moved = load(&moved);
        let problems = check((&model, &s), (&moved, &secrets(&moved, &[])));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("secrets/client-password.age"),
            "{problems:?}"
        );
    }

    #[test]
    fn an_admin_password_changed_in_place_is_refused() {
        let files = example_files();
        let model = load(&files);
        let s = secrets(&model, &[]);
        let rotated = secrets(&model, &[("admin-password", "new")]);
        let problems = check((&model, &s), (&model, &rotated));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        let (line, column) = position(&files, "users/platform.yaml", "admin-password");
        assert!(
            problems[0].starts_with(&format!("users/platform.yaml:{line}:{column}: the password of user admin, the security.admin_user, changes in place")),
            "{problems:?}"
        );
        assert!(
            problems[0].contains("the coordinator logs in"),
            "{problems:?}"
        );
    }

    /// The example with a second broker user, `broker2`, defined.
    fn with_broker2(files: &FileSet) -> FileSet {
        let mut files = files.clone();
        edit(
            &mut files,
            "users/platform.yaml",
            "  - name: admin\n",
            "  - name: broker2\n    password_secret: client-password\n  - name: admin\n",
        );
        files
    }

    #[test]
    fn a_switch_needs_the_new_user_defined_first_and_keeps_the_old_one() {
        let files = example_files();
        let before = load(&files);
        let s = secrets(&before, &[]);
        let added = with_broker2(&files);
        let mut switched = added.clone();
        edit(
            &mut switched,
            "cluster.yaml",
            "inter_broker_user: broker",
            "inter_broker_user: broker2",
        );
        let (added, switched_files) = (load(&added), switched);
        let switched = load(&switched_files);

        // Adding the user is fine; switching in the same commit is not.
        assert!(check((&before, &s), (&added, &secrets(&added, &[]))).is_empty());
        let problems = check((&before, &s), (&switched, &secrets(&switched, &[])));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        let (line, column) = position(&switched_files, "cluster.yaml", "broker2");
        assert!(
            problems[0].starts_with(&format!(
                "cluster.yaml:{line}:{column}: security.inter_broker_user switches from broker to broker2, but the running commit does not define broker2"
            )),
            "{problems:?}"
        );

        // After the commit that added it: the switch is accepted...
        let sa = secrets(&added, &[]);
        assert!(check((&added, &sa), (&switched, &secrets(&switched, &[]))).is_empty());
        // ...unless the new user's password changes with it...
        let changed = secrets(&switched, &[("client-password", "other")]);
        let problems = check((&added, &sa), (&switched, &changed));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("with this password"), "{problems:?}");
        // ...or the old user is deleted in the same commit.
        let mut deleting = switched_files.clone();
        edit(
            &mut deleting,
            "users/platform.yaml",
            "  - name: broker\n    password_secret: broker-password\n",
            "  - name: broker\n    password_secret: broker-password\n    delete: true\n",
        );
        let deleting = load(&deleting);
        let problems = check((&added, &sa), (&deleting, &secrets(&deleting, &[])));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].starts_with("users/platform.yaml:")
                && problems[0]
                    .contains("user broker was the security.inter_broker_user until this commit"),
            "{problems:?}"
        );
    }
}
