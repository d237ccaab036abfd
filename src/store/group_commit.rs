//! Group commit of document intakes on PostgreSQL.
//!
//! Every accepted document is written with its first history event and its registration
//! outbox item before the submitter hears `201`. Written one by one, each document pays
//! for a statement, a commit and a WAL flush; under load that, not the document itself,
//! is most of the database's work. The writer collects the intakes that arrive while the
//! previous statement runs and writes them in one statement and one commit, so a busy
//! gateway writes tens of documents per flush and an idle one still writes each at once.
//! Nothing is acknowledged before its commit, so durability is unchanged.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot, Mutex};

use super::documents::{Inserted, Intake};
use super::{Backend, Store, StoreError};
use crate::model::document::Document;

/// Most documents written by one statement.
const MAX_BATCH: usize = 64;
/// Statements in flight at once (each on its own connection).
const WRITERS: usize = 2;
/// Intakes waiting for a writer before submitters wait for room.
const QUEUE: usize = 1024;

struct Pending {
    doc: Document,
    registration: Intake,
    done: oneshot::Sender<(Document, Result<bool, StoreError>)>,
}

/// Writes intakes, batching concurrent ones on PostgreSQL. Cheap to clone; the writer
/// tasks start with the first intake and end when the last clone is dropped.
#[derive(Clone)]
pub struct IntakeWriter {
    store: Store,
    queue: Arc<OnceLock<mpsc::Sender<Pending>>>,
    /// The runtime the writers run on: the one that built the writer (the gateway's main
    /// runtime), not an HTTP worker's.
    runtime: Option<tokio::runtime::Handle>,
}

impl IntakeWriter {
    /// A writer over `store`; its tasks will run on the current runtime, if any.
    pub fn new(store: Store) -> IntakeWriter {
        IntakeWriter {
            store,
            queue: Arc::new(OnceLock::new()),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Stores `doc` and enqueues its registration atomically, like
    /// [`Store::insert_document`], and gives the document back with the outcome.
    pub async fn insert(
        &self,
        doc: Document,
        registration: Intake,
    ) -> Result<(Document, Inserted), StoreError> {
        if self.store.backend() == Backend::Sqlite {
            // A single writer anyway: nothing to group.
            let r = self.store.insert_document(&doc, &registration).await?;
            return Ok((doc, r));
        }
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..WRITERS {
                let task = writer(self.store.clone(), rx.clone());
                match &self.runtime {
                    Some(h) => drop(h.spawn(task)),
                    None => drop(tokio::spawn(task)),
                }
            }
            tx
        });
        let (done, answer) = oneshot::channel();
        let id = doc.id.clone();
        let pending = Pending {
            doc,
            registration,
            done,
        };
        if let Err(mpsc::error::SendError(p)) = queue.send(pending).await {
            // The writers are gone (shutting down): write directly.
            let r = self.store.insert_document(&p.doc, &p.registration).await?;
            return Ok((p.doc, r));
        }
        // A writer never drops an intake unanswered; if one panicked, the document was not
        // acknowledged and the submitter gets an error it can retry.
        let (doc, inserted) = answer.await.map_err(|_| StoreError::Corrupt {
            what: "documents",
            detail: "the intake writer stopped".into(),
        })?;
        let r = self.store.inserted_or_existing(&id, inserted?).await?;
        Ok((doc, r))
    }
}

async fn writer(store: Store, rx: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
        }
        // A statement inserts distinct UIDs; a repeated UID waits for the next one.
        while !batch.is_empty() {
            let mut seen = HashSet::new();
            let (now, later): (Vec<Pending>, Vec<Pending>) = batch
                .into_iter()
                .partition(|p| seen.insert(p.doc.id.clone()));
            write(&store, now).await;
            batch = later;
        }
    }
}

async fn write(store: &Store, group: Vec<Pending>) {
    let mut rows = Vec::with_capacity(group.len());
    let mut answers = Vec::with_capacity(group.len());
    for p in group {
        rows.push((p.doc, p.registration));
        answers.push(p.done);
    }
    match store.insert_documents(&rows).await {
        Ok(inserted) => {
            for ((row, done), ok) in rows.into_iter().zip(answers).zip(inserted) {
                let _ = done.send((row.0, Ok(ok)));
            }
        }
        Err(_) if rows.len() > 1 => {
            // One bad row must not fail the others: write each on its own.
            for (row, done) in rows.into_iter().zip(answers) {
                let r = store
                    .insert_documents(std::slice::from_ref(&row))
                    .await
                    .map(|v| v.first().copied().unwrap_or(false));
                let _ = done.send((row.0, r));
            }
        }
        Err(e) => {
            if let (Some(row), Some(done)) = (rows.into_iter().next(), answers.into_iter().next()) {
                let _ = done.send((row.0, Err(e)));
            }
        }
    }
}
