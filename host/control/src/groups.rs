//! Groups: the grants (datasets, row filters, columns) an embed user gets
//! by membership.

use serde::Deserialize;
use utoipa::ToSchema;

use silo_core::error::{Error, Result};
use silo_policy::rule::Policy;

use crate::model::{DatasourceKind, Group, GroupGrant};
use crate::store::now;
use crate::{ControlPlane, Principal, tokens, valid_name};

/// `PUT /v1/groups/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    /// The datasets it grants, replacing any earlier grants.
    #[serde(default)]
    pub grants: Vec<GroupGrant>,
}

impl ControlPlane {
    /// Creates or replaces the group `name` of `p`'s org.
    pub async fn put_group(&self, p: &Principal, name: &str, input: GroupInput) -> Result<Group> {
        let org = Self::org_of(p)?;
        valid_name("a group name", name)?;
        for g in &input.grants {
            if g.all_rows && !g.row_filter.is_empty() {
                return Err(Error::Config(format!(
                    "grant of `{}` sets both all_rows and row_filter",
                    g.dataset_id
                )));
            }
            Policy::parse(&g.row_filter)
                .map_err(|e| Error::Config(format!("grant of `{}`: {e}", g.dataset_id)))?;
            for c in g.columns.iter().flatten() {
                valid_name("a column name", c)?;
            }
            if g.columns.is_some() {
                // An HTTP connector reads the API's raw answers: the host
                // cannot take a column out of them.
                let d = self.store.dataset(org, &g.dataset_id).await?;
                let (ds, _, _) = self.store.datasource(org, &d.datasource_id).await?;
                if ds.kind == DatasourceKind::Http {
                    return Err(Error::Config(format!(
                        "grant of `{}`: column grants cannot be enforced on an HTTP dataset (its \
                         connector reads the API's raw answers); grant every column, or leave \
                         `columns` out",
                        g.dataset_id
                    )));
                }
            }
        }
        let group = Group {
            id: tokens::new_id("grp")?,
            org_id: org.to_owned(),
            name: name.to_owned(),
            grants: input.grants,
            created_at: now(),
        };
        let out = self.store.upsert_group(&group).await?;
        self.audit(p, "group.put", Some(&out.id), None).await;
        Ok(out)
    }

    /// The groups of `p`'s org.
    pub async fn groups(&self, p: &Principal) -> Result<Vec<Group>> {
        self.store.groups(Self::org_of(p)?).await
    }

    /// One group of `p`'s org.
    pub async fn group(&self, p: &Principal, id: &str) -> Result<Group> {
        self.store.group(Self::org_of(p)?, id).await
    }

    /// Deletes a group of `p`'s org.
    pub async fn delete_group(&self, p: &Principal, id: &str) -> Result<()> {
        let org = Self::org_of(p)?;
        let g = self.store.group(org, id).await?;
        self.store.delete_group(org, &g.id).await?;
        self.audit(p, "group.delete", Some(&g.id), None).await;
        Ok(())
    }
}
