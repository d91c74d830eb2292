//! JSON Schemas of the repository's files, generated from the model, so an
//! operator's editor can complete and check them. The checked-in copies in
//! `desired-state/schema/` are kept fresh by a test.

use schemars::JsonSchema;

use crate::model::{ClusterFile, ConnectorsFile, NodesFile, RulesFile, TopicsFile, UsersFile};

/// `(file name, schema JSON)` for every YAML file kind of a repository.
pub fn all() -> Vec<(&'static str, String)> {
    vec![
        ("cluster.schema.json", render::<ClusterFile>("cluster.yaml")),
        ("nodes.schema.json", render::<NodesFile>("nodes.yaml")),
        ("topics.schema.json", render::<TopicsFile>("topics/*.yaml")),
        ("users.schema.json", render::<UsersFile>("users/*.yaml")),
        (
            "connectors.schema.json",
            render::<ConnectorsFile>("connectors/*.yaml"),
        ),
        (
            "rules.schema.json",
            render::<RulesFile>("observability/rules/*.yaml"),
        ),
    ]
}

fn render<T: JsonSchema>(title: &str) -> String {
    let mut schema = schemars::schema_for!(T);
    schema.insert("title".to_owned(), format!("kraftops {title}").into());
    let mut text = serde_json::to_string_pretty(&schema)
        .unwrap_or_else(|e| unreachable!("a schema always serializes: {e}"));
    text.push('\n');
    text
}
