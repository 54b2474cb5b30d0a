//! CPU and memory of a process or thread, from /proc: what `top` would
//! show, read the same way for camstream, the floor pipeline and the
//! benchmark's own threads.

use std::time::{Duration, Instant};

/// Clock ticks per second of /proc's utime/stime.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU time (user + system) used so far by the process or thread whose
/// stat file is `path` (/proc/PID/stat or /proc/PID/task/TID/stat).
pub fn cpu_time(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name can hold spaces and parentheses: fields start after
    // the last ')'. utime and stime are fields 14 and 15 of the file.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks_per_second(),
    ))
}

/// A thread's name, from /proc/PID/task/TID/comm.
fn thread_name(pid: u32, tid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// CPU time of this process's threads whose names start with `prefix`.
pub fn own_threads_cpu(prefix: &str) -> Duration {
    let pid = std::process::id();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    tasks
        .filter_map(Result::ok)
        .map(|t| t.file_name().to_string_lossy().to_string())
        .filter(|tid| thread_name(pid, tid).starts_with(prefix))
        .filter_map(|tid| cpu_time(&format!("/proc/{pid}/task/{tid}/stat")))
        .sum()
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU use of one process over a window, as a percentage of one core.
#[derive(Debug)]
pub struct CpuWindow {
    stat: String,
    start_cpu: Duration,
    start: Instant,
}

impl CpuWindow {
    pub fn start(pid: u32) -> Option<CpuWindow> {
        let stat = format!("/proc/{pid}/stat");
        Some(CpuWindow {
            start_cpu: cpu_time(&stat)?,
            stat,
            start: Instant::now(),
        })
    }

    /// Percent of one core since `start`.
    pub fn percent(&self) -> Option<f64> {
        let used = cpu_time(&self.stat)?.saturating_sub(self.start_cpu);
        Some(100.0 * used.as_secs_f64() / self.start.elapsed().as_secs_f64())
    }
}
