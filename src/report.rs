//! `fleetscrape report`: CPU per instance from a fleetscrape database, as a
//! table and as a PNG chart with the scale-out events marked.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;
use sqlx::Row;

/// Fonts tried for the chart's text, in order (Debian's fonts-dejavu-core first).
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Database {
        /// The database.
        path: std::path::PathBuf,
        /// The cause.
        source: sqlx::Error,
    },
    /// The path holds no fleetscrape database.
    #[error("{}", .0)]
    NotFleetscrape(String),
    /// The database has no CPU values yet.
    #[error("{} has no CPU values yet (cpu_utilization is empty): let fleetscrape run for a few intervals", .0.display())]
    Empty(std::path::PathBuf),
    /// No font for the chart's text.
    #[error("no font for the chart: install fonts-dejavu-core (looked for {})", FONTS.join(", "))]
    NoFont,
    /// Drawing or writing the PNG failed.
    #[error("{message}")]
    Draw {
        /// The PNG path.
        path: std::path::PathBuf,
        /// What failed.
        message: String,
    },
}

/// One instance's CPU series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Instance id.
    pub instance_id: String,
    /// `basic` or `asg`.
    pub role: String,
    /// (epoch seconds, CPU busy %).
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// The mean CPU busy %.
    pub fn mean(&self) -> f64 {
        self.points.iter().map(|p| p.1).sum::<f64>() / self.points.len().max(1) as f64
    }
}

/// What the database holds for the report.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuHistory {
    /// One series per instance, Basic first.
    pub series: Vec<Series>,
    /// Times instances joined after the start (scale-out), with their ids.
    pub joins: Vec<(f64, String)>,
}

/// Reads `cpu_utilization` and the `joined` events.
///
/// # Errors
/// [`Error::Database`], or [`Error::Empty`] when there is nothing to show.
pub async fn read(db: &Path) -> Result<CpuHistory, Error> {
    use crate::store::identify::{self, Contents};
    let fail = |source| Error::Database { path: db.to_path_buf(), source };
    match identify::identify(db).await {
        Ok(Contents::Fleetscrape) => {}
        Ok(Contents::Missing) => return Err(Error::NotFleetscrape(format!("database {}: not found", db.display()))),
        Ok(Contents::Empty) => {
            return Err(Error::NotFleetscrape(format!(
                "{} is empty: not a fleetscrape database (yet: fleetscrape run creates its schema)",
                db.display()
            )));
        }
        Ok(Contents::Foreign(tables)) => {
            return Err(Error::NotFleetscrape(format!(
                "{} is not a fleetscrape database (it has tables {})",
                db.display(),
                tables.join(", ")
            )));
        }
        Err(e) => return Err(Error::NotFleetscrape(e.to_string())),
    }
    // Read-only: a user who can read the database (and a live writer's
    // -wal and -shm) but not write its directory can run the report.
    let options = identify::read_only_options(db).busy_timeout(Duration::from_secs(5));
    let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options).await.map_err(fail)?;
    let rows = sqlx::query("SELECT time, instance_id, role, value FROM cpu_utilization ORDER BY instance_id, time")
        .fetch_all(&pool)
        .await
        .map_err(fail)?;
    let mut by_instance: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    for row in &rows {
        let key = (row.get::<String, _>("role"), row.get::<String, _>("instance_id"));
        by_instance.entry(key).or_default().push((row.get("time"), row.get("value")));
    }
    if by_instance.is_empty() {
        return Err(Error::Empty(db.to_path_buf()));
    }
    let joins = sqlx::query("SELECT time, instance_id FROM events WHERE kind = 'joined' ORDER BY time")
        .fetch_all(&pool)
        .await
        .map_err(fail)?
        .iter()
        .map(|r| (r.get("time"), r.get("instance_id")))
        .collect();
    pool.close().await;
    // Basic before asg ("basic" > "asg" alphabetically, so reverse the role order).
    let mut series: Vec<Series> =
        by_instance.into_iter().map(|((role, instance_id), points)| Series { instance_id, role, points }).collect();
    series.sort_by(|a, b| b.role.cmp(&a.role).then(a.instance_id.cmp(&b.instance_id)));
    Ok(CpuHistory { series, joins })
}

/// The per-instance table `report` prints.
pub fn table(history: &CpuHistory) -> String {
    let mut out = format!("{:<21} {:<6} {:>6} {:>9} {:>7}\n", "INSTANCE", "ROLE", "POINTS", "AVG CPU %", "LAST %");
    for s in &history.series {
        let last = s.points.last().map_or(f64::NAN, |p| p.1);
        out.push_str(&format!(
            "{:<21} {:<6} {:>6} {:>9.1} {:>7.1}\n",
            s.instance_id,
            s.role,
            s.points.len(),
            s.mean(),
            last
        ));
    }
    out
}

/// Joins after `start`, those within 10 s of each other merged: (time, count).
fn scale_outs(joins: &[(f64, String)], start: f64) -> Vec<(f64, usize)> {
    let mut merged: Vec<(f64, usize)> = Vec::new();
    for (time, _) in joins.iter().filter(|(t, _)| *t > start) {
        match merged.last_mut() {
            Some((first, count)) if *time - *first < 10.0 => *count += 1,
            _ => merged.push((*time, 1)),
        }
    }
    merged
}

fn load_font() -> Result<(), Error> {
    let bytes = FONTS.iter().find_map(|path| std::fs::read(path).ok()).ok_or(Error::NoFont)?;
    // The font lives as long as the process; plotters wants it 'static.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| Error::NoFont)
}

/// Draws CPU busy % per instance over time, scale-out joins marked, to `png`.
///
/// # Errors
/// [`Error::NoFont`] or [`Error::Draw`].
pub fn draw(history: &CpuHistory, png: &Path) -> Result<(), Error> {
    load_font()?;
    // The bitmap backend writes at the end and reports a failure as
    // `ImageError(IoError(…))`: find out first, in plain words.
    std::fs::File::create(png).map_err(|e| Error::Draw {
        path: png.to_path_buf(),
        message: format!("cannot write the chart to {}: {e}", png.display()),
    })?;
    let draw_error = |e: &dyn std::fmt::Display| Error::Draw {
        path: png.to_path_buf(),
        message: format!("cannot draw {}: {e}", png.display()),
    };
    let start = history.series.iter().flat_map(|s| s.points.first()).map(|p| p.0).fold(f64::MAX, f64::min);
    let end = history.series.iter().flat_map(|s| s.points.last()).map(|p| p.0).fold(f64::MIN, f64::max);
    let minutes = |t: f64| (t - start) / 60.0;
    let top = history.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(100.0, f64::max);

    let root = BitMapBackend::new(png, (1200, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("CPU busy % per instance (fleetscrape)", ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..minutes(end).max(0.5), 0.0..top)
        .map_err(|e| draw_error(&e))?;
    chart
        .configure_mesh()
        .x_desc("minutes since the first value")
        .y_desc("CPU busy %")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| draw_error(&e))?;
    for (i, s) in history.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let label = format!("{} ({})", s.instance_id, s.role);
        chart
            .draw_series(LineSeries::new(s.points.iter().map(|p| (minutes(p.0), p.1)), color.stroke_width(2)))
            .map_err(|e| draw_error(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
    }
    for (time, joined) in scale_outs(&history.joins, start) {
        let x = minutes(time);
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(x, 0.0), (x, top)], BLACK.mix(0.5).stroke_width(1))))
            .map_err(|e| draw_error(&e))?;
        let text =
            if joined == 1 { "scale-out: +1 member".to_string() } else { format!("scale-out: +{joined} members") };
        chart
            .draw_series(std::iter::once(Text::new(text, (x, top * 0.97), ("sans-serif", 15))))
            .map_err(|e| draw_error(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::MiddleRight)
        .draw()
        .map_err(|e| draw_error(&e))?;
    root.present().map_err(|e| draw_error(&e))
}
