//! `silo serve` and the operator commands around the control plane: where
//! the store and master key come from, and the server loop.
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::{AppState, app};
use hyper_util::server::graceful::Watcher;
use silo_control::crypto::MasterKey;
use silo_control::tokens::TokenAlg;
use silo_control::{ControlConfig, ControlPlane};
use silo_core::error::{Error, Result};
use silo_metadata::llm::LlmConfig;

/// File name of the master key the embedded default keeps beside its store.
const LOCAL_KEY_FILE: &str = "master.key";

/// Where the control plane lives.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Data directory: the embedded store (`silo.db`), uploads, and (when no
    /// key is given) a generated master key.
    #[arg(long, default_value = "silo-data")]
    pub data_dir: PathBuf,
    /// The store: `postgres://…` to share one between hosts (default: the
    /// SQLite file `<data-dir>/silo.db`).
    #[arg(long)]
    pub store: Option<String>,
    /// File holding the master key (base64); else `SILO_MASTER_KEY`; else
    /// `<data-dir>/master.key`, generated with a new embedded store.
    #[arg(long)]
    pub master_key_file: Option<PathBuf>,
    /// The embedded store's sync level: `normal` (a crash of silo loses
    /// nothing; a power loss can lose the commits since the last
    /// checkpoint) or `full` (an fsync per commit; nothing is lost).
    #[arg(long, value_parser = ["normal", "full"])]
    pub sqlite_sync: Option<String>,
}

impl StoreArgs {
    fn store_url(&self) -> Result<String> {
        let url = self
            .store
            .clone()
            .unwrap_or_else(|| self.data_dir.join("silo.db").display().to_string());
        match &self.sqlite_sync {
            None => Ok(url),
            Some(_) if url.starts_with("postgres") => Err(Error::Config(
                "--sqlite-sync is for the embedded SQLite store; a Postgres store syncs as its \
                 server's `synchronous_commit` says"
                    .into(),
            )),
            Some(level) => Ok(format!("{url}?synchronous={level}")),
        }
    }

    /// The master key: given, or the embedded default's own key file, which
    /// is generated only together with a new embedded store.
    pub fn master_key(&self) -> Result<MasterKey> {
        if let Some(key) = MasterKey::from_env_or_file(self.master_key_file.as_deref())? {
            return Ok(key);
        }
        let file = self.data_dir.join(LOCAL_KEY_FILE);
        if file.exists() {
            return MasterKey::from_env_or_file(Some(&file))?
                .ok_or_else(|| Error::Internal("master key file vanished".into()));
        }
        let embedded_and_new = self.store.is_none() && !self.data_dir.join("silo.db").exists();
        if !embedded_and_new {
            return Err(Error::Config(format!(
                "no master key: give --master-key-file or {} (the store's data is sealed \
                 under it)",
                silo_control::crypto::MASTER_KEY_ENV
            )));
        }
        private_dir(&self.data_dir)?;
        let key = MasterKey::generate()?;
        key.write_new_file(&file)?;
        tracing::warn!(
            file = %file.display(),
            "generated a master key for the new embedded store; in production keep the key \
             apart from the data (--master-key-file or SILO_MASTER_KEY)"
        );
        Ok(key)
    }

    /// The control-plane configuration these arguments describe.
    pub fn config(&self, key: MasterKey) -> Result<ControlConfig> {
        private_dir(&self.data_dir)?;
        Ok(ControlConfig::new(
            self.store_url()?,
            self.data_dir.join("uploads"),
            key,
        ))
    }

    /// Opens the control plane.
    pub async fn open(&self, alg: TokenAlg) -> Result<ControlPlane> {
        self.open_with(alg, None, HostPolicy::default()).await
    }

    /// Opens the control plane with an LLM endpoint for summaries.
    pub async fn open_with(
        &self,
        alg: TokenAlg,
        llm: Option<LlmConfig>,
        policy: HostPolicy,
    ) -> Result<ControlPlane> {
        let mut config = self.config(self.master_key()?)?;
        config.token_alg = alg;
        config.llm = llm;
        config.net = policy.net;
        config.ceilings = policy.ceilings;
        config.write_orgs = policy.write_orgs;
        config.max_upload_bytes = policy.max_upload_bytes;
        ControlPlane::open(config).await
    }
}

/// What the operator allows orgs to ask of this host.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// Where the datasources orgs register may connect.
    pub net: silo_engine::capability::net::NetPolicy,
    /// Ceilings on org-supplied settings.
    pub ceilings: silo_control::Ceilings,
    /// Organizations (ids) whose keys may register a datasource whose
    /// credential can write (`accept_write_privileges`).
    pub write_orgs: Vec<String>,
    /// Largest upload accepted through the API.
    pub max_upload_bytes: u64,
}

impl Default for HostPolicy {
    fn default() -> HostPolicy {
        HostPolicy {
            net: silo_engine::capability::net::NetPolicy::default(),
            ceilings: silo_control::Ceilings::default(),
            write_orgs: Vec::new(),
            max_upload_bytes: silo_engine::capability::files::upload::DEFAULT_MAX_BYTES,
        }
    }
}

/// `silo serve`'s flags for what orgs may ask of the host.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Let datasources reach every address (loopback and private ranges
    /// included): local development and the demo. Off, an org cannot aim a
    /// datasource at this host or its network.
    #[arg(long)]
    pub allow_private_network: bool,
    /// A network datasources may always reach (CIDR; repeatable).
    #[arg(long = "allow-network", value_name = "CIDR")]
    pub allow_networks: Vec<ipnet::IpNet>,
    /// A network datasources may never reach (CIDR; repeatable; wins over
    /// every allowance).
    #[arg(long = "deny-network", value_name = "CIDR")]
    pub deny_networks: Vec<ipnet::IpNet>,
    /// Largest pool_size an org may give a database datasource.
    #[arg(long, default_value_t = 32)]
    pub max_pool_size: usize,
    /// Largest max_response_bytes an org may give an HTTP datasource.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_http_response_bytes: u64,
    /// An organization (id) whose key may register a datasource whose
    /// credential can write (repeatable; each such registration is audited).
    #[arg(long = "accept-write-privileges", value_name = "ORG_ID")]
    pub write_orgs: Vec<String>,
    /// Largest upload accepted, in bytes (a larger body is refused with
    /// 413 as it streams in).
    #[arg(long, default_value_t = silo_engine::capability::files::upload::DEFAULT_MAX_BYTES)]
    pub max_upload_bytes: u64,
}

impl PolicyArgs {
    /// The policy these flags describe.
    pub fn policy(&self) -> HostPolicy {
        HostPolicy {
            net: silo_engine::capability::net::NetPolicy {
                local: self.allow_private_network,
                allow: self.allow_networks.clone(),
                deny: self.deny_networks.clone(),
                ..silo_engine::capability::net::NetPolicy::default()
            },
            ceilings: silo_control::Ceilings {
                pool_size: self
                    .max_pool_size
                    .clamp(1, silo_engine::capability::postgres::MAX_POOL_SIZE),
                http_response_bytes: self.max_http_response_bytes.max(1),
                ..silo_control::Ceilings::default()
            },
            write_orgs: self.write_orgs.clone(),
            max_upload_bytes: self.max_upload_bytes.max(1),
        }
    }
}

fn private_dir(dir: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .map_err(|e| Error::Config(format!("data directory {}: {e}", dir.display())))
}

/// How `silo serve` treats connections: slow or silent clients are cut,
/// connections are capped, and shutdown drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Longest a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// Longest a request body may go without sending a byte.
    pub body_idle_timeout: Duration,
    /// Longest a request may take until its response starts (a streamed
    /// fetch is then bounded by its own deadline).
    pub request_timeout: Duration,
    /// Most connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Longest a shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(300),
            max_connections: 512,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// `silo serve`'s flags for [`ServerLimits`].
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Seconds a client may take to send a request's headers.
    #[arg(long, default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds a request body may go without sending a byte.
    #[arg(long, default_value_t = 30)]
    pub body_idle_timeout: u64,
    /// Seconds a request may take until its response starts.
    #[arg(long, default_value_t = 300)]
    pub request_timeout: u64,
    /// Most connections open at once (more wait in the listen backlog).
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for in-flight requests.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout: u64,
}

impl ServerArgs {
    /// The limits these flags describe (each at least one unit).
    pub fn limits(&self) -> ServerLimits {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        ServerLimits {
            header_timeout: secs(self.header_timeout),
            body_idle_timeout: secs(self.body_idle_timeout),
            request_timeout: secs(self.request_timeout),
            max_connections: self.max_connections.max(1),
            drain_timeout: secs(self.drain_timeout),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Where `silo serve` listens: a TCP address, or `unix:PATH` for a Unix
/// domain socket (behind a reverse proxy on the same machine, reachable by
/// its owner and group only, never by the network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address (`127.0.0.1:8080`, `[::]:443`).
    Tcp(SocketAddr),
    /// A Unix domain socket at this path.
    Unix(PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Listen, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path (unix:/run/silo/api.sock)".into());
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        s.parse()
            .map(Listen::Tcp)
            .map_err(|_| format!("`{s}` is neither an address (127.0.0.1:8080) nor unix:PATH"))
    }
}

impl From<SocketAddr> for Listen {
    fn from(addr: SocketAddr) -> Listen {
        Listen::Tcp(addr)
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Listen {
    /// The bound TCP address, if this is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Listen::Tcp(addr) => Some(*addr),
            Listen::Unix(_) => None,
        }
    }

    /// What a client connects to: `{scheme}://ADDR`, or `unix:PATH` (HTTP
    /// over the socket).
    pub fn url(&self, scheme: &str) -> String {
        match self {
            Listen::Tcp(addr) => format!("{scheme}://{addr}"),
            Listen::Unix(_) => self.to_string(),
        }
    }
}

/// A bound listener of either kind.
enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix {
        listener: tokio::net::UnixListener,
        _file: UnixSocketFile,
    },
}

/// A Unix socket's file, removed when the server stops.
struct UnixSocketFile(PathBuf);

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Listener {
    async fn bind(listen: &Listen) -> Result<(Listener, Listen)> {
        let failed = |e: std::io::Error| Error::Config(format!("listening on {listen}: {e}"));
        match listen {
            Listen::Tcp(addr) => {
                let l = tokio::net::TcpListener::bind(addr).await.map_err(failed)?;
                let local = l.local_addr().map_err(failed)?;
                Ok((Listener::Tcp(l), Listen::Tcp(local)))
            }
            Listen::Unix(path) => {
                use std::os::unix::fs::{FileTypeExt, PermissionsExt};
                // A socket left by a server that is gone is replaced; a live
                // one, or any other kind of file, is never touched.
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() {
                        return Err(Error::Config(format!(
                            "listening on {listen}: the path exists and is not a socket"
                        )));
                    }
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        return Err(Error::Config(format!(
                            "listening on {listen}: another server is listening there"
                        )));
                    }
                    std::fs::remove_file(path).map_err(failed)?;
                }
                let l = tokio::net::UnixListener::bind(path).map_err(failed)?;
                let file = UnixSocketFile(path.clone());
                // Owner and group (a reverse proxy's) may connect, nobody else.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                    .map_err(failed)?;
                Ok((
                    Listener::Unix {
                        listener: l,
                        _file: file,
                    },
                    listen.clone(),
                ))
            }
        }
    }
}

/// Serves the API on `listen` until SIGTERM or Ctrl-C, with TLS when given
/// a certificate and key.
pub async fn serve(
    cp: ControlPlane,
    listen: impl Into<Listen>,
    tls: Option<(PathBuf, PathBuf)>,
    limits: ServerLimits,
    ready: impl FnOnce(&Listen),
) -> Result<()> {
    serve_until(cp, listen, tls, limits, ready, shutdown_signal()).await
}

/// One accepted connection's serving, whatever its transport.
#[derive(Clone)]
struct Connections {
    http: Arc<hyper::server::conn::http1::Builder>,
    router: axum::Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    handshake: Duration,
}

impl Connections {
    async fn serve<S>(self, stream: S, peer: String, watcher: Watcher)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        use hyper_util::rt::TokioIo;
        use hyper_util::service::TowerToHyperService;

        let service = TowerToHyperService::new(self.router);
        match self.acceptor {
            Some(acceptor) => {
                let tls = match tokio::time::timeout(self.handshake, acceptor.accept(stream)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let conn = self.http.serve_connection(TokioIo::new(tls), service);
                let _ = watcher.watch(conn).await;
            }
            None => {
                let conn = self.http.serve_connection(TokioIo::new(stream), service);
                let _ = watcher.watch(conn).await;
            }
        }
    }
}

/// [`serve`] until `shutdown` resolves: stops accepting, marks the host not
/// ready, lets in-flight requests finish for up to the drain timeout, cuts
/// the rest, and waits for their audit records to be written.
pub async fn serve_until(
    cp: ControlPlane,
    listen: impl Into<Listen>,
    tls: Option<(PathBuf, PathBuf)>,
    limits: ServerLimits,
    ready: impl FnOnce(&Listen),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    use hyper_util::rt::TokioTimer;
    use hyper_util::server::graceful::GracefulShutdown;

    let (listener, local) = Listener::bind(&listen.into()).await?;
    let acceptor = match tls {
        Some((cert, key)) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
            &cert, &key,
        )?)),
        None => None,
    };
    let cp = Arc::new(cp);
    let state = AppState::new(cp.clone()).with_limits(limits);
    let draining = state.draining.clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let serving = Connections {
        http: Arc::new(http),
        router: app(state),
        acceptor,
        handshake: limits.header_timeout,
    };
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    ready(&local);
    tokio::pin!(shutdown);
    loop {
        // A free slot first: past the cap, connections wait in the backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            c = accept(&listener, serving.clone(), graceful.watcher()) => c,
            () = &mut shutdown => break,
        };
        let conn = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors or similar: back off, keep serving.
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let _permit = permit;
            conn.await;
        });
    }
    drop(listener);
    draining.store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the drain timeout were cut");
    }
    connections.shutdown().await;
    // Cut requests record themselves when dropped: wait for those records.
    cp.audits_written(limits.drain_timeout).await;
    Ok(())
}

/// Accepts one connection and returns the future that serves it.
async fn accept(
    listener: &Listener,
    serving: Connections,
    watcher: Watcher,
) -> std::io::Result<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, peer) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok(Box::pin(serving.serve(stream, peer.to_string(), watcher)))
        }
        Listener::Unix { listener, .. } => {
            let (stream, _) = listener.accept().await?;
            Ok(Box::pin(serving.serve(stream, "unix".to_owned(), watcher)))
        }
    }
}
