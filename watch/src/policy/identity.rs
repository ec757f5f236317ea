//! Who is this agent: process facts from `/proc` for Unix-socket agents, configured names for
//! UDP agents.
//!
//! On the Unix socket the kernel attests the sender's pid (`SCM_CREDENTIALS`), so the
//! process behind it can be asked who it is: `comm`, the executable (`/proc/PID/exe`), the real
//! uid (`/proc/PID/status`) and the systemd unit (the last `*.service` / `*.scope` element of
//! its cgroup path, `/proc/PID/cgroup`). [`read_identity`] does that with bounded reads and
//! typed errors; it is meant to run once per agent session, never per beat, on the
//! [`IdentityWorker`] thread so the receive loop never waits on the file system.
//!
//! A UDP agent's pid is only *claimed* and names a process on another machine (or nothing):
//! `/proc` must never be asked about it. Its name comes from configuration instead
//! ([`UdpNames`]: by pid, listener, key or source network).
//!
//! A pid can be reused between the beat and the read. [`read_identity`] reads the process's
//! start time before and after the other files and refuses the result
//! ([`IdentityError::PidReused`]) if it changed, so one identity never mixes two processes.

use std::fs::File;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use ipnet::IpNet;
use serde::Deserialize;
use thiserror::Error;

use super::AgentFacts;
use crate::tracker::AgentId;

/// `comm` is at most 16 bytes in the kernel; anything longer is not a comm file.
const COMM_MAX: u64 = 64;
/// `/proc/PID/stat` is a few hundred bytes.
const STAT_MAX: u64 = 4096;
/// `/proc/PID/status` is about 1.5 KiB.
const STATUS_MAX: u64 = 16 * 1024;
/// A cgroup file has one line per hierarchy; 64 KiB is far beyond any real one.
const CGROUP_MAX: u64 = 64 * 1024;
/// Longest name we keep from any of these files (a unit name, a path).
const FIELD_MAX: usize = 4096;

/// What `/proc` says about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// The pid asked about.
    pub pid: u32,
    /// Real uid (`Uid:` line of `/proc/PID/status`).
    pub uid: u32,
    /// `/proc/PID/comm`, without its newline.
    pub comm: String,
    /// The executable's path, if the link could be read (kernel threads and other users'
    /// processes without privilege have none).
    pub exe: Option<String>,
    /// The systemd unit, if the process runs in one.
    pub unit: Option<String>,
    /// Start time in clock ticks after boot (field 22 of `/proc/PID/stat`): with the pid it
    /// names one process for the life of the machine.
    pub start_time: u64,
}

/// Why a process could not be identified.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// The process no longer exists (it exited between its beat and the read).
    #[error("process {pid} is gone (reading /proc/{pid}/{file})")]
    Gone {
        /// The pid.
        pid: u32,
        /// The file whose read found it gone.
        file: &'static str,
    },
    /// Reading a `/proc` file failed for another reason.
    #[error("reading /proc/{pid}/{file}: {source}")]
    Io {
        /// The pid.
        pid: u32,
        /// The file.
        file: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file is longer than any real one: refused rather than read without bound.
    #[error("/proc/{pid}/{file} is longer than {limit} bytes")]
    TooLong {
        /// The pid.
        pid: u32,
        /// The file.
        file: &'static str,
        /// The bound.
        limit: u64,
    },
    /// The file does not have the kernel's format.
    #[error("/proc/{pid}/{file} is malformed: {what}")]
    Malformed {
        /// The pid.
        pid: u32,
        /// The file.
        file: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// The process's start time changed while it was being read: the pid now names another
    /// process.
    #[error("pid {pid} was reused while it was being identified")]
    PidReused {
        /// The pid.
        pid: u32,
    },
}

fn read_bounded(
    dir: &Path,
    pid: u32,
    file: &'static str,
    limit: u64,
) -> Result<String, IdentityError> {
    let io_err = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(3) {
            IdentityError::Gone { pid, file }
        } else {
            IdentityError::Io { pid, file, source }
        }
    };
    let f = File::open(dir.join(file)).map_err(io_err)?;
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf).map_err(io_err)?;
    if buf.len() as u64 > limit {
        return Err(IdentityError::TooLong { pid, file, limit });
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The start time (field 22) from the text of `/proc/PID/stat`. The comm field (2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are counted after the
/// *last* `)`.
#[must_use]
pub fn parse_stat_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the comm; field 22 is the 20th.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The real uid from the text of `/proc/PID/status` (`Uid:\treal\teffective\t...`).
#[must_use]
pub fn parse_status_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The systemd unit from the text of `/proc/PID/cgroup`: the last path element ending in
/// `.service` or `.scope`. The unified hierarchy (`0::/path`, cgroup v2) is preferred, then
/// the `name=systemd` hierarchy (cgroup v1), then any line.
///
/// `0::/system.slice/backup.service` gives `backup.service`;
/// `0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope` gives
/// `run-r1.scope` (the innermost unit).
#[must_use]
pub fn parse_cgroup_unit(cgroup: &str) -> Option<String> {
    let unit_of = |path: &str| -> Option<String> {
        path.rsplit('/')
            .filter(|e| e.len() <= FIELD_MAX)
            .find(|e| e.ends_with(".service") || e.ends_with(".scope"))
            .map(str::to_string)
    };
    let lines: Vec<(&str, &str, &str)> = cgroup
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            Some((it.next()?, it.next()?, it.next()?))
        })
        .collect();
    let pick = |pred: &dyn Fn(&(&str, &str, &str)) -> bool| {
        lines.iter().filter(|l| pred(l)).find_map(|l| unit_of(l.2))
    };
    pick(&|l| l.0 == "0" && l.1.is_empty())
        .or_else(|| pick(&|l| l.1 == "name=systemd"))
        .or_else(|| pick(&|_| true))
}

/// Reads who process `pid` is, under `proc_root` (`/proc` in the daemon; a fake tree in
/// tests). Bounded reads only.
///
/// # Errors
/// [`IdentityError`]: the process is gone, a file is unreadable, too long or malformed, or the
/// pid was reused during the read. An unreadable `exe` link or a process outside any unit is
/// not an error: those facts are `None`.
pub fn read_identity(proc_root: &Path, pid: u32) -> Result<ProcessIdentity, IdentityError> {
    let dir = proc_root.join(pid.to_string());
    let start = |dir: &Path| -> Result<u64, IdentityError> {
        let stat = read_bounded(dir, pid, "stat", STAT_MAX)?;
        parse_stat_start_time(&stat).ok_or(IdentityError::Malformed {
            pid,
            file: "stat",
            what: "no start time in field 22",
        })
    };
    let start_time = start(&dir)?;
    let mut comm = read_bounded(&dir, pid, "comm", COMM_MAX)?;
    if comm.ends_with('\n') {
        comm.pop();
    }
    let status = read_bounded(&dir, pid, "status", STATUS_MAX)?;
    let uid = parse_status_uid(&status).ok_or(IdentityError::Malformed {
        pid,
        file: "status",
        what: "no Uid: line",
    })?;
    let exe = match std::fs::read_link(dir.join("exe")) {
        Ok(p) => {
            let s = p.to_string_lossy().into_owned();
            (s.len() <= FIELD_MAX).then_some(s)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.exists() => {
            return Err(IdentityError::Gone { pid, file: "exe" })
        }
        // Permission denied, a kernel thread, or a fake tree without the link.
        Err(_) => None,
    };
    let unit = parse_cgroup_unit(&read_bounded(&dir, pid, "cgroup", CGROUP_MAX)?);
    if start(&dir)? != start_time {
        return Err(IdentityError::PidReused { pid });
    }
    Ok(ProcessIdentity {
        pid,
        uid,
        comm,
        exe,
        unit,
        start_time,
    })
}

/// A request to identify one agent session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityRequest {
    /// The agent (only Unix-socket agents are ever asked about).
    pub agent: AgentId,
    /// The caller's session tag, handed back with the result so a result for an older session
    /// of the same identity can be recognised and dropped.
    pub session: u64,
}

/// The answer to an [`IdentityRequest`].
#[derive(Debug)]
pub struct IdentityResult {
    /// The request.
    pub request: IdentityRequest,
    /// What `/proc` said.
    pub result: Result<ProcessIdentity, IdentityError>,
}

/// A thread that reads identities off the hot path, fed through a bounded request queue and
/// answering through a bounded result queue.
///
/// The loop calls [`IdentityWorker::try_request`] (never blocks; a full queue hands the
/// request back and counts it) and drains [`IdentityWorker::try_result`] once per turn. When
/// results are not drained, the worker waits on the full result queue and the request queue
/// fills: memory stays bounded by the two capacities.
#[derive(Debug)]
pub struct IdentityWorker {
    tx: Option<SyncSender<IdentityRequest>>,
    rx: Option<Receiver<IdentityResult>>,
    thread: Option<JoinHandle<()>>,
    refused: u64,
}

impl IdentityWorker {
    /// Starts the worker reading under `proc_root`, with `queue` places in each queue
    /// (at least 1).
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn spawn(proc_root: PathBuf, queue: usize) -> io::Result<IdentityWorker> {
        let (tx, req_rx) = mpsc::sync_channel::<IdentityRequest>(queue.max(1));
        let (res_tx, rx) = mpsc::sync_channel::<IdentityResult>(queue.max(1));
        let thread = std::thread::Builder::new()
            .name("varta-identity".into())
            .spawn(move || {
                for request in req_rx {
                    let result = read_identity(&proc_root, request.agent.pid);
                    if res_tx.send(IdentityResult { request, result }).is_err() {
                        return;
                    }
                }
            })?;
        Ok(IdentityWorker {
            tx: Some(tx),
            rx: Some(rx),
            thread: Some(thread),
            refused: 0,
        })
    }

    /// Queues a request without blocking.
    ///
    /// # Errors
    /// The request, handed back, when the queue is full or the worker has stopped; counted in
    /// [`IdentityWorker::refused`].
    pub fn try_request(&mut self, request: IdentityRequest) -> Result<(), IdentityRequest> {
        let Some(tx) = &self.tx else {
            self.refused += 1;
            return Err(request);
        };
        match tx.try_send(request) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) => {
                self.refused += 1;
                Err(r)
            }
        }
    }

    /// The next finished identification, if any (never blocks).
    #[must_use]
    pub fn try_result(&self) -> Option<IdentityResult> {
        self.rx.as_ref()?.try_recv().ok()
    }

    /// Requests refused because the queue was full.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

impl Drop for IdentityWorker {
    fn drop(&mut self) {
        // Closing both queues ends the worker whether it waits for a request or on a full
        // result queue.
        self.tx = None;
        self.rx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Most configured UDP names.
pub const MAX_NAME_RULES: usize = 4096;

/// One `[[name]]` section: a name for the UDP agents it selects (all given selectors must
/// hold). `{pid}` in the name is replaced by the agent's pid.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NameRule {
    /// The name (`{pid}` is replaced).
    pub name: String,
    /// The agent's (claimed) pid.
    pub pid: Option<u32>,
    /// The listener label (`udp0`).
    pub listener: Option<String>,
    /// The key class (`none`, `shared`, `agent`; see [`AgentFacts::key`]).
    pub key: Option<String>,
    /// A source network in CIDR form (`10.1.0.0/16`), for shells that know the source.
    pub source: Option<String>,
}

/// A configuration problem in `[[name]]` sections.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    /// More sections than [`MAX_NAME_RULES`].
    #[error("[[name]]: at most {MAX_NAME_RULES} sections")]
    TooMany,
    /// A section with no selector would name every agent.
    #[error("[[name]] {0:?}: needs at least one of pid, listener, key, source")]
    NoSelector(String),
    /// A section with an empty name.
    #[error("[[name]] #{0}: empty name")]
    EmptyName(usize),
    /// The source is not a network.
    #[error("[[name]] {name:?}: source {value:?} is not a network such as 10.0.0.0/8")]
    BadSource {
        /// The section's name.
        name: String,
        /// The value given.
        value: String,
    },
}

/// Names for UDP agents from configuration, first matching section wins.
#[derive(Debug, Clone, Default)]
pub struct UdpNames {
    rules: Vec<(NameRule, Option<IpNet>)>,
}

impl UdpNames {
    /// Checks the sections.
    ///
    /// # Errors
    /// [`NameError`] naming the first bad section.
    pub fn new(rules: Vec<NameRule>) -> Result<UdpNames, NameError> {
        if rules.len() > MAX_NAME_RULES {
            return Err(NameError::TooMany);
        }
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.into_iter().enumerate() {
            if r.name.is_empty() {
                return Err(NameError::EmptyName(i));
            }
            if r.pid.is_none() && r.listener.is_none() && r.key.is_none() && r.source.is_none() {
                return Err(NameError::NoSelector(r.name));
            }
            let net = match &r.source {
                None => None,
                Some(s) => Some(parse_net(s).ok_or_else(|| NameError::BadSource {
                    name: r.name.clone(),
                    value: s.clone(),
                })?),
            };
            out.push((r, net));
        }
        Ok(UdpNames { rules: out })
    }

    /// The configured name for this agent, if a section selects it.
    #[must_use]
    pub fn name_for(&self, facts: &AgentFacts) -> Option<String> {
        let (rule, _) = self.rules.iter().find(|(r, net)| {
            r.pid.map_or(true, |p| p == facts.pid)
                && r.listener.as_ref().map_or(true, |l| *l == facts.listener)
                && r.key
                    .as_ref()
                    .map_or(true, |k| facts.key.as_ref() == Some(k))
                && net.map_or(true, |n| facts.source.is_some_and(|a| n.contains(&a)))
        })?;
        Some(rule.name.replace("{pid}", &facts.pid.to_string()))
    }
}

/// A network in CIDR form, or a single address (a /32 or /128).
fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 1000 0 0 0 5 3 0 0 20 0 1 0 987654 123456 789 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_start_time_counts_after_the_last_paren() {
        assert_eq!(parse_stat_start_time(STAT), Some(987_654));
        assert_eq!(parse_stat_start_time("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_start_time("no parens at all"), None);
        assert_eq!(parse_stat_start_time(""), None);
    }

    #[test]
    fn status_uid_is_the_real_uid() {
        let s = "Name:\tx\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_status_uid(s), Some(1000));
        assert_eq!(parse_status_uid("Name:\tx\n"), None);
        assert_eq!(parse_status_uid("Uid:\tabc\n"), None);
    }

    #[test]
    fn cgroup_unit_is_the_innermost_service_or_scope() {
        assert_eq!(
            parse_cgroup_unit("0::/system.slice/backup.service\n").as_deref(),
            Some("backup.service")
        );
        assert_eq!(
            parse_cgroup_unit(
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope\n"
            )
            .as_deref(),
            Some("run-r1.scope")
        );
        // A process in a unit's sub-cgroup still belongs to the unit.
        assert_eq!(
            parse_cgroup_unit("0::/system.slice/db.service/worker\n").as_deref(),
            Some("db.service")
        );
        // cgroup v1: the name=systemd hierarchy is preferred over controllers.
        let v1 = "12:cpu,cpuacct:/other.service\n1:name=systemd:/system.slice/nginx.service\n";
        assert_eq!(parse_cgroup_unit(v1).as_deref(), Some("nginx.service"));
        assert_eq!(parse_cgroup_unit("0::/\n"), None);
        assert_eq!(
            parse_cgroup_unit("0::/init.scope\n").as_deref(),
            Some("init.scope")
        );
        assert_eq!(parse_cgroup_unit("garbage"), None);
        assert_eq!(parse_cgroup_unit(""), None);
    }

    fn fake_proc(pid: u32, files: &[(&str, &str)]) -> tempdir::Dir {
        let d = tempdir::Dir::new();
        let p = d.0.join(pid.to_string());
        std::fs::create_dir_all(&p).unwrap();
        for (name, text) in files {
            std::fs::write(p.join(name), text).unwrap();
        }
        d
    }

    mod tempdir {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicU32, Ordering};
        pub struct Dir(pub PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "varta-identity-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn reads_a_fake_proc_tree() {
        let d = fake_proc(
            4242,
            &[
                ("stat", STAT),
                ("comm", "backupd\n"),
                ("status", "Name:\tbackupd\nUid:\t998\t998\t998\t998\n"),
                ("cgroup", "0::/system.slice/backup.service\n"),
            ],
        );
        std::os::unix::fs::symlink("/usr/bin/backupd", d.0.join("4242/exe")).unwrap();
        let id = read_identity(&d.0, 4242).unwrap();
        assert_eq!(
            id,
            ProcessIdentity {
                pid: 4242,
                uid: 998,
                comm: "backupd".into(),
                exe: Some("/usr/bin/backupd".into()),
                unit: Some("backup.service".into()),
                start_time: 987_654,
            }
        );
    }

    #[test]
    fn errors_name_the_file_and_rule() {
        let d = fake_proc(1, &[]);
        assert!(matches!(
            read_identity(&d.0, 77),
            Err(IdentityError::Gone {
                pid: 77,
                file: "stat"
            })
        ));
        let d = fake_proc(5, &[("stat", "5 (x) S 1"), ("comm", "x\n")]);
        let e = read_identity(&d.0, 5).unwrap_err();
        assert!(
            matches!(e, IdentityError::Malformed { file: "stat", .. }),
            "{e}"
        );
        let long = "x".repeat(100);
        let d = fake_proc(6, &[("stat", STAT), ("comm", &long)]);
        let e = read_identity(&d.0, 6).unwrap_err();
        assert!(
            matches!(
                e,
                IdentityError::TooLong {
                    file: "comm",
                    limit: 64,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(e.to_string(), "/proc/6/comm is longer than 64 bytes");
        let d = fake_proc(
            7,
            &[("stat", STAT), ("comm", "x\n"), ("status", "Name:\tx\n")],
        );
        let e = read_identity(&d.0, 7).unwrap_err();
        assert!(
            matches!(e, IdentityError::Malformed { file: "status", .. }),
            "{e}"
        );
    }

    #[test]
    fn reads_this_very_process() {
        let me = std::process::id();
        let id = read_identity(Path::new("/proc"), me).unwrap();
        assert_eq!(id.pid, me);
        assert_eq!(id.uid, rustix::process::getuid().as_raw());
        let exe = std::env::current_exe().unwrap();
        assert_eq!(id.exe.as_deref(), Some(exe.to_string_lossy().as_ref()));
        assert!(!id.comm.is_empty() && id.comm.len() <= 16, "{:?}", id.comm);
        assert!(id.start_time > 0);
    }

    #[test]
    fn worker_answers_through_bounded_queues() {
        let mut w = IdentityWorker::spawn(PathBuf::from("/proc"), 2).unwrap();
        let me = AgentId::unix(std::process::id());
        w.try_request(IdentityRequest {
            agent: me,
            session: 9,
        })
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let res = loop {
            if let Some(r) = w.try_result() {
                break r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no identity within 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(res.request.session, 9);
        assert_eq!(res.result.unwrap().pid, std::process::id());

        // Never drained: the result queue (2) fills, then the request queue (2); after that
        // requests are handed back and counted, never queued without bound.
        let mut refused = 0;
        for s in 0..100 {
            if w.try_request(IdentityRequest {
                agent: me,
                session: s,
            })
            .is_err()
            {
                refused += 1;
            }
        }
        assert!(refused >= 100 - 5, "refused only {refused}");
        assert_eq!(w.refused(), refused);
        drop(w); // joins the thread: must not hang on its full result queue
    }

    fn facts(pid: u32, listener: &str, key: &str, source: Option<&str>) -> AgentFacts {
        AgentFacts {
            pid,
            listener: listener.into(),
            key: Some(key.into()),
            source: source.map(|s| s.parse().unwrap()),
            ..AgentFacts::default()
        }
    }

    #[test]
    fn udp_names_first_match_wins() {
        let rule = |name: &str| NameRule {
            name: name.into(),
            pid: None,
            listener: None,
            key: None,
            source: None,
        };
        let names = UdpNames::new(vec![
            NameRule {
                pid: Some(17),
                ..rule("pump-controller")
            },
            NameRule {
                source: Some("10.1.0.0/16".into()),
                ..rule("site-a-{pid}")
            },
            NameRule {
                listener: Some("udp1".into()),
                key: Some("agent".into()),
                ..rule("fleet-{pid}")
            },
        ])
        .unwrap();
        assert_eq!(
            names.name_for(&facts(17, "udp1", "agent", Some("10.1.2.3"))),
            Some("pump-controller".into())
        );
        assert_eq!(
            names.name_for(&facts(5, "udp0", "none", Some("10.1.2.3"))),
            Some("site-a-5".into())
        );
        assert_eq!(names.name_for(&facts(5, "udp0", "none", None)), None);
        assert_eq!(
            names.name_for(&facts(6, "udp1", "agent", None)),
            Some("fleet-6".into())
        );
        assert_eq!(names.name_for(&facts(6, "udp1", "none", None)), None);
    }

    #[test]
    fn udp_name_sections_are_checked() {
        let r = NameRule {
            name: "x".into(),
            pid: None,
            listener: None,
            key: None,
            source: None,
        };
        assert_eq!(
            UdpNames::new(vec![r.clone()]).unwrap_err(),
            NameError::NoSelector("x".into())
        );
        let bad = NameRule {
            source: Some("10.0.0.0/33".into()),
            ..r.clone()
        };
        assert!(matches!(
            UdpNames::new(vec![bad]).unwrap_err(),
            NameError::BadSource { .. }
        ));
        let one = NameRule {
            source: Some("192.0.2.7".into()),
            ..r
        };
        let n = UdpNames::new(vec![one]).unwrap();
        assert_eq!(
            n.name_for(&facts(1, "udp0", "none", Some("192.0.2.7"))),
            Some("x".into())
        );
        let toml = "name = \"a\"\npid = 3\nbogus = 1\n";
        assert!(toml::from_str::<NameRule>(toml)
            .unwrap_err()
            .to_string()
            .contains("bogus"));
    }
}
