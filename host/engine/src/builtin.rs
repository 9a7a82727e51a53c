//! Connectors compiled into the binary (built by `build.rs` from `connectors/`).

/// The Postgres connector component.
pub const POSTGRES: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/silo_connector_postgres.wasm"));

/// The MySQL / MariaDB connector component.
pub const MYSQL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/silo_connector_mysql.wasm"));

/// The MongoDB connector component.
pub const MONGODB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/silo_connector_mongodb.wasm"));

/// The uploaded-files connector component.
pub const FILES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/silo_connector_files.wasm"));

/// The configurable JSON-API connector component.
pub const HTTP_JSON: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/silo_connector_http_json.wasm"));
