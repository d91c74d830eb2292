//! systemd unit files, built from typed sections rather than templates, so
//! a value can never add a line to a unit.

use std::fmt::Write as _;

/// A unit file: ordered sections of `Key=value` lines.
#[derive(Clone, Debug, Default)]
pub struct UnitFile {
    header: Vec<String>,
    sections: Vec<(String, Vec<(String, String)>)>,
}

/// A value that would break the unit file's line structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unit {unit}: value of {key}= contains a line break or control character")]
pub struct UnitValueError {
    pub unit: String,
    pub key: String,
}

impl UnitFile {
    pub fn new() -> Self {
        Self::default()
    }

    /// A `#` comment line at the top of the file.
    pub fn comment(mut self, text: &str) -> Self {
        self.header.push(text.to_owned());
        self
    }

    /// Starts a section (`[Unit]`, `[Service]`, `[Install]`).
    pub fn section(mut self, name: &str) -> Self {
        self.sections.push((name.to_owned(), Vec::new()));
        self
    }

    /// Adds `key=value` to the current section. Repeated keys are kept in
    /// order (as systemd allows for `ExecStartPre=`, `Environment=`, …).
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        if let Some((_, entries)) = self.sections.last_mut() {
            entries.push((key.to_owned(), value.into()));
        } else {
            self.sections
                .push((String::new(), vec![(key.to_owned(), value.into())]));
        }
        self
    }

    /// Adds the sandbox every kraftops service gets, to the current
    /// `[Service]` section: no privilege gain, private /tmp and /dev, kernel,
    /// clock, hostname and cgroups read-only, no new namespaces or realtime
    /// scheduling, native syscalls only. Services add what is theirs
    /// (`ProtectSystem=`, writable paths, `MemoryDenyWriteExecute=` where no
    /// JIT runs, capabilities).
    pub fn sandbox(self) -> Self {
        SANDBOX
            .iter()
            .fold(self, |unit, (key, value)| unit.set(key, *value))
    }

    /// [`UnitFile::sandbox`] but without `RestrictSUIDSGID=`, for a process
    /// that installs packages (which may ship setuid helpers).
    pub fn sandbox_for_package_installs(self) -> Self {
        SANDBOX
            .iter()
            .filter(|(key, _)| *key != "RestrictSUIDSGID")
            .fold(self, |unit, (key, value)| unit.set(key, *value))
    }

    /// Renders the unit. `name` is only used in the error.
    pub fn render(&self, name: &str) -> Result<String, UnitValueError> {
        let mut out = String::new();
        for line in &self.header {
            let _ = writeln!(out, "# {line}");
        }
        for (i, (section, entries)) in self.sections.iter().enumerate() {
            if i > 0 || !self.header.is_empty() {
                out.push('\n');
            }
            let _ = writeln!(out, "[{section}]");
            for (key, value) in entries {
                if value.chars().any(char::is_control) || key.chars().any(char::is_control) {
                    return Err(UnitValueError {
                        unit: name.to_owned(),
                        key: key.clone(),
                    });
                }
                let _ = writeln!(out, "{key}={value}");
            }
        }
        Ok(out)
    }
}

/// The baseline of [`UnitFile::sandbox`].
const SANDBOX: &[(&str, &str)] = &[
    ("NoNewPrivileges", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("RestrictNamespaces", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
    ("SystemCallArchitectures", "native"),
];

/// Quotes one word of an `ExecStart=` command line for systemd: wrapped in
/// double quotes with `\`, `"` and `$`/`%` specials escaped, so the value is
/// one argument and is not expanded.
pub fn quote_arg(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c));
    if plain {
        return arg.to_owned();
    }
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("$$"),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sections_in_order() {
        let unit = UnitFile::new()
            .comment("managed by kraftops")
            .section("Unit")
            .set("Description", "Kafka")
            .section("Service")
            .set("ExecStart", "/bin/true")
            .set("Environment", "A=1")
            .set("Environment", "B=2");
        assert_eq!(
            unit.render("x.service").expect("renders"),
            "# managed by kraftops\n\n[Unit]\nDescription=Kafka\n\n[Service]\nExecStart=/bin/true\nEnvironment=A=1\nEnvironment=B=2\n"
        );
    }

    #[test]
    fn refuses_line_breaks() {
        let unit = UnitFile::new()
            .section("Unit")
            .set("Description", "a\nExecStart=/bin/evil");
        let err = unit.render("x.service").expect_err("newline refused");
        assert_eq!(
            err.to_string(),
            "unit x.service: value of Description= contains a line break or control character"
        );
    }

    #[test]
    fn sandbox_variants() {
        let full = UnitFile::new()
            .section("Service")
            .sandbox()
            .render("a.service")
            .expect("renders");
        let pkg = UnitFile::new()
            .section("Service")
            .sandbox_for_package_installs()
            .render("b.service")
            .expect("renders");
        assert!(
            full.contains("\nRestrictSUIDSGID=yes\n") && full.contains("\nNoNewPrivileges=yes\n")
        );
        assert!(!pkg.contains("RestrictSUIDSGID") && pkg.contains("\nProtectKernelModules=yes\n"));
    }

    #[test]
    fn quotes_arguments() {
        assert_eq!(
            quote_arg("--config=/etc/kafka/server.properties"),
            "--config=/etc/kafka/server.properties"
        );
        assert_eq!(quote_arg("a b"), "\"a b\"");
        assert_eq!(quote_arg("x\"$%"), "\"x\\\"$$%%\"");
    }
}
