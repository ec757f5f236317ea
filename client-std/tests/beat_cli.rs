//! The `beat` example is the agent other test suites drive; its flags, output and exit codes
//! are an interface. These tests run the built example against real observer sockets.
//!
//! `cargo test -p varta-client` builds the examples before running tests; when only this test
//! target is built (`--test beat_cli`), build the example first (`cargo build -p varta-client
//! --example beat`).
mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{temp_dir, UdpObserver, UdsObserver};
use varta_client::vlp_core::envelope::{MasterDatagram, SharedDatagram};
use varta_client::vlp_core::kdf::derive_agent_key;
use varta_client::{Frame, Key, Status};

fn beat_exe() -> PathBuf {
    // target/<profile>/deps/beat_cli-<hash> -> target/<profile>/examples/beat
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("beat"))
        .unwrap();
    assert!(
        path.exists(),
        "{} missing: build it with `cargo build -p varta-client --example beat`",
        path.display()
    );
    path
}

fn run(args: &[&str]) -> Output {
    Command::new(beat_exe())
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn key_file(dir: &std::path::Path, hex_byte: &str, mode: u32) -> PathBuf {
    let path = dir.join(format!("{hex_byte}-{mode:o}.key"));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .unwrap();
    std::fs::write(&path, format!("{}\n", hex_byte.repeat(32))).unwrap();
    path
}

#[test]
fn counts_beats_and_says_goodbye_over_uds() {
    let dir = temp_dir("cli-uds");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let sock = obs.path.to_str().unwrap();
    let out = run(&[
        "--socket",
        sock,
        "--count",
        "3",
        "--interval-ms",
        "5",
        "--status",
        "degraded",
        "--payload",
        "77",
        "--goodbye",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let pid: u32 = lines[0].strip_prefix("pid=").unwrap().parse().unwrap();
    assert_eq!(
        &lines[1..],
        &[
            "beat n=1 nonce=1 outcome=sent",
            "beat n=2 nonce=2 outcome=sent",
            "beat n=3 nonce=3 outcome=sent",
            "goodbye outcome=sent",
            "done sent=3 dropped=0 failed=0",
        ]
    );
    for n in 1..=3 {
        let f = Frame::parse(&obs.recv()).unwrap();
        assert_eq!(
            (f.pid(), f.nonce(), f.status(), f.payload()),
            (pid, n, Status::Degraded, 77)
        );
    }
    assert!(Frame::parse(&obs.recv()).unwrap().is_goodbye());
}

#[test]
fn stall_status_fails_with_exit_3() {
    let dir = temp_dir("cli-stall");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let out = run(&[
        "--socket",
        obs.path.to_str().unwrap(),
        "--count",
        "1",
        "--status",
        "stall",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stdout(&out).contains("outcome=failed:"), "{}", stdout(&out));
    assert_eq!(obs.try_recv(), None);
}

#[test]
fn bad_arguments_and_key_files_exit_2_and_absent_observer_exits_1() {
    let dir = temp_dir("cli-bad");
    // Neither --socket nor --udp.
    assert_eq!(run(&["--count", "1"]).status.code(), Some(2));
    // A key file readable by others is refused (VLP v0.2 §5).
    let open = key_file(&dir, "ab", 0o644);
    let out = run(&["--udp", "127.0.0.1:9", "--key-file", open.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    // --key-file needs --udp.
    let ok = key_file(&dir, "ab", 0o600);
    let out = run(&[
        "--socket",
        "/nonexistent",
        "--key-file",
        ok.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    // Nobody at the socket path.
    let out = run(&["--socket", dir.join("none.sock").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn secure_flags_seal_with_the_right_keys() {
    let dir = temp_dir("cli-secure");
    let obs = UdpObserver::bind();
    let addr = obs.addr().to_string();
    let shared = key_file(&dir, "c1", 0o600);
    let out = run(&[
        "--udp",
        &addr,
        "--key-file",
        shared.to_str().unwrap(),
        "--count",
        "1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let (_, f) = SharedDatagram::from_bytes(&obs.recv())
        .unwrap()
        .open(&Key::from_bytes([0xC1; 32]))
        .unwrap();
    assert_eq!(f.nonce(), 1);

    let master = key_file(&dir, "d2", 0o600);
    let out = run(&[
        "--udp",
        &addr,
        "--master-key-file",
        master.to_str().unwrap(),
        "--count",
        "1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let pid: u32 = stdout(&out).lines().next().unwrap()[4..].parse().unwrap();
    let d = MasterDatagram::from_bytes(&obs.recv()).unwrap();
    assert_eq!(d.pid(), pid);
    let agent = derive_agent_key(&Key::from_bytes([0xD2; 32]), pid);
    assert_eq!(d.open(&agent).unwrap().1.pid(), pid);

    // An agent key (the file holds the key derived from master 0xE3.. for id 4242): the
    // frames carry the id, and the master-derived key for it opens them.
    let master = Key::from_bytes([0xE3; 32]);
    let agent_key = dir.join("agent-4242.key");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&agent_key)
        .unwrap();
    let hex: String = derive_agent_key(&master, 4242)
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(&agent_key, hex).unwrap();
    let out = run(&[
        "--udp",
        &addr,
        "--agent-key-file",
        agent_key.to_str().unwrap(),
        "--agent-id",
        "4242",
        "--count",
        "1",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).lines().next(), Some("pid=4242"));
    let d = MasterDatagram::from_bytes(&obs.recv()).unwrap();
    assert_eq!(d.pid(), 4242);
    assert_eq!(
        d.open(&derive_agent_key(&master, 4242)).unwrap().1.pid(),
        4242
    );
    assert!(d.open(&derive_agent_key(&master, 4243)).is_err());
    // --agent-id is required with an agent key file.
    let out = run(&[
        "--udp",
        &addr,
        "--agent-key-file",
        agent_key.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn crash_after_sends_the_terminal_frame_and_exits_101() {
    let dir = temp_dir("cli-crash");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let out = run(&[
        "--socket",
        obs.path.to_str().unwrap(),
        "--interval-ms",
        "5",
        "--crash-after",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(101));
    assert_eq!(Frame::parse(&obs.recv()).unwrap().nonce(), 1);
    assert_eq!(Frame::parse(&obs.recv()).unwrap().nonce(), 2);
    let t = Frame::parse(&obs.recv()).unwrap();
    assert!(t.is_terminal() && !t.is_goodbye());
}

#[test]
fn hang_after_stops_beating_but_stays_alive() {
    let dir = temp_dir("cli-hang");
    let obs = UdsObserver::bind(&dir.join("obs.sock"));
    let mut child = Command::new(beat_exe())
        .args([
            "--socket",
            obs.path.to_str().unwrap(),
            "--interval-ms",
            "5",
            "--hang-after",
            "2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line == "hanging";
        seen.push(line);
        if done {
            break;
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}"); // pid=, two beats, hanging
    assert_eq!(Frame::parse(&obs.recv()).unwrap().nonce(), 1);
    assert_eq!(Frame::parse(&obs.recv()).unwrap().nonce(), 2);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(obs.try_recv(), None, "no beat after --hang-after");
    assert!(child.try_wait().unwrap().is_none(), "still alive");
    child.kill().unwrap();
    let _ = child.wait();
}
