//! The Unix datagram listener: kernel-attested senders (`SO_PASSCRED`).

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use rustix::fs::Mode;

use super::batch::Want;
use super::{io_err, set_rcvbuf, ListenError, RecvBatch, RCVBUF};

/// The Unix datagram listener. Removes its socket file on drop if the file is still the one
/// it created (same device and inode), so a newer observer's socket is never deleted.
#[derive(Debug)]
pub struct UnixListener {
    sock: UnixDatagram,
    path: PathBuf,
    /// Device and inode of the socket file we created; `None` for a socket we were handed
    /// (socket activation), whose file belongs to the service manager.
    ident: Option<(u64, u64)>,
}

impl UnixListener {
    /// Binds `path` with permission bits `mode` and `SO_PASSCRED` set.
    ///
    /// A socket file already at `path` is probed with a connect: if an observer answers we
    /// refuse ([`ListenError::Live`]); only if the connect says nobody listens
    /// (`ECONNREFUSED`) is the file stale and replaced; any other answer (no permission, …) is
    /// an error and the file is left alone. The file is created with its final mode (the
    /// umask during `bind` is the complement of `mode`), so no `chmod` by path follows that a
    /// symbolic link swapped in could redirect.
    ///
    /// # Errors
    /// [`ListenError`] naming the failed step.
    pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, ListenError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                let probe = UnixDatagram::unbound()
                    .map_err(io_err("create probe socket for", path.display()))?;
                match probe.connect(path) {
                    Ok(()) => return Err(ListenError::Live(path.to_path_buf())),
                    Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
                    Err(e) => {
                        return Err(io_err(
                            "probe (connect to) the existing socket",
                            path.display(),
                        )(e))
                    }
                }
                fs::remove_file(path).map_err(io_err("remove stale socket", path.display()))?;
            }
            Ok(_) => return Err(ListenError::NotASocket(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", path.display())(e)),
        }
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                fs::create_dir_all(dir).map_err(io_err("create directory", dir.display()))?;
            }
        }
        // The socket file's mode is 0777 minus the umask at bind time: set the umask to the
        // complement of `mode` for the bind, so the file never exists with other bits and
        // needs no chmod by path. The daemon is single-threaded at this point.
        let old = rustix::process::umask(Mode::from_raw_mode(!mode & 0o777));
        let bound = UnixDatagram::bind(path);
        rustix::process::umask(old);
        let sock = bound.map_err(io_err("bind socket", path.display()))?;
        let meta = fs::symlink_metadata(path).map_err(io_err("inspect", path.display()))?;
        UnixListener {
            sock,
            path: path.to_path_buf(),
            ident: Some((meta.dev(), meta.ino())),
        }
        .configured()
    }

    /// Takes a socket handed over by the service manager (socket activation). Its file is
    /// left alone on drop.
    ///
    /// # Errors
    /// [`ListenError::Io`] if the socket options cannot be set.
    pub fn adopt(sock: UnixDatagram) -> Result<UnixListener, ListenError> {
        let path = sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("(socket activation)"));
        UnixListener {
            sock,
            path,
            ident: None,
        }
        .configured()
    }

    /// Credentials and kernel receive times on, large receive buffer, non-blocking.
    fn configured(self) -> Result<UnixListener, ListenError> {
        let path = self.path.display().to_string();
        rustix::net::sockopt::set_socket_passcred(&self.sock, true)
            .map_err(|e| io_err("set SO_PASSCRED on", &path)(e.into()))?;
        super::set_timestamps(self.sock.as_fd()).map_err(io_err("set SO_TIMESTAMPNS on", &path))?;
        set_rcvbuf(self.sock.as_fd(), RCVBUF);
        self.sock
            .set_nonblocking(true)
            .map_err(io_err("set non-blocking", &path))?;
        Ok(self)
    }

    /// Asks for a receive buffer of `bytes` instead of [`RCVBUF`] (best effort, as at bind);
    /// 0 restores the kernel's default (`net.core.rmem_default`).
    pub fn set_rcvbuf(&self, bytes: usize) {
        let bytes = if bytes == 0 {
            std::fs::read_to_string("/proc/sys/net/core/rmem_default")
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(212_992)
        } else {
            bytes
        };
        set_rcvbuf(self.sock.as_fd(), bytes);
    }

    /// The receive buffer as the kernel reports it (twice what was asked, for its overhead).
    #[must_use]
    pub fn rcvbuf(&self) -> Option<usize> {
        rustix::net::sockopt::socket_recv_buffer_size(&self.sock).ok()
    }

    /// The socket path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives up to [`super::BATCH`] datagrams with their credentials into `batch`;
    /// descriptors a sender attached are closed and counted there.
    ///
    /// # Errors
    /// The `recvmmsg` error; `WouldBlock` when nothing is queued.
    pub fn try_recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.recv(
            self.sock.as_raw_fd(),
            Want {
                control: true,
                source: false,
            },
        )
    }
}

impl AsFd for UnixListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for UnixListener {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        let Some(ident) = self.ident else {
            return;
        };
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == ident {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}
