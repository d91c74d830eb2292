//! Golden files: every rendered file and unit of every node of the example
//! repository, one snapshot directory per node. Regenerate with
//! `INSTA_UPDATE=always cargo test -p roles --test golden` and review the diff.

mod support;

fn render_example() -> (Vec<roles::Plan>, roles::Secrets) {
    let (model, secrets) = support::load_example();
    let plans = roles::render_all(&model, &secrets).expect("example renders");
    (plans, secrets)
}

/// Turns an absolute path on the node into a snapshot name.
fn snapshot_name(path: &str) -> String {
    path.trim_start_matches('/').replace('/', "__")
}

#[test]
fn every_rendered_file_of_every_example_node() {
    let (plans, _) = render_example();
    assert_eq!(plans.len(), 9);
    for plan in &plans {
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(format!("snapshots/{}", plan.node));
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings.bind(|| {
            for file in &plan.files {
                let text = if file.sensitive {
                    // Secrets never go into git, not even in a snapshot.
                    format!(
                        "<sensitive: {} bytes, mode {:o}, owner {}>",
                        file.contents.len(),
                        file.mode,
                        file.owner
                    )
                } else {
                    String::from_utf8(file.contents.clone())
                        .unwrap_or_else(|_| panic!("{} is not UTF-8", file.path))
                };
                insta::assert_snapshot!(snapshot_name(&file.path), text);
            }
            for unit in &plan.units {
                insta::assert_snapshot!(format!("unit__{}", unit.name), unit.contents);
            }
            // Everything but file contents: owners, modes, change classes,
            // certificates, artifacts, users, directories.
            let summary = serde_json::to_string_pretty(plan).expect("plan serializes");
            insta::assert_snapshot!("plan", summary);
        });
    }
}

#[test]
fn password_files_are_sensitive_and_private() {
    let (plans, secrets) = render_example();
    let passwords: Vec<&str> = secrets
        .values()
        .map(|s| s.expose())
        .filter(|s| !s.contains('\n'))
        .collect();
    let mut holding = 0;
    for plan in &plans {
        for file in &plan.files {
            let text = String::from_utf8_lossy(&file.contents);
            if passwords.iter().any(|p| text.contains(p)) {
                assert!(
                    file.sensitive,
                    "{}:{} holds a password but is not marked sensitive",
                    plan.node, file.path
                );
                assert_eq!(
                    file.mode & 0o007,
                    0,
                    "{}:{} holds a password but is world-readable",
                    plan.node,
                    file.path
                );
                holding += 1;
            }
        }
        for unit in &plan.units {
            assert!(
                !passwords.iter().any(|p| unit.contents.contains(p)),
                "unit {} of {} holds a password",
                unit.name,
                plan.node
            );
        }
        let debug = format!("{plan:?}");
        assert!(
            !passwords.iter().any(|p| debug.contains(p)),
            "Debug of {}'s plan shows a password",
            plan.node
        );
    }
    // 4 brokers' secrets files, connect's, the observability node's admin
    // client properties and Grafana password.
    assert!(
        holding >= 7,
        "expected at least 7 files holding passwords, found {holding}"
    );
}
