//! Organizations and API keys: what an operator manages, and how a backend's
//! key is verified into a [`Principal`].

use zeroize::Zeroizing;

use silo_core::error::{Error, Result};

use crate::model::{ApiKeyInfo, Organization};
use crate::store::now;
use crate::{ControlPlane, Principal, tokens, valid_name};

impl ControlPlane {
    /// Creates an organization (operator only).
    pub async fn create_org(&self, p: &Principal, name: &str) -> Result<Organization> {
        if matches!(p, Principal::Org { .. }) {
            return Err(Error::Unauthorized("an operator key is required".into()));
        }
        valid_name("an organization name", name)?;
        let org = Organization {
            id: tokens::new_id("org")?,
            name: name.to_owned(),
            created_at: now(),
        };
        self.store.insert_org(&org).await?;
        self.audit_in(Some(org.id.clone()), p, "org.create", Some(&org.id), None)
            .await;
        Ok(org)
    }

    /// All organizations (operator only).
    pub async fn orgs(&self, p: &Principal) -> Result<Vec<Organization>> {
        if matches!(p, Principal::Org { .. }) {
            return Err(Error::Unauthorized("an operator key is required".into()));
        }
        self.store.orgs().await
    }

    /// Mints an API key for `org` (`None`: an operator key). The token is in
    /// the result once and stored only as a digest. Operators mint keys for
    /// any org; an org's key mints keys for its own org.
    pub async fn create_api_key(
        &self,
        p: &Principal,
        org: Option<&str>,
        name: &str,
    ) -> Result<(ApiKeyInfo, Zeroizing<String>)> {
        let org = match (p, org) {
            (Principal::Org { org: own, .. }, Some(o)) if o == own => Some(own.clone()),
            (Principal::Org { .. }, _) => return Err(Error::NotFound("organization".into())),
            (_, Some(o)) => Some(self.store.org(o).await?.id),
            (_, None) => None,
        };
        valid_name("a key name", name)?;
        let key = tokens::new_api_key()?;
        let info = ApiKeyInfo {
            id: key.id.clone(),
            org_id: org,
            name: name.to_owned(),
            created_at: now(),
            revoked_at: None,
        };
        self.store.insert_api_key(&info, &key.digest).await?;
        self.audit_in(
            info.org_id.clone(),
            p,
            "api_key.create",
            Some(&info.id),
            None,
        )
        .await;
        Ok((info, key.token))
    }

    /// Revokes a key; an org's key can revoke only its org's keys.
    pub async fn revoke_api_key(&self, p: &Principal, org: Option<&str>, id: &str) -> Result<()> {
        let org = match p {
            Principal::Org { org: own, .. } => Some(own.clone()),
            _ => match org {
                Some(o) => Some(self.store.org(o).await?.id),
                None => None,
            },
        };
        self.store.revoke_api_key(org.as_deref(), id).await?;
        self.audit_in(org, p, "api_key.revoke", Some(id), None)
            .await;
        Ok(())
    }

    /// The keys of `p`'s org (operators: of `org`, or the operator keys).
    pub async fn api_keys(&self, p: &Principal, org: Option<&str>) -> Result<Vec<ApiKeyInfo>> {
        match p {
            Principal::Org { org, .. } => self.store.api_keys(Some(org)).await,
            _ => match org {
                Some(o) => {
                    self.store
                        .api_keys(Some(&self.store.org(o).await?.id))
                        .await
                }
                None => self.store.api_keys(None).await,
            },
        }
    }

    /// Who holds `token` (an API key). Unknown, malformed and revoked keys
    /// are the same error.
    pub async fn authenticate_key(&self, token: &str) -> Result<Principal> {
        let refused = || Error::Unauthorized("the API key is not valid".into());
        let (id, secret) = tokens::parse_api_key(token).ok_or_else(refused)?;
        let (info, digest) = self.store.api_key(id).await?.ok_or_else(refused)?;
        if info.revoked_at.is_some() || !tokens::api_key_matches(secret, &digest) {
            return Err(refused());
        }
        Ok(match info.org_id {
            Some(org) => Principal::Org {
                org,
                key: Some(info.id),
            },
            None => Principal::Admin { key: info.id },
        })
    }
}
