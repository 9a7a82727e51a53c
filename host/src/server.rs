//! `silo serve` and the operator commands around the control plane: where
//! the store and master key come from, and the server loop.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::api::{AppState, app};
use crate::control::crypto::MasterKey;
use crate::control::tokens::TokenAlg;
use crate::control::{ControlConfig, ControlPlane};
use crate::error::{Error, Result};
use crate::metadata::llm::LlmConfig;

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
}

impl StoreArgs {
    fn store_url(&self) -> String {
        self.store
            .clone()
            .unwrap_or_else(|| self.data_dir.join("silo.db").display().to_string())
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
                crate::control::crypto::MASTER_KEY_ENV
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
            self.store_url(),
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
        ControlPlane::open(config).await
    }
}

/// What the operator allows orgs to ask of this host.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// Where the datasources orgs register may connect.
    pub net: crate::capability::net::NetPolicy,
    /// Ceilings on org-supplied settings.
    pub ceilings: crate::control::Ceilings,
    /// Organizations (ids) whose keys may register a datasource whose
    /// credential can write (`accept_write_privileges`).
    pub write_orgs: Vec<String>,
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
}

impl PolicyArgs {
    /// The policy these flags describe.
    pub fn policy(&self) -> HostPolicy {
        HostPolicy {
            net: crate::capability::net::NetPolicy {
                local: self.allow_private_network,
                allow: self.allow_networks.clone(),
                deny: self.deny_networks.clone(),
                ..crate::capability::net::NetPolicy::default()
            },
            ceilings: crate::control::Ceilings {
                pool_size: self
                    .max_pool_size
                    .clamp(1, crate::capability::postgres::MAX_POOL_SIZE),
                http_response_bytes: self.max_http_response_bytes.max(1),
                ..crate::control::Ceilings::default()
            },
            write_orgs: self.write_orgs.clone(),
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

/// Serves the API on `listen` until Ctrl-C, with TLS when given a
/// certificate and key.
pub async fn serve(
    cp: ControlPlane,
    listen: SocketAddr,
    tls: Option<(PathBuf, PathBuf)>,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Config(format!("listening on {listen}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let router = app(AppState::new(Arc::new(cp)));
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    ready(local);
    let served = match tls {
        Some((cert, key)) => {
            let config = crate::api::tls::server_config(&cert, &key)?;
            let listener = crate::api::tls::TlsListener::new(listener, config)?;
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    served.map_err(|e| Error::Internal(format!("server: {e}")))
}
