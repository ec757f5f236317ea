//! The panic hook: one terminal Critical frame, sent before the previous hook runs.
//!
//! The hook owns its own [`Varta`] (its own socket and session) rather than sharing the
//! application's: a panic may come while the application's client is borrowed, and a
//! separate session on secure transports has its own fresh IV salt, so the two streams can
//! never collide. Terminal frames carry nonce [`crate::NONCE_TERMINAL`], which is outside the
//! regular nonce sequence. The hook's client checks for a fork like any other, so a child's
//! panic is reported under the child's pid with a fresh salt.

use std::io;
#[cfg(feature = "udp")]
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::{Mutex, TryLockError};

#[cfg(feature = "secure-udp")]
use crate::Key;
use crate::{BeatTransport, Varta, PANIC_PAYLOAD};

/// Installs a panic hook that sends one terminal frame (Critical, nonce
/// [`crate::NONCE_TERMINAL`], payload [`PANIC_PAYLOAD`]) to the observer's Unix socket at
/// `path`, then runs the hook that was installed before (by default, the one printing the
/// panic message).
///
/// The socket is connected now, so the hook itself only sends (reconnecting once if the
/// observer restarted since).
///
/// # Errors
/// As [`Varta::connect`].
pub fn install_panic_handler(path: impl AsRef<Path>) -> io::Result<()> {
    install_panic_handler_with(Varta::connect(path)?);
    Ok(())
}

/// [`install_panic_handler`] over UDP (plain frames).
///
/// # Errors
/// As [`Varta::connect_udp`].
#[cfg(feature = "udp")]
pub fn install_panic_handler_udp(addr: impl ToSocketAddrs) -> io::Result<()> {
    install_panic_handler_with(Varta::connect_udp(addr)?);
    Ok(())
}

/// [`install_panic_handler`] over secure UDP with a shared key (60-byte datagrams).
///
/// # Errors
/// As [`Varta::connect_secure_udp`].
#[cfg(feature = "secure-udp")]
pub fn install_panic_handler_secure_udp(addr: impl ToSocketAddrs, key: Key) -> io::Result<()> {
    install_panic_handler_with(Varta::connect_secure_udp(addr, key)?);
    Ok(())
}

/// [`install_panic_handler`] over secure UDP with a master key (64-byte datagrams).
///
/// # Errors
/// As [`Varta::connect_secure_udp_with_master`].
#[cfg(feature = "secure-udp")]
pub fn install_panic_handler_secure_udp_with_master(
    addr: impl ToSocketAddrs,
    master_key: Key,
) -> io::Result<()> {
    install_panic_handler_with(Varta::connect_secure_udp_with_master(addr, master_key)?);
    Ok(())
}

/// [`install_panic_handler`] over secure UDP with this agent's own key (64-byte datagrams
/// carrying `agent_id`; see [`Varta::connect_secure_udp_with_agent_key`]).
///
/// # Errors
/// As [`Varta::connect_secure_udp_with_agent_key`].
#[cfg(feature = "secure-udp")]
pub fn install_panic_handler_secure_udp_with_agent_key(
    addr: impl ToSocketAddrs,
    agent_id: u32,
    key: Key,
) -> io::Result<()> {
    install_panic_handler_with(Varta::connect_secure_udp_with_agent_key(
        addr, agent_id, key,
    )?);
    Ok(())
}

/// Installs the panic hook with a client you built (any transport, any envelope). The client
/// should be dedicated to the hook (see the module docs).
pub fn install_panic_handler_with<T>(client: Varta<T>)
where
    T: BeatTransport + Send + 'static,
{
    let client = Mutex::new(client);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // try_lock, never lock: if another thread holds the client it is panicking too and
        // sending a terminal frame right now (one is enough), and a child forked while the
        // lock was held must not deadlock in its own panic.
        let client = match client.try_lock() {
            Ok(c) => Some(c),
            // A poisoned lock only means a panic inside this hook's send; the client's state
            // is still consistent (the session commits after a send).
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(mut c) = client {
            // The observer may have restarted since install: reconnect at once rather than
            // lose the only frame that matters.
            c.set_reconnect_after(1);
            // Nothing useful can be done with a failure inside a panic hook.
            let _ = c.terminal(PANIC_PAYLOAD);
        }
        previous(info);
    }));
}
