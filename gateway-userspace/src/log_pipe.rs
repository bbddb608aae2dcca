//! Log output that never makes the data path wait.
//!
//! The access log (stdout) and the daemon's log (stderr) are often pipes
//! to a reader that can stall: a hung `logger`, a container runtime's log
//! pipe, `gateway run | sleep 600`. A `write` to a full pipe blocks, and a
//! worker blocked there serves nobody. So lines go into a bounded buffer
//! and a thread of each output's own writes them out; when the buffer is
//! full (the reader has stalled for a while), new lines are dropped and
//! counted instead of waiting. The daemon reports the count on stderr
//! once per interval and on `/stats`.
use std::{
    io::Write,
    sync::{
        Arc, Condvar, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Bytes waiting for a stalled reader before lines are dropped: a few
/// seconds of a busy access log, and still a bounded amount of memory.
pub const CAPACITY: usize = 4 * 1024 * 1024;

/// One output: a bounded buffer and the thread that empties it.
#[derive(Clone)]
pub struct LogPipe {
    inner: Arc<Inner>,
}

struct Inner {
    capacity: usize,
    state: Mutex<State>,
    /// The writer waits here for lines.
    filled: Condvar,
    /// [`LogPipe::flush`] waits here for the writer to catch up.
    emptied: Condvar,
    dropped_lines: AtomicU64,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// The writer holds a batch it has not finished writing.
    writing: bool,
}

impl std::fmt::Debug for LogPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogPipe")
            .field("dropped_lines", &self.dropped_lines())
            .finish_non_exhaustive()
    }
}

impl LogPipe {
    /// A pipe to `out`, emptied by a thread named `name` (which may block
    /// in `write` for as long as the reader stalls: nothing waits for it).
    pub fn spawn(name: &str, out: Box<dyn Write + Send>, capacity: usize) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            capacity,
            state: Mutex::new(State::default()),
            filled: Condvar::new(),
            emptied: Condvar::new(),
            dropped_lines: AtomicU64::new(0),
        });
        let writer = Arc::clone(&inner);
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || writer.write_forever(out))?;
        Ok(Self { inner })
    }

    /// Queues `bytes` (whole lines) without waiting; drops and counts
    /// them if the buffer cannot take them all. Returns whether they were queued.
    pub fn push(&self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        let Ok(mut state) = self.inner.state.lock() else {
            return false;
        };
        if state.pending.len() + bytes.len() > self.inner.capacity {
            drop(state);
            self.inner.count_dropped(bytes);
            return false;
        }
        state.pending.extend_from_slice(bytes);
        drop(state);
        self.inner.filled.notify_one();
        true
    }

    /// Lines dropped so far because the reader stalled (or went away).
    pub fn dropped_lines(&self) -> u64 {
        self.inner.dropped_lines.load(Ordering::Relaxed)
    }

    /// Waits until everything queued has been written, for at most
    /// `timeout`; returns whether it was. Shutdown calls it so that the
    /// last lines go out when the reader is there, and exits anyway when
    /// it is not.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Ok(mut state) = self.inner.state.lock() else {
            return false;
        };
        while !state.pending.is_empty() || state.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = match self.inner.emptied.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(_) => return false,
            };
        }
        true
    }
}

impl Inner {
    fn count_dropped(&self, bytes: &[u8]) {
        let lines = bytes.iter().filter(|b| **b == b'\n').count().max(1);
        self.dropped_lines
            .fetch_add(lines as u64, Ordering::Relaxed);
    }

    /// The writer thread: takes the whole buffer, writes it, again.
    fn write_forever(&self, mut out: Box<dyn Write + Send>) {
        let mut batch = Vec::new();
        loop {
            {
                let Ok(mut state) = self.state.lock() else {
                    return;
                };
                state.writing = false;
                self.emptied.notify_all();
                while state.pending.is_empty() {
                    state = match self.filled.wait(state) {
                        Ok(state) => state,
                        Err(_) => return,
                    };
                }
                std::mem::swap(&mut state.pending, &mut batch);
                state.writing = true;
            }
            // A reader that went away (EPIPE) loses these lines: count them.
            if out.write_all(&batch).and_then(|()| out.flush()).is_err() {
                self.count_dropped(&batch);
            }
            batch.clear();
            if batch.capacity() > self.capacity {
                batch.shrink_to(self.capacity);
            }
        }
    }
}

static STDOUT: OnceLock<Option<LogPipe>> = OnceLock::new();
static STDERR: OnceLock<Option<LogPipe>> = OnceLock::new();

/// The process's stdout (the access log), started on first use.
pub fn stdout() -> Option<&'static LogPipe> {
    STDOUT
        .get_or_init(|| LogPipe::spawn("log-stdout", Box::new(std::io::stdout()), CAPACITY).ok())
        .as_ref()
}

/// The process's stderr (the daemon's log), started on first use.
pub fn stderr() -> Option<&'static LogPipe> {
    STDERR
        .get_or_init(|| LogPipe::spawn("log-stderr", Box::new(std::io::stderr()), CAPACITY).ok())
        .as_ref()
}

/// Writes to the stderr pipe, for the logger (`env_logger`'s pipe target).
#[derive(Debug, Default)]
pub struct StderrWriter;

impl Write for StderrWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match stderr() {
            Some(pipe) => {
                pipe.push(buf);
            }
            None => {
                std::io::stderr().write_all(buf)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Drops counted since the last report, per output: what the daemon logs
/// once per interval.
#[derive(Debug, Default)]
pub struct DropReport {
    reported: [u64; 2],
}

impl DropReport {
    /// The lines each of (stdout, stderr) dropped since the last call,
    /// given their totals now.
    pub fn since_last(&mut self, totals: [u64; 2]) -> [u64; 2] {
        let new = [
            totals[0].saturating_sub(self.reported[0]),
            totals[1].saturating_sub(self.reported[1]),
        ];
        self.reported = totals;
        new
    }
}

/// The (stdout, stderr) drop totals of the process's pipes.
pub fn dropped_totals() -> [u64; 2] {
    let count = |pipe: Option<&LogPipe>| pipe.map_or(0, LogPipe::dropped_lines);
    [
        count(STDOUT.get().and_then(Option::as_ref)),
        count(STDERR.get().and_then(Option::as_ref)),
    ]
}

/// Flushes both pipes, sharing `timeout` between them.
pub fn flush_all(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for pipe in [STDOUT.get(), STDERR.get()].into_iter().flatten().flatten() {
        pipe.flush(deadline.saturating_duration_since(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that blocks until the test opens its gate, then records.
    #[derive(Clone, Default)]
    struct Gated {
        open: Arc<(Mutex<bool>, Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Gated {
        fn open(&self) {
            let (lock, cvar) = &*self.open;
            *lock.lock().unwrap() = true;
            cvar.notify_all();
        }

        fn written(&self) -> Vec<u8> {
            self.written.lock().unwrap().clone()
        }
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cvar) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cvar.wait(open).unwrap();
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_reader_never_blocks_the_writer_of_a_line_and_excess_lines_are_counted() {
        let out = Gated::default();
        let pipe = LogPipe::spawn("test-log", Box::new(out.clone()), 100).unwrap();
        // The first line goes to the writer thread, which blocks in write.
        assert!(pipe.push(b"first\n"));
        assert!(
            !pipe.flush(Duration::from_millis(50)),
            "the reader is stalled"
        );
        let started = Instant::now();
        // 90 bytes fit beside nothing queued; the rest is dropped at once.
        let line = b"123456789\n";
        let queued = (0..50).filter(|_| pipe.push(line)).count();
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!((9..=10).contains(&queued), "{queued} queued");
        assert_eq!(pipe.dropped_lines(), 50 - queued as u64);
        // Several lines pushed at once are counted as lines.
        assert!(!pipe.push(&line.repeat(20)));
        assert_eq!(pipe.dropped_lines(), 70 - queued as u64);
        // The reader comes back: everything queued arrives, in order.
        out.open();
        assert!(pipe.flush(Duration::from_secs(5)));
        let mut want = b"first\n".to_vec();
        want.extend(line.repeat(queued));
        assert_eq!(out.written(), want);
        // And new lines are taken again.
        assert!(pipe.push(b"again\n"));
        assert!(pipe.flush(Duration::from_secs(5)));
        assert!(out.written().ends_with(b"again\n"));
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_a_gone_reader_could_not_take_are_counted() {
        let pipe = LogPipe::spawn("test-log", Box::new(Broken), 100).unwrap();
        assert!(pipe.push(b"a\nb\n"));
        assert!(pipe.flush(Duration::from_secs(5)));
        assert_eq!(pipe.dropped_lines(), 2);
    }

    #[test]
    fn the_report_gives_what_was_dropped_since_the_last_one() {
        let mut report = DropReport::default();
        assert_eq!(report.since_last([0, 0]), [0, 0]);
        assert_eq!(report.since_last([5, 1]), [5, 1]);
        assert_eq!(report.since_last([5, 1]), [0, 0]);
        assert_eq!(report.since_last([12, 1]), [7, 0]);
    }
}
