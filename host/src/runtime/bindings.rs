//! Host bindings for `wit/connector.wit`, the one source of truth shared with
//! the SDK and every test connector.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "any-connector",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "silo:connector/streams.row-stream": crate::capability::HostRowStream,
    },
});

silo_types::wit_conversions!(crate::runtime::bindings::silo::connector::types);
