//! The loop's copy of everything a scrape shows, bounded by `--metrics-max-agents`: healthy
//! agents past the bound are left out (counted in `varta_agents_omitted`); stalled and crashed
//! agents are always exported, so per-agent alert rules see every one of them.

use super::Daemon;
use crate::metrics::{AgentRow, Snapshot};
use crate::tracker::{AgentState, EventKind, Listener, ReasonClass};

impl Daemon {
    /// Copies the figures of a scrape.
    pub(super) fn snapshot(&self) -> Snapshot {
        let mut agents = Vec::new();
        let mut omitted = 0u64;
        let mut healthy = 0usize;
        for a in self.tracker.agents() {
            let crashed = a.state == AgentState::Dead { clean: false };
            if !crashed && a.state != AgentState::Stalled {
                if healthy >= self.metrics_max_agents {
                    omitted += 1;
                    continue;
                }
                healthy += 1;
            }
            agents.push(AgentRow {
                pid: a.id.pid,
                listener: match a.id.listener {
                    Listener::Unix => "unix",
                    Listener::Udp(n) => crate::listener::udp_label(n),
                },
                beats: a.beats,
                stalls: a.stalls,
                status: a.reported_status().as_u8(),
                who: Some(self.policy.who(a.id)),
                crashed,
            });
        }
        let c = &self.counters;
        let st = self.tracker.stats();
        let datagrams = self
            .listeners
            .iter()
            .map(crate::listener::Listener::label)
            .zip(c.datagrams.iter().copied())
            .collect();
        let rec = crate::recovery::metrics(self.recovery.as_ref());
        let decode_errors = st
            .rejections()
            .filter(|(r, _)| r.class() == ReasonClass::Decode)
            .map(|(r, n)| (r.as_str(), n))
            .collect();
        let mut rejections: Vec<(&'static str, u64)> =
            st.rejections().map(|(r, n)| (r.as_str(), n)).collect();
        rejections.push(("no_credentials", c.no_credentials));
        rejections.push(("cross_namespace", self.compat.ns_gate.refused_cross));
        rejections.push(("namespace_unknown", self.compat.ns_gate.refused_unknown));
        Snapshot {
            agents,
            agents_omitted: omitted,
            agents_tracked: self.tracker.len() as u64,
            capacity: self.capacity as u64,
            frames_accepted: st.accepted,
            frames_reordered: st.reordered,
            datagrams,
            decode_errors,
            rejections,
            auth_failures: st.rejected_class(ReasonClass::Auth) + c.no_credentials,
            decrypt_failures: st.rejected_class(ReasonClass::Decrypt),
            replays: st.rejected_class(ReasonClass::Replay),
            capacity_exceeded: st.rejected_class(ReasonClass::Capacity),
            // Counted by the core, by kind; recovery decisions are the daemon's.
            events: st
                .event_counts()
                .map(|(k, n)| match k {
                    EventKind::Recovery => (k.as_str(), c.recoveries),
                    _ => (k.as_str(), n),
                })
                .collect(),
            events_dropped: st.events_dropped,
            recovery: rec.outcomes,
            recovery_refused: rec.refused,
            recovery_audit_dropped: rec.audit_dropped,
            recovery_audit_anchor_mismatches: self.counters.audit_anchor_mismatches,
            recovery_audit_over_budget: rec.audit_over_budget,
            recovery_duration: rec.durations,
            busy_turns: c.busy_turns,
            passed_fds_closed: self.batch.passed_fds_closed(),
            recv_errors: c.recv_errors,
            kernel_drops: self
                .listeners
                .iter()
                .filter_map(|l| l.kernel_drops().map(|d| (l.label(), u64::from(d))))
                .collect(),
            output_errors: self.outputs.write_errors(),
            output_dropped: self.outputs.dropped(),
            uptime_s: self
                .start
                .elapsed()
                .saturating_sub(
                    self.state
                        .as_ref()
                        .map_or_else(Default::default, |s| s.clock_back),
                )
                .as_secs_f64(),
            state: self.state.as_ref().map(|s| s.figures),
            alerts_sent: self
                .alerts
                .as_ref()
                .map(|a| a.outcomes().to_vec())
                .unwrap_or_default(),
            alerts_active: self
                .alerts
                .as_ref()
                .map(|a| (a.active() as u64, a.refused())),
            last_turn_unix: self.compat.last_turn_unix,
            evicted: st
                .event_counts()
                .find(|(k, _)| *k == EventKind::Evicted)
                .map_or(0, |(_, n)| n),
            origin_conflicts: st.rejected(crate::tracker::Reason::OriginConflict),
            truncated_datagrams: c.truncated,
            ctrl_truncated: c.ctrl_truncated,
            rate_limited: self.tracker.rate_limited().to_vec(),
            uds_rcvbuf_bytes: self.uds_rcvbuf,
            iterations: Some(self.compat.iterations.clone()),
            by_worker: c.by_worker.clone(),
        }
    }
}
