//! The connection to Postgres, opened by the host itself so that it can watch
//! the protocol: every message the server sends is framed (a type byte and a
//! length), and a message longer than `max_row_bytes` is refused from its
//! header, before the driver buffers it. A connector that computes a huge
//! value (`repeat`, nested `replace`, `string_agg` of everything) therefore
//! costs the host at most one row's cap, not the value.
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use deadpool_postgres::Connect;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::{Client, Config, NoTls};

use silo_capability::net::{NetPolicy, Purpose};
use silo_core::error::find;

/// The error a guarded stream fails with; found again by [`is_row_too_large`].
#[derive(Debug, thiserror::Error)]
#[error("the server sent a message larger than {0} bytes")]
pub(crate) struct RowTooLarge(pub u64);

/// Whether a driver error is the guard refusing an oversized message.
pub(crate) fn is_row_too_large(e: &tokio_postgres::Error) -> bool {
    find::<RowTooLarge>(e).is_some()
}

/// The error a connection fails with when the server asks for the password
/// in clear over an unencrypted connection; found again by [`is_cleartext`].
#[derive(Debug, thiserror::Error)]
#[error("the server asked for the password in clear text over an unencrypted connection")]
pub(crate) struct CleartextRefused;

/// Whether a driver error is the guard refusing cleartext authentication.
pub(crate) fn is_cleartext(e: &tokio_postgres::Error) -> bool {
    find::<CleartextRefused>(e).is_some()
}

/// Postgres' `AuthenticationCleartextPassword` request code.
const AUTH_CLEARTEXT: u32 = 3;

/// Tracks message boundaries in the bytes the server sends.
#[derive(Debug)]
struct Framing {
    max: u64,
    /// Counts refusals, for the pool's error mapping.
    refused: Arc<AtomicU64>,
    header: [u8; 5],
    have: usize,
    /// Payload bytes of the current message still to come.
    remaining: u64,
    /// Refuse a request for the password in clear (the connection is not
    /// encrypted).
    refuse_cleartext: bool,
    /// The first bytes of an authentication request's payload (its code).
    auth: Option<([u8; 4], usize)>,
}

impl Framing {
    fn new(max: u64, refused: Arc<AtomicU64>) -> Framing {
        Framing {
            max,
            refused,
            header: [0; 5],
            have: 0,
            remaining: 0,
            refuse_cleartext: false,
            auth: None,
        }
    }

    /// Consumes `bytes`; fails at the header of a message over the cap, and
    /// (unencrypted) at a request for the password in clear, before the
    /// driver could answer it.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), io::Error> {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                if let Some((code, have)) = self.auth.as_mut() {
                    let take = (4 - *have).min(n);
                    code[*have..*have + take].copy_from_slice(&bytes[..take]);
                    *have += take;
                    if *have == 4 {
                        let code = u32::from_be_bytes(*code);
                        self.auth = None;
                        if code == AUTH_CLEARTEXT {
                            return Err(io::Error::other(CleartextRefused));
                        }
                    }
                }
                bytes = &bytes[n..];
                self.remaining -= n as u64;
                continue;
            }
            let n = (5 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 5 {
                self.have = 0;
                let [kind, a, b, c, d] = self.header;
                let payload = u64::from(u32::from_be_bytes([a, b, c, d])).saturating_sub(4);
                if payload > self.max {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(io::Error::other(RowTooLarge(self.max)));
                }
                self.remaining = payload;
                self.auth =
                    (self.refuse_cleartext && kind == b'R' && payload >= 4).then_some(([0; 4], 0));
            }
        }
        Ok(())
    }
}

/// A byte stream to the server: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection stream whose incoming messages are capped, or the error
/// opening it failed with (reported through the driver, which has no other
/// way to take one).
enum Guarded {
    Open(Box<dyn Io>, Framing),
    Failed(Option<io::Error>),
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Guarded::Open(stream, framing) => {
                let before = buf.filled().len();
                match Pin::new(stream).poll_read(cx, buf) {
                    Poll::Ready(Ok(())) => Poll::Ready(framing.feed(&buf.filled()[before..])),
                    other => other,
                }
            }
            Guarded::Failed(e) => Poll::Ready(Err(failed(e))),
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Guarded::Open(stream, _) => Pin::new(stream).poll_write(cx, data),
            Guarded::Failed(e) => Poll::Ready(Err(failed(e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Guarded::Open(stream, _) => Pin::new(stream).poll_flush(cx),
            Guarded::Failed(e) => Poll::Ready(Err(failed(e))),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Guarded::Open(stream, _) => Pin::new(stream).poll_shutdown(cx),
            Guarded::Failed(_) => Poll::Ready(Ok(())),
        }
    }
}

fn failed(e: &mut Option<io::Error>) -> io::Error {
    e.take()
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection failed"))
}

/// Opens pooled connections: TCP to the configured host, the guard, then the
/// driver's own handshake.
pub(crate) struct GuardedConnect {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub net: NetPolicy,
    pub timeout: Duration,
    pub max_message: u64,
    pub oversized: Arc<AtomicU64>,
    /// TLS, unless it is off.
    pub tls: Option<silo_capability::tls::TlsClient>,
}

/// Postgres' `SSLRequest` message: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Why TLS could not be set up; found again by [`tls_failure`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct TlsFailed(pub String);

/// The TLS failure inside a driver error, if that is what it is.
pub(crate) fn tls_failure(e: &tokio_postgres::Error) -> Option<String> {
    find::<TlsFailed>(e).map(|r| r.0.clone())
}

/// Why the address policy refused a connection; found again by
/// [`refusal`] so the error says so instead of "unavailable".
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub String);

/// The address policy's refusal inside a driver error, if that is what it is.
pub(crate) fn refusal(e: &tokio_postgres::Error) -> Option<String> {
    find::<Refused>(e).map(|r| r.0.clone())
}

impl GuardedConnect {
    /// TCP to the first address of the host the policy allows.
    async fn open(&self) -> io::Result<TcpStream> {
        let refused = |e: silo_core::error::Error| io::Error::other(Refused(e.to_string()));
        let addrs = self
            .net
            .resolve(&self.host, self.port, Purpose::Database)
            .await
            .map_err(refused)?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            self.net
                .check_database(addr, &self.database)
                .map_err(refused)?;
            match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = e,
                Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connecting timed out"),
            }
        }
        Err(last)
    }
}

impl GuardedConnect {
    /// TCP, then TLS when it is on: the `SSLRequest`, the server's yes, the
    /// handshake. A server that says no is refused, never fallen back from.
    async fn open_stream(&self) -> io::Result<(Box<dyn Io>, bool)> {
        let mut tcp = self.open().await?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok((Box::new(tcp), false));
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let failed = |why: String| io::Error::other(TlsFailed(why));
        let answer = tokio::time::timeout(self.timeout, async {
            tcp.write_all(&SSL_REQUEST).await?;
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer).await?;
            Ok::<_, io::Error>(answer[0])
        })
        .await
        .map_err(|_| failed("the server did not answer the TLS request".into()))??;
        if answer != b'S' {
            return Err(failed(
                "the server does not offer TLS (set tls.mode = \"disable\" only for a server \
                 on a trusted network)"
                    .into(),
            ));
        }
        let stream = tokio::time::timeout(self.timeout, tls.connect(tcp))
            .await
            .map_err(|_| failed("the TLS handshake timed out".into()))?
            .map_err(|e| failed(format!("TLS to the server failed: {e}")))?;
        Ok((Box::new(stream), true))
    }
}

impl Connect for GuardedConnect {
    fn connect(
        &self,
        config: &Config,
    ) -> BoxFuture<'_, Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>> {
        let config = config.clone();
        Box::pin(async move {
            let stream = match self.open_stream().await {
                Ok((stream, encrypted)) => {
                    let mut framing = Framing::new(self.max_message, self.oversized.clone());
                    framing.refuse_cleartext = !encrypted;
                    Guarded::Open(stream, framing)
                }
                Err(e) => Guarded::Failed(Some(e)),
            };
            let (client, connection) = config.connect_raw(stream, NoTls).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("postgres connection ended: {e}");
                }
            });
            Ok((client, task))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, payload: usize) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&u32::try_from(payload + 4).unwrap().to_be_bytes());
        m.extend(std::iter::repeat_n(b'x', payload));
        m
    }

    #[test]
    fn messages_are_tracked_across_reads_and_an_oversized_one_is_refused() {
        let count = Arc::new(AtomicU64::new(0));
        let framing = |max| Framing::new(max, count.clone());
        let mut f = framing(100);
        let mut stream = message(b'T', 10);
        stream.extend(message(b'D', 100));
        stream.extend(message(b'C', 3));
        // Fed one byte at a time and in one piece, the framing agrees.
        for b in &stream {
            f.feed(std::slice::from_ref(b)).unwrap();
        }
        framing(100).feed(&stream).unwrap();
        let mut f = framing(100);
        let big = message(b'D', 101);
        // Refused at the header, before any of the payload.
        assert!(f.feed(&big[..5]).is_err());
        assert_eq!(count.load(Ordering::Relaxed), 1);
        assert!(framing(1 << 30).feed(&big).is_ok());
    }

    fn auth(code: u32) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&8u32.to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m
    }

    #[test]
    fn a_cleartext_password_request_is_refused_unencrypted() {
        let count = Arc::new(AtomicU64::new(0));
        let plain = || {
            let mut f = Framing::new(1 << 20, count.clone());
            f.refuse_cleartext = true;
            f
        };
        // Split anywhere, the request for a cleartext password is caught.
        for split in 0..9 {
            let m = auth(3);
            let mut f = plain();
            let first = f.feed(&m[..split]);
            let refused = first.is_err() || f.feed(&m[split..]).is_err();
            assert!(refused, "split at {split}");
        }
        // SCRAM (10), MD5 (5) and OK (0) pass; so does a 'D' row holding 3.
        let mut f = plain();
        for code in [10, 5, 0] {
            f.feed(&auth(code)).unwrap();
        }
        f.feed(&message(b'D', 4)).unwrap();
        let mut row = vec![b'D'];
        row.extend_from_slice(&8u32.to_be_bytes());
        row.extend_from_slice(&3u32.to_be_bytes());
        f.feed(&row).unwrap();
        // Encrypted, the same request is answered by the driver.
        let mut tls = Framing::new(1 << 20, count.clone());
        tls.feed(&auth(3)).unwrap();
    }
}
