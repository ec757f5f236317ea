//! Forged master-key datagrams with invented pids cost a bounded amount of key derivation
//! work: past `--max-key-derivations-per-sec` they are refused unopened and counted
//! (`varta_rejections_total{reason="derive_budget"}`), and a real agent still gets in. Prints
//! the observer's CPU time and memory for the flood (run with `--nocapture`).

mod hardening_support;

use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use hardening_support::{metric_in, mono_ns, tmpdir, Observer, Stdout};
use vlp_core::{Frame, Iv, Key, MasterDatagram, Status};

fn write_key(path: &Path, hex: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(f, "{hex}").unwrap();
}

/// The observer's user+system CPU time, clock ticks (USER_HZ: 100 per second on Linux), and
/// resident set, KiB.
fn usage(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat (utime, stime), counted from the state field (3rd).
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    (ticks, rss)
}

fn forged(pid: u32, wrong: &Key) -> [u8; 64] {
    let frame = Frame::new(Status::Ok, pid, mono_ns(), 1, 0).unwrap();
    let iv = Iv {
        random: pid.to_le_bytes().repeat(2).try_into().unwrap(),
        counter: 1,
    };
    MasterDatagram::seal(wrong, &iv, &frame).0
}

fn flood(obs: &Observer, n: u32, wrong: &Key) -> (Duration, u64, u64) {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(obs.udp.unwrap()).unwrap();
    let datagrams: Vec<[u8; 64]> = (0..n).map(|i| forged(1_000_000 + i, wrong)).collect();
    let pid = obs.child.id();
    let (t0, rss0) = usage(pid);
    let start = Instant::now();
    for (i, d) in datagrams.iter().enumerate() {
        let _ = udp.send(d);
        if i % 500 == 499 {
            // Leave the kernel buffer room; the point is the observer's work, not drops.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let seen = |body: &str| {
        metric_in(body, r#"varta_rejections_total{reason="bad_tag"}"#)
            + metric_in(body, r#"varta_rejections_total{reason="derive_budget"}"#)
    };
    let end = Instant::now() + Duration::from_secs(30);
    let mut last = -1.0;
    loop {
        let v = seen(&obs.scrape());
        // Done when the count stops moving (the kernel may have dropped some).
        if v == last && v > 0.0 {
            break;
        }
        last = v;
        assert!(Instant::now() < end, "flood not processed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let elapsed = start.elapsed();
    let (t1, rss1) = usage(pid);
    (elapsed, t1 - t0, rss1.saturating_sub(rss0))
}

#[test]
fn forged_pid_flood_costs_bounded_derivations() {
    let dir = tmpdir("derive");
    let master = "44".repeat(32);
    write_key(&dir.join("m"), &master);
    let budget = 500u32;
    let obs = Observer::start(
        &dir,
        Stdout::Null,
        &[
            "--udp-port",
            "0",
            "--master-key-file",
            dir.join("m").to_str().unwrap(),
            "--max-key-derivations-per-sec",
            &budget.to_string(),
        ],
    );
    let wrong = Key::from_bytes([9; 32]);
    let n = 20_000;
    let (elapsed, ticks, rss) = flood(&obs, n, &wrong);
    let body = obs.scrape();
    let derived = metric_in(&body, r#"varta_rejections_total{reason="bad_tag"}"#);
    let refused = metric_in(&body, r#"varta_rejections_total{reason="derive_budget"}"#);
    println!(
        "forged-pid flood: {n} master-key datagrams, budget {budget}/s: {derived} derived and refused (bad tag), {refused} refused unopened; {elapsed:?}, observer CPU {} ms, RSS +{rss} KiB",
        ticks * 10
    );
    assert!(refused > 0.0, "the budget refused some");
    // Derivations: at most the burst plus the rate over the time the flood took.
    let bound = f64::from(budget) * (elapsed.as_secs_f64() + 1.0);
    assert!(derived <= bound, "{derived} derivations > {bound}");
    assert_eq!(metric_in(&body, "varta_watch_pids_tracked"), 0.0);

    // A real agent with its own key still gets in once the budget refills.
    std::thread::sleep(Duration::from_millis(1100));
    let agent_key = vlp_core::kdf::derive_agent_key(&Key::from_hex(&master).unwrap(), 7);
    let frame = Frame::new(Status::Ok, 7, mono_ns(), 1, 0).unwrap();
    let d = MasterDatagram::seal(
        &agent_key,
        &Iv {
            random: [7; 8],
            counter: 1,
        },
        &frame,
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(&d.0, obs.udp.unwrap()).unwrap();
    obs.wait_metric_at_least("varta_watch_pids_tracked", 1.0, Duration::from_secs(5));
    assert!(obs.terminate().success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn forged_pid_flood_figures_with_the_default_budget() {
    let dir = tmpdir("derive-default");
    write_key(&dir.join("m"), &"55".repeat(32));
    let obs = Observer::start(
        &dir,
        Stdout::Null,
        &[
            "--udp-port",
            "0",
            "--master-key-file",
            dir.join("m").to_str().unwrap(),
        ],
    );
    let n = 20_000;
    let (elapsed, ticks, rss) = flood(&obs, n, &Key::from_bytes([1; 32]));
    let body = obs.scrape();
    println!(
        "forged-pid flood, default budget: {n} datagrams: {} derived, {} refused unopened; {elapsed:?}, observer CPU {} ms, RSS +{rss} KiB",
        metric_in(&body, r#"varta_rejections_total{reason="bad_tag"}"#),
        metric_in(&body, r#"varta_rejections_total{reason="derive_budget"}"#),
        ticks * 10
    );
    assert_eq!(metric_in(&body, "varta_watch_pids_tracked"), 0.0);
    assert!(obs.terminate().success());
    std::fs::remove_dir_all(&dir).unwrap();
}
