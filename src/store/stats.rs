//! Daily statistics: computed for one day from the bookings, documents and referrals made
//! in it (bookings by organization, district and channel; documents and referrals by
//! status; the referrals' mean wait for an answer), stored whole per day, read back by day.

use sqlx::Row;

use super::{Store, StoreError};
use crate::model::Oid;

/// One figure of a day.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DailyStat {
    /// The day (`YYYY-MM-DD`, in the jobs' time zone).
    pub day: String,
    /// `bookings`, `documents`, `documents_dead`, `referrals`, `referral_wait_minutes`.
    pub metric: String,
    /// Organization OID, or empty.
    pub org: String,
    /// District, or empty.
    pub district: String,
    /// Booking channel, or empty.
    pub channel: String,
    /// Status, or empty.
    pub status: String,
    /// The figure.
    pub value: i64,
}

const GROUPS: &[(&str, &str)] = &[
    (
        "bookings",
        "SELECT a.org_oid AS org, COALESCE(o.district, '') AS district, a.channel AS channel, \
         '' AS status, COUNT(*) AS value FROM appointments a \
         LEFT JOIN organizations o ON o.oid = a.org_oid \
         WHERE a.created_at >= $1 AND a.created_at < $2 AND a.status <> 'held' \
         GROUP BY a.org_oid, o.district, a.channel",
    ),
    (
        "documents",
        "SELECT org_oid AS org, '' AS district, '' AS channel, status, COUNT(*) AS value \
         FROM documents WHERE created_at >= $1 AND created_at < $2 GROUP BY org_oid, status",
    ),
    // Dead letters as they stand, by organization and error class (who must fix them).
    (
        "documents_dead",
        "SELECT org_oid AS org, '' AS district, '' AS channel, \
         COALESCE(error_class, '') AS status, COUNT(*) AS value FROM documents \
         WHERE status = 'dead-lettered' AND updated_at < $2 AND $1 <= $2 \
         GROUP BY org_oid, error_class",
    ),
    (
        "referrals",
        "SELECT target_org AS org, '' AS district, '' AS channel, status, COUNT(*) AS value \
         FROM referrals WHERE created_at >= $1 AND created_at < $2 GROUP BY target_org, status",
    ),
    (
        "referral_wait_minutes",
        "SELECT r.target_org AS org, '' AS district, '' AS channel, '' AS status, \
         CAST(AVG(e.at - r.created_at) / 60000 AS BIGINT) AS value \
         FROM referrals r JOIN referral_events e ON e.referral_id = r.id \
         WHERE e.status IN ('accepted', 'rejected') AND e.at >= $1 AND e.at < $2 \
         GROUP BY r.target_org",
    ),
];

impl Store {
    /// Computes the figures of `day` (its bounds `from`..`to`, epoch ms) and stores them in
    /// place of the day's earlier ones; how many rows.
    pub async fn compute_daily_stats(
        &self,
        day: &str,
        from: i64,
        to: i64,
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM daily_stats WHERE day = $1")
            .bind(day.to_string())
            .execute(&mut *tx)
            .await?;
        let mut n = 0;
        for (metric, sql) in GROUPS {
            let rows = sqlx::query(sql)
                .bind(from)
                .bind(to)
                .fetch_all(&mut *tx)
                .await?;
            for r in rows {
                sqlx::query(
                    "INSERT INTO daily_stats (day, metric, org, district, channel, status, value, \
                     computed_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                )
                .bind(day.to_string())
                .bind(metric.to_string())
                .bind(r.try_get::<String, _>("org")?)
                .bind(r.try_get::<String, _>("district")?)
                .bind(r.try_get::<String, _>("channel")?)
                .bind(r.try_get::<String, _>("status")?)
                .bind(r.try_get::<i64, _>("value")?)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                n += 1;
            }
        }
        tx.commit().await?;
        Ok(n)
    }

    /// The figures of the days `from`..=`to` (`YYYY-MM-DD`), of `orgs` when given.
    pub async fn daily_stats(
        &self,
        from: &str,
        to: &str,
        metric: Option<&str>,
        orgs: Option<&[Oid]>,
    ) -> Result<Vec<DailyStat>, StoreError> {
        let rows = sqlx::query(
            "SELECT day, metric, org, district, channel, status, value FROM daily_stats \
             WHERE day >= $1 AND day <= $2 ORDER BY day, metric, org, district, channel, status",
        )
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let s = DailyStat {
                day: r.try_get("day")?,
                metric: r.try_get("metric")?,
                org: r.try_get("org")?,
                district: r.try_get("district")?,
                channel: r.try_get("channel")?,
                status: r.try_get("status")?,
                value: r.try_get("value")?,
            };
            if metric.is_some_and(|m| m != s.metric) {
                continue;
            }
            if orgs.is_some_and(|o| !o.iter().any(|x| x.as_str() == s.org)) {
                continue;
            }
            out.push(s);
        }
        Ok(out)
    }
}
