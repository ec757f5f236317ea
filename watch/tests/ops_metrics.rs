//! The per-agent series the alert rules read, from the real daemon with real agents:
//! `varta_agent_crashed`, and stalled and crashed agents exported even past
//! `--metrics-max-agents` (healthy ones past it are counted in `varta_agents_omitted`).

mod ops_support;

use std::time::Duration;

use ops_support::{tmpdir, wait};

#[test]
fn stalled_and_crashed_agents_are_exported_past_the_cap_healthy_ones_are_counted() {
    let dir = tmpdir("metrics-cap");
    let obs = ops_support::daemon(
        &dir,
        &["--threshold-ms", "300", "--metrics-max-agents", "1"],
    );
    let healthy = [obs.agent(50), obs.agent(50)];
    let frozen = obs.agent(50);
    let crashing = obs.agent_with(50, &["--crash-after", "3"]);
    let crash_pid = format!("\"pid\":{}", crashing.pid());
    obs.wait_line(&["\"kind\":\"crash\"", &crash_pid], Duration::from_secs(10));
    frozen.freeze();
    let stall_pid = format!("\"pid\":{}", frozen.pid());
    obs.wait_line(&["\"kind\":\"stall\"", &stall_pid], Duration::from_secs(10));

    // The per-agent status series carry the agent's name (each agent runs under its own).
    let series = |metric: &str, a: &ops_support::Agent| {
        format!(
            "{metric}{{pid=\"{}\",listener=\"unix\",name=\"{}\"}}",
            a.pid(),
            a.alert_name()
        )
    };
    // Two healthy agents and a cap of one: one of them is left out, whichever.
    wait(
        Duration::from_secs(10),
        "a scrape after both events",
        || (obs.metric(&series("varta_status", &frozen))? == 3.0).then_some(()),
    );
    assert_eq!(obs.metric("varta_agents_omitted"), Some(1.0));
    assert_eq!(
        obs.metric(&series("varta_agent_crashed", &crashing)),
        Some(1.0)
    );
    assert_eq!(
        obs.metric(&series("varta_agent_crashed", &frozen)),
        Some(0.0)
    );
    let shown: Vec<&ops_support::Agent> = healthy
        .iter()
        .filter(|a| obs.metric(&series("varta_status", a)).is_some())
        .collect();
    assert_eq!(
        shown.len(),
        1,
        "one healthy agent within the cap: {:?}",
        shown.iter().map(|a| a.pid()).collect::<Vec<_>>()
    );
    assert_eq!(
        obs.metric(&series("varta_agent_crashed", shown[0])),
        Some(0.0)
    );
}
