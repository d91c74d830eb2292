//! Kafka's `metadata.version` feature: which level each Kafka release
//! brings. Taken from `kafka-features.sh version-mapping --release-version
//! <release>` of Apache Kafka 4.2.0 (and checked against 4.1.1); a release
//! not listed here is refused when the repository is loaded, so a new
//! Kafka release is added here with the level its own tool prints.

/// `(release, metadata.version level, Kafka's name of that level)`, oldest
/// first. Kafka 4.x brokers and controllers run from 3.3 on.
pub const METADATA_VERSIONS: &[(&str, u16, &str)] = &[
    ("3.3", 7, "3.3-IV3"),
    ("3.4", 8, "3.4-IV0"),
    ("3.5", 11, "3.5-IV2"),
    ("3.6", 14, "3.6-IV2"),
    ("3.7", 19, "3.7-IV4"),
    ("3.8", 20, "3.8-IV0"),
    ("3.9", 21, "3.9-IV0"),
    ("4.0", 25, "4.0-IV3"),
    ("4.1", 27, "4.1-IV1"),
    ("4.2", 29, "4.2-IV1"),
];

/// The `metadata.version` level a release (`4.1`) brings.
pub fn metadata_level(release: &str) -> Option<u16> {
    METADATA_VERSIONS
        .iter()
        .find(|(r, _, _)| *r == release)
        .map(|(_, level, _)| *level)
}

/// Kafka's name of a level (`27` → `4.1-IV1`), or the bare number for a
/// level this table does not know.
pub fn level_name(level: u16) -> String {
    METADATA_VERSIONS
        .iter()
        .find(|(_, l, _)| *l == level)
        .map_or_else(
            || format!("level {level}"),
            |(_, _, name)| (*name).to_owned(),
        )
}

/// `MAJOR.MINOR` of a version such as `4.1.1`.
pub fn release_of(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_rise_with_releases_and_names_match() {
        for pair in METADATA_VERSIONS.windows(2) {
            assert!(pair[0].1 < pair[1].1, "{pair:?}");
            assert!(
                release_of(&format!("{}.0", pair[0].0)) < release_of(&format!("{}.0", pair[1].0))
            );
        }
        for (release, _, name) in METADATA_VERSIONS {
            assert!(name.starts_with(&format!("{release}-IV")), "{name}");
        }
        assert_eq!(metadata_level("4.1"), Some(27));
        assert_eq!(metadata_level("4.9"), None);
        assert_eq!(level_name(29), "4.2-IV1");
        assert_eq!(level_name(28), "level 28");
        assert_eq!(release_of("4.10.2"), Some((4, 10)));
    }
}
