//! Where the scraper's batches go: the SQLite writer, the remote_write
//! queues, or both. Remote write takes its copy first, without waiting (a
//! slow receiver never slows scraping); the SQLite writer may apply
//! backpressure, as it always has.

use crate::remote_write::RemoteWrite;
use crate::store::{Batch, WriterHandle};

/// The outputs of one daemon.
#[derive(Debug, Clone, Default)]
pub struct Output {
    store: Option<WriterHandle>,
    remote: Option<RemoteWrite>,
}

impl Output {
    /// SQLite (`None`: `storage.path: null`) and remote_write (`None`: no receiver).
    pub fn new(store: Option<WriterHandle>, remote: Option<RemoteWrite>) -> Self {
        Self { store, remote: remote.filter(|r| !r.is_empty()) }
    }

    /// Hands a batch to every output; `false` when the SQLite writer has stopped.
    pub async fn send(&self, batch: Batch) -> bool {
        if let Some(remote) = &self.remote {
            remote.ingest(&batch);
        }
        match &self.store {
            Some(store) => store.send(batch).await,
            None => true,
        }
    }
}

impl From<WriterHandle> for Output {
    fn from(store: WriterHandle) -> Self {
        Self { store: Some(store), remote: None }
    }
}
