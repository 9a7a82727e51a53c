//! TLS to databases against the local servers, through TLS-terminating
//! proxies with a CA generated here: `verify-full` trusts only the given CA
//! and name, `require` any certificate, a server without TLS is refused
//! rather than fallen back from, and a password never goes out in clear.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use silo_host::capability::SqlClient;
use silo_host::capability::mongodb::{MongoClient, MongoConfig};
use silo_host::capability::mysql::{MyClient, MysqlConfig};
use silo_host::capability::net::NetPolicy;
use silo_host::capability::postgres::{PgClient, PgSettings, PostgresConfig};
use silo_host::error::Error;
use silo_host::limits::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Postgres' `SSLRequest`.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1.
struct Pki {
    ca_pem: String,
    acceptor: tokio_rustls::TlsAcceptor,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Pki {
    fn new(names: &[&str]) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Silo test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        }
    }
}

/// What a proxy saw.
#[derive(Default)]
struct Seen {
    /// Connections that completed a TLS handshake.
    tls: AtomicUsize,
    /// Handshakes that failed (the client refused the certificate).
    refused: AtomicUsize,
    /// Connections that never asked for TLS.
    plain: AtomicUsize,
}

#[derive(Clone, Copy)]
enum Proxy {
    /// Postgres: answers `SSLRequest` with `S`, then TLS.
    Postgres,
    /// Postgres without TLS: answers `SSLRequest` with `N`.
    PostgresNoTls,
    /// TLS from the first byte (MongoDB).
    Direct,
}

/// A proxy on loopback to `target` that terminates TLS.
async fn proxy(pki: &Pki, target: u16, kind: Proxy) -> (u16, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let (acceptor, counts) = (pki.acceptor.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), counts.clone());
            tokio::spawn(async move {
                let mut upstream = TcpStream::connect(("127.0.0.1", target)).await.unwrap();
                if matches!(kind, Proxy::Postgres | Proxy::PostgresNoTls) {
                    let mut first = [0u8; 8];
                    if client.read_exact(&mut first).await.is_err() {
                        return;
                    }
                    if first != SSL_REQUEST {
                        seen.plain.fetch_add(1, Ordering::SeqCst);
                        upstream.write_all(&first).await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        return;
                    }
                    if matches!(kind, Proxy::PostgresNoTls) {
                        let _ = client.write_all(b"N").await;
                        // A client that went on in clear would send its
                        // startup now.
                        let mut rest = Vec::new();
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            client.read_to_end(&mut rest),
                        )
                        .await;
                        if !rest.is_empty() {
                            seen.plain.fetch_add(1, Ordering::SeqCst);
                        }
                        return;
                    }
                    client.write_all(b"S").await.unwrap();
                }
                match acceptor.accept(client).await {
                    Ok(mut tls) => {
                        seen.tls.fetch_add(1, Ordering::SeqCst);
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                    }
                    Err(_) => {
                        seen.refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (port, seen)
}

fn net() -> NetPolicy {
    NetPolicy {
        local: true,
        ..NetPolicy::default()
    }
}

fn pg(port: u16, host: &str, tls: serde_json::Value) -> Result<PgClient, Error> {
    let config: PostgresConfig = serde_json::from_value(json!({
        "host": host, "port": port, "database": "test", "user": "postgres", "tls": tls,
    }))
    .unwrap();
    let limits = Limits::default();
    PgClient::new(PgSettings {
        config,
        password: Some("not-a-real-password".to_owned().into()),
        statement_timeout: limits.statement_timeout,
        fetch_timeout: limits.fetch_timeout,
        max_row_bytes: limits.max_row_bytes,
        net: net(),
    })
}

/// Opens one connection and runs a statement on it.
async fn pg_works(client: &PgClient) -> Result<(), Error> {
    let conn = client.connection().await?;
    let row = conn
        .query_one("SELECT 41 + 1", &[])
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    assert_eq!(row.get::<_, i32>(0), 42);
    Ok(())
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server_and_never_falls_back() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let (port, seen) = proxy(&pki, 5432, Proxy::Postgres).await;

    // verify-full with the CA: encrypted end to end, the statement runs.
    let full = json!({"mode": "verify-full", "ca_pem": pki.ca_pem, "server_name": "localhost"});
    pg_works(&pg(port, "127.0.0.1", full).unwrap())
        .await
        .unwrap();
    assert_eq!(seen.tls.load(Ordering::SeqCst), 1);
    // The name defaults to the host; an IP the certificate carries works.
    let by_ip = json!({"mode": "verify-full", "ca_pem": pki.ca_pem});
    pg_works(&pg(port, "127.0.0.1", by_ip).unwrap())
        .await
        .unwrap();

    // Without the CA (the public roots), or for another name: refused at
    // the handshake, nothing reaches the database.
    for tls in [
        json!({"mode": "verify-full"}),
        json!({"mode": "verify-full", "ca_pem": pki.ca_pem, "server_name": "db.example.com"}),
        json!({"mode": "verify-full", "ca_pem": Pki::new(&["localhost"]).ca_pem}),
    ] {
        let before = seen.tls.load(Ordering::SeqCst);
        let err = pg_works(&pg(port, "127.0.0.1", tls.clone()).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("TLS")),
            "{tls}: {err:?}"
        );
        assert_eq!(seen.tls.load(Ordering::SeqCst), before, "{tls}");
    }
    // require: any certificate, still encrypted.
    pg_works(&pg(port, "127.0.0.1", json!({"mode": "require"})).unwrap())
        .await
        .unwrap();
    assert_eq!(seen.plain.load(Ordering::SeqCst), 0);

    // A server that declines TLS is refused, not spoken to in clear.
    let (no_tls, declined) = proxy(&pki, 5432, Proxy::PostgresNoTls).await;
    for tls in [json!({"mode": "require"}), json!(true)] {
        let err = pg_works(&pg(no_tls, "127.0.0.1", tls).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("does not offer TLS")),
            "{err:?}"
        );
    }
    assert_eq!(declined.plain.load(Ordering::SeqCst), 0);

    // Off loopback the default is verify-full.
    let default = silo_host::capability::tls::TlsSettings::default();
    assert_eq!(
        default.mode_for("db.example.com"),
        silo_host::capability::tls::TlsMode::VerifyFull
    );
    // Disabled on loopback, plain works as before.
    pg_works(&pg(5432, "127.0.0.1", json!({"mode": "disable"})).unwrap())
        .await
        .unwrap();
}

/// A fake Postgres that asks for the password in clear and keeps what the
/// client sends after: (port, bytes received after the request).
async fn cleartext_server(tls: Option<&Pki>) -> (u16, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let acceptor = tls.map(|p| p.acceptor.clone());
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut stream: Box<dyn Rw> = match acceptor {
            Some(acceptor) => {
                let mut first = [0u8; 8];
                tcp.read_exact(&mut first).await.unwrap();
                assert_eq!(first, SSL_REQUEST);
                tcp.write_all(b"S").await.unwrap();
                Box::new(acceptor.accept(tcp).await.unwrap())
            }
            None => Box::new(tcp),
        };
        // The startup message: a length, then that many bytes.
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await.unwrap();
        let mut startup = vec![0u8; u32::from_be_bytes(len) as usize - 4];
        stream.read_exact(&mut startup).await.unwrap();
        // AuthenticationCleartextPassword.
        stream
            .write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3])
            .await
            .unwrap();
        stream.flush().await.unwrap();
        let mut after = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            let mut buf = [0u8; 256];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        after.extend_from_slice(&buf[..n]);
                        // The password message arrived whole: answer no
                        // more, the client waits for us.
                        if after.len() >= 5
                            && after.len()
                                > u32::from_be_bytes([after[1], after[2], after[3], after[4]])
                                    as usize
                        {
                            return;
                        }
                    }
                }
            }
        })
        .await;
        let _ = tx.send(after);
    });
    (port, rx)
}

trait Rw: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Rw for T {}

#[tokio::test]
async fn a_password_never_goes_out_in_clear() {
    // Unencrypted (loopback's default): the request is refused and the
    // password is never sent.
    let (port, after) = cleartext_server(None).await;
    let err = pg_works(&pg(port, "127.0.0.1", json!({})).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Policy(m) if m.contains("clear text")),
        "{err:?}"
    );
    let after = after.await.unwrap();
    assert!(
        !String::from_utf8_lossy(&after).contains("not-a-real-password"),
        "the password went out in clear"
    );
    assert!(after.is_empty(), "{after:?}");

    // Inside TLS the same request is answered: the password travels
    // encrypted.
    let pki = Pki::new(&["localhost"]);
    let (port, after) = cleartext_server(Some(&pki)).await;
    let tls = json!({"mode": "verify-full", "ca_pem": pki.ca_pem, "server_name": "localhost"});
    let client = pg(port, "127.0.0.1", tls).unwrap();
    let attempt = tokio::spawn(async move { pg_works(&client).await });
    let after = after.await.unwrap();
    assert_eq!(after.first(), Some(&b'p'));
    assert!(String::from_utf8_lossy(&after).contains("not-a-real-password"));
    attempt.abort();
}

#[tokio::test]
async fn org_supplied_tls_settings_are_checked() {
    for tls in [
        json!({"mode": "prefer"}),
        json!({"ca_file": "/etc/ssl/private/key.pem"}),
        json!({"ca_pem": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"}),
        json!({"ca_pem": "x".repeat(70_000)}),
        json!({"server_name": "not a name"}),
        json!({"unknown": 1}),
    ] {
        let (_spec, _key, server, http, admin) = crate::control::start(
            &format!("tls_settings_{}", tls.to_string().len()),
            crate::control::Backend::Sqlite,
        )
        .await;
        let (_, key) = http.org_with_key(&admin, "tlsorg").await;
        let (status, body) = http
            .call(
                "POST",
                "/v1/datasources",
                Some(&key),
                Some(json!({
                    "name": "warehouse", "kind": "postgres",
                    "settings": {"host": "127.0.0.1", "database": "test", "user": "postgres", "tls": tls},
                })),
            )
            .await;
        assert!(
            status == reqwest::StatusCode::BAD_REQUEST
                || status == reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "{tls}: {status} {body}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn mongodb_over_tls_verifies_the_server() {
    let fx = crate::mongodb::MongoFixture::new("tls").await;
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let (port, seen) = proxy(&pki, 27017, Proxy::Direct).await;
    let client = |tls: serde_json::Value| {
        let config: MongoConfig = serde_json::from_value(json!({
            "host": "localhost", "port": port, "database": fx.db,
            "user": format!("{}_r", fx.db), "tls": tls,
        }))
        .unwrap();
        MongoClient::new(
            &config,
            Some("reader-pw".to_owned().into()),
            &Limits::default(),
            &net(),
        )
    };
    let full = client(json!({"mode": "verify-full", "ca_pem": pki.ca_pem})).unwrap();
    full.connection_status().await.unwrap();
    assert!(seen.tls.load(Ordering::SeqCst) >= 1);
    let required = client(json!({"mode": "require"})).unwrap();
    required.connection_status().await.unwrap();
    // Another CA: no connection succeeds.
    let wrong =
        client(json!({"mode": "verify-full", "ca_pem": Pki::new(&["localhost"]).ca_pem})).unwrap();
    let tls_before = seen.tls.load(Ordering::SeqCst);
    assert!(wrong.connection_status().await.is_err());
    assert_eq!(seen.tls.load(Ordering::SeqCst), tls_before);
    // A server name MongoDB's driver cannot honour is refused up front.
    assert!(client(json!({"mode": "verify-full", "server_name": "db"})).is_err());
}

#[tokio::test]
async fn mysql_without_tls_on_the_server_is_refused_when_tls_is_asked() {
    // The local MariaDB offers no TLS: asked for, the connection fails
    // with that reason instead of going on in clear.
    let probe = mysql_at(3306, json!({"mode": "disable"}));
    probe.write_privileges().await.unwrap();
    for tls in [json!({"mode": "require"}), json!({"mode": "verify-full"})] {
        let err = mysql_at(3306, tls.clone())
            .write_privileges()
            .await
            .unwrap_err();
        let text = format!("{err:?}");
        assert!(text.contains("does not offer TLS"), "{tls}: {text}");
    }
}

/// One MySQL packet: (sequence id, payload).
async fn read_packet<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).await?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok((head[3], payload))
}

async fn write_packet<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    seq: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(payload.len()).unwrap().to_le_bytes();
    w.write_all(&[len[0], len[1], len[2], seq]).await?;
    w.write_all(payload).await?;
    w.flush().await
}

/// MySQL's `CLIENT_SSL` capability (bit 11).
const CLIENT_SSL: u16 = 0x0800;

/// A proxy in front of the local MariaDB (which has no TLS) that offers
/// TLS to the client: it advertises `CLIENT_SSL`, terminates TLS after the
/// client's SSL request, and relays the rest in clear to the server, fixing
/// the packet sequence numbers of the login exchange.
async fn mysql_proxy(pki: &Pki) -> (u16, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let (acceptor, counts) = (pki.acceptor.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), counts.clone());
            tokio::spawn(async move {
                let mut upstream = TcpStream::connect(("127.0.0.1", 3306)).await?;
                let (seq, mut greeting) = read_packet(&mut upstream).await?;
                // Protocol version, the NUL-terminated server version, the
                // thread id, 8 bytes of scramble, a filler: then the
                // capability flags' lower half.
                let nul = greeting[1..].iter().position(|b| *b == 0).unwrap() + 1;
                let at = nul + 1 + 4 + 8 + 1;
                let flags = u16::from_le_bytes([greeting[at], greeting[at + 1]]) | CLIENT_SSL;
                greeting[at..at + 2].copy_from_slice(&flags.to_le_bytes());
                write_packet(&mut client, seq, &greeting).await?;
                let (_, request) = read_packet(&mut client).await?;
                if request.len() != 32 {
                    // A login in clear.
                    seen.plain.fetch_add(1, Ordering::SeqCst);
                    return Ok::<_, std::io::Error>(());
                }
                let Ok(mut tls) = acceptor.accept(client).await else {
                    seen.refused.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                };
                seen.tls.fetch_add(1, Ordering::SeqCst);
                let (seq, mut login) = read_packet(&mut tls).await?;
                let flags = u16::from_le_bytes([login[0], login[1]]) & !CLIENT_SSL;
                login[..2].copy_from_slice(&flags.to_le_bytes());
                write_packet(&mut upstream, seq - 1, &login).await?;
                // The login exchange, one number apart on each side.
                loop {
                    let (seq, packet) = read_packet(&mut upstream).await?;
                    write_packet(&mut tls, seq + 1, &packet).await?;
                    match packet.first() {
                        Some(0x00 | 0xff) => break,
                        Some(0x01) if packet.get(1) == Some(&0x03) => continue,
                        _ => {
                            let (seq, answer) = read_packet(&mut tls).await?;
                            write_packet(&mut upstream, seq - 1, &answer).await?;
                        }
                    }
                }
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                Ok(())
            });
        }
    });
    (port, seen)
}

fn mysql_at(port: u16, tls: serde_json::Value) -> MyClient {
    let config: MysqlConfig = serde_json::from_value(json!({
        "host": "127.0.0.1", "port": port, "database": "test", "user": "root", "tls": tls,
    }))
    .unwrap();
    MyClient::new(&config, None, &Limits::default(), &net()).unwrap()
}

#[tokio::test]
async fn mysql_over_tls_verifies_the_server() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let (port, seen) = mysql_proxy(&pki).await;
    let full = json!({"mode": "verify-full", "ca_pem": pki.ca_pem, "server_name": "localhost"});
    mysql_at(port, full).write_privileges().await.unwrap();
    assert_eq!(seen.tls.load(Ordering::SeqCst), 1);
    mysql_at(port, json!({"mode": "require"}))
        .write_privileges()
        .await
        .unwrap();
    assert_eq!(seen.tls.load(Ordering::SeqCst), 2);
    for tls in [
        json!({"mode": "verify-full"}),
        json!({"mode": "verify-full", "ca_pem": pki.ca_pem, "server_name": "db.example.com"}),
        json!({"mode": "verify-full", "ca_pem": Pki::new(&["localhost"]).ca_pem, "server_name": "localhost"}),
    ] {
        let err = mysql_at(port, tls.clone())
            .write_privileges()
            .await
            .unwrap_err();
        assert!(format!("{err:?}").contains("TLS"), "{tls}: {err:?}");
    }
    assert_eq!(seen.tls.load(Ordering::SeqCst), 2);
    assert_eq!(seen.plain.load(Ordering::SeqCst), 0);
}
