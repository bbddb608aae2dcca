//! A `gateway run` process inside a test namespace: started, waited for
//! until ready, stopped with SIGTERM (SIGKILL if it hangs) on drop.
use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::netns::{GATEWAY_V4, GATEWAY_V6, Topology};

/// Where the daemon's admin endpoint listens inside its namespace.
pub const ADMIN: &str = "127.0.0.1:15000";

/// The `gateway` binary under test: `GATEWAY_BIN` (set by `cargo xtask test`)
/// or the workspace's debug build.
pub fn gateway_bin() -> PathBuf {
    match std::env::var_os("GATEWAY_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/gateway"),
    }
}

/// Where a daemon's stdout (its access log) or stderr (its log) goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The file [`Daemon::log`] reads.
    LogFile,
    /// A pipe the test holds open and never reads: a stalled log reader.
    UnreadPipe,
}

/// A running daemon.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `gateway run <args>` in the topology's gateway namespace and
    /// waits until its admin endpoint answers. Panics with the daemon's log
    /// if it exits or is not ready within 20 seconds.
    pub fn start(topology: &Topology, args: &[&str]) -> Self {
        Self::start_with_open_files(topology, args, None)
    }

    /// As [`Daemon::start`], with the open-file limit (soft and hard) set to
    /// `open_files` first, when given.
    pub fn start_with_open_files(
        topology: &Topology,
        args: &[&str],
        open_files: Option<u64>,
    ) -> Self {
        Self::spawn(
            topology,
            args,
            open_files,
            &[],
            (Output::LogFile, Output::LogFile),
        )
    }

    /// As [`Daemon::start`], with stdout and stderr sent where given.
    /// and `env` added to its environment.
    pub fn start_with_outputs(
        topology: &Topology,
        args: &[&str],
        env: &[(&str, &str)],
        stdout: Output,
        stderr: Output,
    ) -> Self {
        Self::spawn(topology, args, None, env, (stdout, stderr))
    }

    fn spawn(
        topology: &Topology,
        args: &[&str],
        open_files: Option<u64>,
        env: &[(&str, &str)],
        (stdout, stderr): (Output, Output),
    ) -> Self {
        let log = std::env::temp_dir().join(format!("{}-gateway.log", topology.gateway_ns));
        let log_file = fs::File::create(&log).expect("create daemon log");
        let stdio = |output: Output| match output {
            Output::LogFile => Stdio::from(log_file.try_clone().expect("clone log handle")),
            Output::UnreadPipe => Stdio::piped(),
        };
        let mut command = topology.exec(&topology.gateway_ns, &[]);
        if let Some(limit) = open_files {
            limit_before_exec(&mut command, libc::RLIMIT_NOFILE, limit);
        }
        let child = command
            .arg(gateway_bin())
            .arg("run")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdio(stdout))
            .stderr(stdio(stderr))
            .spawn()
            .expect("spawn gateway");
        let mut daemon = Self {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = daemon.try_wait() {
                panic!("gateway exited early with {status}:\n{}", daemon.log());
            }
            let ready = topology.gateway(&[
                "curl",
                "-sf",
                "--max-time",
                "1",
                &format!("http://{ADMIN}/ready"),
            ]);
            if ready.status.success() {
                return daemon;
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready after 20s:\n{}",
                daemon.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's process id (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The daemon's combined stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Kills the daemon outright (SIGKILL) and reaps it: nothing runs its
    /// shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the daemon with SIGTERM and waits up to 10 s for it to exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_file(&self.log);
    }
}

/// The shipped example the end-to-end tests serve, and its demo credentials.
pub const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/dataengine-gateway.yaml"
);
/// `--credentials-dir` for [`EXAMPLE`].
pub const CREDENTIALS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/credentials");

/// Starts the daemon on [`EXAMPLE`], on the topology's interface and both
/// gateway addresses, with `extra` arguments and optionally a lower
/// open-file limit.
pub fn start_example(topology: &Topology, extra: &[&str], open_files: Option<u64>) -> Daemon {
    let args = example_args(topology, extra);
    Daemon::start_with_open_files(topology, &args, open_files)
}

/// `gateway run` arguments serving [`EXAMPLE`] on the topology's interface
/// and both gateway addresses, then `extra`.
pub fn example_args<'a>(topology: &'a Topology, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--config",
        EXAMPLE,
        "--interface",
        &topology.gateway_if,
        "--address",
        GATEWAY_V4,
        "--address",
        GATEWAY_V6,
        "--admin-address",
        ADMIN,
        "--credentials-dir",
        CREDENTIALS,
    ];
    args.extend_from_slice(extra);
    args
}

/// Starts the daemon on `config`, the topology's interface and its IPv4
/// gateway address, with `extra` flags.
pub fn start_on(topology: &Topology, config: &str, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--config",
        config,
        "--interface",
        &topology.gateway_if,
        "--address",
        GATEWAY_V4,
        "--admin-address",
        ADMIN,
    ];
    args.extend_from_slice(extra);
    Daemon::start(topology, &args)
}

/// Sets resource limit `resource` (soft and hard) to `value` in the child
/// `command` starts, between fork and exec.
pub fn limit_before_exec(command: &mut Command, resource: libc::__rlimit_resource_t, value: u64) {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(resource, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Runs `gateway <args>` to completion in the gateway namespace.
pub fn run_to_completion(
    topology: &Topology,
    args: &[&str],
    timeout: Duration,
) -> std::process::Output {
    let mut cmd = topology.exec(
        &topology.gateway_ns,
        &["timeout", "-s", "KILL", &timeout.as_secs().to_string()],
    );
    cmd.arg(gateway_bin()).args(args);
    cmd.output().expect("run gateway")
}

/// Reads one counter from the daemon's `/stats`, after waiting out the
/// admin endpoint's snapshot age (100 ms), so it reflects what the test did
/// before the call.
pub fn stat(topology: &Topology, name: &str) -> u64 {
    thread::sleep(Duration::from_millis(150));
    let out = topology.gateway(&[
        "curl",
        "-sf",
        "--max-time",
        "2",
        &format!("http://{ADMIN}/stats"),
    ]);
    assert!(out.status.success(), "cannot read /stats");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no stat {name} in:\n{text}"))
}
