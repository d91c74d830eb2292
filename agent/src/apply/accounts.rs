//! System users and groups below the root: read from `<root>/etc/passwd` and
//! `<root>/etc/group` (not the host's NSS, so a temporary root works the
//! same as a node), and created with `useradd` when missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use roles::SystemUser;

use super::command;
use super::error::ApplyError;

/// Names to ids, as the root's account files say.
#[derive(Clone, Debug, Default)]
pub(crate) struct Accounts {
    users: BTreeMap<String, u32>,
    groups: BTreeMap<String, u32>,
    passwd: PathBuf,
    group: PathBuf,
}

impl Accounts {
    pub(crate) fn read(root: &Path) -> Result<Self, ApplyError> {
        let passwd = root.join("etc/passwd");
        let group = root.join("etc/group");
        Ok(Self {
            users: read_ids(&passwd)?,
            groups: read_ids(&group)?,
            passwd,
            group,
        })
    }

    pub(crate) fn has_user(&self, name: &str) -> bool {
        self.users.contains_key(name)
    }

    pub(crate) fn has_group(&self, name: &str) -> bool {
        self.groups.contains_key(name)
    }

    /// uid and gid for the owner and group of `path`.
    pub(crate) fn resolve(
        &self,
        owner: &str,
        group: &str,
        path: &str,
    ) -> Result<(u32, u32), ApplyError> {
        let uid = *self
            .users
            .get(owner)
            .ok_or_else(|| ApplyError::UnknownUser {
                name: owner.to_owned(),
                path: path.to_owned(),
                passwd: self.passwd.clone(),
            })?;
        let gid = *self
            .groups
            .get(group)
            .ok_or_else(|| ApplyError::UnknownGroup {
                name: group.to_owned(),
                path: path.to_owned(),
                group: self.group.clone(),
            })?;
        Ok((uid, gid))
    }
}

/// `name:x:id:…` lines to name → id (the third field in both files). A
/// missing file has no accounts; comments, blank lines and NIS `+`/`-`
/// lines are skipped.
fn read_ids(path: &Path) -> Result<BTreeMap<String, u32>, ApplyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(ApplyError::io("reading", path)(e)),
    };
    let mut ids = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') || line.starts_with(['+', '-']) {
            continue;
        }
        let mut fields = line.split(':');
        let name = fields.next().filter(|n| !n.is_empty());
        let id = fields.nth(1).and_then(|id| id.parse::<u32>().ok());
        match (name, id) {
            (Some(name), Some(id)) => {
                // The first entry wins, as with getpwnam.
                ids.entry(name.to_owned()).or_insert(id);
            }
            _ => {
                return Err(ApplyError::AccountFile {
                    path: path.to_owned(),
                    line: i + 1,
                });
            }
        }
    }
    Ok(ids)
}

const USERADD_TIMEOUT: Duration = Duration::from_secs(60);

/// Creates each missing system user (and its group): `useradd --system
/// --home-dir <home> --shell /usr/sbin/nologin --user-group <name>`, with
/// `--root <root>` below a root other than `/`. The home directory is not
/// created here: the plan lists it among its directories, with its mode.
/// Returns the users created.
pub(crate) fn ensure_users(root: &Path, users: &[SystemUser]) -> Result<Vec<String>, ApplyError> {
    let mut accounts = Accounts::read(root)?;
    let mut created = Vec::new();
    for user in users {
        if accounts.has_user(&user.name) {
            continue;
        }
        let mut cmd = Command::new("useradd");
        if root != Path::new("/") {
            cmd.arg("--root").arg(root);
        }
        cmd.args(["--system", "--no-create-home", "--home-dir"])
            .arg(&user.home)
            .args(["--shell", "/usr/sbin/nologin"]);
        if accounts.has_group(&user.name) {
            // A group of that name exists already (made by hand or a
            // package): join it rather than fail to create it again.
            cmd.arg("--gid").arg(&user.name);
        } else {
            cmd.arg("--user-group");
        }
        cmd.arg("--").arg(&user.name);
        command::run(cmd, USERADD_TIMEOUT).map_err(|source| ApplyError::CreateUser {
            name: user.name.clone(),
            source,
        })?;
        tracing::info!(user = %user.name, home = %user.home, "created system user");
        created.push(user.name.clone());
        accounts = Accounts::read(root)?;
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_files_parse_and_resolve() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc")).expect("mkdir");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\n# comment\nkafka:x:994:993::/var/lib/kafka:/usr/sbin/nologin\n",
        )
        .expect("write passwd");
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nkafka:x:993:\n")
            .expect("write group");
        let a = Accounts::read(dir.path()).expect("parses");
        assert_eq!(a.resolve("kafka", "kafka", "/x").ok(), Some((994, 993)));
        assert_eq!(a.resolve("root", "kafka", "/x").ok(), Some((0, 993)));
        assert!(matches!(
            a.resolve("grafana", "root", "/x"),
            Err(ApplyError::UnknownUser { .. })
        ));
        assert!(matches!(
            a.resolve("root", "grafana", "/x"),
            Err(ApplyError::UnknownGroup { .. })
        ));
        std::fs::write(dir.path().join("etc/group"), "root:x:zero:\n").expect("write group");
        assert!(matches!(
            Accounts::read(dir.path()),
            Err(ApplyError::AccountFile { line: 1, .. })
        ));
    }
}
