//! The one place that starts processes.
//!
//! A command runs from an argv (never a shell) in its own process group, with
//! a cleared environment plus an allowlist, stdin closed, and stdout/stderr
//! streamed into the job's output. At the deadline, or when the gateway
//! stops, the whole group is killed, so a compose plugin or helper it started
//! does not outlive the job.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::Instant;

use super::{CommandOutcome, Exit, Limits, OutputLog};

/// Variables compose needs to reach the engine and read its own
/// configuration. Everything else stays out of the child, because a compose
/// file can interpolate any variable compose has into what a team's
/// container receives: the project secrets, and proxy variables, which may
/// carry credentials (the engine pulls and builds, through its own proxy
/// settings).
const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "DOCKER_API_VERSION",
    "DOCKER_BUILDKIT",
    "BUILDKIT_PROGRESS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// The variables that choose the engine compose talks to and the
/// credentials it sends. Each is set in the child, to the gateway's value or
/// to the empty string (which both tools read as unset): compose v1 takes a
/// variable the process lacks from the project's `.env`, so a project could
/// otherwise point compose, and the gateway's registry credentials, at an
/// engine of its choosing. Both tools let the process environment win.
const ENGINE_ENV: [&str; 4] = [
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_CONFIG",
];

/// The engine the gateway itself talks to when `DOCKER_HOST` is not set.
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The engine variables a child gets: `DOCKER_HOST` always names the
/// gateway's own endpoint, and the others are the gateway's or empty.
fn engine_env() -> impl Iterator<Item = (&'static str, std::ffi::OsString)> {
    let host = std::env::var_os("DOCKER_HOST")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.into());
    std::iter::once(("DOCKER_HOST", host)).chain(
        ENGINE_ENV
            .into_iter()
            .map(|k| (k, std::env::var_os(k).unwrap_or_default())),
    )
}

/// How long to wait for the pipes to close after the process ended. A
/// process that escaped the group could hold them open forever.
const DRAIN_BOUND: Duration = Duration::from_secs(2);

async fn pump(mut from: impl AsyncRead + Unpin, into: &OutputLog) {
    let mut buffer = [0u8; 8192];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => into.push(&buffer[..n]),
        }
    }
}

fn kill_group(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals the process group we
    // created for this child; it has no memory-safety preconditions.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Runs `argv` to completion, the deadline, or cancellation, in `dir` when
/// given (compose v2 reads a `.env` from the directory it starts in).
pub async fn run_command(
    argv: Vec<String>,
    dir: Option<&Path>,
    limits: &Limits,
    output: &OutputLog,
) -> CommandOutcome {
    run_command_apart(argv, dir, limits, output, output).await
}

/// As [`run_command`], with standard output kept apart from standard
/// error (and this module's notes): for a command whose output is data.
pub async fn run_command_apart(
    argv: Vec<String>,
    dir: Option<&Path>,
    limits: &Limits,
    stdout_log: &OutputLog,
    output: &OutputLog,
) -> CommandOutcome {
    let started = Instant::now();
    output.note(&format!("$ {}", argv.join(" ")));
    let outcome = |exit| CommandOutcome {
        argv: argv.clone(),
        exit,
        duration: started.elapsed(),
    };
    let Some((program, args)) = argv.split_first() else {
        return outcome(Exit::SpawnFailed("empty command".into()));
    };
    let mut command = apart(program, args, dir);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let message = format!("cannot start {program}: {e}");
            output.note(&message);
            return outcome(Exit::SpawnFailed(message));
        }
    };
    let pid = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let drain = async {
        tokio::join!(
            async {
                if let Some(s) = stdout {
                    pump(s, stdout_log).await
                }
            },
            async {
                if let Some(s) = stderr {
                    pump(s, output).await
                }
            },
        )
    };
    tokio::pin!(drain);
    let mut drained = false;
    let ended = loop {
        tokio::select! {
            status = child.wait() => break Ok(status),
            _ = &mut drain, if !drained => drained = true,
            () = tokio::time::sleep_until(limits.deadline) => break Err(Exit::TimedOut),
            () = limits.cancel.cancelled() => break Err(Exit::Cancelled),
        }
    };
    let exit = match ended {
        Ok(Ok(status)) => exit_of(status),
        Ok(Err(e)) => Exit::SpawnFailed(format!("waiting for {program} failed: {e}")),
        Err(stopped) => {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            let _ = child.wait().await;
            let why = match stopped {
                Exit::TimedOut => "the job timeout passed",
                _ => "the gateway is stopping",
            };
            output.note(&format!("(stopped {program} and its process group: {why})"));
            stopped
        }
    };
    if !drained {
        let _ = tokio::time::timeout(DRAIN_BOUND, drain).await;
    }
    outcome(exit)
}

/// `program` with `args`, in `dir`, set apart from the gateway: a cleared
/// environment but for [`PASSED_ENV`] and the gateway's engine, no stdin,
/// piped output, a process group of its own, killed when dropped.
fn apart(program: &str, args: &[String], dir: Option<&Path>) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(
            PASSED_ENV
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
        )
        .envs(engine_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    // If the gateway dies (kill -9, a crash), the kernel kills the command
    // too, so it cannot race the job's re-run after the restart. Tokio
    // spawns from its worker threads, which live as long as the runtime,
    // and the signal follows the spawning thread.
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Code(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn limits(secs: u64) -> Limits {
        Limits {
            deadline: Instant::now() + Duration::from_secs(secs),
            cancel: CancellationToken::new(),
        }
    }

    fn argv(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn output_and_exit_code_are_captured() {
        let log = OutputLog::default();
        let out = run_command(
            argv(&["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]),
            None,
            &limits(10),
            &log,
        )
        .await;
        assert_eq!(out.exit, Exit::Code(3));
        let text = log.text();
        assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
        assert!(text.starts_with("$ /bin/sh -c"), "{text}");
    }

    #[tokio::test]
    async fn arguments_are_not_interpreted_by_a_shell() {
        let log = OutputLog::default();
        let out = run_command(
            argv(&["/bin/echo", "$(id)", "a;b", "`x`"]),
            None,
            &limits(10),
            &log,
        )
        .await;
        assert_eq!(out.exit, Exit::Code(0));
        assert!(log.text().contains("$(id) a;b `x`\n"));
    }

    #[tokio::test]
    async fn the_command_runs_in_the_directory_given() {
        let log = OutputLog::default();
        let dir = std::fs::canonicalize(std::env::temp_dir()).unwrap();
        let out = run_command(argv(&["/bin/pwd"]), Some(&dir), &limits(10), &log).await;
        assert_eq!(out.exit, Exit::Code(0));
        assert!(
            log.text().contains(&format!("\n{}\n", dir.display())),
            "{}",
            log.text()
        );
    }

    #[tokio::test]
    async fn the_environment_is_an_allowlist() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("DELIVERY_TEST_SECRET", "do-not-pass") };
        let log = OutputLog::default();
        run_command(argv(&["/usr/bin/env"]), None, &limits(10), &log).await;
        let text = log.text();
        assert!(!text.contains("do-not-pass"), "{text}");
        assert!(text.contains("PATH="), "{text}");
        // The engine is the gateway's, whatever a project's `.env` says.
        let host = std::env::var("DOCKER_HOST").unwrap_or(DEFAULT_DOCKER_HOST.into());
        assert!(text.contains(&format!("\nDOCKER_HOST={host}\n")), "{text}");
        for name in ENGINE_ENV {
            let value = std::env::var(name).unwrap_or_default();
            assert!(
                text.contains(&format!("\n{name}={value}\n")),
                "{name}: {text}"
            );
        }
    }

    /// Alive means present in /proc and not a zombie awaiting its reaper.
    fn alive(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => false,
            Ok(stat) => {
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                !state.starts_with('Z') && !state.starts_with('X')
            }
        }
    }

    #[tokio::test]
    async fn the_deadline_kills_the_whole_group() {
        let log = OutputLog::default();
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild");
        // The shell leaves a grandchild behind that a plain kill would miss.
        let script = format!(
            "sleep 300 & echo $! > {}; exec sleep 300",
            pid_file.display()
        );
        let out = run_command(argv(&["/bin/sh", "-c", &script]), None, &limits(1), &log).await;
        assert_eq!(out.exit, Exit::TimedOut);
        let grandchild = std::fs::read_to_string(&pid_file).unwrap();
        let grandchild = grandchild.trim();
        assert!(!grandchild.is_empty());
        // The signal reaches a process that is not our child asynchronously.
        let gone_by = Instant::now() + Duration::from_secs(5);
        while alive(grandchild) && Instant::now() < gone_by {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !alive(grandchild),
            "the grandchild {grandchild} survived the job"
        );
        assert!(log.text().contains("process group"));
    }

    #[tokio::test]
    async fn a_missing_program_is_reported() {
        let log = OutputLog::default();
        let out = run_command(argv(&["/nonexistent/compose"]), None, &limits(10), &log).await;
        assert!(matches!(out.exit, Exit::SpawnFailed(_)));
        assert!(log.text().contains("cannot start /nonexistent/compose"));
    }

    #[tokio::test]
    async fn cancellation_stops_the_command() {
        let log = OutputLog::default();
        let l = limits(60);
        let cancel = l.cancel.clone();
        let task =
            tokio::spawn(
                async move { run_command(argv(&["/bin/sleep", "60"]), None, &l, &log).await },
            );
        cancel.cancel();
        let out = task.await.unwrap();
        assert_eq!(out.exit, Exit::Cancelled);
        assert!(out.duration < Duration::from_secs(30));
    }
}
