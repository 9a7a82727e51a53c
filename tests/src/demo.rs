//! `silo demo`, the README's first command, states the isolation facts, on
//! the embedded default (files, no server) and on Postgres.
use silo_host::demo::{DemoSource, run};

async fn report(source: DemoSource, name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("silo-tests-demo-{name}-{}", std::process::id()));
    let mut out = Vec::new();
    run(&source, Some(dir), &mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

fn assert_isolation(report: &str) {
    assert_eq!(
        report
            .matches("rows of another tenant: 0  (isolation holds)")
            .count(),
        2,
        "{report}"
    );
    assert!(report.contains("2000 rows"), "{report}");
    assert!(
        report.contains("filter enforced by the host: tenant = 'acme'"),
        "{report}"
    );
    assert!(
        report.contains("Limits in force: memory 64 MiB"),
        "{report}"
    );
}

#[tokio::test]
async fn embedded_demo_needs_no_server_and_states_isolation() {
    let report = report(DemoSource::Files, "files").await;
    assert_isolation(&report);
    assert!(report.contains("no server"), "{report}");
    // The embedded control plane: two groups with different filters and
    // columns, sessions, metadata summaries, an intact audit chain.
    assert!(
        report.contains("group account-managers): filter enforced by the host: tenant = 'acme'"),
        "{report}"
    );
    assert!(
        report.contains("group globex-auditors): filter enforced by the host: tenant = 'globex'"),
        "{report}"
    );
    let bob = &report[report.find("Embed user bob").unwrap()..];
    assert!(
        bob.contains("id | tenant | amount | ordered_on"),
        "bob's group hides customer: {report}"
    );
    assert_eq!(
        report.matches("Metadata summary for").count(),
        2,
        "{report}"
    );
    assert!(
        report.contains("2,000 rows visible to this session"),
        "{report}"
    );
    assert!(report.contains("hash chain intact"), "{report}");
    assert!(
        report.contains("The files connector describes `orders`"),
        "{report}"
    );
}

#[tokio::test]
async fn postgres_demo_states_isolation() {
    let report = report(
        DemoSource::Postgres(crate::support::admin_conn()),
        "postgres",
    )
    .await;
    assert_isolation(&report);
}
