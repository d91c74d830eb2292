//! The example repository loads, and its secrets decrypt with the example identity.

use std::path::PathBuf;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/seed")
}

#[test]
fn example_loads_without_problems() {
    let model = match desired_state::load_dir(&example()) {
        Ok(m) => m,
        Err(d) => panic!("{d}"),
    };
    assert_eq!(model.nodes.len(), 9);
    assert_eq!(model.brokers().count(), 4);
    assert_eq!(model.controllers().count(), 3);
    assert_eq!(
        model.fqdn(model.node("broker-1").expect("broker-1")),
        "broker-1.kafka.internal"
    );
    assert!(model.topics.iter().any(|t| t.name.as_str() == "topic-1"));
    assert_eq!(model.rules.len(), 2);
}

#[test]
fn example_secrets_decrypt_with_the_example_identity() {
    let model = desired_state::load_dir(&example()).expect("example loads");
    let text = std::fs::read_to_string(example().with_file_name("seed.example-only.age-identity"))
        .expect("identity");
    let identity = desired_state::Identity::parse(&text).expect("identity parses");
    let secrets = model.decrypt_all(&identity).expect("all decrypt");
    assert_eq!(secrets.len(), model.secrets.len());
    let ca_key = &secrets[&desired_state::types::Name::try_from("ca-key").expect("name")];
    assert!(ca_key.expose().starts_with("-----BEGIN PRIVATE KEY-----"));
    let admin = &secrets[&desired_state::types::Name::try_from("admin-password").expect("name")];
    assert_eq!(
        admin.single_line("admin-password").expect("one line").len(),
        24
    );
}
