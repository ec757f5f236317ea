//! The control socket end to end against the REAL daemon: real agent processes (`varta agent`)
//! beating over a real Unix socket into `varta-watch run`, which identifies them from `/proc`,
//! and the real `varta-watch` binary's `status` and `silence` subcommands talking to its
//! control socket. Needs `cargo build -p varta-tools` first.

mod policy_support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::process::{Command, Output};
use std::time::Duration;

use policy_support::Daemon;
use varta_watch::control::snapshot::{RowState, StatusSnapshot};
use varta_watch::control::Response;

fn watch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_varta-watch"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const CLASSES: &str = r#"
[[class]]
name = "test-agents"
match = { comm = "ctlpoke*" }
threshold-ms = 300
"#;

#[test]
fn status_and_silences_through_the_real_cli() {
    let obs = Daemon::start("ctl-cli", 300, CLASSES, &[]);
    let sock = obs.socket().to_str().unwrap().to_string();

    // Owner-only from the start.
    let meta = std::fs::metadata(obs.control()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let healthy = obs.agent("ctlpoke-a");
    let frozen = obs.agent("ctlpoke-b");
    let (hp, fp) = (healthy.pid(), frozen.pid());
    // Both beating and identified (the class comes from /proc's comm, resolved off the beat
    // path once the identity worker answered).
    obs.wait_for("both agents ok and classed", |s| {
        [hp, fp].iter().all(|p| {
            s.agents
                .iter()
                .any(|a| a.pid == *p && a.state == RowState::Ok && a.class == "test-agents")
        })
    });
    frozen.freeze();
    obs.wait_for("the frozen agent stalled", |s| {
        s.agents
            .iter()
            .any(|a| a.pid == fp && a.state == RowState::Stalled)
    });

    // The table: header, then the stalled agent first.
    let out = watch(&["status", "--socket", &sock]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("AGENT"), "{table}");
    for col in [
        "NAME",
        "STATE",
        "LAST BEAT",
        "RATE",
        "PAYLOAD",
        "CLASS",
        "SILENCED",
    ] {
        assert!(lines[0].contains(col), "{col} missing: {table}");
    }
    let first: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(first[0], format!("unix:{fp}"), "{table}");
    assert_eq!(first[2], "stalled", "{table}");
    let healthy_line = lines
        .iter()
        .find(|l| l.starts_with(&format!("unix:{hp} ")))
        .unwrap_or_else(|| panic!("healthy agent missing: {table}"));
    assert!(healthy_line.contains(" ok "), "{table}");
    assert!(healthy_line.contains("test-agents"), "{table}");
    assert!(healthy_line.contains("/s"), "rate missing: {table}");

    // Silence the frozen agent by pid for 2 h.
    let out = watch(&[
        "silence",
        "add",
        "--socket",
        &sock,
        "--match",
        &format!("pid={fp}"),
        "--match",
        "class=test-agents",
        "--for",
        "2h",
        "--comment",
        "swapping its disk",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(said.starts_with("silence #1 added"), "{said}");

    let out = watch(&["status", "--socket", &sock, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let snap: StatusSnapshot = serde_json::from_slice(&out.stdout).unwrap();
    let f = snap.agents.iter().find(|a| a.pid == fp).unwrap();
    assert!(f.silenced && f.silence_id == Some(1), "{f:?}");
    // Still shown as stalled: a silence hides alerts, not the truth.
    assert_eq!(f.state, RowState::Stalled);
    assert!(!snap.agents.iter().find(|a| a.pid == hp).unwrap().silenced);
    assert_eq!(snap.silences.len(), 1);

    let out = watch(&["silence", "list", "--socket", &sock]);
    assert!(out.status.success(), "{}", text(&out));
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(list.starts_with("#1"), "{list}");
    assert!(
        list.contains(&format!("pid={fp} class=test-agents")),
        "{list}"
    );
    assert!(list.contains("swapping its disk"), "{list}");
    assert!(
        list.contains("ends in 1h59m") || list.contains("ends in 2h00m"),
        "{list}"
    );

    // Refusals name the rule and exit non-zero.
    let out = watch(&[
        "silence",
        "add",
        "--socket",
        &sock,
        "--match",
        "colour=red",
        "--for",
        "1h",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown matcher key \"colour\""),
        "{}",
        text(&out)
    );
    let out = watch(&["silence", "add", "--socket", &sock, "--for", "forever"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("duration"),
        "{}",
        text(&out)
    );
    let out = watch(&["silence", "expire", "99", "--socket", &sock]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no silence with id 99"),
        "{}",
        text(&out)
    );

    let out = watch(&["silence", "expire", "1", "--socket", &sock]);
    assert!(out.status.success(), "{}", text(&out));
    let snap = obs.wait_for("silence gone", |s| s.silences.is_empty());
    assert!(!snap.agents.iter().find(|a| a.pid == fp).unwrap().silenced);
    let out = watch(&["silence", "list", "--socket", &sock, "--json"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "[]");
}

#[test]
fn status_watch_keeps_redrawing() {
    let obs = Daemon::start("ctl-watch", 300, "", &[]);
    let agent = obs.agent("watchpoke");
    let pid = agent.pid();
    obs.wait_for("the agent", |s| s.agents.iter().any(|a| a.pid == pid));
    let mut child = Command::new(env!("CARGO_BIN_EXE_varta-watch"))
        .args(["status", "--watch", "--interval-ms", "100", "--socket"])
        .arg(obs.socket())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        // Read until three full screens (clear, header) have been drawn, or EOF.
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&all);
            if text.matches("\x1b[H\x1b[2JAGENT").count() >= 3 {
                break;
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = reader.join().unwrap();
    assert!(
        text.matches("\x1b[H\x1b[2JAGENT").count() >= 3,
        "fewer than three redraws in 10 s: {text:?}"
    );
    assert!(text.contains(&format!("unix:{pid} ")), "{text:?}");
}

#[test]
fn a_missing_observer_is_one_clear_line() {
    let dir = policy_support::observer::tmpdir("ctl-nobody");
    let sock = dir.join("varta.sock");
    let out = watch(&["status", "--socket", sock.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cannot reach the observer at"), "{err}");
    assert!(err.contains("varta.sock.ctl"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

fn roundtrip(stream: &mut UnixStream, line: &[u8]) -> Response {
    stream.write_all(line).unwrap();
    let mut answer = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut answer)
        .unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

#[test]
fn hostile_clients_get_errors_not_a_stuck_server() {
    let obs = Daemon::start("ctl-hostile", 300, "", &[]);
    let ctl = obs.control();

    // An idle connection holds nothing up.
    let _idle = UnixStream::connect(&ctl).unwrap();

    let mut c = UnixStream::connect(&ctl).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = roundtrip(&mut c, b"this is not json\n");
    assert!(!r.ok);
    assert!(r.error.unwrap().starts_with("bad request"));
    let r = roundtrip(&mut c, b"{\"cmd\":\"reboot\"}\n");
    assert!(!r.ok);
    // The same connection still serves good requests after bad ones.
    let r = roundtrip(&mut c, b"{\"cmd\":\"status\"}\n");
    assert!(r.ok && r.snapshot.is_some());
    let r = roundtrip(
        &mut c,
        b"{\"cmd\":\"silence_add\",\"matchers\":[\"pid=x\"],\"duration\":\"1h\"}\n",
    );
    assert_eq!(
        r.error.as_deref(),
        Some("matcher pid: value must be a number")
    );

    // An oversized request is refused with a reason and the connection closed.
    let mut big = UnixStream::connect(&ctl).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = vec![b'x'; 70 * 1024];
    line.push(b'\n');
    let _ = big.write_all(&line);
    let mut answer = String::new();
    BufReader::new(big).read_line(&mut answer).unwrap();
    assert!(answer.contains("longer than 65536 bytes"), "{answer}");

    // Another user cannot connect (owner-only socket); run the real client as nobody.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_varta-watch"))
        .args(["status", "--socket", obs.socket().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Permission denied"), "{err}");
}
