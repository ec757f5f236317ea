//! Policy costs, printed as figures (`cargo bench -p varta-watch --bench policy`): what a
//! class resolution, an agent admission, a silence check and a status snapshot cost, at the
//! scale the observer is built for. None of these runs per beat; the figures show what each
//! costs where it does run (once per agent session, once per snapshot).

use std::hint::black_box;
use std::time::Instant;

use varta_watch::control::snapshot::SnapshotBuilder;
use varta_watch::policy::class::{ClassConfig, ClassSet, Defaults};
use varta_watch::policy::directory::Directory;
use varta_watch::policy::identity::UdpNames;
use varta_watch::policy::silence::SilenceSet;
use varta_watch::policy::AgentFacts;
use varta_watch::tracker::{AgentId, AgentState, AgentView, Event, KeyClass};
use vlp_core::Status;

fn classes(n: usize) -> ClassSet {
    // Realistic matchers; none matches the benchmark's agents, so every class is tried (the
    // worst case) and the default class wins.
    let cfgs: Vec<ClassConfig> = (0..n)
        .map(|i| {
            format!(
                "c{i}:unit=svc-{i}-*.service,comm=worker{i}*,threshold-ms={}",
                100 + i
            )
            .parse()
            .unwrap()
        })
        .collect();
    ClassSet::new(
        &Defaults {
            threshold_ns: 1_000_000_000,
            recovery: None,
            recovery_debounce_ns: 0,
        },
        cfgs,
    )
    .unwrap()
}

fn per_op(label: &str, n: u64, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    let dt = t.elapsed();
    println!(
        "{label:<58} {:>10.1} ns/op  ({n} ops in {:.1} ms)",
        dt.as_nanos() as f64 / n as f64,
        dt.as_secs_f64() * 1e3
    );
}

fn main() {
    const AGENTS: u32 = 1_000_000;
    let facts = AgentFacts {
        pid: 4242,
        listener: "unix".into(),
        uid: Some(1000),
        comm: Some("backupd".into()),
        exe: Some("/usr/bin/backupd".into()),
        unit: Some("backup.service".into()),
        name: Some("backup.service".into()),
        key: Some("none".into()),
        source: None,
        class: None,
    };
    for n in [8, 64] {
        let set = classes(n);
        let iters = 1_000_000u64;
        per_op(
            &format!("ClassSet::resolve, {n} classes, no match (worst)"),
            iters,
            || {
                for _ in 0..iters {
                    black_box(set.resolve(black_box(&facts)));
                }
            },
        );
    }

    let mut silences = SilenceSet::new();
    for i in 0..100 {
        silences
            .add(
                0,
                vec![format!("unit=maint-{i}.service").parse().unwrap()],
                3_600_000,
                String::new(),
            )
            .unwrap();
    }
    let iters = 100_000u64;
    per_op(
        "SilenceSet::is_silenced, 100 silences, none applies",
        iters,
        || {
            for _ in 0..iters {
                black_box(silences.is_silenced(black_box(&facts), 1));
            }
        },
    );

    let mut dir = Directory::new(
        classes(8),
        UdpNames::default(),
        SilenceSet::new(),
        None,
        AGENTS as usize,
    );
    let id = |pid| AgentId::udp(0, KeyClass::Agent, pid);
    per_op(
        "Directory::on_event(NewAgent), 8 classes, 1M agents",
        u64::from(AGENTS),
        || {
            for pid in 0..AGENTS {
                dir.on_event(&Event::NewAgent {
                    at: 1,
                    agent: id(pid),
                    status: Status::Ok,
                    nonce: 1,
                });
            }
        },
    );
    assert_eq!(dir.len(), AGENTS as usize);

    let views: Vec<AgentView> = (0..AGENTS)
        .map(|pid| AgentView {
            id: id(pid),
            status: Status::Ok,
            state: if pid % 1000 == 0 {
                AgentState::Stalled
            } else {
                AgentState::Alive
            },
            beats: 10,
            stalls: 0,
            last_beat: u64::from(pid),
            nonce: 10,
            payload: 0,
            secure: true,
        })
        .collect();
    let mut builder = SnapshotBuilder::new(10_000);
    for round in 0..3 {
        let t = Instant::now();
        let snap = dir.snapshot(
            &mut builder,
            views.iter().copied(),
            2_000_000_000 + round,
            1,
        );
        println!(
            "Directory::snapshot, 1M agents, 10,000 rows kept         {:>10.1} ms  ({} rows, first {})",
            t.elapsed().as_secs_f64() * 1e3,
            snap.agents.len(),
            snap.agents[0].state.name()
        );
    }
}
