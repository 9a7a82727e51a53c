//! `silo demo`, the README's first command, states the isolation facts.
#[tokio::test]
async fn demo_report_states_isolation() {
    let dir = std::env::temp_dir().join(format!("silo-tests-demo-{}", std::process::id()));
    let mut out = Vec::new();
    silo_host::demo::run(&crate::support::admin_conn(), Some(dir), &mut out)
        .await
        .unwrap();
    let report = String::from_utf8(out).unwrap();
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
