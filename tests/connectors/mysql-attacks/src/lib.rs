//! MySQL's own ways out: stalling the server, reading files, writing files,
//! session variables, system tables, writes and stacked statements.
silo_guest_common::hostile_connector!(MysqlAttacks, |_request| {
    silo_guest_common::expect_refusals(&[
        "SELECT SLEEP(100)",
        "SELECT id FROM orders WHERE SLEEP(100) = 0",
        "SELECT LOAD_FILE('/etc/passwd')",
        "SELECT id FROM orders INTO OUTFILE '/tmp/silo-leak'",
        "SELECT @@version",
        "SELECT @x := 1",
        "SELECT BENCHMARK(100000000, MD5('a'))",
        "SELECT * FROM mysql.user",
        "UPDATE orders SET amount = 0",
        "SELECT 1; DROP TABLE orders",
    ])
});
