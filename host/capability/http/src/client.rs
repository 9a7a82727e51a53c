//! The HTTP driver: one base URL, the token as a sensitive header, no
//! redirects, no proxy, no decompression, and a size and time cap on every
//! response.
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use silo_capability::net::{NetPolicy, Purpose};

use super::HttpConfig;
use silo_core::error::{Error, Result};
use silo_policy::http::{Admitted, Rules};
use silo_policy::sql::GovernedTable;

/// An answer as the connector receives it.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The `content-type` header.
    pub content_type: Option<String>,
    /// The whole body, within the cap.
    pub body: Vec<u8>,
}

/// What [`HttpClient::new`] needs beyond the config.
pub struct HttpSettings {
    /// The datasource's config.
    pub config: HttpConfig,
    /// The token, from the store or the config's env/file reference.
    pub token: Option<SecretString>,
    /// Time cap for each request, connect to last byte.
    pub timeout: Duration,
    /// Where it may connect.
    pub net: silo_capability::net::NetPolicy,
}

/// The client behind one HTTP datasource.
pub struct HttpClient {
    base: Url,
    rules: Rules,
    auth: Option<(HeaderName, HeaderValue)>,
    max_bytes: u64,
    max_requests: usize,
    timeout: Duration,
    settings: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("HttpClient")
            .field("base", &self.base.as_str())
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Checks the config and builds the client; nothing is sent yet.
    pub fn new(s: HttpSettings) -> Result<HttpClient> {
        let c = &s.config;
        let bad = |m: String| Error::Config(format!("http: {m}"));
        let base = Url::parse(&c.base_url).map_err(|e| bad(format!("base_url: {e}")))?;
        if !matches!(base.scheme(), "http" | "https")
            || base.host_str().is_none()
            || !base.username().is_empty()
            || base.password().is_some()
            || base.query().is_some()
            || base.fragment().is_some()
            || base.path() != "/"
        {
            return Err(bad(
                "base_url is `http(s)://host[:port]` only: no path, query or user info \
                 (the token goes in token_env / token_file or the stored credential)"
                    .into(),
            ));
        }
        if c.paths.is_empty() {
            return Err(bad("paths must allow at least one path prefix".into()));
        }
        let rules = Rules::new(
            c.paths.clone().into_iter().collect(),
            c.bind_params.clone().into_iter().collect(),
        )
        .map_err(|e| bad(format!("paths: {e}")))?;
        let auth = match &s.token {
            Some(token) => {
                let name = HeaderName::from_bytes(c.token_header.as_bytes())
                    .map_err(|_| bad(format!("token_header `{}`", c.token_header)))?;
                if name == reqwest::header::HOST || name == reqwest::header::CONTENT_LENGTH {
                    return Err(bad(format!("token_header `{name}` is not for credentials")));
                }
                let mut value =
                    HeaderValue::from_str(&format!("{}{}", c.token_prefix, token.expose_secret()))
                        .map_err(|_| bad("the token is not a valid header value".into()))?;
                value.set_sensitive(true);
                Some((name, value))
            }
            None => None,
        };
        let settings = if c.settings.is_null() {
            "{}".to_owned()
        } else {
            c.settings.to_string()
        };
        // Settings reach the guest: refuse them if they hold the token.
        if let Some(token) = &s.token
            && !token.expose_secret().is_empty()
            && settings.contains(token.expose_secret())
        {
            return Err(bad(
                "settings hold the API token; they are given to the connector, so keep the \
                 token in token_env / token_file or the stored credential"
                    .into(),
            ));
        }
        // For an HTTP datasource, private networks are allowed only when
        // the operator says so (`allow_private_network`, or `silo serve
        // --allow-private-network`), even in the operator's own file.
        let mut net = s.net.clone();
        net.local |= c.allow_private_network;
        if let Some(ip) = base
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<std::net::IpAddr>().ok())
            && let Err(why) = net.check(ip, Purpose::Http)
        {
            return Err(bad(format!(
                "base_url: {why} (an operator may allow loopback, private or link-local \
                 addresses with allow_private_network in silo.toml)"
            )));
        }
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(Resolver { net }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(base.scheme() == "https")
            .connect_timeout(s.timeout)
            .timeout(s.timeout)
            .user_agent("silo")
            .build()
            .map_err(|e| Error::Internal(format!("http client: {e}")))?;
        Ok(HttpClient {
            base,
            rules,
            auth,
            max_bytes: c.max_response_bytes,
            max_requests: c.max_requests,
            timeout: s.timeout,
            settings,
            client,
        })
    }

    /// The settings handed to the connector, as JSON text.
    pub fn settings_json(&self) -> &str {
        &self.settings
    }

    /// Requests one fetch may make.
    pub fn max_requests(&self) -> usize {
        self.max_requests
    }

    /// Why some governed paths can never be bound to one user's rows (see
    /// [`Rules::unbindable`]); empty when every one can.
    pub fn warnings(&self) -> Vec<String> {
        self.rules.unbindable()
    }

    /// `GET path?query` if the policy admits it for `datasets`, with the
    /// token added here and the answer read within the caps.
    pub async fn get(
        &self,
        path: &str,
        query: &[(String, String)],
        datasets: &[GovernedTable],
    ) -> Result<(Admitted, Answer)> {
        let admitted = self.rules.admit(path, query, datasets)?;
        let mut url = self.base.clone();
        url.set_path(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self.client.get(url);
        if let Some((name, value)) = &self.auth {
            request = request.header(name.clone(), value.clone());
        }
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                Error::Limit(format!(
                    "GET {path} took longer than {} ms",
                    self.timeout.as_millis()
                ))
            } else {
                tracing::info!("GET {path}: {e}");
                Error::Datasource(format!("GET {path}: the API could not be reached"))
            }
        };
        let mut response = request.send().await.map_err(failed)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(Error::Policy(format!(
                "GET {path} answered {status}: redirects are not followed"
            )));
        }
        let too_big = || {
            Error::Limit(format!(
                "the response to GET {path} is larger than {} bytes; it was cut off",
                self.max_bytes
            ))
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes)
        {
            return Err(too_big());
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if (body.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((
            admitted,
            Answer {
                status: status.as_u16(),
                content_type,
                body,
            },
        ))
    }
}

/// Resolves the base URL's name for every new connection, and keeps only the
/// addresses the datasource may reach (see [`silo_capability::net`]): a
/// name that resolves, or rebinds, to loopback, a private range or
/// link-local is refused, so an org cannot aim a datasource at the host's
/// own network. Only checked addresses are handed to the connection.
struct Resolver {
    net: NetPolicy,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let net = self.net.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = net
                .resolve(&host, 0, Purpose::Http)
                .await
                .map_err(|e| Box::new(std::io::Error::other(e.to_string())))?;
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}
