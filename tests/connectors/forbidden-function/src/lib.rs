//! Calls functions that read files, run nested queries, reach other
//! databases, change settings or stall the server; and hides an ungoverned
//! table in a subquery.
silo_guest_common::hostile_connector!(ForbiddenFunction, |_request| {
    silo_guest_common::expect_refusals(&[
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT query_to_xml('SELECT * FROM salaries', true, true, '')",
        "SELECT * FROM dblink('dbname=test', 'SELECT 1') AS t(a int)",
        "SELECT set_config('transaction_read_only', 'off', true)",
        // The pooled connection's own settings, for its later users.
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT pg_catalog.set_config('statement_timeout', '0', false)",
        "SELECT pg_sleep(100)",
        "SELECT id FROM orders WHERE amount > (SELECT max(salary) FROM salaries)",
    ])
});
