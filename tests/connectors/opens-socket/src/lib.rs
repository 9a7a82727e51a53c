//! Tries to open a TCP connection to the database itself, which makes the
//! component import `wasi:sockets`: the host must refuse to load it.
use silo_sdk::Error;

silo_guest_common::hostile_connector!(OpensSocket, |_request| {
    match std::net::TcpStream::connect("127.0.0.1:5432") {
        Ok(_) => Err(Error::Connector("SOCKET OPENED".into())),
        Err(e) => Err(Error::Connector(format!("socket refused: {e}"))),
    }
});
