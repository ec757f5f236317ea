//! Recovery against the real daemon: real agents crash, real recovery children run (and
//! misbehave), and what they see, print and leave behind is checked.

mod recovery_support;

use std::time::{Duration, Instant};

use recovery_support::{
    agent_bin, crash_agent, gone, read_pid, run_bin, tmpdir, write_file, Observer,
};

#[test]
fn child_environment_is_cleared_to_path_plus_recovery_env_unless_inherited() {
    let dir = tmpdir("env");
    let secret = [("VARTA_TEST_SECRET", "do-not-leak")];
    let obs = Observer::start_env(
        &dir,
        &[
            "--recovery-exec",
            "/usr/bin/env",
            "--recovery-env",
            "FOO=bar baz",
            "--recovery-capture-stdio",
        ],
        &secret,
    );
    crash_agent(&obs);
    let line = obs.wait_for(
        &["\"kind\":\"recovery\"", "reaped_zero"],
        Duration::from_secs(5),
    );
    // Exactly these two variables (the environment is passed sorted by name).
    assert!(
        line.contains(r#"output 31/31 bytes: \"FOO=bar baz\\nPATH=/usr/bin:/bin\\n\""#),
        "{line}"
    );
    drop(obs);

    let obs = Observer::start_env(
        &dir,
        &[
            "--recovery-exec",
            "/usr/bin/env",
            "--recovery-inherit-env",
            "--recovery-capture-stdio",
            "--recovery-capture-bytes",
            "1048576",
        ],
        &secret,
    );
    crash_agent(&obs);
    let line = obs.wait_for(
        &["\"kind\":\"recovery\"", "reaped_zero"],
        Duration::from_secs(5),
    );
    assert!(line.contains("VARTA_TEST_SECRET=do-not-leak"), "{line}");
}

#[test]
fn captured_output_is_bounded_and_a_chatty_child_never_blocks() {
    let dir = tmpdir("capture");
    // 300 kB: far more than a pipe holds (64 kB), so the child finishes only if the loop
    // drains the pipe while it runs.
    let obs = Observer::start(
        &dir,
        &[
            "--recovery-exec",
            "/bin/sh -c 'head -c 300000 /dev/zero | tr \"\\000\" x; echo {reason} >&2'",
            "--recovery-capture-stdio",
            "--recovery-capture-bytes",
            "16",
            "--recovery-timeout-ms",
            "60000",
        ],
    );
    crash_agent(&obs);
    let line = obs.wait_for(
        &["\"kind\":\"recovery\"", "exited 0 (reaped_zero)"],
        Duration::from_secs(10),
    );
    assert!(
        line.contains(r#"output 16/300006 bytes: \"xxxxxxxxxxxxxxxx\""#),
        "{line}"
    );
    obs.wait_metric_at_least(
        "varta_recovery_outcomes_total{outcome=\"reaped_zero\"}",
        1.0,
        Duration::from_secs(10),
    );
    assert_eq!(obs.metric("varta_recovery_duration_count_total"), 1.0);
    assert!(obs.metric("varta_recovery_duration_ns_sum") > 0.0);
}

#[test]
fn placeholders_reach_the_program_from_a_checked_command_file() {
    let dir = tmpdir("placeholders");
    let out = dir.join("args.txt");
    let cmd_file = dir.join("recover.cmd");
    write_file(
        &cmd_file,
        &format!(
            "# the recovery command\n/bin/sh -c 'echo \"$0 $1 $2 $3 $4\" > {}' {{pid}} {{listener}} {{agent}} {{status}} {{reason}}\n",
            out.display()
        ),
        0o600,
    );
    let obs = Observer::start(&dir, &["--recovery-exec-file", cmd_file.to_str().unwrap()]);
    let pid = crash_agent(&obs);
    obs.wait_for(
        &["\"kind\":\"recovery\"", "reaped_zero"],
        Duration::from_secs(5),
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().trim(),
        format!("{pid} unix unix:{pid} critical crash")
    );
    drop(obs);

    // The same file readable by others is refused at start, naming the rule.
    let open = dir.join("open.cmd");
    write_file(&open, "/bin/true\n", 0o644);
    let r = run_bin(&[
        "run",
        "--socket",
        dir.join("x.sock").to_str().unwrap(),
        "--recovery-exec-file",
        open.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("--recovery-exec-file") && err.contains("0644"),
        "{err}"
    );
}

#[test]
fn bad_recovery_flags_exit_2_naming_the_flag() {
    let dir = tmpdir("badflags");
    let sock = dir.join("s.sock");
    let sock = sock.to_str().unwrap();
    for (args, needle) in [
        (
            vec![
                "--recovery-exec",
                "/bin/true",
                "--recovery-audit-sync-every",
                "0",
            ],
            "--recovery-audit-sync-every 0",
        ),
        (
            vec![
                "--recovery-exec",
                "/bin/true",
                "--recovery-capture-stdio",
                "--recovery-capture-bytes",
                "1048577",
            ],
            "--recovery-capture-bytes",
        ),
        (vec!["--shutdown-grace-ms", "99"], "--shutdown-grace-ms 99"),
        (
            vec!["--recovery-exec", "/bin/echo {agnet}"],
            "unknown placeholder",
        ),
        (
            vec!["--recovery-exec", "/bin/true", "--recovery-env", "NOEQUALS"],
            "--recovery-env",
        ),
    ] {
        let mut all = vec!["run", "--socket", sock];
        all.extend(args);
        let r = run_bin(&all);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{all:?}: {err}");
        assert!(err.contains(needle), "{all:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn timeout_kills_the_child_and_its_grandchildren() {
    let dir = tmpdir("timeout");
    let gpid = dir.join("grandchild.pid");
    let obs = Observer::start(
        &dir,
        &[
            "--recovery-exec",
            &format!("/bin/sh -c 'sleep 60 & echo $! > {}; wait'", gpid.display()),
            "--recovery-timeout-ms",
            "300",
        ],
    );
    crash_agent(&obs);
    let g = read_pid(&gpid, 5);
    obs.wait_for(
        &["\"kind\":\"recovery\"", "still running at its deadline"],
        Duration::from_secs(5),
    );
    obs.wait_for(
        &["\"kind\":\"recovery\"", "after its timeout (killed)"],
        Duration::from_secs(5),
    );
    let end = Instant::now() + Duration::from_secs(5);
    while !gone(g) {
        assert!(Instant::now() < end, "grandchild {g} survived the timeout");
        std::thread::sleep(Duration::from_millis(10));
    }
    obs.wait_metric_at_least(
        "varta_recovery_outcomes_total{outcome=\"timed_out\"}",
        1.0,
        Duration::from_secs(10),
    );
}

#[test]
fn shutdown_leaves_no_child_or_grandchild_even_if_they_ignore_sigterm() {
    let dir = tmpdir("shutdown");
    let (cpid, gpid) = (dir.join("child.pid"), dir.join("grandchild.pid"));
    let mut obs = Observer::start(
        &dir,
        &[
            "--recovery-exec",
            &format!(
                "/bin/sh -c 'trap \"\" TERM; sleep 600 & echo $! > {}; echo $$ > {}; while :; do sleep 1; done'",
                gpid.display(),
                cpid.display()
            ),
            "--shutdown-grace-ms",
            "300",
            "--recovery-timeout-ms",
            "600000",
        ],
    );
    crash_agent(&obs);
    let (c, g) = (read_pid(&cpid, 5), read_pid(&gpid, 5));
    assert!(!gone(c) && !gone(g));
    let status = obs.terminate();
    assert!(status.success(), "{status:?}");
    assert!(gone(c), "recovery child {c} outlived the observer");
    assert!(gone(g), "grandchild {g} outlived the observer");
    let line = obs.wait_for(
        &["\"kind\":\"recovery\"", "(shutdown)"],
        Duration::from_secs(5),
    );
    assert!(line.contains("killed by signal 9"), "{line}");
}

#[test]
fn policy_admits_transports_by_opt_in() {
    let dir = tmpdir("policy");
    let master = dir.join("master.key");
    write_file(
        &master,
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
        0o600,
    );
    let udp_crash = |obs: &Observer| {
        let mut a = std::process::Command::new(agent_bin())
            .arg("agent")
            .arg("--udp")
            .arg(obs.udp.unwrap().to_string())
            .arg("--master-key-file")
            .arg(&master)
            .args(["--interval-ms", "1", "--crash-after", "1"])
            .spawn()
            .unwrap();
        assert_eq!(a.wait().unwrap().code(), Some(101));
    };
    let base = [
        "--udp-port",
        "0",
        "--master-key-file",
        master.to_str().unwrap(),
        "--recovery-exec",
        "/bin/true {pid}",
    ];
    // Per-agent keys: refused by default, counted by reason.
    let obs = Observer::start(&dir, &base);
    udp_crash(&obs);
    obs.wait_for(
        &["\"kind\":\"recovery\"", "refused (agent_key_not_allowed)"],
        Duration::from_secs(5),
    );
    obs.wait_metric_at_least(
        "varta_recovery_refused_total{reason=\"agent_key_not_allowed\"}",
        1.0,
        Duration::from_secs(10),
    );
    let body = obs.scrape();
    for reason in [
        "unauthenticated_transport",
        "cross_namespace_agent",
        "debounce_capacity",
        "outstanding_capacity",
        "socket_mode_only",
    ] {
        assert!(
            body.contains(&format!(
                "varta_recovery_refused_total{{reason=\"{reason}\"}} 0"
            )),
            "{reason} not exported at zero"
        );
    }
    drop(obs);
    // ... admitted with --recovery-allow-agent-keys.
    let mut args = base.to_vec();
    args.push("--recovery-allow-agent-keys");
    let obs = Observer::start(&dir, &args);
    udp_crash(&obs);
    obs.wait_for(
        &["\"kind\":\"recovery\"", "spawned child"],
        Duration::from_secs(5),
    );
    drop(obs);

    // Plaintext UDP: refused unless the operator accepts it by name.
    let plain = |extra: &[&str]| {
        let mut args = vec![
            "--udp-port",
            "0",
            "--allow-plaintext-udp",
            "--recovery-exec",
            "/bin/true",
        ];
        args.extend_from_slice(extra);
        let obs = Observer::start(&dir, &args);
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect(obs.udp.unwrap()).unwrap();
        let now = recovery_support::mono_ns();
        s.send(
            &vlp_core::Frame::new(vlp_core::Status::Ok, 6001, now, 1, 0)
                .unwrap()
                .emit(),
        )
        .unwrap();
        s.send(&vlp_core::Frame::terminal(6001, now + 1, 1).unwrap().emit())
            .unwrap();
        obs
    };
    let obs = plain(&[]);
    obs.wait_for(
        &[
            "\"kind\":\"recovery\"",
            "refused (unauthenticated_transport)",
        ],
        Duration::from_secs(5),
    );
    drop(obs);
    let obs = plain(&["--plaintext-udp-i-accept-recovery-on-unauthenticated-transport"]);
    obs.wait_for(
        &["\"kind\":\"recovery\"", "spawned child"],
        Duration::from_secs(5),
    );
    drop(obs);
    let obs = plain(&["--secure-udp-i-accept-recovery-on-unauthenticated-transport"]);
    obs.wait_for(
        &[
            "\"kind\":\"recovery\"",
            "refused (unauthenticated_transport)",
        ],
        Duration::from_secs(5),
    );
    drop(obs);
    let obs = plain(&["--recovery-allow-unattested"]);
    obs.wait_for(
        &["\"kind\":\"recovery\"", "spawned child"],
        Duration::from_secs(5),
    );
}

#[test]
fn shutdown_sends_sigterm_first_and_audits_how_each_child_ended() {
    let dir = tmpdir("graceful");
    let log = dir.join("audit.log");
    let ready = dir.join("ready.pid");
    // Exits 0 on SIGTERM: the grace period lets it finish on its own.
    let cmd = format!(
        "/bin/sh -c 'trap \"exit 0\" TERM; echo $$ > {}; sleep 600 & wait'",
        ready.display()
    );
    let mut obs = Observer::start(
        &dir,
        &[
            "--recovery-exec",
            &cmd,
            "--shutdown-grace-ms",
            "10000",
            "--recovery-timeout-ms",
            "600000",
            "--recovery-audit-file",
            log.to_str().unwrap(),
        ],
    );
    let pid = crash_agent(&obs);
    obs.wait_for(
        &["\"kind\":\"recovery\"", "spawned child"],
        Duration::from_secs(5),
    );
    // The trap is installed once the shell has written its pid.
    read_pid(&ready, 5);
    assert!(obs.terminate().success());
    let line = obs.wait_for(
        &["\"kind\":\"recovery\"", "(shutdown)"],
        Duration::from_secs(5),
    );
    assert!(line.contains("exited 0"), "{line}");
    let text = std::fs::read_to_string(&log).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(rows[0][5], "spawned");
    assert_eq!(rows[1][5], "shutdown");
    assert_eq!(rows[1][3], format!("unix:{pid}"));
    assert!(rows[1][6].starts_with("exit=0 "), "{text}");
    let out = run_bin(&["audit", "verify", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
