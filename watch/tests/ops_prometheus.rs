//! The Prometheus path end to end: the real daemon scraped by a real Prometheus (Debian's
//! `prometheus`) evaluating the shipped `deploy/prometheus/varta.rules.yml`, alerting a real
//! Alertmanager routed by the shipped `deploy/alertmanager/alertmanager.yml`, notifying a
//! webhook receiver inside the test. A real agent beats, is frozen with SIGSTOP, then thawed.

mod ops_support;

use std::time::Duration;

use ops_support::{daemon, prometheus, tmpdir, write_am_config, Alertmanager, Webhook};

#[test]
fn frozen_agent_fires_varta_agent_stalled_then_resolves_through_prometheus() {
    let dir = tmpdir("prom");
    let hook = Webhook::start();
    let cfg = write_am_config(&dir, &hook);
    let am = Alertmanager::start(&dir, &cfg, None);
    let obs = daemon(&dir, &["--threshold-ms", "500"]);
    let prom = prometheus(&dir, &[obs.prom], &[&am]);
    prom.wait_targets_up(1);

    let agent = obs.agent(50);
    let healthy = obs.agent(50);
    let name = agent.alert_name();
    agent.freeze();
    let pid = format!("\"pid\":{}", agent.pid());
    obs.wait_line(&["\"kind\":\"stall\"", &pid], Duration::from_secs(10));
    // Scrape (1 s) + rule evaluation (1 s) + Alertmanager (group_wait 0 s): seconds, not more.
    let firing = hook.wait_for(
        "VartaAgentStalled",
        &name,
        "firing",
        Duration::from_secs(20),
    );
    let alerts = firing["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{firing:#}");
    let labels = &alerts[0]["labels"];
    assert_eq!(labels["pid"], agent.pid().to_string());
    assert_eq!(labels["listener"], "unix");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["job"], "varta-watch");
    assert_eq!(firing["groupLabels"]["agent"], name.as_str());
    // The healthy agent (an agent of its own name) is never reported.
    assert!(hook
        .about("VartaAgentStalled", &healthy.alert_name())
        .is_empty());
    assert_ne!(healthy.alert_name(), name);

    agent.thaw();
    obs.wait_line(&["\"kind\":\"recovered\"", &pid], Duration::from_secs(10));
    hook.wait_for(
        "VartaAgentStalled",
        &name,
        "resolved",
        Duration::from_secs(20),
    );
    assert!(hook
        .about("VartaAgentStalled", &healthy.alert_name())
        .is_empty());
}
