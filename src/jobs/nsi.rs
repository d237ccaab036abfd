//! The `nsi-sync` job: keeps every version of the configured reference books from the
//! Ministry's reference-book service, once a day by default (and whenever run by hand).

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Job, Tick};
use crate::services::nsi::ReferenceBooks;

/// Synchronizes the reference books.
pub struct NsiSync {
    books: ReferenceBooks,
}

impl NsiSync {
    /// The sync of `books`.
    pub fn new(books: ReferenceBooks) -> NsiSync {
        NsiSync { books }
    }
}

impl Job for NsiSync {
    fn name(&self) -> &str {
        "nsi-sync"
    }

    /// One pass over every book: the rows loaded are what it handled; a book that failed
    /// fails the run (the others were synchronized, its current version stands).
    fn step(&self) -> BoxFuture<'_, Result<Tick, String>> {
        Box::pin(async move {
            let report = self.books.sync_all().await;
            let rows = usize::try_from(report.rows()).unwrap_or(usize::MAX);
            if report.failed.is_empty() {
                return Ok(Tick::done(rows));
            }
            let failed: Vec<String> = report
                .failed
                .iter()
                .map(|(oid, why)| format!("{oid}: {why}"))
                .collect();
            Err(format!(
                "{} of {} books failed ({rows} rows loaded from the others): {}",
                report.failed.len(),
                report.failed.len() + report.books.len(),
                failed.join("; ")
            ))
        })
    }

    fn period(&self) -> Duration {
        Duration::from_secs(86_400)
    }

    fn cron(&self) -> Option<&str> {
        // At night, after the publisher's day is done.
        Some("0 30 3 * * *")
    }
}
