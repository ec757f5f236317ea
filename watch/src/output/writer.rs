//! One writer thread per sink, fed through a bounded queue, so a slow or stuck sink (a full
//! pipe nobody reads, a terminal paused with ^S, a disk that stalls) can never make the
//! receive loop wait.
//!
//! The loop hands each line over with `try_send`: it never blocks. A line that finds the queue
//! full is dropped and counted ([`SinkStats::dropped`], `varta_output_dropped_total{sink}`).
//! A line accepted into the queue is written: the writer drains the queue, flushes whenever
//! it finds it empty, and at shutdown ([`Sink::close`]) the loop closes the queue and waits
//! for the writer to write everything and sync. A sink that stays stuck through the whole
//! shutdown wait is left behind, and how many accepted lines it had not written is reported
//! on stderr.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Lines queued per sink at most.
pub const QUEUE_LINES: usize = 65_536;

/// How long shutdown waits for a writer to finish its queue.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Where a writer thread puts its lines.
pub trait LineSink: Send + 'static {
    /// Writes one line (without its newline).
    ///
    /// # Errors
    /// The write error.
    fn write_line(&mut self, line: &str) -> io::Result<()>;
    /// Flushes buffered lines (the queue is empty).
    ///
    /// # Errors
    /// The write error.
    fn flush(&mut self) -> io::Result<()>;
    /// Flushes and makes durable what the sink can (at shutdown).
    ///
    /// # Errors
    /// The write or sync error.
    fn close(&mut self) -> io::Result<()> {
        self.flush()
    }
}

/// A sink's counters, shared between the loop and the writer.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Lines accepted into the queue.
    pub queued: AtomicU64,
    /// Lines written.
    pub written: AtomicU64,
    /// Lines dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Failed writes, flushes and syncs.
    pub errors: AtomicU64,
    reported: AtomicBool,
}

impl SinkStats {
    fn error(&self, name: &str, e: &io::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if !self.reported.swap(true, Ordering::Relaxed) {
            eprintln!("varta-watch: cannot write {name}: {e} (further errors only counted)");
        }
    }
}

/// The loop's end of one sink.
#[derive(Debug)]
pub struct Sink {
    name: &'static str,
    tx: Option<SyncSender<String>>,
    done: Option<Receiver<()>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<SinkStats>,
}

impl Sink {
    /// Starts the writer thread of `sink`, named `name` (the metric label), with a queue of
    /// `cap` lines.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn spawn<S: LineSink>(name: &'static str, sink: S, cap: usize) -> io::Result<Sink> {
        let (tx, rx) = mpsc::sync_channel::<String>(cap.max(1));
        let (done_tx, done) = mpsc::channel();
        let stats = Arc::new(SinkStats::default());
        let st = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name(format!("varta-out-{name}"))
            .spawn(move || {
                write_all(name, sink, &rx, &st);
                let _ = done_tx.send(());
            })?;
        Ok(Sink {
            name,
            tx: Some(tx),
            done: Some(done),
            thread: Some(thread),
            stats,
        })
    }

    /// Hands `line` to the writer without waiting; a full queue drops it (counted).
    pub fn send(&self, line: String) {
        let Some(tx) = &self.tx else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match tx.try_send(line) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The metric label.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &SinkStats {
        &self.stats
    }

    /// Closes the queue and waits (at most `wait`) for the writer to write what it holds and
    /// sync. Returns whether it finished.
    pub fn close(&mut self, wait: Duration) -> bool {
        drop(self.tx.take());
        let Some(done) = self.done.take() else {
            return true;
        };
        match done.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => {
                let left = self
                    .stats
                    .queued
                    .load(Ordering::Relaxed)
                    .saturating_sub(self.stats.written.load(Ordering::Relaxed));
                eprintln!(
                    "varta-watch: {} is still blocked after {:?}; {left} queued line(s) not written",
                    self.name, wait
                );
                false
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.close(CLOSE_WAIT);
    }
}

fn write_all<S: LineSink>(name: &str, mut sink: S, rx: &Receiver<String>, st: &SinkStats) {
    loop {
        let line = match rx.try_recv() {
            Ok(l) => l,
            Err(TryRecvError::Empty) => {
                if let Err(e) = sink.flush() {
                    st.error(name, &e);
                }
                match rx.recv() {
                    Ok(l) => l,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        if let Err(e) = sink.write_line(&line) {
            st.error(name, &e);
        }
        st.written.fetch_add(1, Ordering::Relaxed);
    }
    if let Err(e) = sink.close() {
        st.error(name, &e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A sink that blocks until released, then records.
    struct Gate {
        open: Arc<Mutex<bool>>,
        out: Arc<Mutex<Vec<String>>>,
    }

    impl LineSink for Gate {
        fn write_line(&mut self, line: &str) -> io::Result<()> {
            while !*self.open.lock().unwrap() {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.out.lock().unwrap().push(line.to_string());
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_sink_drops_beyond_its_queue_and_loses_nothing_accepted() {
        let open = Arc::new(Mutex::new(false));
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut s = Sink::spawn(
            "test",
            Gate {
                open: Arc::clone(&open),
                out: Arc::clone(&out),
            },
            4,
        )
        .unwrap();
        for i in 0..100 {
            s.send(format!("{i}"));
        }
        let queued = s.stats().queued.load(Ordering::Relaxed);
        let dropped = s.stats().dropped.load(Ordering::Relaxed);
        assert_eq!(queued + dropped, 100);
        assert!(dropped >= 100 - 5, "queue of 4 (+1 in hand): {dropped}");
        *open.lock().unwrap() = true;
        assert!(s.close(Duration::from_secs(10)));
        let got = out.lock().unwrap().clone();
        assert_eq!(got.len() as u64, queued);
        assert_eq!(got[0], "0");
    }

    #[test]
    fn close_gives_up_on_a_sink_that_never_returns() {
        let open = Arc::new(Mutex::new(false));
        let mut s = Sink::spawn(
            "stuck",
            Gate {
                open: Arc::clone(&open),
                out: Arc::new(Mutex::new(Vec::new())),
            },
            4,
        )
        .unwrap();
        s.send("x".into());
        assert!(!s.close(Duration::from_millis(50)));
        *open.lock().unwrap() = true;
    }
}
