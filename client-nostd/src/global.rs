//! A global agent behind `critical-section`, and the last-gasp panic beat.
//!
//! [`GlobalAgent`] is a `static`-friendly cell (`const fn new`) holding an [`Agent`], a
//! pre-registered non-blocking send hook (`fn(&[u8]) -> bool`) and an "in flight" flag. Main
//! code, interrupt handlers and the panic handler all reach the agent through a critical
//! section, and only ever with *try*-borrow semantics: a handler that interrupts (or a panic
//! that happens inside) a beat finds the agent borrowed and gets [`Error::Busy`] instead of a
//! deadlock or a double borrow.
//!
//! # The last gasp
//!
//! [`panic_beat`] is meant to be called from the firmware's `#[panic_handler]`: it sends one
//! terminal Critical frame (VLP §2: nonce `u64::MAX`; payload = the panic's source line by
//! default) through the send hook, then calls the caller's halt/reset action. The hook must not
//! block and must not take locks the panicking code might hold (e.g. push the bytes into the
//! UDP socket and poll the interface once). If the agent is borrowed at panic time, nothing is
//! sent: the session state is mid-update and a frame could reuse an IV.
//!
//! # Async senders
//!
//! A critical section must not be held across an `.await`. Async code uses
//! [`GlobalAgent::prepare`] (marks the beat in flight), awaits the transport outside the
//! critical section, then [`GlobalAgent::finish`]. The prepared datagram carries the session's
//! current IV, which is not consumed until `finish`, so while a beat is in flight every other
//! send path ([`GlobalAgent::prepare`], [`GlobalAgent::with`], [`GlobalAgent::try_send`],
//! [`GlobalAgent::try_beat`]) returns [`Error::Busy`]: an interrupt's beat would otherwise
//! seal different bytes under the same (key, nonce). A task that prepared a beat must
//! therefore always `finish` it, even when it gives up on the send. If the panic handler runs
//! while a beat is in flight, it first burns that beat's nonce and IV ([`Agent::burn`]), so
//! the terminal frame can never share an IV with a datagram that may already be on the wire.

use core::cell::{Cell, RefCell};

use critical_section::Mutex;
use vlp_core::Status;

use crate::agent::{Agent, Kind, Prepared};
use crate::error::{Error, StackError};
use crate::transport::Transport;

/// The last-gasp send hook: hand the bytes to the stack without blocking; `true` if taken.
pub type SendHook = fn(&[u8]) -> bool;

/// What [`GlobalAgent::last_gasp`] managed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LastGasp {
    /// The hook took the terminal frame.
    Sent,
    /// The hook returned `false`.
    HookRefused,
    /// No hook was registered.
    NoHook,
    /// The agent could not produce the frame (not installed, borrowed, not started, ...).
    Failed(Error),
}

/// An [`Agent`] shared between main code, interrupts and the panic handler.
pub struct GlobalAgent {
    agent: Mutex<RefCell<Option<Agent>>>,
    hook: Mutex<Cell<Option<SendHook>>>,
    in_flight: Mutex<Cell<bool>>,
}

impl Default for GlobalAgent {
    fn default() -> Self {
        GlobalAgent::new()
    }
}

impl GlobalAgent {
    /// An empty global agent, for a `static`.
    #[must_use]
    pub const fn new() -> GlobalAgent {
        GlobalAgent {
            agent: Mutex::new(RefCell::new(None)),
            hook: Mutex::new(Cell::new(None)),
            in_flight: Mutex::new(Cell::new(false)),
        }
    }

    /// Installs `agent` (started, for secure ones) and returns the previous one.
    ///
    /// # Errors
    /// [`Error::Busy`] if the agent is borrowed; `agent` is dropped then.
    pub fn install(&self, agent: Agent) -> Result<Option<Agent>, Error> {
        critical_section::with(|cs| {
            let mut slot = self
                .agent
                .borrow(cs)
                .try_borrow_mut()
                .map_err(|_| Error::Busy)?;
            self.in_flight.borrow(cs).set(false);
            Ok(slot.replace(agent))
        })
    }

    /// Registers the non-blocking send the last gasp uses.
    pub fn set_last_gasp_hook(&self, hook: SendHook) {
        critical_section::with(|cs| self.hook.borrow(cs).set(Some(hook)));
    }

    /// Runs `f` on the agent inside a critical section.
    ///
    /// # Errors
    /// [`Error::NotInstalled`]; [`Error::Busy`] if the agent is already borrowed or a beat
    /// prepared by [`GlobalAgent::prepare`] is in flight (its IV is not yet consumed).
    pub fn with<R>(&self, f: impl FnOnce(&mut Agent) -> R) -> Result<R, Error> {
        critical_section::with(|cs| {
            let mut slot = self
                .agent
                .borrow(cs)
                .try_borrow_mut()
                .map_err(|_| Error::Busy)?;
            if self.in_flight.borrow(cs).get() {
                return Err(Error::Busy);
            }
            let agent = slot.as_mut().ok_or(Error::NotInstalled)?;
            Ok(f(agent))
        })
    }

    /// [`Agent::try_send`] inside a critical section.
    ///
    /// # Errors
    /// As [`GlobalAgent::with`] and [`Agent::try_send`].
    pub fn try_send<T: Transport + ?Sized>(
        &self,
        transport: &mut T,
        kind: Kind,
        now: u64,
    ) -> Result<(), Error> {
        self.with(|a| a.try_send(transport, kind, now))?
    }

    /// [`Agent::try_beat`] inside a critical section.
    ///
    /// # Errors
    /// As [`GlobalAgent::try_send`].
    pub fn try_beat<T: Transport + ?Sized>(
        &self,
        transport: &mut T,
        status: Status,
        payload: u32,
        now: u64,
    ) -> Result<(), Error> {
        self.try_send(transport, Kind::Beat(status, payload), now)
    }

    /// Prepares a beat for an async send and marks it in flight. Follow with
    /// [`GlobalAgent::finish`] once the transport answered; until then every other send path
    /// returns [`Error::Busy`].
    ///
    /// # Errors
    /// As [`GlobalAgent::with`] (including [`Error::Busy`] while another beat is in flight)
    /// and [`Agent::prepare`].
    pub fn prepare(&self, kind: Kind, now: u64) -> Result<Prepared, Error> {
        critical_section::with(|cs| {
            let slot = self
                .agent
                .borrow(cs)
                .try_borrow()
                .map_err(|_| Error::Busy)?;
            if self.in_flight.borrow(cs).get() {
                return Err(Error::Busy);
            }
            let p = slot
                .as_ref()
                .ok_or(Error::NotInstalled)?
                .prepare(kind, now)?;
            self.in_flight.borrow(cs).set(true);
            Ok(p)
        })
    }

    /// Ends an async send with the transport's answer `sent`: commits `prepared` unless the
    /// stack certainly refused it ([`StackError::is_certain_refusal`]; a timeout or an opaque
    /// error may have sent it), and clears the in-flight mark. A task that gives up on a send
    /// it already started (cancelled) finishes with `Err(StackError::Uncertain)`.
    ///
    /// # Errors
    /// As [`GlobalAgent::with`] and [`Agent::commit`] (a `StaleBeat` if the last gasp burned
    /// it meanwhile); [`Error::Send`] with the stack's error when `sent` is one.
    pub fn finish(&self, prepared: &Prepared, sent: Result<(), StackError>) -> Result<(), Error> {
        critical_section::with(|cs| {
            let mut slot = self
                .agent
                .borrow(cs)
                .try_borrow_mut()
                .map_err(|_| Error::Busy)?;
            let agent = slot.as_mut().ok_or(Error::NotInstalled)?;
            self.in_flight.borrow(cs).set(false);
            match sent {
                Ok(()) => agent.commit(prepared),
                Err(e) => {
                    if !e.is_certain_refusal() {
                        // May be on the wire; stale only if the last gasp burned it already.
                        let _ = agent.commit(prepared);
                    }
                    Err(Error::Send(e))
                }
            }
        })
    }

    /// Sends one terminal Critical frame carrying `payload` through the registered hook.
    /// Never blocks, never panics, never waits for a lock.
    pub fn last_gasp(&self, payload: u32, now: u64) -> LastGasp {
        critical_section::with(|cs| {
            let Some(hook) = self.hook.borrow(cs).get() else {
                return LastGasp::NoHook;
            };
            let Ok(mut slot) = self.agent.borrow(cs).try_borrow_mut() else {
                return LastGasp::Failed(Error::Busy);
            };
            let Some(agent) = slot.as_mut() else {
                return LastGasp::Failed(Error::NotInstalled);
            };
            if self.in_flight.borrow(cs).get() {
                if let Err(e) = agent.burn(now) {
                    return LastGasp::Failed(e);
                }
                self.in_flight.borrow(cs).set(false);
            }
            let p = match agent.prepare(Kind::Terminal(payload), now) {
                Ok(p) => p,
                Err(e) => return LastGasp::Failed(e),
            };
            if hook(p.as_bytes()) {
                // Consume the IV in case the halt action returns control (a test, a debugger).
                let _ = agent.commit(&p);
                LastGasp::Sent
            } else {
                LastGasp::HookRefused
            }
        })
    }
}

/// The payload [`panic_beat`] puts in the terminal frame: the panic's source line (0 if
/// unknown). No formatting machinery is involved.
#[must_use]
pub fn panic_payload(info: &core::panic::PanicInfo<'_>) -> u32 {
    info.location().map_or(0, |l| l.line())
}

/// The `#[panic_handler]` helper: one last-gasp terminal frame (payload: [`panic_payload`])
/// through `global`'s hook, then `halt` (reset, `loop {}`, semihosting exit...).
///
/// `now` is the caller's tick at panic time (read a hardware timer; no clock is read here).
///
/// ```text
/// static AGENT: GlobalAgent = GlobalAgent::new();
///
/// #[panic_handler]
/// fn panic(info: &core::panic::PanicInfo) -> ! {
///     varta_client_nostd::panic_beat(&AGENT, info, ticks(), || cortex_m::peripheral::SCB::sys_reset())
/// }
/// ```
pub fn panic_beat(
    global: &GlobalAgent,
    info: &core::panic::PanicInfo<'_>,
    now: u64,
    halt: fn() -> !,
) -> ! {
    let _outcome = global.last_gasp(panic_payload(info), now);
    #[cfg(feature = "defmt")]
    defmt::error!("varta: panic, last gasp: {}", _outcome);
    halt()
}
