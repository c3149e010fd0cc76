//! In-memory ids for metric names and series, loaded once at start. Lookups
//! borrow (`&str`), so a known series costs neither an allocation nor a query.
//! The store is the only writer, so the cache cannot go stale.

use std::collections::HashMap;

use sqlx::{Row, SqliteConnection, SqlitePool};

use super::Error;

/// An entry created since a checkpoint, to undo if its transaction fails.
#[derive(Debug)]
enum Created {
    Metric(String),
    Series { instance_id: String, metric_id: i64, labels: String },
}

#[derive(Debug, Default)]
pub(super) struct Interner {
    /// name → (id, type)
    metrics: HashMap<String, (i64, String)>,
    /// instance → metric id → labels → series id
    series: HashMap<String, HashMap<i64, HashMap<String, i64>>>,
    log: Vec<Created>,
}

impl Interner {
    pub(super) async fn load(pool: &SqlitePool) -> Result<Self, Error> {
        let mut interner = Self::default();
        for row in sqlx::query("SELECT metric_id, name, type FROM metrics").fetch_all(pool).await? {
            interner.metrics.insert(row.try_get("name")?, (row.try_get("metric_id")?, row.try_get("type")?));
        }
        for row in sqlx::query("SELECT series_id, metric_id, instance_id, labels FROM series").fetch_all(pool).await? {
            let instance: String = row.try_get("instance_id")?;
            let by_metric = interner.series.entry(instance).or_default();
            by_metric
                .entry(row.try_get("metric_id")?)
                .or_default()
                .insert(row.try_get("labels")?, row.try_get("series_id")?);
        }
        Ok(interner)
    }

    pub(super) fn checkpoint(&mut self) -> usize {
        self.log.clear();
        0
    }

    pub(super) fn rollback(&mut self, checkpoint: usize) {
        for created in self.log.drain(checkpoint..).rev() {
            match created {
                Created::Metric(name) => {
                    self.metrics.remove(&name);
                }
                Created::Series { instance_id, metric_id, labels } => {
                    if let Some(by_labels) = self.series.get_mut(&instance_id).and_then(|m| m.get_mut(&metric_id)) {
                        by_labels.remove(&labels);
                    }
                }
            }
        }
    }

    /// The id of a metric name, created if new; a known `untyped` metric
    /// takes the first real type it is given.
    pub(super) async fn metric_id(&mut self, tx: &mut SqliteConnection, name: &str, kind: &str) -> Result<i64, Error> {
        if let Some((id, known)) = self.metrics.get_mut(name) {
            if known == "untyped" && kind != "untyped" {
                sqlx::query("UPDATE metrics SET type = ? WHERE metric_id = ?")
                    .bind(kind)
                    .bind(*id)
                    .execute(&mut *tx)
                    .await?;
                *known = kind.to_string();
            }
            return Ok(*id);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO metrics (name, type) VALUES (?, ?)
             ON CONFLICT (name) DO UPDATE SET type = excluded.type RETURNING metric_id",
        )
        .bind(name)
        .bind(kind)
        .fetch_one(&mut *tx)
        .await?;
        self.metrics.insert(name.to_string(), (id, kind.to_string()));
        self.log.push(Created::Metric(name.to_string()));
        Ok(id)
    }

    /// The id of a series, and whether it was created now.
    pub(super) async fn series_id(
        &mut self,
        tx: &mut SqliteConnection,
        metric_id: i64,
        instance_id: &str,
        labels: &str,
    ) -> Result<(i64, bool), Error> {
        if let Some(id) = self.series.get(instance_id).and_then(|m| m.get(&metric_id)).and_then(|l| l.get(labels)) {
            return Ok((*id, false));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO series (metric_id, instance_id, labels) VALUES (?, ?, ?)
             ON CONFLICT (metric_id, instance_id, labels) DO UPDATE SET labels = excluded.labels RETURNING series_id",
        )
        .bind(metric_id)
        .bind(instance_id)
        .bind(labels)
        .fetch_one(&mut *tx)
        .await?;
        let by_metric = self.series.entry(instance_id.to_string()).or_default();
        by_metric.entry(metric_id).or_default().insert(labels.to_string(), id);
        self.log.push(Created::Series { instance_id: instance_id.to_string(), metric_id, labels: labels.to_string() });
        Ok((id, true))
    }
}
