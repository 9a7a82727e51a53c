//! The outbound address policy every capability connects through: which
//! addresses a datasource may reach. Names are resolved by the host and the
//! policy applies to each resolved address, so a name cannot smuggle a
//! connection somewhere an address literal could not go.
//!
//! By default a datasource registered through the API may not reach
//! loopback, link-local (cloud metadata services live there: 169.254.169.254,
//! fd00:ec2::254), unspecified, multicast or broadcast addresses, nor the
//! control plane's own store; an HTTP datasource, which an org aims at an
//! arbitrary API, not private ranges either. An operator allows more with
//! `local` (local development and the demo: everything) or `allow` CIDRs,
//! and refuses more with `deny` CIDRs. A `silo.toml` is the operator's own
//! file: its datasources run under [`NetPolicy::operator`], which allows all.
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use silo_core::error::{Error, Result};

/// Which kind of datasource connects: an HTTP API is held to a tighter
/// default than a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A database (Postgres, MySQL, MongoDB).
    Database,
    /// An HTTP API.
    Http,
}

/// A control-plane store a datasource must never reach: its server's
/// addresses and the database on it, and the server's identity so the same
/// server is recognized behind any other address or name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    /// Where the store's server listens.
    pub addrs: Vec<SocketAddr>,
    /// The store's database on it.
    pub database: String,
    /// The server's start time (Postgres `pg_postmaster_start_time()` as
    /// epoch seconds), which any session can read: a connection that
    /// reports this database and this start time is the store.
    pub started: Option<String>,
}

/// What a datasource connection to a protected store is refused with.
pub const STORE_REFUSAL: &str = "a datasource may not read the control plane's own store";

/// A name that did not resolve: the resolver's words to the log only.
fn unresolved(host: &str, e: &std::io::Error) -> Error {
    tracing::warn!(host, "resolving a datasource's host failed: {e}");
    Error::Datasource(format!("the host name `{host}` could not be resolved"))
}

/// Where datasources may connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    /// Allow every address not in `deny` (local development, the demo).
    pub local: bool,
    /// Databases may reach every address not in `deny`; HTTP APIs are still
    /// held to the default (an operator's own `silo.toml`, whose database
    /// hosts the operator wrote).
    pub trusted_databases: bool,
    /// Networks always allowed (unless also denied).
    pub allow: Vec<IpNet>,
    /// Networks always refused.
    pub deny: Vec<IpNet>,
    /// Stores a datasource may never read.
    pub protected: Vec<Protected>,
}

impl NetPolicy {
    /// An operator's `silo.toml`: its databases are wherever the operator
    /// says; an HTTP API reaches private addresses only with the
    /// datasource's `allow_private_network`.
    pub fn operator() -> NetPolicy {
        NetPolicy {
            trusted_databases: true,
            ..NetPolicy::default()
        }
    }

    /// Whether no database address is refused (no need to resolve a name
    /// first).
    pub fn is_open(&self) -> bool {
        (self.local || self.trusted_databases) && self.deny.is_empty() && self.protected.is_empty()
    }

    /// The host a driver that resolves names itself should connect to: the
    /// name itself when the policy is open, else the first address the
    /// policy allows (pinned, so the driver cannot resolve elsewhere later).
    pub fn pin(&self, host: &str, port: u16, purpose: Purpose) -> Result<String> {
        if self.is_open() {
            return Ok(host.to_owned());
        }
        let addrs = self.resolve_blocking(host, port, purpose)?;
        addrs
            .first()
            .map(|a| a.ip().to_string())
            .ok_or_else(|| Error::Internal("a resolved host without an address".into()))
    }

    /// Whether `ip` may be reached for `purpose`; the refusal says why.
    pub fn check(&self, ip: IpAddr, purpose: Purpose) -> std::result::Result<(), String> {
        let ip = canonical(ip);
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return Err(format!("{ip} is in a network the operator denies"));
        }
        if self.local
            || (self.trusted_databases && purpose == Purpose::Database)
            || self.allow.iter().any(|n| n.contains(&ip))
        {
            return Ok(());
        }
        if let Some(what) = special(ip) {
            return Err(format!(
                "{ip} is a {what} address, which datasources may not reach"
            ));
        }
        if purpose == Purpose::Http && private(ip) {
            return Err(format!(
                "{ip} is a private address, which HTTP datasources may not reach"
            ));
        }
        Ok(())
    }

    /// Resolves `host` and keeps the addresses the policy allows; an error
    /// if none is left, naming why the first was refused.
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
        purpose: Purpose,
    ) -> Result<Vec<SocketAddr>> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| unresolved(host, &e))?
            .collect();
        self.filter(host, found, purpose)
    }

    /// Like [`NetPolicy::resolve`], blocking: for clients built outside the
    /// async runtime.
    pub fn resolve_blocking(
        &self,
        host: &str,
        port: u16,
        purpose: Purpose,
    ) -> Result<Vec<SocketAddr>> {
        use std::net::ToSocketAddrs;
        let found: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| unresolved(host, &e))?
            .collect();
        self.filter(host, found, purpose)
    }

    fn filter(
        &self,
        host: &str,
        found: Vec<SocketAddr>,
        purpose: Purpose,
    ) -> Result<Vec<SocketAddr>> {
        let mut why = None;
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|a| match self.check(a.ip(), purpose) {
                Ok(()) => true,
                Err(e) => {
                    why.get_or_insert(e);
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(Error::Policy(format!(
                "the datasource's host `{host}` cannot be reached: {}",
                why.unwrap_or_else(|| "it has no address".into())
            )));
        }
        Ok(allowed)
    }

    /// Refuses a connection to a protected store's database.
    pub fn check_database(&self, addr: SocketAddr, database: &str) -> Result<()> {
        let addr = SocketAddr::new(canonical(addr.ip()), addr.port());
        if self
            .protected
            .iter()
            .any(|p| p.database == database && p.addrs.contains(&addr))
        {
            return Err(Error::Policy(STORE_REFUSAL.into()));
        }
        Ok(())
    }
}

/// An IPv4 address mapped into IPv6, as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What makes an address special, if it is: never a datasource's.
fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_link_local() {
                Some("link-local (cloud metadata)")
            } else if v4.is_unspecified() || v4.octets()[0] == 0 {
                Some("unspecified")
            } else if v4.is_multicast() || v4.is_broadcast() {
                Some("multicast or broadcast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if (first & 0xffc0) == 0xfe80
                || v6.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]
            {
                Some("link-local (cloud metadata)")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

/// Private ranges: RFC 1918, shared address space, IPv6 unique local,
/// documentation ranges.
fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_documentation() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_addresses_are_refused_and_private_ones_only_to_http() {
        let p = NetPolicy::default();
        for refused in [
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "fd00:ec2::254",
            "fe80::1",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(
                p.check(ip(refused), Purpose::Database).is_err(),
                "{refused}"
            );
            assert!(p.check(ip(refused), Purpose::Http).is_err(), "{refused}");
        }
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd12::1",
        ] {
            assert!(p.check(ip(private), Purpose::Database).is_ok(), "{private}");
            assert!(p.check(ip(private), Purpose::Http).is_err(), "{private}");
        }
        for public in ["93.184.216.34", "2606:4700::1111"] {
            assert!(p.check(ip(public), Purpose::Http).is_ok(), "{public}");
        }
    }

    #[test]
    fn the_operator_allows_and_denies_networks() {
        let p = NetPolicy {
            allow: vec![
                "10.9.0.0/16".parse().unwrap(),
                "127.0.0.1/32".parse().unwrap(),
            ],
            deny: vec!["10.9.9.0/24".parse().unwrap()],
            ..NetPolicy::default()
        };
        assert!(p.check(ip("10.9.1.1"), Purpose::Http).is_ok());
        assert!(p.check(ip("127.0.0.1"), Purpose::Database).is_ok());
        assert!(p.check(ip("10.9.9.9"), Purpose::Database).is_err());
        let local = NetPolicy {
            local: true,
            deny: vec!["10.0.0.0/8".parse().unwrap()],
            ..NetPolicy::default()
        };
        assert!(local.check(ip("127.0.0.1"), Purpose::Http).is_ok());
        assert!(local.check(ip("10.1.1.1"), Purpose::Database).is_err());
        let file = NetPolicy::operator();
        assert!(file.check(ip("127.0.0.1"), Purpose::Database).is_ok());
        assert!(file.check(ip("127.0.0.1"), Purpose::Http).is_err());
        assert!(file.check(ip("192.168.1.1"), Purpose::Http).is_err());
        let store = NetPolicy {
            protected: vec![Protected {
                addrs: vec!["127.0.0.1:5432".parse().unwrap()],
                database: "silo".into(),
                started: None,
            }],
            ..NetPolicy::operator()
        };
        assert!(
            store
                .check_database("127.0.0.1:5432".parse().unwrap(), "silo")
                .is_err()
        );
        assert!(
            store
                .check_database("127.0.0.1:5432".parse().unwrap(), "test")
                .is_ok()
        );
        assert!(
            store
                .check_database("[::ffff:127.0.0.1]:5432".parse().unwrap(), "silo")
                .is_err()
        );
    }
}
