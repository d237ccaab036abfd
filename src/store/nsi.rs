//! Reference books of the Ministry's NSI: every version of a book kept, its rows loaded
//! page by page under a generation of their own and shown at once when complete, the
//! current version switched in one statement, and the reads of codes and pages.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::schedules::push_placeholders;
use super::{Store, StoreError};
use crate::model::nsi::{Entry, StoredVersion, VersionInfo};

/// Rows one insert statement carries at most (a power of two: few statement shapes).
const INSERT_ROWS: usize = 256;

/// Where a load of a version stands: its generation and the rows already in it (a load cut
/// off earlier resumes after them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// The generation the rows are written under.
    pub generation: i64,
    /// Rows already written under it.
    pub loaded: u64,
}

const VERSION_COLUMNS: &str =
    "oid, version, name, published_at, last_update, archive, rows_count, \
     loaded, is_current, synced_at";

fn decode_version(r: &AnyRow) -> Result<StoredVersion, StoreError> {
    Ok(StoredVersion {
        oid: r.try_get("oid")?,
        version: r.try_get("version")?,
        name: r.try_get("name")?,
        published_at: r.try_get("published_at")?,
        last_update: r.try_get("last_update")?,
        archive: r.try_get::<i32, _>("archive")? != 0,
        rows: u64::try_from(r.try_get::<i64, _>("rows_count")?).unwrap_or(0),
        loaded: r.try_get::<i32, _>("loaded")? != 0,
        current: r.try_get::<i32, _>("is_current")? != 0,
        synced_at: r.try_get("synced_at")?,
    })
}

/// `text` as a LIKE operand matching itself literally (`%`, `_` and `\` escaped).
fn like_literal(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

impl Store {
    /// Records that book `oid` (called `name`) was synchronized at `now`.
    pub async fn nsi_upsert_book(&self, oid: &str, name: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nsi_books (oid, name, synced_at) VALUES ($1, $2, $3) \
             ON CONFLICT (oid) DO UPDATE SET name = excluded.name, synced_at = excluded.synced_at",
        )
        .bind(oid.to_string())
        .bind(name.to_string())
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The kept versions of book `oid`, or of every book; by book, then publication.
    pub async fn nsi_versions(&self, oid: Option<&str>) -> Result<Vec<StoredVersion>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM nsi_versions WHERE ($1 = '' OR oid = $2) \
             ORDER BY oid, published_at, version"
        );
        let oid = oid.unwrap_or("").to_string();
        let rows = sqlx::query(&sql)
            .bind(oid.clone())
            .bind(oid)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode_version).collect()
    }

    /// Starts (or resumes) loading version `v` of `oid` named `name`: a load of the same
    /// publisher's stamp cut off after whole pages of `page_size` rows resumes under its
    /// generation; any other earlier partial load is discarded and `generation` begins.
    /// The version's visible rows stay as they are until [`Store::nsi_finish_load`].
    pub async fn nsi_begin_load(
        &self,
        oid: &str,
        v: &VersionInfo,
        name: &str,
        generation: i64,
        page_size: u32,
        now: i64,
    ) -> Result<Load, StoreError> {
        let mut tx = self.pool().begin().await?;
        // The transaction begins with the write, so SQLite takes its write lock at once
        // (waiting for it) instead of failing a lock upgrade.
        let fresh = sqlx::query(
            "INSERT INTO nsi_versions (oid, version, name, published_at, last_update, archive, \
             rows_count, loaded, is_current, generation, loading_generation, loading_stamp, \
             synced_at) VALUES ($1, $2, $3, $4, '', $5, 0, 0, 0, 0, $6, $7, $8) \
             ON CONFLICT (oid, version) DO NOTHING",
        )
        .bind(oid.to_string())
        .bind(v.version.clone())
        .bind(name.to_string())
        .bind(v.published_at)
        .bind(i32::from(v.archive))
        .bind(generation)
        .bind(v.last_update.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if fresh {
            tx.commit().await?;
            return Ok(Load {
                generation,
                loaded: 0,
            });
        }
        let r = sqlx::query(
            "SELECT generation, loading_generation, loading_stamp FROM nsi_versions \
             WHERE oid = $1 AND version = $2",
        )
        .bind(oid.to_string())
        .bind(v.version.clone())
        .fetch_one(&mut *tx)
        .await?;
        let earlier = (
            r.try_get::<Option<i64>, _>("loading_generation")?,
            r.try_get::<Option<String>, _>("loading_stamp")?,
        );
        // Newer than any generation the version had, whatever the clock says.
        let generation = generation
            .max(r.try_get::<i64, _>("generation")? + 1)
            .max(earlier.0.map_or(0, |g| g + 1));
        if let (Some(g), Some(stamp)) = &earlier {
            if *stamp == v.last_update {
                let loaded: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(MAX(position) + 1, 0) FROM nsi_entries \
                     WHERE oid = $1 AND version = $2 AND generation = $3",
                )
                .bind(oid.to_string())
                .bind(v.version.clone())
                .bind(*g)
                .fetch_one(&mut *tx)
                .await?;
                let loaded = u64::try_from(loaded).unwrap_or(0);
                // Pages went in whole: a count that is not a multiple of the page is a
                // load of another page size, started over.
                if loaded % u64::from(page_size.max(1)) == 0 {
                    tx.commit().await?;
                    return Ok(Load {
                        generation: *g,
                        loaded,
                    });
                }
            }
        }
        if let (Some(g), _) = earlier {
            sqlx::query(
                "DELETE FROM nsi_entries WHERE oid = $1 AND version = $2 AND generation = $3",
            )
            .bind(oid.to_string())
            .bind(v.version.clone())
            .bind(g)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE nsi_versions SET loading_generation = $1, loading_stamp = $2, name = $3, \
             published_at = $4, archive = $5 WHERE oid = $6 AND version = $7",
        )
        .bind(generation)
        .bind(v.last_update.clone())
        .bind(name.to_string())
        .bind(v.published_at)
        .bind(i32::from(v.archive))
        .bind(oid.to_string())
        .bind(v.version.clone())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Load {
            generation,
            loaded: 0,
        })
    }

    /// Writes one page of rows of a load in one transaction, numbered from `first`
    /// (a code repeated within a version keeps its first row).
    pub async fn nsi_insert_entries(
        &self,
        oid: &str,
        version: &str,
        generation: i64,
        first: u64,
        entries: &[Entry],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let mut position = i64::try_from(first).unwrap_or(i64::MAX / 2);
        for chunk in super::power_of_two_chunks(entries, INSERT_ROWS) {
            let mut sql = String::from(
                "INSERT INTO nsi_entries (oid, version, generation, position, code, display, raw) VALUES ",
            );
            push_placeholders(&mut sql, chunk.len(), 7);
            sql.push_str(" ON CONFLICT (oid, version, generation, code) DO NOTHING");
            let mut q = sqlx::query(&sql);
            for e in chunk {
                q = q
                    .bind(oid.to_string())
                    .bind(version.to_string())
                    .bind(generation)
                    .bind(position)
                    .bind(e.code.clone())
                    .bind(e.display.clone())
                    .bind(e.raw.clone());
                position += 1;
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ends a load: in one transaction the version's rows become those of `generation`
    /// (`rows` of them, the publisher's stamp `stamp`) and the rows of every other
    /// generation go.
    pub async fn nsi_finish_load(
        &self,
        oid: &str,
        version: &str,
        generation: i64,
        stamp: &str,
        rows: u64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "UPDATE nsi_versions SET generation = $1, last_update = $2, rows_count = $3, loaded = 1, \
             loading_generation = NULL, loading_stamp = NULL, synced_at = $4 \
             WHERE oid = $5 AND version = $6",
        )
        .bind(generation)
        .bind(stamp.to_string())
        .bind(i64::try_from(rows).unwrap_or(i64::MAX))
        .bind(now)
        .bind(oid.to_string())
        .bind(version.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM nsi_entries WHERE oid = $1 AND version = $2 AND generation <> $3")
            .bind(oid.to_string())
            .bind(version.to_string())
            .bind(generation)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Updates how the publisher lists a kept version (archived since, republished).
    pub async fn nsi_update_listing(&self, oid: &str, v: &VersionInfo) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE nsi_versions SET archive = $1, published_at = $2 WHERE oid = $3 AND version = $4",
        )
        .bind(i32::from(v.archive))
        .bind(v.published_at)
        .bind(oid.to_string())
        .bind(v.version.clone())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Makes `version` the current version of `oid`, in one statement and only if it is
    /// fully loaded; false when it is not.
    pub async fn nsi_set_current(&self, oid: &str, version: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE nsi_versions SET is_current = CASE WHEN version = $1 THEN 1 ELSE 0 END \
             WHERE oid = $2 AND EXISTS (SELECT 1 FROM nsi_versions l \
             WHERE l.oid = $3 AND l.version = $4 AND l.loaded = 1)",
        )
        .bind(version.to_string())
        .bind(oid.to_string())
        .bind(oid.to_string())
        .bind(version.to_string())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// True when the fully loaded `version` of `oid` has `code` (one indexed lookup).
    pub async fn nsi_has_code(
        &self,
        oid: &str,
        version: &str,
        code: &str,
    ) -> Result<bool, StoreError> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM nsi_entries e JOIN nsi_versions v ON v.oid = e.oid \
             AND v.version = e.version AND v.generation = e.generation \
             WHERE e.oid = $1 AND e.version = $2 AND e.code = $3 AND v.loaded = 1",
        )
        .bind(oid.to_string())
        .bind(version.to_string())
        .bind(code.to_string())
        .fetch_optional(self.pool())
        .await?;
        Ok(found.is_some())
    }

    /// A page of the rows of the fully loaded `version` of `oid` in the publisher's order:
    /// those whose name contains `filter` (case-insensitive for Latin letters) or whose
    /// code starts with it; the count of all that match, and `limit` of them after
    /// `offset`.
    pub async fn nsi_entries(
        &self,
        oid: &str,
        version: &str,
        filter: Option<&str>,
        offset: u64,
        limit: u32,
    ) -> Result<(u64, Vec<Entry>), StoreError> {
        let generation: Option<i64> = sqlx::query_scalar(
            "SELECT generation FROM nsi_versions WHERE oid = $1 AND version = $2 AND loaded = 1",
        )
        .bind(oid.to_string())
        .bind(version.to_string())
        .fetch_optional(self.pool())
        .await?;
        let Some(generation) = generation else {
            return Ok((0, Vec::new()));
        };
        let (name_like, code_like) = match filter {
            Some(f) => {
                let f = like_literal(&f.to_lowercase());
                (format!("%{f}%"), format!("{f}%"))
            }
            None => ("%".to_string(), "%".to_string()),
        };
        let filtered = "e.oid = $1 AND e.version = $2 AND e.generation = $3 AND \
             (LOWER(e.display) LIKE $4 ESCAPE '\\' OR LOWER(e.code) LIKE $5 ESCAPE '\\')";
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM nsi_entries e WHERE {filtered}"
        ))
        .bind(oid.to_string())
        .bind(version.to_string())
        .bind(generation)
        .bind(name_like.clone())
        .bind(code_like.clone())
        .fetch_one(self.pool())
        .await?;
        let rows = sqlx::query(&format!(
            "SELECT e.code, e.display, e.raw FROM nsi_entries e WHERE {filtered} \
             ORDER BY e.position LIMIT $6 OFFSET $7"
        ))
        .bind(oid.to_string())
        .bind(version.to_string())
        .bind(generation)
        .bind(name_like)
        .bind(code_like)
        .bind(i64::from(limit))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        let entries = rows
            .iter()
            .map(|r| {
                Ok(Entry {
                    code: r.try_get("code")?,
                    display: r.try_get("display")?,
                    raw: r.try_get("raw")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((u64::try_from(total).unwrap_or(0), entries))
    }
}
