//! In-memory ids for metric names (all, loaded at start) and series (of the
//! instances being written, each loaded at its first scrape and forgotten when
//! it leaves). Lookups borrow (`&str`), so a known series costs neither an
//! allocation nor a query. The store is the only writer, so the cache cannot
//! go stale; with ASG churn it holds the live fleet, not every instance ever seen.

use crate::labels::FastMap;

use sqlx::{Row, SqliteConnection, SqlitePool};

use super::Error;

/// An entry created since a checkpoint, to undo if its transaction fails.
#[derive(Debug)]
enum Created {
    Metric(String),
    /// A metric known as `untyped` got its real type.
    Typed(String),
    Series(String),
    /// Slots given to an instance's v2 series on load.
    Slots(String),
}

/// One instance's series: metric id → labels → (series id, slot), and the
/// next slot to hand out (a series' index in the scrape log's arrays).
#[derive(Debug, Default)]
struct InstanceSeries {
    by_metric: FastMap<i64, FastMap<String, (i64, u32)>>,
    next_slot: u32,
}

#[derive(Debug, Default)]
pub(super) struct Interner {
    /// name → (id, type)
    metrics: FastMap<String, (i64, String)>,
    /// instance → its series
    series: FastMap<String, InstanceSeries>,
    log: Vec<Created>,
    /// The next series id to hand out: the store is the only writer, so ids
    /// are assigned here and new series inserted in multi-row statements.
    next_series_id: i64,
    /// Series created since the checkpoint, not yet inserted: (id, metric
    /// id, instance, labels, slot).
    pending: Vec<(i64, i64, String, String, u32)>,
    checkpoint_series_id: i64,
}

impl Interner {
    pub(super) async fn load(pool: &SqlitePool) -> Result<Self, Error> {
        let mut interner = Self::default();
        for row in sqlx::query("SELECT metric_id, name, type FROM metrics").fetch_all(pool).await? {
            interner.metrics.insert(row.try_get("name")?, (row.try_get("metric_id")?, row.try_get("type")?));
        }
        interner.next_series_id = sqlx::query_scalar::<_, Option<i64>>("SELECT max(series_id) FROM series")
            .fetch_one(pool)
            .await?
            .unwrap_or(0)
            + 1;
        Ok(interner)
    }

    /// Loads the series of `instance_id` unless they are loaded: once per
    /// instance until it is forgotten. Series of a v2 database have no slot
    /// yet: they get the next ones, written in `tx`.
    pub(super) async fn load_instance(&mut self, tx: &mut SqliteConnection, instance_id: &str) -> Result<(), Error> {
        if self.series.contains_key(instance_id) {
            return Ok(());
        }
        let mut loaded = InstanceSeries::default();
        let mut unslotted = Vec::new();
        for row in sqlx::query(
            "SELECT series_id, metric_id, labels, slot FROM series WHERE instance_id = ? ORDER BY series_id",
        )
        .bind(instance_id)
        .fetch_all(&mut *tx)
        .await?
        {
            let series_id: i64 = row.try_get("series_id")?;
            let slot: Option<i64> = row.try_get("slot")?;
            let slot = match slot.and_then(|s| u32::try_from(s).ok()) {
                Some(slot) => slot,
                None => {
                    unslotted.push(series_id);
                    u32::MAX
                }
            };
            loaded.next_slot = loaded.next_slot.max(slot.wrapping_add(1));
            loaded
                .by_metric
                .entry(row.try_get("metric_id")?)
                .or_default()
                .insert(row.try_get("labels")?, (series_id, slot));
        }
        if !unslotted.is_empty() {
            for (series_id, slot) in loaded.by_metric.values_mut().flat_map(|l| l.values_mut()) {
                if *slot == u32::MAX {
                    *slot = loaded.next_slot;
                    loaded.next_slot += 1;
                    sqlx::query("UPDATE series SET slot = ? WHERE series_id = ?")
                        .bind(i64::from(*slot))
                        .bind(*series_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            self.log.push(Created::Slots(instance_id.to_string()));
        }
        self.series.insert(instance_id.to_string(), loaded);
        Ok(())
    }

    /// Instances whose series are held in memory.
    pub(super) fn loaded_instances(&self) -> usize {
        self.series.len()
    }

    /// Starts a transaction: what is created from now on can be undone.
    pub(super) fn begin(&mut self) {
        self.log.clear();
        self.pending.clear();
        self.checkpoint_series_id = self.next_series_id;
    }

    /// Forgets what was created since [`Interner::begin`]: its transaction failed.
    pub(super) fn rollback(&mut self) {
        self.pending.clear();
        self.next_series_id = self.checkpoint_series_id;
        for created in self.log.drain(..).rev() {
            match created {
                Created::Metric(name) => {
                    self.metrics.remove(&name);
                }
                Created::Typed(name) => {
                    if let Some((_, kind)) = self.metrics.get_mut(&name) {
                        *kind = "untyped".to_string();
                    }
                }
                // The instance is loaded again from the database: its slots
                // and series are then what the transaction left.
                Created::Series(instance_id) | Created::Slots(instance_id) => {
                    self.series.remove(&instance_id);
                }
            }
        }
    }

    /// The id of a metric name, created if new; a known `untyped` metric
    /// takes the first real type it is given. Also whether it is a counter.
    pub(super) async fn metric_id(
        &mut self,
        tx: &mut SqliteConnection,
        name: &str,
        kind: &str,
    ) -> Result<(i64, bool), Error> {
        if let Some((id, known)) = self.metrics.get_mut(name) {
            if known == "untyped" && kind != "untyped" {
                sqlx::query("UPDATE metrics SET type = ? WHERE metric_id = ?")
                    .bind(kind)
                    .bind(*id)
                    .execute(&mut *tx)
                    .await?;
                *known = kind.to_string();
                self.log.push(Created::Typed(name.to_string()));
            }
            return Ok((*id, known == "counter"));
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
        Ok((id, kind == "counter"))
    }

    /// The id and slot of a series, and whether it is new. A new series is
    /// queued; [`Interner::insert_pending`] writes the queue.
    pub(super) fn series_id(&mut self, metric_id: i64, instance_id: &str, labels: &str) -> (i64, u32, bool) {
        if let Some((id, slot)) =
            self.series.get(instance_id).and_then(|s| s.by_metric.get(&metric_id)).and_then(|l| l.get(labels))
        {
            return (*id, *slot, false);
        }
        let id = self.next_series_id;
        self.next_series_id += 1;
        let loaded = self.series.entry(instance_id.to_string()).or_default();
        let slot = loaded.next_slot;
        loaded.next_slot += 1;
        loaded.by_metric.entry(metric_id).or_default().insert(labels.to_string(), (id, slot));
        self.pending.push((id, metric_id, instance_id.to_string(), labels.to_string(), slot));
        self.log.push(Created::Series(instance_id.to_string()));
        (id, slot, true)
    }

    /// Forgets the series of an instance (it left, or its rows were deleted);
    /// a later scrape of it loads them again.
    pub(super) fn forget_instance(&mut self, instance_id: &str) {
        self.series.remove(instance_id);
    }

    /// Inserts the series queued since the checkpoint.
    pub(super) async fn insert_pending(&mut self, tx: &mut SqliteConnection) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = &self.pending;
        super::raw::with_handle(tx, |db| {
            let mut insert = db.prepare(
                "INSERT INTO series (series_id, metric_id, instance_id, labels, slot) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (id, metric_id, instance_id, labels, slot) in pending {
                insert.execute(rusqlite::params![id, metric_id, instance_id, labels, slot])?;
            }
            Ok(())
        })
        .await?;
        self.pending.clear();
        Ok(())
    }
}
