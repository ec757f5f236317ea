//! Thin OS helpers of the tools: clocks, signals, CPU placement and `/proc` readings, through
//! rustix; SCHED_FIFO alone goes through libc (rustix does not wrap `sched_setscheduler`).

use std::path::Path;

use rustix::process::{Pid, Signal};
use rustix::thread::CpuSet;
use rustix::time::{clock_gettime, ClockId};

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes on this host.
#[must_use]
pub fn mono_ns() -> u64 {
    ts_ns(clock_gettime(ClockId::Monotonic))
}

/// CPU time of the calling thread, ns.
#[must_use]
pub fn thread_cpu_ns() -> u64 {
    ts_ns(clock_gettime(ClockId::ThreadCPUTime))
}

fn ts_ns(t: rustix::time::Timespec) -> u64 {
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// Sends `sig` to `pid`; false if the pid is invalid or gone.
pub fn signal(pid: u32, sig: Signal) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .is_some_and(|p| rustix::process::kill_process(p, sig).is_ok())
}

/// SIGSTOP.
pub const STOP: Signal = Signal::STOP;
/// SIGCONT.
pub const CONT: Signal = Signal::CONT;
/// SIGTERM.
pub const TERM: Signal = Signal::TERM;

/// Pins thread or process `pid` (0: the calling thread) to `cpu` (best effort: a CPU that
/// does not exist leaves the placement as it was).
pub fn pin(pid: u32, cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu);
    let target = i32::try_from(pid).ok().and_then(Pid::from_raw);
    let _ = rustix::thread::sched_setaffinity(target, &set);
}

/// Pins every thread of process `pid` to `cpu`.
pub fn pin_process(pid: u32, cpu: usize) {
    pin(pid, cpu);
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) {
                pin(tid, cpu);
            }
        }
    }
}

/// Makes the calling thread SCHED_FIFO at `prio` (best effort: needs CAP_SYS_NICE).
pub fn set_fifo(prio: i32) {
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: `param` is a live local read by the call; pid 0 is the calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
}

/// Lowers the calling process's priority to `nice` (best effort).
pub fn set_nice(nice: i32) {
    let _ = rustix::process::setpriority_process(None, nice);
}

/// Time thread `tid` of process `pid` spent on a CPU, ns (`/proc/PID/task/TID/schedstat`).
#[must_use]
pub fn task_cpu_ns(pid: u32, tid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The fields of `/proc/PID/stat` after the command name (field 3, the state, is index 0).
fn stat_fields(path: &str) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(path).ok()?;
    let rest = s.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The state letter of process or thread `/proc/...` entry (`S`, `R`, `Z`, ...).
#[must_use]
pub fn state(proc_path: &str) -> Option<char> {
    stat_fields(&format!("{proc_path}/stat"))?
        .first()?
        .chars()
        .next()
}

/// User + system CPU time of the whole process `pid` (every thread), ns, from
/// `/proc/PID/stat` (clock-tick resolution).
#[must_use]
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let f = stat_fields(&format!("/proc/{pid}/stat"))?;
    // Fields 14 (utime) and 15 (stime), 1-based; index 0 here is field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Some(ticks * (1_000_000_000 / hz))
}

/// A `key:  value` line of `/proc/PID/status` as a number (`kB` units stripped).
#[must_use]
pub fn status_field(proc_path: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("{proc_path}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Whether `/proc/PID` names a live process (not a zombie).
#[must_use]
pub fn alive(pid: u32) -> bool {
    !matches!(state(&format!("/proc/{pid}")), None | Some('Z' | 'X'))
}

/// Writes a 0600 key file holding `hex` (replacing any old one).
///
/// # Errors
/// The file cannot be created or written.
pub fn write_key(path: &Path, hex: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{hex}")
}
