//! Where the scraper's batches go: the SQLite writer, the remote_write
//! queues, or both. Remote write takes its copy first, without waiting (a
//! slow receiver never slows scraping); the SQLite writer may apply
//! backpressure, as it always has.

use futures_util::future::BoxFuture;

use crate::record::Batch;
use crate::remote_write::RemoteWrite;
use crate::scrape::Sink;
use crate::store::WriterHandle;

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

impl Sink for Output {
    fn send(&self, batch: Batch) -> BoxFuture<'_, bool> {
        Box::pin(Output::send(self, batch))
    }
}

/// The SQLite writer alone is a sink too (tools and tests that scrape into a
/// database without remote_write).
impl Sink for WriterHandle {
    fn send(&self, batch: Batch) -> BoxFuture<'_, bool> {
        Box::pin(WriterHandle::send(self, batch))
    }
}
