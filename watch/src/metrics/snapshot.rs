//! What a scrape shows: the [`Snapshot`] the loop copies, and its Prometheus encoding.
//!
//! `varta_beats_total{pid,listener}` counts regular beats only. Terminal frames (a crash report,
//! an announced clean exit) are not heartbeats: each raises one event, counted in
//! `varta_events_total{kind="crash"}` or `{kind="goodbye"}`; `varta_frames_accepted_total`
//! counts every accepted frame, terminal ones included.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::HttpCounters;

/// One agent's series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRow {
    /// Pid.
    pub pid: u32,
    /// `unix` or `udpN`.
    pub listener: &'static str,
    /// Accepted regular beats (terminal and goodbye frames are events, not beats).
    pub beats: u64,
    /// Stall events.
    pub stalls: u64,
    /// 0 ok, 1 degraded, 2 critical, 3 stall.
    pub status: u8,
    /// Its name (unit or `comm` from `/proc`, or configured) and class, for
    /// `varta_agent_info`.
    pub who: Option<(Option<String>, String)>,
    /// Its last frame was a crash report (`varta_agent_crashed`).
    pub crashed: bool,
}

/// Everything a scrape shows, copied by the loop.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Per-agent rows (bounded).
    pub agents: Vec<AgentRow>,
    /// Agents left out of `agents` by the bound (stalled and crashed agents never are).
    pub agents_omitted: u64,
    /// Entries in the tracker.
    pub agents_tracked: u64,
    /// Tracker capacity.
    pub capacity: u64,
    /// Frames accepted.
    pub frames_accepted: u64,
    /// Of which secure datagrams reordered within the replay window.
    pub frames_reordered: u64,
    /// Events the tracker dropped because its queue was full.
    pub events_dropped: u64,
    /// recvmmsg errors other than EAGAIN.
    pub recv_errors: u64,
    /// Datagrams the kernel dropped on a full receive queue, by listener.
    pub kernel_drops: Vec<(&'static str, u64)>,
    /// Datagrams received, by listener label.
    pub datagrams: Vec<(&'static str, u64)>,
    /// Decode errors by kind (`DecodeError::KINDS`).
    pub decode_errors: Vec<(&'static str, u64)>,
    /// Rejections by reason.
    pub rejections: Vec<(&'static str, u64)>,
    /// Pid claimed differs from the attested pid (or no credentials).
    pub auth_failures: u64,
    /// AEAD tag failures.
    pub decrypt_failures: u64,
    /// Replay-window refusals.
    pub replays: u64,
    /// Capacity refusals.
    pub capacity_exceeded: u64,
    /// Events emitted, by kind.
    pub events: Vec<(&'static str, u64)>,
    /// Recovery outcomes by label.
    pub recovery: Vec<(&'static str, u64)>,
    /// Recovery refusals by reason (`varta_recovery_refused_total{reason}`).
    pub recovery_refused: Vec<(&'static str, u64)>,
    /// Recovery decisions that could not be written to the audit file.
    pub recovery_audit_dropped: u64,
    /// Starts at which the audit file did not match the state file's anchor.
    pub recovery_audit_anchor_mismatches: u64,
    /// Audit file operations that overran their time budget, by op (`fsync`, `rotation`).
    pub recovery_audit_over_budget: Vec<(&'static str, u64)>,
    /// Run time of finished recovery children, ns, summed, and their number.
    pub recovery_duration: (u64, u64),
    /// Loop turns that hit the per-turn datagram bound (flood indicator).
    pub busy_turns: u64,
    /// Descriptors passed over the Unix socket (`SCM_RIGHTS`), closed on receipt.
    pub passed_fds_closed: u64,
    /// Output write errors.
    pub output_errors: u64,
    /// State-file figures, when `--state-file` is set.
    pub state: Option<crate::daemon::state::StateFigures>,
    /// Output lines dropped on a full writer queue, by sink (`stdout`, `export`).
    pub output_dropped: Vec<(&'static str, u64)>,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Direct Alertmanager delivery, when configured: posts by outcome
    /// (`varta_alerts_sent_total{outcome}`).
    pub alerts_sent: Vec<(&'static str, u64)>,
    /// Direct delivery: alerts firing, and alerts refused because the book was full.
    pub alerts_active: Option<(u64, u64)>,
    /// Unix time of the last loop turn, seconds.
    pub last_turn_unix: f64,
    /// Agents evicted from the tracker.
    pub evicted: u64,
    /// Plain UDP frames refused for a pid already seen from another source.
    pub origin_conflicts: u64,
    /// Datagrams longer than the receive buffer.
    pub truncated_datagrams: u64,
    /// Unix datagrams whose credentials the kernel cut.
    pub ctrl_truncated: u64,
    /// Beats dropped by rate limit, by reason (`per_pid`, `global`).
    pub rate_limited: Vec<(&'static str, u64)>,
    /// `SO_RCVBUF` of the Unix socket, bytes (0 without one).
    pub uds_rcvbuf_bytes: u64,
    /// Durations of loop turns.
    pub iterations: Option<crate::compat::IterationHistogram>,
    /// Datagrams each receive worker read (`--workers` above 1; empty otherwise).
    pub by_worker: Vec<u64>,
}

/// A histogram the loop already aggregated (buckets not cumulative, `+Inf` last).
#[derive(Debug)]
struct Aggregated {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl prometheus_client::encoding::EncodeMetric for Aggregated {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            self.count,
            &self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

type Labels = Vec<(String, String)>;

fn lab(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

impl Snapshot {
    /// Encodes in the Prometheus text format, with the HTTP side's own counters.
    #[must_use]
    pub fn encode(&self, http: &HttpCounters) -> String {
        let mut reg = Registry::default();
        let beats = Family::<Labels, Counter>::default();
        let stalls = Family::<Labels, Counter>::default();
        let status = Family::<Labels, Gauge>::default();
        let info = Family::<Labels, Gauge>::default();
        let crashed = Family::<Labels, Gauge>::default();
        for a in &self.agents {
            let pid = a.pid.to_string();
            let l = lab(&[("pid", &pid), ("listener", a.listener)]);
            beats.get_or_create(&l).inc_by(a.beats);
            stalls.get_or_create(&l).inc_by(a.stalls);
            // The two series the per-agent alert rules read carry the agent's name once it is
            // known, so the rules' `agent` label is the same as the direct path's.
            let name = a.who.as_ref().and_then(|(n, _)| n.clone());
            let mut named = l.clone();
            if let Some(n) = &name {
                named.push(("name".into(), n.clone()));
            }
            status.get_or_create(&named).set(i64::from(a.status));
            crashed.get_or_create(&named).set(i64::from(a.crashed));
            if let Some((_, class)) = &a.who {
                let mut l = named.clone();
                l.push(("class".into(), class.clone()));
                info.get_or_create(&l).set(1);
            }
        }
        reg.register(
            "varta_agent_info",
            "Agent name (systemd unit or comm from /proc, or configured) and class; always 1, join on pid and listener",
            info,
        );
        reg.register(
            "varta_beats",
            "Accepted regular heartbeats per agent; terminal frames are not beats: a crash report counts in varta_events_total{kind=\"crash\"}, a goodbye in varta_events_total{kind=\"goodbye\"}, and both in varta_frames_accepted_total",
            beats,
        );
        reg.register("varta_stalls", "Stall events per agent", stalls);
        reg.register(
            "varta_status",
            "Agent status: 0 ok, 1 degraded, 2 critical, 3 stall",
            status,
        );
        reg.register(
            "varta_agent_crashed",
            "1 when the agent's last frame was a crash report (until it restarts or is forgotten), else 0",
            crashed,
        );
        let fam = |pairs: &[(&'static str, u64)], key: &str| {
            let f = Family::<Labels, Counter>::default();
            for (k, v) in pairs {
                f.get_or_create(&lab(&[(key, k)])).inc_by(*v);
            }
            f
        };
        reg.register(
            "varta_decode_errors",
            "Datagrams refused by the frame decoder, by failed rule",
            fam(&self.decode_errors, "kind"),
        );
        reg.register(
            "varta_rejections",
            "Datagrams refused, by reason",
            fam(&self.rejections, "reason"),
        );
        reg.register(
            "varta_datagrams_received",
            "Datagrams received, by listener",
            fam(&self.datagrams, "listener"),
        );
        reg.register(
            "varta_receive_queue_drops",
            "Datagrams the kernel dropped because the listener's receive queue was full",
            fam(&self.kernel_drops, "listener"),
        );
        reg.register(
            "varta_events",
            "Events emitted, by kind",
            fam(&self.events, "kind"),
        );
        reg.register(
            "varta_output_dropped",
            "Output lines dropped because the sink's writer queue was full (a stuck stdout reader or a slow disk), by sink",
            fam(&self.output_dropped, "sink"),
        );
        reg.register(
            "varta_rate_limited",
            "Beats refused by --max-beat-rate (per_pid) or --global-beat-rate (global)",
            fam(&self.rate_limited, "reason"),
        );
        reg.register(
            "varta_recovery_outcomes",
            "Recovery command outcomes",
            fam(&self.recovery, "outcome"),
        );
        reg.register(
            "varta_recovery_refused",
            "Recovery runs refused, by reason",
            fam(&self.recovery_refused, "reason"),
        );
        let counter = |v: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(v);
            c
        };
        reg.register(
            "varta_recovery_audit_dropped",
            "Recovery decisions that could not be written to the audit file (unaudited)",
            counter(self.recovery_audit_dropped),
        );
        reg.register(
            "varta_recovery_audit_anchor_mismatches",
            "Starts at which the audit file ended before, or differed at, the record the state file anchored (cut or edited)",
            counter(self.recovery_audit_anchor_mismatches),
        );
        reg.register(
            "varta_recovery_audit_over_budget",
            "Audit file fdatasyncs and rotations slower than --audit-fsync-budget-ms / --audit-rotation-budget-ms (the loop waited for them), by op",
            fam(&self.recovery_audit_over_budget, "op"),
        );
        reg.register(
            "varta_frames_accepted",
            "Frames accepted from all listeners (regular beats and terminal frames)",
            counter(self.frames_accepted),
        );
        reg.register(
            "varta_frames_reordered",
            "Secure datagrams accepted out of order within the replay window",
            counter(self.frames_reordered),
        );
        reg.register(
            "varta_events_dropped",
            "Events lost because the tracker's event queue was full",
            counter(self.events_dropped),
        );
        reg.register(
            "varta_io_errors",
            "Socket receive errors (other than would-block)",
            counter(self.recv_errors),
        );
        reg.register(
            "varta_truncated_datagrams",
            "Datagrams longer than the receive buffer, cut by the kernel (refused as a wrong length)",
            counter(self.truncated_datagrams),
        );
        reg.register(
            "varta_ctrl_truncated",
            "Unix datagrams whose credentials the kernel cut (refused: cannot be attested)",
            counter(self.ctrl_truncated),
        );
        reg.register(
            "varta_tracker_evicted",
            "Agents evicted from the tracker (forgotten after --evict-after-ms, or to make room)",
            counter(self.evicted),
        );
        reg.register(
            "varta_origin_conflict",
            "Plain UDP frames refused because their pid is held by another source address",
            counter(self.origin_conflicts),
        );
        reg.register(
            "varta_prom_auth_failures",
            "HTTP requests refused for a missing or wrong bearer token (--prom-token-file)",
            counter(http.auth_failures()),
        );
        reg.register(
            "varta_prom_rate_limited",
            "Scrapes refused with 429 by the per-source-IP limit (--prom-rate-limit-per-sec)",
            counter(http.rate_limited()),
        );
        reg.register(
            "varta_frame_auth_failures",
            "Frames whose pid is not the kernel-attested sender pid",
            counter(self.auth_failures),
        );
        reg.register(
            "varta_frame_decrypt_failures",
            "Secure datagrams whose tag did not verify",
            counter(self.decrypt_failures),
        );
        reg.register(
            "varta_replays_refused",
            "Secure datagrams refused by the replay window",
            counter(self.replays),
        );
        reg.register(
            "varta_tracker_capacity_exceeded",
            "New agents refused because the tracker is full",
            counter(self.capacity_exceeded),
        );
        reg.register(
            "varta_busy_turns",
            "Loop turns that hit the per-turn datagram bound",
            counter(self.busy_turns),
        );
        reg.register(
            "varta_passed_fds_closed",
            "Descriptors passed over the Unix socket (SCM_RIGHTS), closed on receipt",
            counter(self.passed_fds_closed),
        );
        reg.register(
            "varta_output_write_errors",
            "Failed writes to stdout or the export file",
            counter(self.output_errors),
        );
        let gauge = |v: i64| {
            let g = Gauge::<i64>::default();
            g.set(v);
            g
        };
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        reg.register(
            "varta_recovery_duration_ns_sum",
            "Total run time of finished recovery children, ns",
            gauge(as_i64(self.recovery_duration.0)),
        );
        reg.register(
            "varta_recovery_duration_count",
            "Finished recovery children",
            counter(self.recovery_duration.1),
        );
        reg.register(
            "varta_watch_pids_tracked",
            "Agents in the tracker",
            gauge(as_i64(self.agents_tracked)),
        );
        reg.register(
            "varta_tracker_capacity",
            "Tracker capacity",
            gauge(as_i64(self.capacity)),
        );
        reg.register(
            "varta_agents_omitted",
            "Agents left out of per-agent series by --metrics-max-agents",
            gauge(as_i64(self.agents_omitted)),
        );
        let up =
            prometheus_client::metrics::gauge::Gauge::<f64, std::sync::atomic::AtomicU64>::default(
            );
        up.set(self.uptime_s);
        reg.register(
            "varta_watch_uptime_seconds",
            "Seconds since the observer started; stops advancing when the loop is wedged",
            up,
        );
        let last = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        last.set(self.last_turn_unix);
        reg.register(
            "varta_watch_last_poll_loop_timestamp_seconds",
            "Unix time of the observer loop's last turn",
            last,
        );
        if !self.by_worker.is_empty() {
            let f = Family::<Labels, Counter>::default();
            for (k, n) in self.by_worker.iter().enumerate() {
                f.get_or_create(&lab(&[("worker", &k.to_string())]))
                    .inc_by(*n);
            }
            reg.register(
                "varta_receive_worker_datagrams",
                "Datagrams each UDP receive worker read (--workers), by worker",
                f,
            );
        }
        reg.register(
            "varta_observer_uds_rcvbuf_bytes",
            "Receive buffer of the Unix socket as the kernel reports it (0 without one)",
            gauge(as_i64(self.uds_rcvbuf_bytes)),
        );
        if let Some(h) = &self.iterations {
            reg.register(
                "varta_observer_iteration_seconds",
                "Duration of the observer loop's turns (wake-up to sleep); buckets scaled to --iteration-budget-ms",
                Aggregated {
                    sum: h.sum_seconds(),
                    count: h.count(),
                    buckets: h.buckets(),
                },
            );
            reg.register(
                "varta_observer_iteration_over_budget",
                "Loop turns longer than --iteration-budget-ms",
                counter(h.over_budget()),
            );
        }
        if let Some(st) = &self.state {
            reg.register(
                "varta_state_snapshots",
                "State-file snapshots written completely",
                counter(st.snapshots),
            );
            reg.register(
                "varta_state_write_errors",
                "State-file snapshot writes that failed (disk full, I/O error)",
                counter(st.write_errors),
            );
            reg.register(
                "varta_state_restore_failures",
                "State files that could not be restored at start (set aside)",
                counter(st.restore_failures),
            );
            let fgauge = |v: f64| {
                let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
                g.set(v);
                g
            };
            reg.register(
                "varta_state_snapshot_encode_seconds",
                "Time the loop spent encoding the last snapshot",
                fgauge(st.encode_seconds),
            );
            reg.register(
                "varta_state_snapshot_write_seconds",
                "Time to write and fsync the last snapshot (helper thread)",
                fgauge(st.write_seconds),
            );
            reg.register(
                "varta_state_snapshot_bytes",
                "Size of the last snapshot written",
                gauge(as_i64(st.bytes)),
            );
        }
        let dropped = Family::<Labels, Counter>::default();
        for (reason, n) in http.dropped() {
            dropped.get_or_create(&lab(&[("reason", reason)])).inc_by(n);
        }
        reg.register(
            "varta_prom_connections_dropped",
            "HTTP connections closed by the observer, by reason (capacity: over --http-max-connections; header_timeout; idle)",
            dropped,
        );
        if let Some((active, refused)) = self.alerts_active {
            reg.register(
                "varta_alerts_sent",
                "Direct Alertmanager posts by outcome, per Alertmanager (sent; retried attempts; failed after the last attempt; dropped: batches refused by the full delivery queue)",
                fam(&self.alerts_sent, "outcome"),
            );
            reg.register(
                "varta_alerts_active",
                "Alerts firing through direct Alertmanager delivery",
                gauge(as_i64(active)),
            );
            reg.register(
                "varta_alerts_refused",
                "Alerts not raised because as many alerts as the book holds were already firing",
                counter(refused),
            );
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &reg);
        out
    }
}
