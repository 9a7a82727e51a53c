//! Tries to open a TCP connection to the database itself, which makes the
//! component import `wasi:sockets`: the host must refuse to load it.
use silo_sdk::{Connector, Dataset, Error, FetchOutput, FetchRequest};

struct OpensSocket;

impl Connector for OpensSocket {
    type Batches = silo_sdk::Producer;

    fn describe() -> Result<Vec<Dataset>, Error> {
        Ok(Vec::new())
    }

    fn fetch(_request: FetchRequest) -> Result<FetchOutput, Error> {
        match std::net::TcpStream::connect("127.0.0.1:5432") {
            Ok(_) => Err(Error::Connector("SOCKET OPENED".into())),
            Err(e) => Err(Error::Connector(format!("socket refused: {e}"))),
        }
    }
}

silo_sdk::export_connector!(OpensSocket);
