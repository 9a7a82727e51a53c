//! Calls functions outside the allow-list through every syntax that is not a
//! plain `name(args)`: Postgres' field-selection notation `(x).f`, casts to
//! catalog-reading (`reg*`) and user-defined types, typed literals,
//! `OPERATOR(...)`, schema-qualified and quoted names, bare keyword
//! functions; MySQL's stored functions behind names that are not built-ins.
//! Each one would sleep, read settings, count other tenants' rows, take a
//! lock or end another session if it ran.
// Sixteen: the most statements one fetch may send.
silo_guest_common::hostile_connector!(SqlCallForms, |_request| {
    silo_guest_common::expect_refusals(&[
        "SELECT (amount).pg_sleep FROM orders",
        "SELECT (1).current_setting FROM orders",
        "SELECT ('orders'::text).pg_stat_get_live_tuples FROM orders",
        "SELECT (id).pg_advisory_lock FROM orders",
        "SELECT 'orders'::regclass FROM orders",
        "SELECT CAST('silo' AS regrole) FROM orders",
        "SELECT regclass 'pg_class' FROM orders",
        "SELECT id::public.leak FROM orders",
        "SELECT 1 FROM orders WHERE id OPERATOR(pg_catalog.+) 1 = 2",
        "SELECT pg_catalog.pg_sleep(1) FROM orders",
        "SELECT current_user FROM orders",
        "SELECT orders.note.pg_sleep FROM orders",
        "SELECT strpos(note, 'x') FROM orders WHERE SLEEP(1) = 0",
        "SELECT test.leak(id) FROM orders",
        "SELECT `concat`(note) FROM orders",
        "SELECT CAST(id AS leak) FROM orders",
    ])
});
