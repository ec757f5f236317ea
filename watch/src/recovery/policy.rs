//! Who may be recovered, and the one spelling of every refusal and outcome.
//!
//! A recovery program acts on a pid, so it must only run for an identity the observer can
//! vouch for. By default that is an agent on the Unix socket, whose pid the kernel attests
//! (`SCM_CREDENTIALS`). An agent authenticated by its own per-agent key (derived from the master
//! key for its id, VLP v0.2 §5) is admitted with `--recovery-allow-agent-keys`: only it (and the
//! holder of the master key) can speak for that id. A shared-key datagram can be sealed by
//! any holder of the shared key for any pid, and a plaintext one by anybody: those need the
//! upstream opt-ins whose names say what the operator accepts.

use crate::tracker::{Listener, UdpMode};

/// How an agent's identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Unix socket: the kernel attested the pid.
    UnixAttested,
    /// Secure UDP with the agent's own key (master-key datagrams).
    AgentKey,
    /// Secure UDP with a key shared by many agents.
    SharedKey,
    /// Plaintext UDP: the pid is only claimed.
    PlainUdp,
    /// Unix socket, but the agent lives in another PID namespace (admitted by
    /// `--allow-cross-namespace-agents`): never recovered.
    UnixOtherNamespace,
}

impl Transport {
    /// How an agent on `listener` was authenticated, given what each UDP listener accepts.
    /// A listener taking both shared-key and master-key datagrams cannot tell here which one
    /// an agent used: the weaker class decides.
    #[must_use]
    pub fn of(listener: Listener, udp_modes: &[UdpMode]) -> Transport {
        let Listener::Udp(n) = listener else {
            return Transport::UnixAttested;
        };
        match udp_modes.get(n) {
            Some(UdpMode::Secure { keys, master }) if keys.is_empty() && master.is_some() => {
                Transport::AgentKey
            }
            Some(UdpMode::Secure { .. }) => Transport::SharedKey,
            Some(UdpMode::Plain) | None => Transport::PlainUdp,
        }
    }
}

/// Which transports the operator admits for recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// `--recovery-allow-agent-keys`.
    pub allow_agent_keys: bool,
    /// `--secure-udp-i-accept-recovery-on-unauthenticated-transport`.
    pub allow_shared_key_udp: bool,
    /// `--plaintext-udp-i-accept-recovery-on-unauthenticated-transport`.
    pub allow_plaintext_udp: bool,
}

impl Policy {
    /// Whether an agent of `transport` may be recovered; the refusal otherwise.
    ///
    /// # Errors
    /// The [`Refusal`] to count.
    pub fn admit(&self, transport: Transport) -> Result<(), Refusal> {
        match transport {
            Transport::UnixAttested => Ok(()),
            Transport::AgentKey if self.allow_agent_keys => Ok(()),
            Transport::AgentKey => Err(Refusal::AgentKeyNotAllowed),
            Transport::SharedKey if self.allow_shared_key_udp => Ok(()),
            Transport::PlainUdp if self.allow_plaintext_udp => Ok(()),
            Transport::SharedKey | Transport::PlainUdp => Err(Refusal::UnauthenticatedTransport),
            Transport::UnixOtherNamespace => Err(Refusal::CrossNamespaceAgent),
        }
    }
}

macro_rules! labelled {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v,)* }

        impl $name {
            /// Every value, in label order (each present from the first scrape).
            pub const ALL: &'static [$name] = &[$($name::$v,)*];

            /// The label value (metrics, event lines, audit records).
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }

            /// Position in [`Self::ALL`], for counter arrays.
            #[must_use]
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

labelled! {
    /// Why a recovery was not run: `varta_recovery_refused_total{reason}`. The first five are
    /// the upstream observer's label values (kept so its alert rules keep working); the
    /// socket-mode one is never produced by this observer (it has no such mode) but is
    /// exported at zero so `by (reason)` rules see the same series.
    Refusal {
        /// A shared-key or plaintext UDP agent without the operator's opt-in.
        UnauthenticatedTransport => "unauthenticated_transport",
        /// An agent in another PID namespace (upstream gate; not produced here).
        CrossNamespaceAgent => "cross_namespace_agent",
        /// The per-agent debounce table is full of recent runs.
        DebounceCapacity => "debounce_capacity",
        /// Too many recovery children are running already.
        OutstandingCapacity => "outstanding_capacity",
        /// Upstream's socket-mode-only gate (not produced here).
        SocketModeOnly => "socket_mode_only",
        /// A per-agent-key agent without `--recovery-allow-agent-keys`.
        AgentKeyNotAllowed => "agent_key_not_allowed",
    }
}

labelled! {
    /// What became of a recovery decision: `varta_recovery_outcomes_total{outcome}`.
    Outcome {
        /// A child was started.
        Spawned => "spawned",
        /// Not run: the agent was recovered less than the debounce interval ago.
        Debounced => "debounced",
        /// Not run: refused by policy or capacity (reason in `varta_recovery_refused_total`).
        Refused => "refused",
        /// The program could not be started.
        SpawnFailed => "spawn_failed",
        /// The child exited with status 0.
        ReapedZero => "reaped_zero",
        /// The child exited with another status.
        ReapedNonzero => "reaped_nonzero",
        /// The child died of a signal (one we sent at its deadline or at shutdown included).
        Killed => "killed",
        /// The child ran past `--recovery-timeout-ms` and was killed with its process group.
        TimedOut => "timed_out",
        /// The child was still running at shutdown and was terminated with its group.
        Shutdown => "shutdown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_admits_only_attested_agents() {
        let p = Policy::default();
        assert_eq!(p.admit(Transport::UnixAttested), Ok(()));
        assert_eq!(
            p.admit(Transport::AgentKey),
            Err(Refusal::AgentKeyNotAllowed)
        );
        assert_eq!(
            p.admit(Transport::SharedKey),
            Err(Refusal::UnauthenticatedTransport)
        );
        assert_eq!(
            p.admit(Transport::PlainUdp),
            Err(Refusal::UnauthenticatedTransport)
        );
    }

    #[test]
    fn transport_follows_the_listener_and_what_it_accepts() {
        let k = || vlp_core::Key::from_bytes([1; 32]);
        let modes = [
            UdpMode::Plain,
            UdpMode::Secure {
                keys: vec![k()],
                master: None,
            },
            UdpMode::Secure {
                keys: vec![],
                master: Some(k()),
            },
            UdpMode::Secure {
                keys: vec![k()],
                master: Some(k()),
            },
        ];
        let of = |l| Transport::of(l, &modes);
        assert_eq!(of(Listener::Unix), Transport::UnixAttested);
        assert_eq!(of(Listener::Udp(0)), Transport::PlainUdp);
        assert_eq!(of(Listener::Udp(1)), Transport::SharedKey);
        assert_eq!(of(Listener::Udp(2)), Transport::AgentKey);
        assert_eq!(
            of(Listener::Udp(3)),
            Transport::SharedKey,
            "the weaker class"
        );
        assert_eq!(
            of(Listener::Udp(9)),
            Transport::PlainUdp,
            "unknown: not trusted"
        );
    }

    #[test]
    fn each_opt_in_admits_its_transport_only() {
        let keys = Policy {
            allow_agent_keys: true,
            ..Policy::default()
        };
        assert_eq!(keys.admit(Transport::AgentKey), Ok(()));
        assert!(keys.admit(Transport::SharedKey).is_err());
        let shared = Policy {
            allow_shared_key_udp: true,
            ..Policy::default()
        };
        assert_eq!(shared.admit(Transport::SharedKey), Ok(()));
        assert!(shared.admit(Transport::PlainUdp).is_err());
        assert!(shared.admit(Transport::AgentKey).is_err());
        let plain = Policy {
            allow_plaintext_udp: true,
            ..Policy::default()
        };
        assert_eq!(plain.admit(Transport::PlainUdp), Ok(()));
        assert!(plain.admit(Transport::SharedKey).is_err());
    }

    #[test]
    fn labels_are_unique_and_indexed_in_order() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut labels: Vec<_> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Outcome::ALL.len());
    }
}
