//! Sessions: minting, renewing and revoking an embed user's session and its
//! token, authenticating a token on every embed request, and purging expired
//! sessions in the background.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use utoipa::ToSchema;

use silo_core::error::{Error, Result};

use crate::model::Session;
use crate::store::{self, Store, now};
use crate::{ControlPlane, EmbedPrincipal, Principal, attributes, tokens};

/// Session lifetime when the request names none: long enough for a page
/// view, short enough that a leaked token soon stops working.
pub const DEFAULT_SESSION_TTL: i64 = 15 * 60;
/// The longest session a backend can mint.
pub const MAX_SESSION_TTL: i64 = 24 * 60 * 60;

/// `POST /v1/sessions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionInput {
    /// Renew this existing session (it gets a new token, and every older
    /// token of it stops working) instead of creating one. What the renewal
    /// leaves out (`datasets`, `parameters`) stays as it was: a renewal never
    /// widens a session by omission.
    #[serde(default)]
    pub id: Option<String>,
    /// The embed user's external id.
    pub embed_user: String,
    /// Dataset ids this session may use (default for a new session: all
    /// its groups grant; for a renewal: those it had).
    #[serde(default)]
    pub datasets: Option<Vec<String>>,
    /// Values row filters may read as `{{user.<name>}}` (default for a
    /// renewal: those it had).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<BTreeMap<String, serde_json::Value>>,
    /// Lifetime in seconds (default 900, at most 86400).
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}

/// A session and the token that carries it (shown once).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct SessionToken {
    /// The session.
    pub session: Session,
    /// The signed token (`Authorization: Bearer …` on embed endpoints).
    pub token: String,
}

/// A background task that ends with its owner.
pub(crate) struct Background(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often expired sessions are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// How long after expiry a session is kept (its record may still be looked
/// at; its tokens died at expiry).
const PURGE_AFTER_SECS: i64 = 3600;

/// Deletes sessions an hour past expiry, now and every ten minutes, so the
/// table holds live sessions, not history (the audit log keeps that).
pub(crate) async fn purge_sessions(store: Store) {
    let mut every = tokio::time::interval(PURGE_EVERY);
    loop {
        every.tick().await;
        match store.purge_sessions(store::now() - PURGE_AFTER_SECS).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "purged expired sessions"),
            Err(e) => tracing::warn!(error = %e, "purging expired sessions"),
        }
    }
}

impl ControlPlane {
    /// Creates a session (or updates one of `p`'s org by id) and signs its
    /// token.
    pub async fn put_session(&self, p: &Principal, input: SessionInput) -> Result<SessionToken> {
        let org = Self::org_of(p)?;
        let user = self.store.embed_user(org, &input.embed_user).await?;
        let old = match &input.id {
            Some(id) => Some(self.store.session(org, id).await?),
            None => None,
        };
        let datasets = input
            .datasets
            .or_else(|| old.as_ref().and_then(|o| o.datasets.clone()));
        let parameters = input
            .parameters
            .or_else(|| old.as_ref().map(|o| o.parameters.clone()))
            .unwrap_or_default();
        let shadowed = parameters.keys().find(|k| user.attributes.contains_key(*k));
        if let Some(k) = shadowed {
            return Err(Error::Config(format!(
                "parameter `{k}` would shadow the embed user's attribute"
            )));
        }
        attributes(&parameters)?;
        if let Some(ds) = &datasets {
            for d in ds {
                self.store.dataset(org, d).await?;
            }
        }
        let ttl = input.ttl_seconds.unwrap_or(DEFAULT_SESSION_TTL);
        if !(1..=MAX_SESSION_TTL).contains(&ttl) {
            return Err(Error::Config(format!(
                "ttl_seconds must be 1 to {MAX_SESSION_TTL}"
            )));
        }
        let t = now();
        let mut session = Session {
            id: String::new(),
            org_id: org.to_owned(),
            embed_user_id: user.id,
            datasets,
            parameters,
            created_at: t,
            expires_at: t + ttl,
            revoked_at: None,
            generation: 0,
        };
        let action = match old {
            // Renewal: the same user's live session gets a new generation;
            // every token of the old one stops working.
            Some(old) => {
                if old.embed_user_id != session.embed_user_id {
                    return Err(Error::Conflict(
                        "this session belongs to another embed user; a session keeps its user \
                         for life: create a new one"
                            .into(),
                    ));
                }
                if old.revoked_at.is_some() {
                    return Err(Error::Conflict(
                        "this session was revoked, and stays revoked: create a new one".into(),
                    ));
                }
                session.id = old.id;
                session.created_at = old.created_at;
                session.generation = old.generation + 1;
                self.store.renew_session(&session, old.generation).await?;
                "session.renew"
            }
            None => {
                session.id = tokens::new_id("ses")?;
                self.store.insert_session(&session).await?;
                "session.create"
            }
        };
        let claims =
            self.signer
                .claims(org, &session.id, session.generation, t, session.expires_at);
        let token = self.signer.sign(&claims)?;
        self.audit(p, action, Some(&session.id), None).await;
        Ok(SessionToken { session, token })
    }

    /// The sessions of `p`'s org.
    pub async fn sessions(&self, p: &Principal) -> Result<Vec<Session>> {
        self.store.sessions(Self::org_of(p)?, None).await
    }

    /// Revokes a session of `p`'s org: its token fails from the next request.
    pub async fn revoke_session(&self, p: &Principal, id: &str) -> Result<()> {
        self.store.revoke_session(Self::org_of(p)?, id).await?;
        self.audit(p, "session.revoke", Some(id), None).await;
        Ok(())
    }

    /// Verifies a session token and loads its session and user. The
    /// organization comes from the verified claims only; a revoked, expired
    /// or unknown session is the same error as a bad signature.
    pub async fn authenticate_session(&self, token: &str) -> Result<EmbedPrincipal> {
        let claims = self.signer.verify(token)?;
        let refused = || Error::Unauthorized("the session token is not valid".into());
        // The version first: reads after it are at least as new, so a
        // change after it is seen by the next request.
        let version = self.versions.read(&self.store, &claims.org).await?;
        let read = self
            .caches
            .sessions
            .get_or_load(&claims.org, &claims.sub, version, async {
                let session = self.store.session(&claims.org, &claims.sub).await?;
                let user = self
                    .store
                    .embed_user(&claims.org, &session.embed_user_id)
                    .await?;
                Ok(Arc::new((session, user)))
            })
            .await;
        let (session, user) = match read {
            Ok(pair) => (pair.0.clone(), pair.1.clone()),
            Err(Error::NotFound(_)) => return Err(refused()),
            Err(e) => return Err(e),
        };
        // Checked on every request, cached or not: time moves on.
        if session.revoked_at.is_some()
            || session.expires_at <= now()
            || !claims.current_for(&session.id, session.generation)
        {
            return Err(refused());
        }
        Ok(EmbedPrincipal {
            org: claims.org,
            session,
            user,
            version,
        })
    }
}
