//! The control socket's server: its own thread, one short-lived thread per connection (bounded),
//! answers from the [`SnapshotHub`] and silence commands over a bounded channel to the loop.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use thiserror::Error;

use super::snapshot::SnapshotHub;
use super::{Request, Response};
use crate::policy::silence::{
    parse_duration_ms, Matcher, Silence, SilenceError, SilenceSet, UnixMs,
};

/// Longest request line, bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// A connection that does not complete a request line within this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one write on a connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are told `busy` and closed.
pub const MAX_CONNECTIONS: usize = 16;
/// Silence commands waiting for the loop at most.
pub const COMMAND_QUEUE: usize = 64;
/// How long a `status` waits for the loop's fresh snapshot before answering with the latest.
pub const SNAPSHOT_WAIT: Duration = Duration::from_millis(500);
/// How long a silence command waits for the loop's answer.
pub const COMMAND_WAIT: Duration = Duration::from_secs(2);

/// What a silence command asks the set's owner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SilenceOp {
    /// Add.
    Add {
        /// Parsed matchers.
        matchers: Vec<Matcher>,
        /// Duration.
        duration_ms: u64,
        /// Comment.
        comment: String,
    },
    /// List those in force.
    List,
    /// End one now.
    Expire {
        /// Its id.
        id: u64,
    },
}

/// What the owner answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SilenceOutcome {
    /// The new silence.
    Added(Silence),
    /// Those in force.
    Listed(Vec<Silence>),
    /// The silence that was ended.
    Expired(Silence),
}

/// A silence command with the place its answer goes.
#[derive(Debug)]
pub struct SilenceCommand {
    /// The operation.
    pub op: SilenceOp,
    reply: SyncSender<Result<SilenceOutcome, SilenceError>>,
}

/// Sends silence commands to the loop: used by the control server and by the HTTP side.
#[derive(Debug, Clone)]
pub struct SilenceCommander {
    tx: SyncSender<SilenceCommand>,
    hub: Arc<SnapshotHub>,
}

/// Why a silence command got no answer.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    /// The set refused it.
    #[error(transparent)]
    Refused(#[from] SilenceError),
    /// The command queue is full.
    #[error("busy: {COMMAND_QUEUE} silence commands already wait for the observer")]
    Busy,
    /// The observer did not answer in time.
    #[error("the observer did not answer within {0:?}")]
    Timeout(Duration),
    /// The observer is shutting down.
    #[error("the observer is shutting down")]
    Gone,
}

impl SilenceCommander {
    /// Sends `op` to the loop and waits up to [`COMMAND_WAIT`] for its answer.
    ///
    /// # Errors
    /// [`CommandError`]: refused by the set, queue full, no answer in time, loop gone.
    pub fn call(&self, op: SilenceOp) -> Result<SilenceOutcome, CommandError> {
        let (reply, answer) = mpsc::sync_channel(1);
        match self.tx.try_send(SilenceCommand { op, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(CommandError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(CommandError::Gone),
        }
        self.hub.wake();
        match answer.recv_timeout(COMMAND_WAIT) {
            Ok(r) => r.map_err(CommandError::Refused),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(CommandError::Timeout(COMMAND_WAIT)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(CommandError::Gone),
        }
    }
}

/// The loop's end: the snapshot hub (shared with the HTTP side) and the silence commands.
#[derive(Debug)]
pub struct ControlLink {
    hub: Arc<SnapshotHub>,
    rx: Receiver<SilenceCommand>,
    tx: SyncSender<SilenceCommand>,
}

impl ControlLink {
    /// A hub and a bounded command queue ([`COMMAND_QUEUE`]).
    ///
    /// # Errors
    /// Creating the hub's eventfd failed.
    pub fn new() -> io::Result<ControlLink> {
        let (tx, rx) = mpsc::sync_channel(COMMAND_QUEUE);
        Ok(ControlLink {
            hub: Arc::new(SnapshotHub::new()?),
            rx,
            tx,
        })
    }

    /// The hub: poll its [`SnapshotHub::wake_fd`], call [`SnapshotHub::take_wanted`] and
    /// publish when asked.
    #[must_use]
    pub fn hub(&self) -> &Arc<SnapshotHub> {
        &self.hub
    }

    /// A sender of silence commands (for the control server or the HTTP side).
    #[must_use]
    pub fn commander(&self) -> SilenceCommander {
        SilenceCommander {
            tx: self.tx.clone(),
            hub: Arc::clone(&self.hub),
        }
    }

    /// For the loop: applies up to `max` waiting commands to the set at wall-clock `now`,
    /// answering each. Returns whether the set changed (save the state file then).
    pub fn apply_silence_commands(&self, set: &mut SilenceSet, now: UnixMs, max: usize) -> bool {
        let mut changed = false;
        for cmd in self.rx.try_iter().take(max) {
            let answer = match cmd.op {
                SilenceOp::Add {
                    matchers,
                    duration_ms,
                    comment,
                } => set
                    .add(now, matchers, duration_ms, comment)
                    .map(|s| SilenceOutcome::Added(s.clone())),
                SilenceOp::List => Ok(SilenceOutcome::Listed(set.list(now))),
                SilenceOp::Expire { id } => set.expire(now, id).map(SilenceOutcome::Expired),
            };
            if matches!(
                answer,
                Ok(SilenceOutcome::Added(_) | SilenceOutcome::Expired(_))
            ) {
                changed = true;
                // Before the answer: a client that asks for the status right after it must
                // see the change.
                self.hub.invalidate();
            }
            // The asker may have given up (timeout); nothing to do then.
            let _ = cmd.reply.try_send(answer);
        }
        changed
    }
}

/// Why the control socket could not be opened.
#[derive(Debug, Error)]
pub enum ControlError {
    /// Something else is at the path.
    #[error("control socket {0}: path exists and is not a socket")]
    NotASocket(PathBuf),
    /// Another observer answers there.
    #[error("control socket {0}: another observer is listening there")]
    InUse(PathBuf),
    /// A system call failed.
    #[error("control socket {path}: {op}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The operation.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The running server; stops (and removes its socket file) when dropped.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    /// Written on drop: the accept loop sleeps in `poll` on the listener and this eventfd, so
    /// an idle server never wakes.
    stop: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds `path` with mode 0600 and serves it on a thread of its own.
    ///
    /// A stale socket file (nobody listening) is replaced; anything else at the path is an
    /// error.
    ///
    /// # Errors
    /// [`ControlError`].
    pub fn start(
        path: &Path,
        hub: Arc<SnapshotHub>,
        commander: SilenceCommander,
    ) -> Result<ControlServer, ControlError> {
        let io_err = |op: &'static str| {
            let path = path.to_path_buf();
            move |source: io::Error| ControlError::Io { path, op, source }
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if !m.file_type().is_socket() => {
                return Err(ControlError::NotASocket(path.to_path_buf()))
            }
            Ok(_) => {
                if UnixStream::connect(path).is_ok() {
                    return Err(ControlError::InUse(path.to_path_buf()));
                }
                std::fs::remove_file(path).map_err(io_err("remove stale socket"))?;
            }
            Err(_) => {}
        }
        let fd: OwnedFd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| io_err("socket")(e.into()))?;
        // The socket file takes the socket inode's mode at bind time (minus the umask): set it
        // first, so the file is never reachable by others, not even for an instant.
        rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o600))
            .map_err(|e| io_err("fchmod")(e.into()))?;
        let addr = SocketAddrUnix::new(path).map_err(|e| io_err("address")(e.into()))?;
        rustix::net::bind(&fd, &addr).map_err(|e| io_err("bind")(e.into()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("chmod"))?;
        rustix::net::listen(&fd, 64).map_err(|e| io_err("listen")(e.into()))?;
        let listener = UnixListener::from(fd);
        listener
            .set_nonblocking(true)
            .map_err(io_err("set_nonblocking"))?;

        let stop = Arc::new(
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)
                .map_err(|e| io_err("eventfd")(e.into()))?,
        );
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("varta-control".into())
            .spawn(move || accept_loop(&listener, &stop2, &hub, &commander))
            .map_err(io_err("spawn"))?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = rustix::io::write(&*self.stop, &1u64.to_ne_bytes());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(
    listener: &UnixListener,
    stop: &OwnedFd,
    hub: &Arc<SnapshotHub>,
    commander: &SilenceCommander,
) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let mut fds = [
            rustix::event::PollFd::new(listener, rustix::event::PollFlags::IN),
            rustix::event::PollFd::new(stop, rustix::event::PollFlags::IN),
        ];
        if rustix::event::poll(&mut fds, None).is_err() {
            continue;
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        let Ok((mut conn, _)) = listener.accept() else {
            continue;
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            let _ = write_response(
                &mut conn,
                &Response::error(format!("busy: {MAX_CONNECTIONS} connections open")),
            );
            continue;
        }
        let (hub, commander, slot) = (Arc::clone(hub), commander.clone(), Arc::clone(&active));
        let spawned = std::thread::Builder::new()
            .name("varta-control-conn".into())
            .spawn(move || {
                serve(conn, &hub, &commander);
                slot.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            // The closure never ran (the connection closed with it): give its slot back.
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn write_response(conn: &mut UnixStream, r: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
    line.push(b'\n');
    conn.write_all(&line)
}

/// A stream whose reads fail once `deadline` has passed, however slowly the bytes trickle in.
struct DeadlineReader {
    stream: UnixStream,
    deadline: Instant,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete request in time",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

/// Reads one line of at most [`MAX_REQUEST_BYTES`]; `Ok(None)` at a clean end of stream.
fn read_line(r: &mut BufReader<DeadlineReader>) -> io::Result<Option<Vec<u8>>> {
    r.get_mut().deadline = Instant::now() + IDLE_TIMEOUT;
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("request longer than {MAX_REQUEST_BYTES} bytes or not ended by a newline"),
        ));
    }
    Ok(Some(line))
}

fn serve(conn: UnixStream, hub: &SnapshotHub, commander: &SilenceCommander) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut input = BufReader::new(DeadlineReader {
        stream: conn,
        deadline: Instant::now() + IDLE_TIMEOUT,
    });
    loop {
        let line = match read_line(&mut input) {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    let _ = write_response(&mut out, &Response::error(e.to_string()));
                }
                return;
            }
        };
        let response = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => handle(req, hub, commander),
            Err(e) => Response::error(format!("bad request: {e}")),
        };
        if write_response(&mut out, &response).is_err() {
            return;
        }
    }
}

/// Answers one request.
#[must_use]
pub fn handle(req: Request, hub: &SnapshotHub, commander: &SilenceCommander) -> Response {
    let op = match req {
        Request::Status => {
            return Response {
                ok: true,
                snapshot: Some((*hub.fresh(SNAPSHOT_WAIT)).clone()),
                ..Response::default()
            }
        }
        Request::SilenceAdd {
            matchers,
            duration,
            comment,
        } => {
            let parsed: Result<Vec<Matcher>, SilenceError> =
                matchers.iter().map(|m| m.parse()).collect();
            let duration_ms = parse_duration_ms(&duration);
            match (parsed, duration_ms) {
                (Ok(matchers), Ok(duration_ms)) => SilenceOp::Add {
                    matchers,
                    duration_ms,
                    comment,
                },
                (Err(e), _) | (_, Err(e)) => return Response::error(e.to_string()),
            }
        }
        Request::SilenceList => SilenceOp::List,
        Request::SilenceExpire { id } => SilenceOp::Expire { id },
    };
    match commander.call(op) {
        Ok(SilenceOutcome::Added(s) | SilenceOutcome::Expired(s)) => Response {
            ok: true,
            silence: Some(s),
            ..Response::default()
        },
        Ok(SilenceOutcome::Listed(v)) => Response {
            ok: true,
            silences: Some(v),
            ..Response::default()
        },
        Err(e) => Response::error(e.to_string()),
    }
}
