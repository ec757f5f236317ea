//! A slow output can never freeze detection: with stdout a pipe nobody reads, a flood of
//! event lines fills it, and a stall still reaches the export file and the metrics on time;
//! the lines that did not fit the writer's queue are counted, not waited for. Also the export
//! file's own rules: the existing observer's six-column lines, refused if it is a symbolic
//! link or another user's file.

mod hardening_support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use hardening_support::{frame, tmpdir, wait_file_line, Observer, Stdout};
use vlp_core::Status;

#[test]
fn a_stdout_nobody_reads_does_not_delay_a_stall() {
    let dir = tmpdir("slow-stdout");
    let export = dir.join("events.tsv");
    let obs = Observer::start(
        &dir,
        Stdout::NeverRead,
        &[
            "--format",
            "json",
            "--threshold-ms",
            "300",
            "--udp-port",
            "0",
            "--allow-plaintext-udp",
            "--export-file",
            export.to_str().unwrap(),
        ],
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(obs.udp.unwrap()).unwrap();
    // One plain UDP agent whose status flips on every frame: one event line per frame, far
    // more than the pipe (64 KiB) and the stdout queue hold. Sent until the observer says it
    // dropped stdout lines (the loop went on while stdout was stuck).
    let flapper = 4_000_000;
    let mut nonce = 0u64;
    let end = Instant::now() + Duration::from_secs(60);
    let dropped = r#"varta_output_dropped_total{sink="stdout"}"#;
    loop {
        for _ in 0..2_000 {
            nonce += 1;
            let st = if nonce % 2 == 0 {
                Status::Ok
            } else {
                Status::Degraded
            };
            let _ = udp.send(&frame(st, flapper, nonce));
        }
        std::thread::sleep(Duration::from_millis(2));
        if nonce % 20_000 == 0 && obs.metric(dropped) > 0.0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "no stdout line dropped after {nonce} frames:\n{}",
            obs.scrape()
        );
    }
    // stdout is stuck now. An agent on the Unix socket beats, then goes silent.
    let me = std::process::id();
    let c = obs.client();
    for n in 1..=3 {
        c.send(&frame(Status::Ok, me, n)).unwrap();
    }
    // The flapper goes silent too; both stall and both stalls reach the export file.
    let line = wait_file_line(
        &export,
        &["\tstall\t", &format!("\t{me}\t")],
        Duration::from_secs(5),
    );
    let cols: Vec<&str> = line.split('\t').collect();
    assert_eq!(cols.len(), 6, "{line}");
    assert_eq!(&cols[1..], ["stall", &me.to_string(), "3", "stall", "-"]);
    wait_file_line(
        &export,
        &["\tstall\t", &format!("\t{flapper}\t")],
        Duration::from_secs(5),
    );
    // The metrics come from a loop that is turning: the stall is counted there as well.
    obs.wait_metric_at_least(
        r#"varta_events_total{kind="stall"}"#,
        2.0,
        Duration::from_secs(5),
    );
    assert_eq!(
        obs.metric(r#"varta_output_dropped_total{sink="export"}"#),
        0.0,
        "the export file keeps up: nothing of it dropped"
    );
    // Shutdown is bounded even though stdout never drains.
    let t = Instant::now();
    assert!(obs.terminate().success());
    assert!(t.elapsed() < Duration::from_secs(30));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn export_lines_accepted_into_the_queue_are_written_by_shutdown() {
    let dir = tmpdir("export-flush");
    let export = dir.join("events.tsv");
    let obs = Observer::start(
        &dir,
        Stdout::Null,
        &[
            "--threshold-ms",
            "200",
            "--udp-port",
            "0",
            "--allow-plaintext-udp",
            "--export-file",
            export.to_str().unwrap(),
            "--export-format",
            "varta",
        ],
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(obs.udp.unwrap()).unwrap();
    for pid in 1..=500u32 {
        udp.send(&frame(Status::Ok, 10_000 + pid, 1)).unwrap();
    }
    obs.wait_metric_at_least(
        r#"varta_events_total{kind="new"}"#,
        500.0,
        Duration::from_secs(10),
    );
    assert!(obs.terminate().success());
    let text = std::fs::read_to_string(&export).unwrap();
    let new = text
        .lines()
        .filter(|l| l.split('\t').nth(1) == Some("new"))
        .count();
    assert_eq!(new, 500, "every accepted line is in the file at exit");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn export_file_refuses_links_and_files_of_open_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmpdir("export-rules");
    let target = dir.join("target");
    std::fs::write(&target, "").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.join("link.tsv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let open = dir.join("open.tsv");
    std::fs::write(&open, "").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (path, why) in [(&link, "symbolic link"), (&open, "0644")] {
        let out = std::process::Command::new(hardening_support::BIN)
            .arg("run")
            .arg("--socket")
            .arg(dir.join("s.sock"))
            .arg("--export-file")
            .arg(path)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("--export-file") && err.contains(why), "{err}");
    }
    // A new export file is created 0600.
    let fresh = dir.join("fresh.tsv");
    let obs = Observer::start(
        &dir,
        Stdout::Null,
        &["--export-file", fresh.to_str().unwrap()],
    );
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(obs.terminate().success());
    std::fs::remove_dir_all(&dir).unwrap();
}
