//! The panic hook, in a real child process: this test binary runs itself again with
//! `VARTA_PANIC_CHILD` set; the child installs a "previous" hook that announces itself and
//! lingers, then the Varta hook, beats once and panics. The parent, acting as the observer,
//! must receive the terminal frame while the child is still alive, and the previous hook
//! must run after it (chaining).
mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{temp_dir, UdpObserver, UdsObserver};
use varta_client::vlp_core::envelope::{MasterDatagram, SharedDatagram};
use varta_client::vlp_core::kdf::derive_agent_key;
use varta_client::{Frame, Key, Status, Varta, NONCE_TERMINAL, PANIC_PAYLOAD};

const CHILD: &str = "VARTA_PANIC_CHILD";
const PREVIOUS_RAN: &str = "PREVIOUS HOOK RAN";
const SHARED: [u8; 32] = [0x21; 32];
const MASTER: [u8; 32] = [0x31; 32];

/// Child side: `spec` is `uds:PATH`, `shared:ADDR` or `master:ADDR`.
fn child(spec: &str) {
    std::panic::set_hook(Box::new(|_| {
        // Runs after the Varta hook (which chains to it). Lingers so the parent can see the
        // frame arrive while this process is alive.
        let mut e = std::io::stderr();
        let _ = writeln!(e, "{PREVIOUS_RAN}");
        std::thread::sleep(Duration::from_millis(700));
    }));
    let (kind, target) = spec.split_once(':').unwrap();
    let mut v: Varta = match kind {
        "uds" => {
            varta_client::install_panic_handler(target).unwrap();
            Varta::connect(target).unwrap().into()
        }
        "shared" => {
            varta_client::install_panic_handler_secure_udp(target, Key::from_bytes(SHARED))
                .unwrap();
            Varta::connect_secure_udp(target, Key::from_bytes(SHARED))
                .unwrap()
                .into()
        }
        "master" => {
            varta_client::install_panic_handler_secure_udp_with_master(
                target,
                Key::from_bytes(MASTER),
            )
            .unwrap();
            Varta::connect_secure_udp_with_master(target, Key::from_bytes(MASTER))
                .unwrap()
                .into()
        }
        _ => unreachable!("unknown child spec {spec}"),
    };
    assert!(v.beat(Status::Ok, 5).is_sent());
    panic!("deliberate panic in the child");
}

fn spawn(test_name: &str, spec: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, spec)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// After the terminal frame arrived: the child is still alive (its previous hook is
/// lingering), then exits with the panic, and the previous hook ran.
///
/// The pause makes the order observable: had the previous hook run first, its 700 ms would
/// be over when the frame arrives and the child would be gone 200 ms later.
fn check_child_after_terminal(mut c: std::process::Child) {
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        c.try_wait().unwrap().is_none(),
        "the terminal frame arrived before the process died"
    );
    let status = c.wait().unwrap();
    assert!(!status.success());
    let mut err = String::new();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains(PREVIOUS_RAN), "previous hook chained: {err}");
}

#[test]
fn uds_panic_frame() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let dir = temp_dir("panic");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let c = spawn("uds_panic_frame", &format!("uds:{}", obs.path.display()));
    let pid = c.id();
    let beat = Frame::parse(&obs.recv()).unwrap();
    assert_eq!((beat.pid(), beat.nonce(), beat.payload()), (pid, 1, 5));
    let bytes = obs.recv();
    let t = Frame::parse(&bytes).unwrap();
    check_child_after_terminal(c);
    assert_eq!(&bytes[16..24], &NONCE_TERMINAL.to_le_bytes());
    assert_eq!(t.status(), Status::Critical);
    assert!(t.is_terminal() && !t.is_goodbye());
    assert_eq!((t.pid(), t.payload()), (pid, PANIC_PAYLOAD));
    assert_eq!(obs.try_recv(), None, "exactly one terminal frame");
}

#[test]
fn shared_key_panic_frame() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let obs = UdpObserver::bind();
    let c = spawn("shared_key_panic_frame", &format!("shared:{}", obs.addr()));
    let pid = c.id();
    let key = Key::from_bytes(SHARED);
    let (beat_iv, beat) = SharedDatagram::from_bytes(&obs.recv())
        .unwrap()
        .open(&key)
        .unwrap();
    let (iv, t) = SharedDatagram::from_bytes(&obs.recv())
        .unwrap()
        .open(&key)
        .unwrap();
    check_child_after_terminal(c);
    assert_eq!((beat.pid(), beat.nonce()), (pid, 1));
    assert!(t.is_terminal() && !t.is_goodbye());
    assert_eq!(t.pid(), pid);
    // The hook's own session: its own salt, so never the application's IV stream.
    assert_ne!(iv.random, beat_iv.random);
}

#[test]
fn master_key_panic_frame() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let obs = UdpObserver::bind();
    let c = spawn("master_key_panic_frame", &format!("master:{}", obs.addr()));
    let pid = c.id();
    let agent = derive_agent_key(&Key::from_bytes(MASTER), pid);
    let _ = obs.recv(); // the regular beat
    let d = MasterDatagram::from_bytes(&obs.recv()).unwrap();
    check_child_after_terminal(c);
    assert_eq!(d.pid(), pid);
    let (_, t) = d.open(&agent).unwrap();
    assert!(t.is_terminal());
    assert_eq!(t.status(), Status::Critical);
}
