//! `varta bench --quick` runs every benchmark in one short run and prints each figure's line in
//! its closing summary. Figures are printed, not asserted: the checks here are that each phase
//! ran end to end (real observer, real sockets, real agent processes) and did its work.

use std::process::Command;

fn number_after(line: &str, key: &str) -> f64 {
    line.split(key)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|w| w.trim_end_matches([',', ';', '%']).parse().ok())
        .unwrap_or_else(|| panic!("no number after {key:?} in {line:?}"))
}

#[test]
fn quick_bench_prints_every_figure_side_by_side() {
    let out = Command::new(env!("CARGO_BIN_EXE_varta"))
        .args(["bench", "--quick"])
        .output()
        .expect("varta bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stdout}\n{stderr}");
    let summary: Vec<&str> = stdout
        .split("summary (this run, side by side):")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary in\n{stdout}"))
        .lines()
        .collect();
    let find = |needle: &str, from: usize| -> (usize, &str) {
        summary
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| l.contains(needle))
            .map(|(i, l)| (i, *l))
            .unwrap_or_else(|| panic!("no {needle:?} line in the summary\n{stdout}"))
    };
    // Bare receiver and observer, side by side, for each transport and both ways of driving.
    let (race, _) = find("ingest generator-bound", 0);
    let (drain, _) = find("ingest receiver-bound", 0);
    assert!(race < drain);
    for t in ["unix", "udp-plain", "udp-shared", "udp-master"] {
        let (i, line) = find(t, race);
        assert!(i < drain, "{t} in the generator-bound block");
        let cols: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|w| w.trim_end_matches('%').parse().unwrap())
            .collect();
        assert_eq!(
            cols.len(),
            6,
            "bare, observer, ratio, cpu bare, cpu obs, cpu ratio: {line}"
        );
        assert!(
            cols[0] > 0.0 && cols[1] > 0.0,
            "both receivers got frames: {line}"
        );
    }
    for t in ["udp-plain", "udp-shared", "udp-master"] {
        let (_, line) = find(t, drain);
        assert_eq!(line.split_whitespace().count(), 6, "{line}");
        // Draining is not timed: every queued datagram reaches the observer and is accepted.
        let detail = stdout
            .lines()
            .find(|l| l.contains(&format!("({t}: bare drained")))
            .unwrap();
        assert_eq!(
            number_after(detail, "bare drained"),
            number_after(detail, "observer accepted"),
            "{detail}"
        );
    }
    find("AEAD open per datagram", 0);
    find("tracker per secure datagram", 0);
    let (_, stall) = find("stall lateness", 0);
    for k in ["min", "median", "p99"] {
        assert!(number_after(stall, k).is_finite(), "{stall}");
    }
    assert!(stall.contains("; 0 false stalls"), "{stall}");
    let (_, procs) = find("agent processes at 10 Hz over the Unix socket", 0);
    assert!(number_after(procs, "CPU").is_finite(), "{procs}");
    assert!(
        number_after(procs, "of a core,") >= 0.0,
        "wake-ups/s: {procs}"
    );
    assert!(procs.contains("frames/s accepted"), "{procs}");
    let agents: f64 = procs.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(
        number_after(procs, "%,"),
        agents,
        "every agent process ran to its end and reported: {procs}"
    );
    let (_, many) = find("distinct master-key agents over UDP", 0);
    let agents: f64 = many.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(
        number_after(many, "CPU ns per beat,"),
        agents,
        "every master-key identity tracked: {many}"
    );
    assert!(many.contains(" 0 kernel drops"), "{many}");
    assert!(
        many.contains("beats/s accepted") && many.contains("RSS"),
        "{many}"
    );
}
