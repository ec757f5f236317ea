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
    // Bare receiver and observer at 1 and 2 receive workers (the default `--workers 1,2`),
    // side by side, for each transport and both ways of driving: bare /s, then per worker
    // count the observer's figure and its ratio to bare, then CPU ns bare and per worker count.
    let (race, _) = find("ingest generator-bound", 0);
    let (drain, _) = find("ingest receiver-bound", 0);
    assert!(race < drain);
    let cells = |line: &str| -> Vec<Option<f64>> {
        line.split_whitespace()
            .skip(1)
            .map(|w| (w != "-").then(|| w.parse().unwrap()))
            .collect()
    };
    for t in ["unix", "udp-plain", "udp-shared", "udp-master"] {
        let (i, line) = find(t, race);
        assert!(i < drain, "{t} in the generator-bound block");
        let cols = cells(line);
        assert_eq!(
            cols.len(),
            8,
            "bare, 1w, 1w ratio, 2w, 2w ratio, cpu bare, cpu 1w, cpu 2w: {line}"
        );
        assert!(
            cols[0] > Some(0.0) && cols[1] > Some(0.0),
            "the bare receiver and the 1-worker observer got frames: {line}"
        );
        if t == "unix" {
            // The Unix socket is read by the event loop: one observer run, in the 1w column.
            assert_eq!((cols[3], cols[4], cols[7]), (None, None, None), "{line}");
        } else {
            assert!(
                cols[3] > Some(0.0),
                "the 2-worker observer got frames: {line}"
            );
            assert!(cols[7] > Some(0.0), "its CPU per frame was read: {line}");
        }
    }
    let drain_out = stdout
        .split("ingest, receiver-bound")
        .nth(1)
        .expect("a receiver-bound section");
    for t in ["udp-plain", "udp-shared", "udp-master"] {
        let (_, line) = find(t, drain);
        assert!(
            cells(line).iter().all(Option::is_some),
            "every column ran: {line}"
        );
        assert_eq!(cells(line).len(), 8, "{line}");
        // Draining is not timed: every queued datagram reaches the observer and is accepted,
        // at either worker count.
        let detail = stdout
            .lines()
            .find(|l| l.contains(&format!("({t}: bare drained")))
            .unwrap();
        let queued = number_after(detail, "bare drained");
        for w in [1, 2] {
            assert_eq!(
                number_after(detail, &format!("{w}-worker observer accepted")),
                queued,
                "{detail}"
            );
        }
        // ... and the receive threads together read every one of them.
        let spread = drain_out
            .lines()
            .find(|l| l.contains(&format!("({t}, 2 workers: datagrams per receive thread:")))
            .unwrap_or_else(|| panic!("no per-worker counts of {t}\n{stdout}"));
        let read: f64 = [0, 1]
            .iter()
            .map(|k| number_after(spread, &format!("worker {k}:")))
            .sum();
        assert_eq!(read, queued, "{spread}");
    }
    // Wall clock, nothing pinned: the bare receiver and the observer at 1 and 2 workers drain
    // the same queue; timed, not asserted. Drained means drained: every datagram queued was
    // accepted (none dropped) when the queues and threads were seen idle.
    let (wall, _) = find("ingest wall-clock drain", 0);
    assert!(drain < wall);
    for t in ["udp-plain", "udp-shared", "udp-master"] {
        let (i, line) = find(t, wall);
        assert!(i > wall, "{t} in the wall-clock block");
        let cols = cells(line);
        assert_eq!(
            cols.len(),
            9,
            "bare, 1w, 2w, 2w/1w, busy bare, busy 1w, busy 2w, runq 1w, runq 2w: {line}"
        );
        assert!(
            cols[..7].iter().all(|c| c.is_some_and(|v| v > 0.0)),
            "every column ran: {line}"
        );
        assert!(
            cols[7..].iter().all(|c| c.is_some_and(|v| v >= 0.0)),
            "{line}"
        );
        let detail = stdout
            .lines()
            .find(|l| l.contains(&format!("({t}: drained in bare")))
            .unwrap_or_else(|| panic!("no wall-clock detail of {t}\n{stdout}"));
        assert!(detail.contains("; kernel drops 0;"), "{detail}");
        for w in [1, 2] {
            let key = format!("{w}-worker observer accepted");
            let accepted = number_after(detail, &key);
            let queued = number_after(detail, &format!("{key} {accepted} of"));
            assert_eq!(accepted, queued, "{detail}");
            assert!(queued > 0.0, "{detail}");
        }
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
    let (i, many) = find("distinct master-key agents over UDP", 0);
    let agents: f64 = many.split_whitespace().next().unwrap().parse().unwrap();
    assert!(summary[i + 1].contains("beats/s") && summary[i + 1].contains("RSS"));
    for (row, workers) in summary[i + 2..i + 4].iter().zip([1.0, 2.0]) {
        let cols: Vec<f64> = row.split_whitespace().map(|w| w.parse().unwrap()).collect();
        assert_eq!(cols.len(), 8, "{row}");
        assert_eq!(cols[0], workers, "one row per worker count: {row}");
        assert!(cols[1] > 0.0, "beats/s: {row}");
        assert_eq!(cols[3], agents, "every master-key identity tracked: {row}");
        assert_eq!(cols[4], 0.0, "no kernel drops: {row}");
    }
}
