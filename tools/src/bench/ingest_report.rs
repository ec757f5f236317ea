//! The ingest tables: per transport, the bare receiver next to the observer at each
//! `--workers` count (frames/s, ratio to bare, CPU ns per datagram), medians over the rounds;
//! after each multi-worker round, the datagrams each receive thread read.

use std::path::Path;

use super::observer::ObserverExe;
use super::{ingest, median, wall, BenchArgs, Summary, Transport};

/// A summary row: the label, then right-aligned cells.
fn row(label: &str, cells: &[String]) -> String {
    let mut line = format!("  {label:<28}");
    for c in cells {
        line.push_str(&format!(" {c:>11}"));
    }
    line
}

/// Median of `f` over the rounds where worker column `wi` ran, or "-" when none did.
fn cell<R>(rounds: &[(R, Vec<Option<usize>>)], wi: usize, f: impl Fn(&R, usize) -> f64) -> String {
    let v: Vec<f64> = rounds
        .iter()
        .filter_map(|(r, idx)| idx[wi].map(|i| f(r, i)))
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        format!("{:.0}", median(v))
    }
}

/// The datagrams each receive thread read, as printed after a multi-worker round.
pub(super) fn spread_line(spread: &[(u32, f64)]) -> String {
    if spread.is_empty() {
        return "no per-worker counts exported".into();
    }
    let total: f64 = spread.iter().map(|(_, n)| n).sum();
    spread
        .iter()
        .map(|(k, n)| format!("worker {k}: {n:.0} ({:.0}%)", 100.0 * n / total.max(1.0)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Worker counts a transport runs at: all of them over UDP; the Unix socket is read by the
/// event loop whatever the count, so it runs once, in the 1-worker column (if asked).
fn transport_workers(a: &BenchArgs, t: Transport) -> Vec<u32> {
    if t == Transport::Unix {
        a.workers
            .iter()
            .copied()
            .filter(|w| *w == 1)
            .take(1)
            .collect()
    } else {
        a.workers.clone()
    }
}

/// For each column of `a.workers`, the index of its phase among `ran` (None: not run).
fn columns(a: &BenchArgs, ran: &[u32]) -> Vec<Option<usize>> {
    a.workers
        .iter()
        .map(|w| ran.iter().position(|r| r == w))
        .collect()
}

/// `a.rounds()` rounds of `one` over transport `t` at worker counts `ran`, each reported as it
/// ends (see [`report_round`]); the rounds that ran, each with its worker counts' indices into
/// its phases.
#[allow(
    clippy::type_complexity,
    reason = "the rounds as every block's cells read them"
)]
fn run_rounds<B, P>(
    t: Transport,
    a: &BenchArgs,
    ran: &[u32],
    one: impl Fn() -> Result<(B, Vec<Result<P, String>>), String>,
    spread: impl Fn(&P) -> &[(u32, f64)] + Copy,
) -> Vec<((B, Vec<P>), Vec<Option<usize>>)> {
    let mut rounds = Vec::new();
    for _ in 0..a.rounds() {
        match one() {
            Ok((bare, observer)) => {
                let (phases, idx) = report_round(t, a, ran, observer, spread);
                rounds.push(((bare, phases), idx));
            }
            Err(e) => println!("  {} round failed: {e}", t.name()),
        }
    }
    rounds
}

/// Prints a round's failed observer phases and the spread of its multi-worker ones; returns
/// the column map of the phases that ran.
fn report_round<P>(
    t: Transport,
    a: &BenchArgs,
    ran: &[u32],
    phases: Vec<Result<P, String>>,
    spread: impl Fn(&P) -> &[(u32, f64)],
) -> (Vec<P>, Vec<Option<usize>>) {
    let mut ok = Vec::new();
    let mut ok_w = Vec::new();
    for (w, p) in ran.iter().zip(phases) {
        match p {
            Ok(p) => {
                if *w > 1 {
                    println!(
                        "    ({}, {w} workers: datagrams per receive thread: {})",
                        t.name(),
                        spread_line(spread(&p))
                    );
                }
                ok.push(p);
                ok_w.push(*w);
            }
            Err(e) => println!("  {} observer round with {w} workers failed: {e}", t.name()),
        }
    }
    (ok, columns(a, &ok_w))
}

/// Runs the ingest rounds of the chosen transports and adds their side-by-side rows to `sum`.
pub(super) fn run(exe: &Path, obs: &ObserverExe, a: &BenchArgs, dir: &Path, sum: &mut Summary) {
    let chosen = |t: &Transport| a.transports.is_empty() || a.transports.contains(t);
    let ws = &a.workers;
    println!(
        "ingest, generator-bound: the generator sends flat out for {} ms to each receiver (UDP from {} source sockets); frames/s, median of {} rounds; observer with {} receive workers",
        a.phase_ms(),
        a.sources,
        a.rounds(),
        ws.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    );
    let mut head = vec!["bare /s".to_string()];
    for w in ws {
        head.extend([format!("obs {w}w /s"), format!("{w}w/bare %")]);
    }
    head.push("cpu ns bare".into());
    head.extend(ws.iter().map(|w| format!("cpu ns {w}w")));
    sum.add(row("ingest generator-bound", &head));
    for t in Transport::ALL.iter().copied().filter(chosen) {
        let ran = transport_workers(a, t);
        if ran.is_empty() {
            println!("    unix: read by the event loop at any worker count; add 1 to --workers to run it");
            continue;
        }
        let rounds = run_rounds(
            t,
            a,
            &ran,
            || ingest::race(exe, obs, a, t, dir, &ran).map(|r| (r.bare, r.observer)),
            |p| &p.spread,
        );
        if rounds.is_empty() {
            continue;
        }
        let bare = |f: &dyn Fn(&ingest::RacePhase) -> f64| {
            median(rounds.iter().map(|((b, _), _)| f(b)).collect())
        };
        let sent: Vec<String> = (0..ws.len())
            .map(|wi| (ws[wi], cell(&rounds, wi, |(_, p), i| p[i].sent)))
            .filter(|(_, c)| c != "-")
            .map(|(w, c)| format!("{c}/s to the {w}-worker observer"))
            .collect();
        println!(
            "    ({}: generator sent {:.0}/s to the bare receiver, {})",
            t.name(),
            bare(&|b| b.sent),
            sent.join(", ")
        );
        // Ratios are medians of per-round ratios: each pairs phases run back to back.
        let mut cells = vec![format!("{:.0}", bare(&|b| b.rate))];
        for wi in 0..ws.len() {
            cells.push(cell(&rounds, wi, |(_, p), i| p[i].rate));
            cells.push(cell(&rounds, wi, |(b, p), i| {
                100.0 * p[i].rate / b.rate.max(1.0)
            }));
        }
        cells.push(format!("{:.0}", bare(&|b| b.cpu)));
        for wi in 0..ws.len() {
            cells.push(cell(&rounds, wi, |(_, p), i| p[i].cpu));
        }
        sum.add(row(&format!("  {}", t.name()), &cells));
    }
    let n = a.pick(a.drain, 300_000, 20_000);
    println!(
        "ingest, receiver-bound: {n} datagrams queued (from {} source sockets), then drained with no sender running; datagrams per CPU-second of the receiving threads",
        a.sources
    );
    let mut head = vec!["bare /cpu-s".to_string()];
    for w in ws {
        head.extend([format!("obs {w}w"), format!("{w}w/bare %")]);
    }
    head.push("cpu ns bare".into());
    head.extend(ws.iter().map(|w| format!("cpu ns {w}w")));
    sum.add(row("ingest receiver-bound", &head));
    for t in Transport::ALL.iter().copied().filter(chosen) {
        if t == Transport::Unix {
            // The Unix socket queues max_dgram_qlen datagrams, not a buffer's worth.
            println!("    unix: no receiver-bound mode (the socket queues only max_dgram_qlen datagrams)");
            continue;
        }
        let ran = transport_workers(a, t);
        let rounds = run_rounds(
            t,
            a,
            &ran,
            || ingest::drain(exe, obs, a, t, dir, n, &ran).map(|r| (r.bare, r.observer)),
            |p| &p.spread,
        );
        if rounds.is_empty() {
            continue;
        }
        let bare = |f: &dyn Fn(&ingest::DrainPhase) -> f64| {
            median(rounds.iter().map(|((b, _), _)| f(b)).collect())
        };
        let accepted: Vec<String> = (0..ws.len())
            .map(|wi| (ws[wi], cell(&rounds, wi, |(_, p), i| p[i].n as f64)))
            .filter(|(_, c)| c != "-")
            .map(|(w, c)| format!("{w}-worker observer accepted {c}"))
            .collect();
        println!(
            "    ({}: bare drained {:.0}, {} datagrams)",
            t.name(),
            bare(&|b| b.n as f64),
            accepted.join(", ")
        );
        let mut cells = vec![format!("{:.0}", bare(&ingest::DrainPhase::rate))];
        for wi in 0..ws.len() {
            cells.push(cell(&rounds, wi, |(_, p), i| p[i].rate()));
            cells.push(cell(&rounds, wi, |(b, p), i| {
                100.0 * p[i].rate() / b.rate()
            }));
        }
        cells.push(format!("{:.0}", bare(&ingest::DrainPhase::ns_each)));
        for wi in 0..ws.len() {
            cells.push(cell(&rounds, wi, |(_, p), i| p[i].ns_each()));
        }
        sum.add(row(&format!("  {}", t.name()), &cells));
    }
    wall_block(exe, obs, a, dir, n, sum);
}

/// The wall-clock drain block: per UDP transport, the bare receiver and the observer at each
/// worker count, nothing pinned; datagrams per wall second and each count's ratio to the
/// first.
fn wall_block(
    exe: &Path,
    obs: &ObserverExe,
    a: &BenchArgs,
    dir: &Path,
    n: usize,
    sum: &mut Summary,
) {
    let chosen = |t: &Transport| a.transports.is_empty() || a.transports.contains(t);
    let ws = &a.workers;
    println!(
        "ingest, receiver-bound, wall clock, observer on every CPU ({} here, nothing pinned): {n} datagrams queued while the receiver is stopped, then timed from SIGCONT until every receive queue of its port is empty and every ingest thread sleeps (polled every {} us near the end); the bare receiver drains the same queue with one thread; datagrams per wall second, median of {} rounds; busy: the receiving threads' CPU time (the observer's: every ingest thread's) over the drain's wall time, 100% a CPU; runq: their time runnable but waiting for a CPU (held by other processes of the machine, or by each other), same scale",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        wall::POLL.as_micros(),
        a.rounds()
    );
    let mut head = vec!["bare /s".to_string()];
    head.extend(ws.iter().map(|w| format!("obs {w}w /s")));
    head.extend(ws.iter().skip(1).map(|w| format!("{w}w/{}w %", ws[0])));
    head.push("busy bare %".into());
    head.extend(ws.iter().map(|w| format!("busy {w}w %")));
    head.extend(ws.iter().map(|w| format!("runq {w}w %")));
    sum.add(row("ingest wall-clock drain", &head));
    for t in Transport::ALL.iter().copied().filter(chosen) {
        if t == Transport::Unix {
            continue;
        }
        let ran = transport_workers(a, t);
        let rounds = run_rounds(
            t,
            a,
            &ran,
            || wall::drain(exe, obs, a, t, dir, n, &ran).map(|r| (r.bare, r.observer)),
            |p| &p.spread,
        );
        if rounds.is_empty() {
            continue;
        }
        let bare = |f: &dyn Fn(&wall::WallPhase) -> f64| {
            median(rounds.iter().map(|((b, _), _)| f(b)).collect())
        };
        let ms = |p: &wall::WallPhase| p.wall.as_secs_f64() * 1e3;
        let drain_ms: Vec<String> = (0..ws.len())
            .filter_map(|wi| {
                let v: Vec<f64> = rounds
                    .iter()
                    .filter_map(|((_, p), idx)| Some(ms(&p[idx[wi]?])))
                    .collect();
                (!v.is_empty()).then(|| format!("{}w {:.1} ms", ws[wi], median(v)))
            })
            .collect();
        let poll = |f: &dyn Fn(&wall::PollCost, &wall::WallPhase) -> f64| -> String {
            let v: Vec<f64> = rounds
                .iter()
                .flat_map(|((_, p), _)| p.iter().filter_map(|p| Some(f(p.poll.as_ref()?, p))))
                .collect();
            format!("{:.0}", median(v))
        };
        let accepted: Vec<String> = (0..ws.len())
            .map(|wi| {
                let got = cell(&rounds, wi, |(_, p), i| p[i].n as f64);
                let queued = cell(&rounds, wi, |(_, p), i| p[i].queued as f64);
                (ws[wi], got, queued)
            })
            .filter(|(_, c, _)| c != "-")
            .map(|(w, c, q)| format!("{w}-worker observer accepted {c} of {q} queued"))
            .collect();
        let drops: u64 = rounds
            .iter()
            .flat_map(|((b, p), _)| std::iter::once(b).chain(p.iter()).map(|p| p.drops))
            .sum();
        let rechecks: u32 = rounds
            .iter()
            .flat_map(|((_, p), _)| p.iter().filter_map(|p| Some(p.poll?.rechecks)))
            .sum();
        println!(
            "    ({}: drained in bare {:.1} ms, {}; bare read {:.0}, {}; the bare receiver waited for a CPU {:.0}% of its drain; kernel drops {drops}; watching a drain: {} polls, {}% of a CPU, {rechecks} drained-looking polls the accepted count contradicted)",
            t.name(),
            bare(&ms),
            drain_ms.join(", "),
            bare(&|b| b.n as f64),
            accepted.join(", "),
            bare(&wall::WallPhase::runq_pct),
            poll(&|c, _| c.polls as f64),
            poll(&|c, p| 100.0 * c.cpu_ns as f64 / p.wall.as_nanos().max(1) as f64),
        );
        let mut cells = vec![format!("{:.0}", bare(&wall::WallPhase::rate))];
        for wi in 0..ws.len() {
            cells.push(cell(&rounds, wi, |(_, p), i| p[i].rate()));
        }
        // Ratios are medians of per-round ratios: each pairs phases run back to back.
        for wi in 1..ws.len() {
            let v: Vec<f64> = rounds
                .iter()
                .filter_map(|((_, p), idx)| {
                    Some(100.0 * p[idx[wi]?].rate() / p[idx[0]?].rate().max(1e-9))
                })
                .collect();
            cells.push(if v.is_empty() {
                "-".into()
            } else {
                format!("{:.0}", median(v))
            });
        }
        cells.push(format!("{:.0}", bare(&wall::WallPhase::busy_pct)));
        for wi in 0..ws.len() {
            cells.push(cell(&rounds, wi, |(_, p), i| p[i].busy_pct()));
        }
        for wi in 0..ws.len() {
            cells.push(cell(&rounds, wi, |(_, p), i| p[i].runq_pct()));
        }
        sum.add(row(&format!("  {}", t.name()), &cells));
    }
}
