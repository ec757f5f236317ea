//! The Unix datagram listener: kernel-attested senders (`SO_PASSCRED`).

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
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
    /// refuse ([`ListenError::Live`]); if nobody does the file is stale and is replaced.
    ///
    /// # Errors
    /// [`ListenError`] naming the failed step.
    pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, ListenError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                let probe = UnixDatagram::unbound()
                    .map_err(io_err("create probe socket for", path.display()))?;
                if probe.connect(path).is_ok() {
                    return Err(ListenError::Live(path.to_path_buf()));
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
        // Bind with a restrictive umask so the file never exists with looser bits, then set
        // the exact mode. The daemon is single-threaded at this point.
        let old = rustix::process::umask(Mode::from_raw_mode(0o177));
        let bound = UnixDatagram::bind(path);
        rustix::process::umask(old);
        let sock = bound.map_err(io_err("bind socket", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io_err("set mode of", path.display()))?;
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
