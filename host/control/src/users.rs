//! Embed users: a customer's end users as the control plane knows them,
//! with the attributes row filters read and their group memberships.

use std::collections::BTreeMap;

use serde::Deserialize;
use utoipa::ToSchema;

use silo_core::error::{Error, Result};

use crate::model::EmbedUser;
use crate::store::now;
use crate::{ControlPlane, Principal, attributes, tokens};

/// `PUT /v1/embed-users/{external_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedUserInput {
    /// Attributes row filters refer to.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Groups (ids or names), replacing any earlier membership.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl ControlPlane {
    /// Creates or updates the embed user `external_id` of `p`'s org.
    pub async fn put_embed_user(
        &self,
        p: &Principal,
        external_id: &str,
        input: EmbedUserInput,
    ) -> Result<EmbedUser> {
        let org = Self::org_of(p)?;
        // Lookups accept a record id too, so an external id may not look
        // like one.
        if external_id.is_empty()
            || external_id.len() > 256
            || external_id.chars().any(char::is_control)
            || external_id.starts_with("eu_")
        {
            return Err(Error::Config(
                "an embed user id must be 1 to 256 printable characters, not starting with `eu_`"
                    .into(),
            ));
        }
        attributes(&input.attributes)?;
        let mut groups = Vec::with_capacity(input.groups.len());
        for g in &input.groups {
            groups.push(self.store.group(org, g).await?.id);
        }
        let t = now();
        let user = EmbedUser {
            id: tokens::new_id("eu")?,
            org_id: org.to_owned(),
            external_id: external_id.to_owned(),
            attributes: input.attributes,
            groups,
            created_at: t,
            updated_at: t,
        };
        let out = self.store.upsert_embed_user(&user).await?;
        self.audit(p, "embed_user.put", Some(&out.id), None).await;
        Ok(out)
    }

    /// The embed users of `p`'s org.
    pub async fn embed_users(&self, p: &Principal) -> Result<Vec<EmbedUser>> {
        self.store.embed_users(Self::org_of(p)?).await
    }

    /// One embed user of `p`'s org.
    pub async fn embed_user(&self, p: &Principal, id: &str) -> Result<EmbedUser> {
        self.store.embed_user(Self::org_of(p)?, id).await
    }

    /// Deletes an embed user of `p`'s org and its sessions.
    pub async fn delete_embed_user(&self, p: &Principal, id: &str) -> Result<()> {
        let org = Self::org_of(p)?;
        let u = self.store.embed_user(org, id).await?;
        self.store.delete_embed_user(org, &u.id).await?;
        self.audit(p, "embed_user.delete", Some(&u.id), None).await;
        Ok(())
    }
}
