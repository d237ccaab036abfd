//! Medical organizations known to the gateway.

use sqlx::Row;

use super::{Store, StoreError};
use crate::model::organization::Organization;
use crate::model::time::now_ms;
use crate::model::Oid;

impl Store {
    /// Inserts or updates organizations by OID.
    pub async fn upsert_organizations(&self, orgs: &[Organization]) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let now = now_ms();
        for o in orgs {
            sqlx::query(
                "INSERT INTO organizations (oid, name, short_name, address, district, source, active, updated_at) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8) \
                 ON CONFLICT (oid) DO UPDATE SET name = excluded.name, short_name = excluded.short_name, \
                 address = excluded.address, district = excluded.district, source = excluded.source, \
                 active = excluded.active, updated_at = excluded.updated_at",
            )
            .bind(o.oid.to_string())
            .bind(o.name.clone())
            .bind(o.short_name.clone())
            .bind(o.address.clone())
            .bind(o.district.clone())
            .bind(o.source.clone())
            .bind(i32::from(o.active))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Active organizations ordered by OID, optionally filtered by district or name part.
    pub async fn list_organizations(
        &self,
        district: Option<&str>,
        name_contains: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<Organization>, StoreError> {
        let rows = sqlx::query(
            "SELECT oid, name, short_name, address, district, source, active FROM organizations \
             WHERE active = 1 AND ($1 = '' OR district = $1) AND ($2 = '' OR LOWER(name) LIKE $2) \
             ORDER BY oid LIMIT $3 OFFSET $4",
        )
        .bind(district.unwrap_or("").to_string())
        .bind(
            name_contains
                .map(|n| format!("%{}%", n.to_lowercase()))
                .unwrap_or_default(),
        )
        .bind(i64::from(limit))
        .bind(i64::from(offset))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode).collect()
    }

    /// One organization by OID, active or not.
    pub async fn get_organization(&self, oid: &Oid) -> Result<Option<Organization>, StoreError> {
        let row = sqlx::query(
            "SELECT oid, name, short_name, address, district, source, active FROM organizations WHERE oid = $1",
        )
        .bind(oid.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decode).transpose()
    }
}

fn decode(row: &sqlx::any::AnyRow) -> Result<Organization, StoreError> {
    let oid: String = row.try_get("oid")?;
    Ok(Organization {
        oid: Oid::parse(&oid).map_err(|_| super::corrupt("organizations.oid", &oid))?,
        name: row.try_get("name")?,
        short_name: row.try_get("short_name")?,
        address: row.try_get("address")?,
        district: row.try_get("district")?,
        source: row.try_get("source")?,
        active: row.try_get::<i32, _>("active")? != 0,
    })
}
