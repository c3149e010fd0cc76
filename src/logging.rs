//! Logging to stderr that can never stop the daemon.
//!
//! A formatted line is handed to a bounded queue and written by one thread
//! of its own. A reader that stops reading (a stuck log shipper) fills the
//! pipe: that thread blocks, the queue fills, and further lines are dropped
//! and counted (`fleetscrape_log_lines_dropped_total`) while scraping goes
//! on. A reader that goes away (`run … 2>&1 | head -2`) breaks the pipe: the
//! thread stops writing and counts what it discards, where `eprintln!` would
//! panic and a blocking write would stall a runtime worker.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use clap::ValueEnum;

use crate::self_metrics::{Collect, Encoder, Family};

/// Lines queued for the writer thread at most; about 256 KiB of typical lines.
const QUEUE_LINES: usize = 2048;

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines that could not be written (queue full or stderr gone) since start.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

static DROPPED_LINES: Family<0> = Family::counter(
    "fleetscrape_log_lines_dropped_total",
    "Log lines not written: stderr's reader was too slow (queue full) or gone (broken pipe).",
    [],
);

/// The logging queue's own metrics (it is process-wide).
#[derive(Debug, Clone, Copy)]
pub struct LogMetrics;

impl Collect for LogMetrics {
    fn collect(&self, encoder: &mut Encoder) {
        encoder.single(&DROPPED_LINES, dropped_lines() as f64);
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`), for log shippers.
    Json,
}

enum Message {
    Line(Vec<u8>),
    /// Answered once every line queued before it has been written or dropped.
    Flush(mpsc::Sender<()>),
}

/// The sending side of the log queue: a [`tracing_subscriber::fmt::MakeWriter`]
/// and the handle `main` uses to write its last line and flush at exit.
#[derive(Debug, Clone)]
pub struct LogPipe {
    queue: SyncSender<Message>,
}

impl LogPipe {
    /// Starts the writer thread over `sink` (stderr in the binaries).
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(sink: impl Write + Send + 'static) -> std::io::Result<Self> {
        let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
        std::thread::Builder::new().name("log-writer".into()).spawn(move || write_lines(lines, sink))?;
        Ok(Self { queue })
    }

    /// Queues `bytes` (one or more whole lines); never blocks.
    pub fn write_line(&self, bytes: Vec<u8>) {
        match self.queue.try_send(Message::Line(bytes)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits up to `limit` for the lines queued so far to be written; `false`
    /// when they were not (a full pipe nobody reads).
    pub fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let (done, written) = mpsc::channel();
        let mut message = Message::Flush(done);
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        written.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
    }
}

fn write_lines(lines: Receiver<Message>, mut sink: impl Write) {
    let mut broken = false;
    for message in lines {
        match message {
            Message::Line(bytes) if broken => {
                let _ = bytes;
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            Message::Line(bytes) => {
                // EPIPE or any other error: the reader is gone for good.
                if sink.write_all(&bytes).and_then(|()| sink.flush()).is_err() {
                    broken = true;
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            Message::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// One event's formatted text, queued as a whole when the formatter drops it.
#[derive(Debug)]
pub struct LineWriter {
    pipe: LogPipe,
    buffer: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            self.pipe.write_line(std::mem::take(&mut self.buffer));
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogPipe {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { pipe: self.clone(), buffer: Vec::with_capacity(256) }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// A sink that fails every write, as a pipe whose reader has gone.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A sink that blocks on its first write until released, as a full pipe.
    struct Stuck(Arc<Mutex<()>>);

    impl Write for Stuck {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _held = self.0.lock().unwrap();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order_and_flush_waits_for_them() {
        let sink = Shared::default();
        let pipe = LogPipe::spawn(sink.clone()).unwrap();
        for i in 0..100 {
            pipe.write_line(format!("line {i}\n").into_bytes());
        }
        assert!(pipe.flush(Duration::from_secs(10)));
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
    }

    #[test]
    fn a_broken_sink_drops_lines_without_failing_the_writer() {
        let before = dropped_lines();
        let pipe = LogPipe::spawn(Broken).unwrap();
        for _ in 0..10 {
            pipe.write_line(b"lost\n".to_vec());
        }
        assert!(pipe.flush(Duration::from_secs(10)), "the thread still answers after the pipe broke");
        assert!(dropped_lines() - before >= 10);
    }

    #[test]
    fn a_stuck_sink_never_blocks_the_caller_and_counts_what_it_drops() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let before = dropped_lines();
        let pipe = LogPipe::spawn(Stuck(Arc::clone(&gate))).unwrap();
        // More lines than the queue holds: each call returns at once.
        for _ in 0..QUEUE_LINES * 2 {
            pipe.write_line(b"x\n".to_vec());
        }
        assert!(dropped_lines() - before >= QUEUE_LINES as u64 - 1);
        assert!(!pipe.flush(Duration::from_millis(50)), "a flush gives up on a stuck sink");
        drop(held);
        assert!(pipe.flush(Duration::from_secs(10)), "and succeeds once it drains");
    }
}
