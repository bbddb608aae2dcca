//! Clients that behave badly on purpose, and the measurements the hostile
//! tests judge the daemon by: sockets opened from inside a test namespace,
//! raw HTTP/1.1 exchanges with their latency, a process's CPU time, memory
//! and peak memory.
use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    process::Command,
    thread,
    time::{Duration, Instant},
};

/// Runs `f` on a thread that has joined network namespace `ns`: sockets it
/// creates live in that namespace (a namespace is per thread), whichever
/// thread uses them later.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    thread::spawn(move || {
        let file = fs::File::open(&path).unwrap_or_else(|err| panic!("open {path}: {err}"));
        // SAFETY: setns on an open namespace file descriptor; affects this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

/// Raises this process's soft open-file limit to its hard limit, so a test
/// can hold thousands of sockets.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// Opens up to `count` connections to `addr`, each first sending `greeting`
/// (empty: nothing at all), and keeps them. Connections refused or reset
/// are not retried.
pub fn open_connections(addr: SocketAddr, count: usize, greeting: &'static [u8]) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            if !greeting.is_empty() && stream.write_all(greeting).is_err() {
                continue;
            }
            streams.push(stream);
        }
    }
    streams
}

/// Whether the peer has closed (or reset) `stream`, judged without blocking
/// for more than a moment.
pub fn closed_by_peer(mut stream: &TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // A server may answer before closing (an HTTP/2 SETTINGS frame).
            Ok(_) => continue,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(err) if err.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// The HTTP/2 connection preface and an empty SETTINGS frame.
pub const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// The first half of the HTTP/2 preface.
pub const H2_PARTIAL_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Sends `count` requests on one HTTP/1.1 connection, one at a time, and
/// returns each round trip. Responses must have an empty body (redirects,
/// 404s), which is what the gateway answers today.
pub fn keep_alive_round_trips(
    stream: &mut TcpStream,
    host: &str,
    count: usize,
) -> std::io::Result<Vec<Duration>> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_nodelay(true)?;
    let request = format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        stream.write_all(request.as_bytes())?;
        read_head(stream)?;
        times.push(start.elapsed());
    }
    Ok(times)
}

/// One request on a new connection; the time from connect to the response head.
pub fn fresh_round_trip(addr: SocketAddr, host: &str) -> std::io::Result<Duration> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    keep_alive_round_trips(&mut stream, host, 1)?;
    Ok(start.elapsed())
}

/// Reads one response head (up to the blank line); returns its status line.
pub fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// The `q` quantile (0..=1) of `samples`.
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// How a bounded child process ended.
#[derive(Debug)]
pub struct Bounded {
    /// Exit code; `None` if killed by a signal (a crash, or the time limit).
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident memory.
    pub max_rss_kib: u64,
    /// User + system CPU time.
    pub cpu: Duration,
    pub wall: Duration,
}

/// Runs `cmd` with its address space capped at `memory_cap` bytes and a
/// kill after `time_cap`, and measures its peak memory and CPU time, so a
/// regression fails a test instead of taking the machine down.
pub fn run_bounded(cmd: &mut Command, memory_cap: u64, time_cap: Duration) -> Bounded {
    let scratch = Scratch::new();
    let (out_path, err_path) = (scratch.path.join("stdout"), scratch.path.join("stderr"));
    cmd.stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"));
    crate::daemon::limit_before_exec(cmd, libc::RLIMIT_AS, memory_cap);
    let start = Instant::now();
    // Reaped with wait4 below, which reports its resource usage; std's
    // `wait` cannot.
    #[allow(clippy::zombie_processes, reason = "reaped with wait4 below")]
    let child = cmd.spawn().expect("spawn bounded child");
    let pid = child.id() as libc::pid_t;
    let killer = thread::spawn(move || {
        let deadline = Instant::now() + time_cap;
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
            // SAFETY: signal 0 only checks the pid still exists (not yet reaped).
            if unsafe { libc::kill(pid, 0) } != 0 {
                return;
            }
        }
        // SAFETY: kill(2) on our own child's pid, which is reaped only below.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our child with valid out-pointers; std's Child is
    // never waited on, so the pid is reaped exactly once.
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    let _ = killer.join();
    let cpu = Duration::from_micros(
        (usage.ru_utime.tv_sec * 1_000_000
            + usage.ru_utime.tv_usec
            + usage.ru_stime.tv_sec * 1_000_000
            + usage.ru_stime.tv_usec) as u64,
    );
    let exited = libc::WIFEXITED(status);
    Bounded {
        code: exited.then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
        max_rss_kib: usage.ru_maxrss as u64,
        cpu,
        wall,
    }
}

/// A scratch directory under the system temp dir, removed on drop.
pub struct Scratch {
    pub path: std::path::PathBuf,
}

impl Scratch {
    /// Creates a fresh, empty directory.
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "gateway-hostile-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).expect("create scratch dir");
        Self { path }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
