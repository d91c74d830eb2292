//! Validated newtypes: every string that ends up inside a rendered file is one
//! of these, so a value cannot smuggle a newline, a `#` comment or a second
//! key into a properties file, a unit or a YAML document.
//!
//! Each type validates in `TryFrom<String>`, which serde calls while parsing,
//! so a bad value is reported at its own line and column.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Why a string was refused by one of the newtypes below.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

macro_rules! string_newtype {
    (
        $(#[$meta:meta])*
        $name:ident, pattern = $pattern:expr, description = $desc:expr, check = $check:expr
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(s: String) -> Result<Self, InvalidValue> {
                let check: fn(&str) -> Result<(), String> = $check;
                match check(&s) {
                    Ok(()) => Ok(Self(s)),
                    Err(why) => Err(InvalidValue(why)),
                }
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidValue;
            fn try_from(s: &str) -> Result<Self, InvalidValue> {
                Self::try_from(s.to_owned())
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                Self::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let pattern: Option<&str> = $pattern;
                match pattern {
                    Some(p) => json_schema!({ "type": "string", "pattern": p, "description": $desc }),
                    None => json_schema!({ "type": "string", "description": $desc }),
                }
            }
        }
    };
}

fn check_label(kind: &str, s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() || s.len() > max {
        return Err(format!("{kind} {s:?} must be 1 to {max} characters long"));
    }
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} {s:?} may contain only lowercase letters, digits and '-', and must not start or end with '-'"
        ))
    }
}

string_newtype!(
    /// A name that is also a DNS label: node names, AZ names, cluster name,
    /// secret names. Safe in file names, unit names and host names.
    Name,
    pattern = Some("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"),
    description = "lowercase letters, digits and '-', 1 to 63 characters (a DNS label)",
    check = |s| check_label("name", s, 63)
);

string_newtype!(
    /// A DNS domain such as `kafka.internal`.
    DnsDomain,
    pattern = Some("^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"),
    description = "a DNS domain of lowercase labels separated by '.'",
    check = |s| {
        if s.is_empty() || s.len() > 253 {
            return Err(format!("domain {s:?} must be 1 to 253 characters long"));
        }
        s.split('.').try_for_each(|l| check_label("domain label", l, 63))
    }
);

string_newtype!(
    /// A Kafka topic name: at most 249 characters of `[a-zA-Z0-9._-]`, and
    /// neither `.` nor `..`.
    TopicName,
    pattern = Some("^[a-zA-Z0-9._-]{1,249}$"),
    description = "a Kafka topic name: 1 to 249 characters of [a-zA-Z0-9._-], not '.' or '..'",
    check = |s| {
        if s.is_empty() || s.len() > 249 {
            return Err(format!("topic name {s:?} must be 1 to 249 characters long"));
        }
        if s == "." || s == ".." {
            return Err(format!("topic name {s:?} is not allowed"));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return Err(format!("topic name {s:?} contains {c:?}; only [a-zA-Z0-9._-] are allowed"));
        }
        Ok(())
    }
);

string_newtype!(
    /// A SCRAM user name (the Kafka principal `User:<name>`).
    UserName,
    pattern = Some("^[a-zA-Z0-9._-]{1,64}$"),
    description = "a SCRAM user name: 1 to 64 characters of [a-zA-Z0-9._-]",
    check = |s| {
        if s.is_empty() || s.len() > 64 {
            return Err(format!("user name {s:?} must be 1 to 64 characters long"));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return Err(format!("user name {s:?} contains {c:?}; only [a-zA-Z0-9._-] are allowed"));
        }
        Ok(())
    }
);

string_newtype!(
    /// A resource name in an ACL: a topic, group or transactional id, or `*`.
    AclResourceName,
    pattern = Some("^(\\*|[a-zA-Z0-9._-]{1,249})$"),
    description = "'*' or 1 to 249 characters of [a-zA-Z0-9._-]",
    check = |s| {
        if s == "*" {
            return Ok(());
        }
        if s.is_empty() || s.len() > 249 || s.chars().any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return Err(format!("ACL resource name {s:?} must be '*' or 1 to 249 characters of [a-zA-Z0-9._-]"));
        }
        Ok(())
    }
);

string_newtype!(
    /// A name pattern for topics or users: the characters of a topic name,
    /// and `*` for any run of characters (none included). `tmp-*` matches
    /// `tmp-` and `tmp-orders`; `*-scratch` matches `a-scratch`.
    NamePattern,
    pattern = Some("^[a-zA-Z0-9._*-]{1,249}$"),
    description = "a name pattern: 1 to 249 characters of [a-zA-Z0-9._-], with '*' matching any run of characters",
    check = |s| {
        if s.is_empty() || s.len() > 249 {
            return Err(format!("name pattern {s:?} must be 1 to 249 characters long"));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*'))) {
            return Err(format!("name pattern {s:?} contains {c:?}; only [a-zA-Z0-9._-] and '*' are allowed"));
        }
        Ok(())
    }
);

impl NamePattern {
    /// Whether `name` matches the pattern as a whole.
    pub fn matches(&self, name: &str) -> bool {
        glob_matches(self.as_str().as_bytes(), name.as_bytes())
    }

    /// Whether some name matches both this pattern and `other` (itself a
    /// pattern with `*` wildcards): `tmp-*` and `*-old` share `tmp-old`.
    pub fn overlaps(&self, other: &str) -> bool {
        globs_intersect(self.as_str().as_bytes(), other.as_bytes())
    }
}

/// `*`-only glob matching, linear backtracking to the last star.
fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where the last star was, and how much of `name` it has eaten so far.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether two `*`-globs match a common name. `reach[i][j]`: the suffixes
/// `a[i..]` and `b[j..]` match a common string; a star either matches
/// nothing more or absorbs the other side's next symbol (a star absorbing
/// a star takes whatever that star matches).
fn globs_intersect(a: &[u8], b: &[u8]) -> bool {
    let (n, m) = (a.len(), b.len());
    let mut reach = vec![vec![false; m + 1]; n + 1];
    for i in (0..=n).rev() {
        for j in (0..=m).rev() {
            reach[i][j] = if i == n && j == m {
                true
            } else if i < n && a[i] == b'*' {
                reach[i + 1][j] || (j < m && reach[i][j + 1])
            } else if j < m && b[j] == b'*' {
                reach[i][j + 1] || (i < n && reach[i + 1][j])
            } else {
                i < n && j < m && a[i] == b[j] && reach[i + 1][j + 1]
            };
        }
    }
    reach[0][0]
}

string_newtype!(
    /// A Java properties key such as `num.io.threads`.
    PropertyKey,
    pattern = Some("^[a-zA-Z0-9][a-zA-Z0-9._-]*$"),
    description = "a Kafka configuration key: letters, digits, '.', '_' and '-'",
    check = |s| {
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(())
        } else {
            Err(format!("configuration key {s:?} may contain only letters, digits, '.', '_' and '-'"))
        }
    }
);

string_newtype!(
    /// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`
    /// (reserved for Prometheus itself).
    LabelName,
    pattern = Some("^[a-zA-Z_][a-zA-Z0-9_]*$"),
    description = "a Prometheus label name: [a-zA-Z_][a-zA-Z0-9_]*, not starting with __",
    check = |s| {
        let ok = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && s.len() <= 128;
        if !ok {
            Err(format!("label name {s:?} may contain only letters, digits and '_', and must not start with a digit"))
        } else if s.starts_with("__") {
            Err(format!("label name {s:?} starts with __, which Prometheus reserves"))
        } else {
            Ok(())
        }
    }
);

string_newtype!(
    /// One line of text without control characters: safe inside a
    /// properties value, a unit's `Description=`, a YAML scalar.
    SingleLine,
    pattern = Some("^[^\\u0000-\\u001f\\u007f]*$"),
    description = "a single line of text without control characters",
    check = |s| {
        if has_control(s) {
            Err(format!("value {s:?} must be a single line without control characters"))
        } else if s.len() > 4096 {
            Err("value is longer than 4096 characters".to_owned())
        } else {
            Ok(())
        }
    }
);

string_newtype!(
    /// An absolute filesystem path without `..`, whitespace or control characters.
    AbsPath,
    pattern = Some("^/[A-Za-z0-9._/@+-]*$"),
    description = "an absolute path of [A-Za-z0-9._/@+-], without '..'",
    check = |s| {
        if !s.starts_with('/') {
            return Err(format!("path {s:?} must be absolute"));
        }
        if s.split('/').any(|c| c == "..") {
            return Err(format!("path {s:?} must not contain '..'"));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '@' | '+' | '-'))) {
            return Err(format!("path {s:?} contains {c:?}; only [A-Za-z0-9._/@+-] are allowed"));
        }
        Ok(())
    }
);

string_newtype!(
    /// A path inside the desired-state repository, relative to its root.
    RepoPath,
    pattern = Some("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"),
    description = "a relative path inside the repository, without '..'",
    check = |s| {
        if s.is_empty() || s.starts_with('/') {
            return Err(format!("repository path {s:?} must be relative"));
        }
        if s.split('/').any(|c| c.is_empty() || c == "..") {
            return Err(format!("repository path {s:?} must not contain '..' or empty components"));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))) {
            return Err(format!("repository path {s:?} contains {c:?}"));
        }
        Ok(())
    }
);

string_newtype!(
    /// An `http://` or `https://` URL without whitespace or quotes.
    Url,
    pattern = Some("^https?://[^\\s\"'<>\\\\]+$"),
    description = "an http:// or https:// URL",
    check = |s| {
        let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
        match rest {
            None => Err(format!("URL {s:?} must start with http:// or https://")),
            Some("") => Err(format!("URL {s:?} has no host")),
            Some(_) if s.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '\\')) => {
                Err(format!("URL {s:?} contains whitespace, a quote or a control character"))
            }
            Some(_) => Ok(()),
        }
    }
);

string_newtype!(
    /// Where a download comes from: an `http://` or `https://` URL, or a
    /// `file:///absolute/path` on the node (an image-baked or locally cached
    /// artifact).
    DownloadUrl,
    pattern = Some("^(https?://|file:///)[^\\s\"'<>\\\\]+$"),
    description = "an http://, https:// or file:/// URL",
    check = |s| {
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
                return Err(format!("URL {s:?} must name an absolute path without '..' (file:///…)"));
            }
            if s.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '\\')) {
                return Err(format!("URL {s:?} contains whitespace, a quote or a control character"));
            }
            return Ok(());
        }
        Url::try_from(s).map(|_| ()).map_err(|e| e.0.replace("http:// or https://", "http://, https:// or file:///"))
    }
);

string_newtype!(
    /// A hex-encoded SHA-512 digest (128 hex digits).
    Sha512Hex,
    pattern = Some("^[0-9a-f]{128}$"),
    description = "a SHA-512 digest: 128 lowercase hex digits",
    check = |s| {
        if s.len() == 128 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(())
        } else {
            Err(format!("sha512 must be 128 lowercase hex digits, got {} characters", s.len()))
        }
    }
);

string_newtype!(
    /// A hex-encoded SHA-256 digest (64 hex digits).
    Sha256Hex,
    pattern = Some("^[0-9a-f]{64}$"),
    description = "a SHA-256 digest: 64 lowercase hex digits",
    check = |s| {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(())
        } else {
            Err(format!("sha256 must be 64 lowercase hex digits, got {} characters", s.len()))
        }
    }
);

string_newtype!(
    /// An EC2 image id, e.g. `ami-0123456789abcdef0`.
    AmiId,
    pattern = Some("^ami-[0-9a-f]{8,17}$"),
    description = "an EC2 image id such as ami-0123456789abcdef0",
    check = |s| {
        let ok = s.strip_prefix("ami-").is_some_and(|hex| {
            (8..=17).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok { Ok(()) } else { Err(format!("{s:?} is not an EC2 image id such as ami-0123456789abcdef0")) }
    }
);

string_newtype!(
    /// A Kafka UUID as Kafka prints it: 16 bytes in URL-safe base64 without
    /// padding (22 characters), e.g. a KRaft cluster id or a directory id.
    KafkaUuid,
    pattern = Some("^[A-Za-z0-9_-]{22}$"),
    description = "a Kafka UUID: 22 characters of URL-safe base64 (`kafka-storage.sh random-uuid`)",
    check = |s| {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s);
        match decoded {
            Ok(bytes) if bytes.len() == 16 && s.len() == 22 => {
                if bytes.iter().all(|b| *b == 0) {
                    Err(format!("Kafka UUID {s:?} is the reserved zero UUID"))
                } else {
                    Ok(())
                }
            }
            _ => Err(format!("{s:?} is not a Kafka UUID (22 characters of URL-safe base64, as `kafka-storage.sh random-uuid` prints)")),
        }
    }
);

string_newtype!(
    /// A Kafka release whose `metadata.version` the cluster should run, such as `4.1`.
    MetadataRelease,
    pattern = Some("^[0-9]+\\.[0-9]+$"),
    description = "a Kafka release MAJOR.MINOR whose metadata.version the cluster runs",
    check = |s| {
        if crate::features::metadata_level(s).is_some() {
            Ok(())
        } else {
            let known: Vec<&str> = crate::features::METADATA_VERSIONS.iter().map(|(r, _, _)| *r).collect();
            Err(format!("metadata_version {s:?} is not a Kafka release kraftops knows the metadata.version of (known: {})", known.join(", ")))
        }
    }
);

string_newtype!(
    /// A version such as `4.1.1`.
    Version,
    pattern = Some("^[0-9]+\\.[0-9]+\\.[0-9]+$"),
    description = "a version MAJOR.MINOR.PATCH",
    check = |s| {
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit())) {
            Ok(())
        } else {
            Err(format!("version {s:?} must look like MAJOR.MINOR.PATCH"))
        }
    }
);

string_newtype!(
    /// A JVM heap size for `-Xmx`/`-Xms`: a number with `m` or `g`.
    HeapSize,
    pattern = Some("^[1-9][0-9]{0,5}[mg]$"),
    description = "a JVM heap size such as 512m or 2g",
    check = |s| {
        let (num, unit) = s.split_at(s.len().saturating_sub(1));
        if matches!(unit, "m" | "g") && !num.is_empty() && num.len() <= 6 && !num.starts_with('0') && num.bytes().all(|b| b.is_ascii_digit()) {
            Ok(())
        } else {
            Err(format!("heap size {s:?} must be a number followed by m or g, e.g. 512m or 2g"))
        }
    }
);

string_newtype!(
    /// An EC2 instance type such as `t3.small`.
    InstanceType,
    pattern = Some("^[a-z][a-z0-9-]*\\.[a-z0-9]+$"),
    description = "an EC2 instance type such as t3.small",
    check = |s| {
        let ok = s.split_once('.').is_some_and(|(family, size)| {
            !family.is_empty()
                && family.starts_with(|c: char| c.is_ascii_lowercase())
                && family.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !size.is_empty()
                && size.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if ok { Ok(()) } else { Err(format!("instance type {s:?} must look like t3.small")) }
    }
);

/// A duration in Prometheus notation: `30s`, `5m`, `1h`, `7d`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Duration {
    text: String,
    seconds: u64,
}

impl Duration {
    pub fn as_secs(&self) -> u64 {
        self.seconds
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for Duration {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        let bad = || {
            InvalidValue(format!(
                "duration {s:?} must be a whole number followed by s, m, h or d, e.g. 30s or 5m"
            ))
        };
        let (num, unit) = s.split_at(s.len().saturating_sub(1));
        if num.is_empty() || num.len() > 9 || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        let factor = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        Ok(Self {
            seconds: n * factor,
            text: s,
        })
    }
}

impl TryFrom<&str> for Duration {
    type Error = InvalidValue;
    fn try_from(s: &str) -> Result<Self, InvalidValue> {
        Self::try_from(s.to_owned())
    }
}

impl From<Duration> for String {
    fn from(d: Duration) -> String {
        d.text
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^[0-9]{1,9}[smhd]$", "description": "a duration such as 30s, 5m, 1h or 7d" })
    }
}

/// A time of day in UTC, `HH:MM` (`00:00` to `23:59`), e.g. when a
/// maintenance window opens.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay {
    text: String,
    minutes: u16,
}

impl TimeOfDay {
    /// Minutes since midnight (UTC).
    pub fn minutes(&self) -> u16 {
        self.minutes
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for TimeOfDay {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        let parsed = s.split_once(':').and_then(|(h, m)| {
            let two_digits = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
            if !two_digits(h) || !two_digits(m) {
                return None;
            }
            let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        });
        match parsed {
            Some(minutes) => Ok(Self { text: s, minutes }),
            None => Err(InvalidValue(format!(
                "time {s:?} must be HH:MM in UTC, from 00:00 to 23:59, e.g. 02:30"
            ))),
        }
    }
}

impl TryFrom<&str> for TimeOfDay {
    type Error = InvalidValue;
    fn try_from(s: &str) -> Result<Self, InvalidValue> {
        Self::try_from(s.to_owned())
    }
}

impl From<TimeOfDay> for String {
    fn from(t: TimeOfDay) -> String {
        t.text
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl JsonSchema for TimeOfDay {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TimeOfDay".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$", "description": "a time of day in UTC, HH:MM" })
    }
}

/// An IPv4 network in CIDR notation, e.g. `10.0.1.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let mask = self.mask();
        u32::from(addr) & mask == u32::from(self.network) & mask
    }
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }
    /// Whether two networks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }
}

impl TryFrom<String> for Cidr {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        let bad = || {
            InvalidValue(format!(
                "{s:?} is not an IPv4 network in CIDR notation such as 10.0.1.0/24"
            ))
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let network: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let cidr = Cidr { network, prefix };
        if u32::from(network) & cidr.mask() != u32::from(network) {
            return Err(InvalidValue(format!(
                "{s:?} has host bits set; did you mean {}/{prefix}?",
                Ipv4Addr::from(u32::from(network) & cidr.mask())
            )));
        }
        Ok(cidr)
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl JsonSchema for Cidr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cidr".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$", "description": "an IPv4 network such as 10.0.1.0/24" })
    }
}

/// A configuration value as written in YAML: a string, number or boolean,
/// kept as the text Kafka will read. Single line, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct PropertyValue(String);

impl PropertyValue {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PropertyValue {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        if has_control(&s) {
            Err(InvalidValue(format!(
                "value {s:?} must be a single line without control characters"
            )))
        } else {
            Ok(Self(s))
        }
    }
}

impl TryFrom<&str> for PropertyValue {
    type Error = InvalidValue;
    fn try_from(s: &str) -> Result<Self, InvalidValue> {
        Self::try_from(s.to_owned())
    }
}

impl From<PropertyValue> for String {
    fn from(v: PropertyValue) -> String {
        v.0
    }
}

impl fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PropertyValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PropertyValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PropertyValue, E> {
                PropertyValue::try_from(v).map_err(E::custom)
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<PropertyValue, E> {
                Ok(PropertyValue(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PropertyValue, E> {
                Ok(PropertyValue(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PropertyValue, E> {
                Ok(PropertyValue(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<PropertyValue, E> {
                Ok(PropertyValue(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl JsonSchema for PropertyValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PropertyValue".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "integer", "number", "boolean"], "description": "a configuration value (single line)" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_injection() {
        assert!(Name::try_from("broker-1").is_ok());
        assert!(Name::try_from("broker 1").is_err());
        assert!(Name::try_from("Broker").is_err());
        assert!(Name::try_from("-x").is_err());
        assert!(SingleLine::try_from("a\nb").is_err());
        assert!(PropertyValue::try_from("x\r").is_err());
        assert!(AbsPath::try_from("/var/../etc").is_err());
        assert!(AbsPath::try_from("relative").is_err());
        assert!(RepoPath::try_from("../x").is_err());
        assert!(DownloadUrl::try_from("file:///var/cache/kafka.tgz").is_ok());
        assert!(DownloadUrl::try_from("https://example.org/kafka.tgz").is_ok());
        assert!(DownloadUrl::try_from("file://relative/x").is_err());
        assert!(DownloadUrl::try_from("file:///a/../b").is_err());
        assert!(DownloadUrl::try_from("ftp://x/y").is_err());
        assert!(LabelName::try_from("severity").is_ok());
        assert!(LabelName::try_from("a.b").is_err());
        assert!(LabelName::try_from("__name__").is_err());
        assert!(LabelName::try_from("1x").is_err());
    }

    #[test]
    fn name_patterns_match_whole_names() {
        let p = |s: &str| NamePattern::try_from(s).expect("valid pattern");
        assert!(p("tmp-*").matches("tmp-"));
        assert!(p("tmp-*").matches("tmp-orders"));
        assert!(!p("tmp-*").matches("xtmp-orders"));
        assert!(p("*-old").matches("a-old"));
        assert!(!p("*-old").matches("a-older"));
        assert!(p("a*b*c").matches("abbbc"));
        assert!(p("a*b*c").matches("abc"));
        assert!(!p("a*b*c").matches("acb"));
        assert!(p("exact").matches("exact"));
        assert!(!p("exact").matches("exactly"));
        assert!(p("*").matches(""));
        assert!(NamePattern::try_from("a/b").is_err());
        assert!(NamePattern::try_from("").is_err());
    }

    #[test]
    fn name_patterns_overlap_when_they_share_a_name() {
        let p = |s: &str| NamePattern::try_from(s).expect("valid pattern");
        assert!(p("*").overlaps("__*"));
        assert!(p("_*").overlaps("__*"));
        assert!(p("*consumer_offsets").overlaps("__*"));
        assert!(p("tmp-*").overlaps("*-old"));
        assert!(p("*a").overlaps("*b*"));
        assert!(!p("tmp-*").overlaps("__*"));
        assert!(!p("a_*").overlaps("__*"));
        assert!(!p("x*y").overlaps("x*z"));
        // Against a plain name, overlapping is matching.
        for (pattern, name) in [("tmp-*", "tmp-1"), ("*-x", "a-y"), ("a*", "a"), ("b", "a")] {
            assert_eq!(
                p(pattern).overlaps(name),
                p(pattern).matches(name),
                "{pattern} {name}"
            );
        }
    }

    #[test]
    fn topic_names_follow_kafka() {
        assert!(TopicName::try_from("a.b_c-1").is_ok());
        assert!(TopicName::try_from("x".repeat(249)).is_ok());
        assert!(TopicName::try_from("x".repeat(250)).is_err());
        assert!(TopicName::try_from("..").is_err());
        assert!(TopicName::try_from("a/b").is_err());
    }

    #[test]
    fn cidr_and_durations() {
        let c = Cidr::try_from("10.0.1.0/24".to_owned()).expect("valid");
        assert!(c.contains("10.0.1.7".parse().expect("ip")));
        assert!(!c.contains("10.0.2.7".parse().expect("ip")));
        assert!(Cidr::try_from("10.0.1.1/24".to_owned()).is_err());
        assert_eq!(Duration::try_from("5m").expect("valid").as_secs(), 300);
        assert!(Duration::try_from("5 m").is_err());
        assert!(Duration::try_from("m").is_err());
    }

    #[test]
    fn kafka_uuid() {
        assert!(KafkaUuid::try_from("MkU3OEVBNTcwNTJENDM2Qg").is_ok());
        assert!(KafkaUuid::try_from("AAAAAAAAAAAAAAAAAAAAAA").is_err());
        assert!(KafkaUuid::try_from("short").is_err());
    }
}
