//! The MPS2 board as the binaries use it: the LAN9118 brought up, a clock on its `FREE_RUN`
//! counter, smoltcp on QEMU's user network, and semihosting for arguments, output and exit.

use smoltcp::iface::Interface;
use smoltcp::time::Instant;

use crate::clock::Clock;
use crate::lan9118::{self, Lan9118, Mmio};
use crate::net;

/// The network side of the board, ready to send.
pub struct Board {
    /// The NIC.
    pub eth: Lan9118<Mmio>,
    /// Time since bring-up.
    pub clock: Clock,
    /// smoltcp at 10.0.2.15/24 via 10.0.2.2.
    pub iface: Interface,
}

/// Why the board could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BringUpError {
    /// The LAN9118 was already taken.
    Taken,
    /// The LAN9118 failed to initialise.
    Nic(lan9118::Error),
    /// The PHY reports no link.
    LinkDown,
}

impl core::fmt::Display for BringUpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Taken => f.write_str("LAN9118 already taken"),
            Self::Nic(e) => write!(f, "LAN9118: {e}"),
            Self::LinkDown => f.write_str("LAN9118: PHY reports link down"),
        }
    }
}

impl Board {
    /// Resets the NIC, starts the clock and configures smoltcp for QEMU's user network.
    ///
    /// # Errors
    ///
    /// See [`BringUpError`].
    pub fn bring_up() -> Result<Self, BringUpError> {
        let mut eth = Lan9118::take_mps2().ok_or(BringUpError::Taken)?;
        let mac = eth.init(None).map_err(BringUpError::Nic)?;
        if !eth.link_up().map_err(BringUpError::Nic)? {
            return Err(BringUpError::LinkDown);
        }
        let raw = eth.free_run();
        let mut clock = Clock::new(lan9118::FREE_RUN_HZ, raw);
        let now = clock.instant(raw);
        // smoltcp's seed only picks ephemeral ports here; the counter's value at boot differs
        // from run to run under QEMU.
        let seed = u64::from(raw) ^ u64::from(u32::from_le_bytes([mac[2], mac[3], mac[4], mac[5]]));
        let iface = net::interface(
            &mut eth,
            mac,
            net::GUEST_IP,
            net::PREFIX_LEN,
            net::GATEWAY_IP,
            seed,
            now,
        );
        Ok(Self { eth, clock, iface })
    }

    /// A device identity for VLP's pid field: the last four bytes of the MAC address, moved
    /// off the reserved values 0 and 1.
    pub fn device_id(&self) -> u32 {
        let m = self.eth.mac_address();
        match u32::from_be_bytes([m[2], m[3], m[4], m[5]]) {
            0 | 1 => 2,
            id => id,
        }
    }

    /// Reads the counter and returns the time since bring-up.
    pub fn now(&mut self) -> Instant {
        self.clock.instant(self.eth.free_run())
    }
}

#[cfg(all(target_arch = "arm", target_os = "none"))]
impl Board {
    /// Sends the datagrams of `source` to 10.0.2.2:`args.port` at `args.interval_ms`, lingers
    /// `args.linger_ms`, reports on the host's stdout as `name`, and ends the QEMU run with
    /// success, or with failure at the first error.
    pub fn run(
        &mut self,
        name: &str,
        args: &crate::args::RunArgs,
        local_port: u16,
        source: &mut impl crate::app::Source,
    ) -> ! {
        use crate::app;
        use smoltcp::time::Duration;
        use smoltcp::wire::IpEndpoint;

        let plan = app::Plan::new(
            IpEndpoint::new(net::GATEWAY_IP.into(), args.port),
            local_port,
            args.count,
            Duration::from_millis(args.interval_ms.into()),
        );
        let Self { eth, clock, iface } = self;
        let mut now = |eth: &mut Lan9118<Mmio>| clock.instant(eth.free_run());
        match app::send_all(eth, iface, &mut now, &plan, source) {
            Ok(report) => {
                let stats = eth.stats();
                cortex_m_semihosting::hprintln!(
                    "{}: {} datagrams sent in {} ms; NIC tx {} ({} errors), rx {} ({} dropped)",
                    name,
                    report.sent,
                    report.elapsed.total_millis(),
                    stats.tx_frames,
                    stats.tx_errors,
                    stats.rx_frames,
                    stats.rx_dropped
                );
            }
            Err(e) => fail(format_args!("{name}: {e}")),
        }
        if args.linger_ms > 0 {
            cortex_m_semihosting::hprintln!("{}: silent for {} ms", name, args.linger_ms);
            app::linger(
                eth,
                iface,
                &mut now,
                Duration::from_millis(args.linger_ms.into()),
            );
        }
        exit(true)
    }
}

/// Ends the QEMU run with success or failure (semihosting `SYS_EXIT`).
#[cfg(all(target_arch = "arm", target_os = "none"))]
pub fn exit(ok: bool) -> ! {
    use cortex_m_semihosting::debug;
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached when no debugger or QEMU honours the exit request.
    loop {
        cortex_m::asm::wfi();
    }
}

/// Prints `msg` to the host's stdout and ends the run with failure.
#[cfg(all(target_arch = "arm", target_os = "none"))]
pub fn fail(msg: core::fmt::Arguments<'_>) -> ! {
    cortex_m_semihosting::hprintln!("{}", msg);
    exit(false)
}
