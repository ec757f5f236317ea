//! Files the observer makes: the socket gets its mode at creation (no chmod by path), and a
//! socket file already at the path is replaced only when a connect says nobody listens
//! (`ECONNREFUSED`), never on another error.

mod hardening_support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};

use hardening_support::{tmpdir, Observer, Stdout, BIN};

fn start_fails(sock: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .arg("run")
        .arg("--socket")
        .arg(sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn socket_is_created_with_its_mode() {
    for (mode, want) in [(None, 0o600), (Some("0640"), 0o640), (Some("0666"), 0o666)] {
        let dir = tmpdir(&format!("mode-{want:o}"));
        let args: Vec<&str> = match mode {
            Some(m) => vec!["--socket-mode", m],
            None => vec![],
        };
        let obs = Observer::start(&dir, Stdout::Null, &args);
        let got = std::fs::symlink_metadata(&obs.socket)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(got & 0o7777, want, "--socket-mode {mode:?}");
        assert!(obs.terminate().success());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn stale_socket_is_replaced_live_one_refused() {
    let dir = tmpdir("stale");
    let sock = dir.join("s.sock");
    // A live socket: refused, left in place.
    let live = UnixDatagram::bind(&sock).unwrap();
    let err = start_fails(&sock);
    assert!(err.contains("in use"), "{err}");
    assert!(sock.exists());
    // Its owner gone: the connect is refused, the file is stale and replaced.
    drop(live);
    let obs = Observer::start(&dir, Stdout::Null, &[]);
    assert!(obs.terminate().success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn socket_that_refuses_us_for_another_reason_is_left_alone() {
    use std::os::unix::process::CommandExt;
    let dir = tmpdir("eacces");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.join("s.sock");
    let other = UnixDatagram::bind(&sock).unwrap();
    // Nobody may write to it: a connect fails with EACCES, which says nothing about whether
    // an observer listens there. (Root connects whatever the mode, so as root the observer
    // runs as nobody.)
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg("--socket")
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if rustix::process::geteuid().is_root() {
        cmd.uid(65534).gid(65534).env_remove("XDG_RUNTIME_DIR");
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("probe") && err.contains("denied"), "{err}");
    assert!(sock.exists(), "the socket file is not removed");
    drop(other);
    std::fs::remove_dir_all(&dir).unwrap();
}
