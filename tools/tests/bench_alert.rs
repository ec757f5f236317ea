//! `varta bench alert --quick` runs the alert-latency benchmark end to end: the real observer,
//! real agents frozen with SIGSTOP, a real Alertmanager notified directly by the observer and a
//! real Prometheus evaluating the shipped rules (Debian's `prometheus` and
//! `prometheus-alertmanager`). Figures are printed, not asserted: the checks are that every
//! freeze reached a webhook through both paths and that the observer's posts all succeeded.

use std::process::Command;

#[test]
fn quick_alert_bench_notifies_every_freeze_through_both_paths() {
    let out = Command::new(env!("CARGO_BIN_EXE_varta"))
        .args(["bench", "alert", "--quick"])
        .output()
        .expect("varta bench alert runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stdout}\n{stderr}");
    let summary = stdout
        .split("summary (this run, side by side):")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary in\n{stdout}"));
    for path in ["direct ", "prometheus "] {
        let line = summary
            .lines()
            .find(|l| l.trim_start().starts_with(path))
            .unwrap_or_else(|| panic!("no {path:?} line in\n{stdout}"));
        assert!(line.contains("n=5 "), "five freezes notified: {line}");
        assert!(!line.contains("never notified"), "{line}");
    }
    assert!(
        summary.contains("sent 5, retried 0, failed 0, dropped 0"),
        "the observer's five posts: {summary}"
    );
}
