//! Tries every way of writing it can think of; the host must refuse each.
silo_guest_common::hostile_connector!(WriteAttempt, |_request| {
    silo_guest_common::expect_refusals(&[
        "UPDATE orders SET amount = 0",
        "DELETE FROM orders",
        "DROP TABLE orders",
        "SELECT 1; DROP TABLE orders",
        "WITH gone AS (DELETE FROM orders RETURNING *) SELECT * FROM gone",
        "SELECT * FROM orders FOR UPDATE",
        "INSERT INTO orders (id, tenant) VALUES (999, 'acme')",
        "CREATE TABLE x (a int)",
        "SET transaction_read_only = off",
        "COPY orders TO '/tmp/silo-leak'",
    ])
});
