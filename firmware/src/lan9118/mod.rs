//! A polled driver for the SMSC LAN9118 Ethernet controller, as wired on Arm's MPS2 boards
//! (and modelled by QEMU's `mps2-an385`/`an386`/`an511` machines at `0x4020_0000`).
//!
//! The driver never enables the controller's interrupt: [`Lan9118::try_receive`] pops a frame
//! from the RX FIFOs when one is waiting and transmission writes straight into the TX data
//! FIFO. It implements smoltcp's [`phy::Device`](smoltcp::phy::Device), so smoltcp's
//! `Interface::poll` drives it.
//!
//! Register access goes through the small [`Bus`] trait: [`Mmio`] is the real memory-mapped
//! bus; a test can put a model of the controller behind it instead.
//!
//! Facts this code relies on (LAN9118 data sheet, and QEMU's model where they differ):
//!
//! * Only 32-bit accesses. FIFO words carry frame bytes little-endian.
//! * MAC registers are indirect (`MAC_CSR_CMD`/`MAC_CSR_DATA`); reading or writing a MAC index
//!   QEMU does not model aborts QEMU, so only `MAC_CR`, `ADDRH`, `ADDRL`, `MII_ACC`, `MII_DATA`
//!   are touched.
//! * After a soft reset `MAC_CR` has RXEN/TXEN clear (received frames are dropped silently) and,
//!   in QEMU, the promiscuous bit set; [`Lan9118::init`] clears the latter.
//! * The RX status word's length (bits 29:16) counts the 4-byte FCS, which is also in the data
//!   FIFO; exactly `ceil(length / 4)` words must be read per frame.
//! * The TX FIFO takes command A, command B, then the frame without FCS (the MAC appends it).
//! * `FREE_RUN` is a free-running 32-bit counter at 25 MHz; it wraps every ~171.8 s. In QEMU
//!   it is derived from the virtual clock (host time while the guest runs, or instruction
//!   counts under `-icount`), and a soft reset restarts it from 0: start a
//!   [`Clock`](crate::clock::Clock) after [`Lan9118::init`], not before.

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Base address of the LAN9118 on QEMU's `mps2-an385`, `mps2-an386` and `mps2-an511`.
pub const MPS2_BASE: usize = 0x4020_0000;

/// Frequency of the `FREE_RUN` counter, in Hz.
pub const FREE_RUN_HZ: u32 = 25_000_000;

/// Largest Ethernet frame handled, without FCS: 14-byte header + 1500-byte payload.
pub const MAX_FRAME: usize = 1514;

/// Byte offsets of the directly addressed registers.
mod reg {
    pub const RX_DATA_FIFO: usize = 0x00;
    pub const TX_DATA_FIFO: usize = 0x20;
    pub const RX_STATUS_FIFO: usize = 0x40;
    pub const TX_STATUS_FIFO: usize = 0x48;
    pub const ID_REV: usize = 0x50;
    pub const INT_STS: usize = 0x58;
    pub const INT_EN: usize = 0x5C;
    pub const BYTE_TEST: usize = 0x64;
    pub const RX_CFG: usize = 0x6C;
    pub const TX_CFG: usize = 0x70;
    pub const HW_CFG: usize = 0x74;
    pub const RX_FIFO_INF: usize = 0x7C;
    pub const TX_FIFO_INF: usize = 0x80;
    pub const PMT_CTRL: usize = 0x84;
    pub const FREE_RUN: usize = 0x9C;
    pub const MAC_CSR_CMD: usize = 0xA4;
    pub const MAC_CSR_DATA: usize = 0xA8;
}

/// Indices of the indirectly addressed MAC registers.
mod mac {
    pub const CR: u32 = 1;
    pub const ADDRH: u32 = 2;
    pub const ADDRL: u32 = 3;
    pub const MII_ACC: u32 = 6;
    pub const MII_DATA: u32 = 7;

    pub const CR_RXEN: u32 = 1 << 2;
    pub const CR_TXEN: u32 = 1 << 3;
    pub const CR_PRMS: u32 = 1 << 18;
    pub const CR_FDPX: u32 = 1 << 20;
}

const BYTE_TEST_VALUE: u32 = 0x8765_4321;
const HW_CFG_SRST: u32 = 1 << 0;
const PMT_CTRL_READY: u32 = 1 << 0;
const TX_CFG_TX_ON: u32 = 1 << 1;
const TX_CFG_TXD_DUMP: u32 = 1 << 14;
const TX_CFG_TXS_DUMP: u32 = 1 << 15;
const RX_CFG_RX_DUMP: u32 = 1 << 15;
const MAC_CSR_BUSY: u32 = 1 << 31;
const MAC_CSR_READ: u32 = 1 << 30;
const MII_BUSY: u32 = 1 << 0;
/// The internal PHY answers at MII address 1.
const PHY_ADDR: u32 = 1;
const PHY_BSR: u32 = 1;
const PHY_BSR_LINK_UP: u32 = 1 << 2;

const TX_CMD_A_FIRST_SEGMENT: u32 = 1 << 13;
const TX_CMD_A_LAST_SEGMENT: u32 = 1 << 12;
/// Error summary bit, in both the RX and the TX status words.
const STATUS_ERROR: u32 = 1 << 15;
/// Free TX data FIFO space needed before a transmit token is handed out: the largest frame
/// rounded up to whole words, plus the two command words.
const TX_SPACE_NEEDED: u32 = (MAX_FRAME as u32).div_ceil(4) * 4 + 8;
/// Polls of a self-clearing bit before giving up (each poll is a bus read, ~µs on hardware).
const SPIN_LIMIT: u32 = 100_000;
/// Bad frames skipped in one [`Lan9118::try_receive`] call before it yields.
const MAX_SKIPPED_PER_CALL: u32 = 8;

/// 32-bit register access to the controller.
pub trait Bus {
    /// Reads the register at byte `offset` from the controller's base.
    fn read(&mut self, offset: usize) -> u32;
    /// Writes `value` to the register at byte `offset` from the controller's base.
    fn write(&mut self, offset: usize, value: u32);
}

/// The controller's memory-mapped registers.
#[derive(Debug)]
pub struct Mmio {
    base: usize,
}

impl Mmio {
    /// A bus over the register block at `base`.
    ///
    /// # Safety
    ///
    /// `base` must be the address of a LAN9118 register block (0x100 bytes), and nothing else
    /// may access that block while the returned value lives.
    pub const unsafe fn new(base: usize) -> Self {
        Self { base }
    }
}

impl Bus for Mmio {
    #[inline]
    fn read(&mut self, offset: usize) -> u32 {
        // SAFETY: `Mmio::new`'s contract makes `base + offset` (offset < 0x100, word aligned,
        // always one of this module's constants) a device register that only we access.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const u32) }
    }

    #[inline]
    fn write(&mut self, offset: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u32, value) }
    }
}

/// Why the controller could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// `BYTE_TEST` did not read 0x8765_4321: wrong address, bus width or endianness.
    ByteTest(u32),
    /// `ID_REV` names a chip this driver does not know.
    UnknownChip(u32),
    /// The soft reset bit did not clear.
    ResetTimeout,
    /// `PMT_CTRL.READY` did not come up after reset.
    NotReady,
    /// A MAC or MII register access stayed busy.
    MacBusy,
    /// The MAC address is all zeros or a group address and none was supplied.
    NoMacAddress([u8; 6]),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::ByteTest(v) => write!(f, "BYTE_TEST read {v:#010x}, expected 0x87654321"),
            Self::UnknownChip(v) => write!(f, "unknown chip, ID_REV {v:#010x}"),
            Self::ResetTimeout => f.write_str("soft reset did not complete"),
            Self::NotReady => f.write_str("controller not ready after reset"),
            Self::MacBusy => f.write_str("MAC/MII register access stayed busy"),
            Self::NoMacAddress(m) => write!(
                f,
                "no usable MAC address ({:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x})",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
        }
    }
}

/// Frame counters kept by the driver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed to the stack.
    pub rx_frames: u32,
    /// Frames dropped: error status, runt or longer than [`MAX_FRAME`].
    pub rx_dropped: u32,
    /// Frames written to the TX FIFO.
    pub tx_frames: u32,
    /// TX status words with the error summary bit set.
    pub tx_errors: u32,
}

/// A polled LAN9118.
pub struct Lan9118<B: Bus> {
    bus: B,
    mac: [u8; 6],
    tag: u16,
    stats: Stats,
    rx_buf: [u8; MAX_FRAME],
    tx_buf: [u8; MAX_FRAME],
}

impl Lan9118<Mmio> {
    /// The controller of an MPS2 board, taken once; `None` on later calls.
    pub fn take_mps2() -> Option<Self> {
        use core::sync::atomic::{AtomicBool, Ordering};
        static TAKEN: AtomicBool = AtomicBool::new(false);
        if TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: MPS2_BASE is the LAN9118 on the MPS2 boards, and the flag above makes this
        // the only `Mmio` over it.
        Some(Self::new(unsafe { Mmio::new(MPS2_BASE) }))
    }
}

impl<B: Bus> Lan9118<B> {
    /// A driver over `bus`. Call [`init`](Self::init) before use.
    pub const fn new(bus: B) -> Self {
        Self {
            bus,
            mac: [0; 6],
            tag: 0,
            stats: Stats {
                rx_frames: 0,
                rx_dropped: 0,
                tx_frames: 0,
                tx_errors: 0,
            },
            rx_buf: [0; MAX_FRAME],
            tx_buf: [0; MAX_FRAME],
        }
    }

    /// Resets the controller and enables transmit and receive; returns the MAC address in use.
    ///
    /// With `mac` set, that address is programmed; otherwise the one the controller loaded
    /// (from its EEPROM; QEMU's `-nic ...,mac=`, default 52:54:00:12:34:56) is kept.
    ///
    /// # Errors
    ///
    /// See [`Error`]: each variant names the step that failed.
    pub fn init(&mut self, mac: Option<[u8; 6]>) -> Result<[u8; 6], Error> {
        let byte_test = self.bus.read(reg::BYTE_TEST);
        if byte_test != BYTE_TEST_VALUE {
            return Err(Error::ByteTest(byte_test));
        }
        let id = self.bus.read(reg::ID_REV);
        if !matches!(id >> 16, 0x0115..=0x0118 | 0x0215..=0x0218) {
            return Err(Error::UnknownChip(id));
        }

        self.bus.write(reg::HW_CFG, HW_CFG_SRST);
        self.spin_until(reg::HW_CFG, HW_CFG_SRST, 0)
            .map_err(|()| Error::ResetTimeout)?;
        self.spin_until(reg::PMT_CTRL, PMT_CTRL_READY, PMT_CTRL_READY)
            .map_err(|()| Error::NotReady)?;

        if let Some(mac) = mac {
            self.mac_write(
                mac::ADDRL,
                u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
            )?;
            self.mac_write(mac::ADDRH, u32::from(u16::from_le_bytes([mac[4], mac[5]])))?;
        }
        let lo = self.mac_read(mac::ADDRL)?.to_le_bytes();
        let hi = self.mac_read(mac::ADDRH)?.to_le_bytes();
        let addr = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]];
        if addr == [0; 6] || addr[0] & 1 != 0 {
            return Err(Error::NoMacAddress(addr));
        }
        self.mac = addr;

        // Polled: no interrupts, and nothing stale in the FIFOs.
        self.bus.write(reg::INT_EN, 0);
        self.bus.write(reg::INT_STS, u32::MAX);
        self.bus.write(reg::RX_CFG, RX_CFG_RX_DUMP);
        self.bus.write(reg::RX_CFG, 0);
        self.bus.write(
            reg::TX_CFG,
            TX_CFG_TXS_DUMP | TX_CFG_TXD_DUMP | TX_CFG_TX_ON,
        );

        // Filter on our own address (plus broadcast), full duplex, both directions on.
        // Full duplex matches QEMU's PHY; a real board would take it from auto-negotiation.
        let cr = self.mac_read(mac::CR)?;
        let cr = (cr & !mac::CR_PRMS) | mac::CR_FDPX | mac::CR_TXEN | mac::CR_RXEN;
        self.mac_write(mac::CR, cr)?;
        Ok(addr)
    }

    /// The MAC address [`init`](Self::init) settled on.
    pub fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    /// The frame counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The raw `FREE_RUN` counter (25 MHz, wraps every ~171.8 s); see [`crate::clock`].
    pub fn free_run(&mut self) -> u32 {
        self.bus.read(reg::FREE_RUN)
    }

    /// Whether the internal PHY reports link up (basic status register, bit 2).
    ///
    /// # Errors
    ///
    /// [`Error::MacBusy`] when the MII interface stays busy.
    pub fn link_up(&mut self) -> Result<bool, Error> {
        Ok(self.phy_read(PHY_BSR)? & PHY_BSR_LINK_UP != 0)
    }

    /// Pops the next good frame into the receive buffer and returns its length (without FCS),
    /// or `None` when no frame is waiting. Bad frames are read out, dropped and counted.
    pub fn try_receive(&mut self) -> Option<usize> {
        for _ in 0..MAX_SKIPPED_PER_CALL {
            if (self.bus.read(reg::RX_FIFO_INF) >> 16) & 0xFF == 0 {
                return None;
            }
            let status = self.bus.read(reg::RX_STATUS_FIFO);
            let wire_len = ((status >> 16) & 0x3FFF) as usize;
            let words = wire_len.div_ceil(4);
            let frame_len = wire_len.saturating_sub(4);
            if status & STATUS_ERROR != 0 || !(14..=MAX_FRAME).contains(&frame_len) {
                for _ in 0..words {
                    self.bus.read(reg::RX_DATA_FIFO);
                }
                self.stats.rx_dropped = self.stats.rx_dropped.wrapping_add(1);
                continue;
            }
            for i in 0..words {
                let word = self.bus.read(reg::RX_DATA_FIFO).to_le_bytes();
                let start = i * 4;
                if start < frame_len {
                    let n = (frame_len - start).min(4);
                    self.rx_buf[start..start + n].copy_from_slice(&word[..n]);
                }
            }
            self.stats.rx_frames = self.stats.rx_frames.wrapping_add(1);
            return Some(frame_len);
        }
        None
    }

    /// The frame [`try_receive`](Self::try_receive) last returned the length of.
    pub fn received(&self, len: usize) -> &[u8] {
        &self.rx_buf[..len.min(MAX_FRAME)]
    }

    /// Writes `frame` (without FCS) to the TX FIFO, if there is room for a full-size frame.
    ///
    /// # Errors
    ///
    /// Gives `frame` back as `Err` when the TX FIFO has no room or the frame is longer than
    /// [`MAX_FRAME`].
    pub fn try_send<'f>(&mut self, frame: &'f [u8]) -> Result<(), &'f [u8]> {
        if frame.len() > MAX_FRAME || !self.tx_ready() {
            return Err(frame);
        }
        Tx::new(self).send(frame.len(), |buf| buf.copy_from_slice(frame));
        Ok(())
    }

    /// Drains the TX status FIFO, counting errors, and reports whether a full-size frame fits
    /// in the TX data FIFO.
    fn tx_ready(&mut self) -> bool {
        drain_tx_status(&mut self.bus, &mut self.stats);
        self.bus.read(reg::TX_FIFO_INF) & 0xFFFF >= TX_SPACE_NEEDED
    }

    fn spin_until(&mut self, offset: usize, mask: u32, want: u32) -> Result<(), ()> {
        for _ in 0..SPIN_LIMIT {
            if self.bus.read(offset) & mask == want {
                return Ok(());
            }
        }
        Err(())
    }

    fn mac_wait(&mut self) -> Result<(), Error> {
        self.spin_until(reg::MAC_CSR_CMD, MAC_CSR_BUSY, 0)
            .map_err(|()| Error::MacBusy)
    }

    fn mac_read(&mut self, index: u32) -> Result<u32, Error> {
        self.mac_wait()?;
        self.bus
            .write(reg::MAC_CSR_CMD, MAC_CSR_BUSY | MAC_CSR_READ | index);
        self.mac_wait()?;
        Ok(self.bus.read(reg::MAC_CSR_DATA))
    }

    fn mac_write(&mut self, index: u32, value: u32) -> Result<(), Error> {
        self.mac_wait()?;
        self.bus.write(reg::MAC_CSR_DATA, value);
        self.bus.write(reg::MAC_CSR_CMD, MAC_CSR_BUSY | index);
        self.mac_wait()
    }

    fn phy_read(&mut self, index: u32) -> Result<u32, Error> {
        let acc = (PHY_ADDR << 11) | (index << 6);
        self.mii_wait()?;
        self.mac_write(mac::MII_ACC, acc | MII_BUSY)?;
        self.mii_wait()?;
        Ok(self.mac_read(mac::MII_DATA)? & 0xFFFF)
    }

    fn mii_wait(&mut self) -> Result<(), Error> {
        for _ in 0..SPIN_LIMIT {
            if self.mac_read(mac::MII_ACC)? & MII_BUSY == 0 {
                return Ok(());
            }
        }
        Err(Error::MacBusy)
    }
}

fn drain_tx_status<B: Bus>(bus: &mut B, stats: &mut Stats) {
    // Bounded by the status FIFO's depth (at most 512 entries in QEMU).
    for _ in 0..512 {
        if (bus.read(reg::TX_FIFO_INF) >> 16) & 0xFF == 0 {
            return;
        }
        if bus.read(reg::TX_STATUS_FIFO) & STATUS_ERROR != 0 {
            stats.tx_errors = stats.tx_errors.wrapping_add(1);
        }
    }
}

/// The transmit half, borrowed apart from the receive buffer so smoltcp can hold a received
/// frame and answer it at once.
struct Tx<'a, B: Bus> {
    bus: &'a mut B,
    buf: &'a mut [u8; MAX_FRAME],
    tag: &'a mut u16,
    stats: &'a mut Stats,
}

impl<'a, B: Bus> Tx<'a, B> {
    fn new(dev: &'a mut Lan9118<B>) -> Self {
        Self {
            bus: &mut dev.bus,
            buf: &mut dev.tx_buf,
            tag: &mut dev.tag,
            stats: &mut dev.stats,
        }
    }

    /// Lets `fill` write a `len`-byte frame, then pushes it into the TX FIFO.
    ///
    /// # Panics
    ///
    /// If `len` exceeds [`MAX_FRAME`] (smoltcp never asks: the MTU says so).
    fn send<R>(self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        assert!(len <= MAX_FRAME, "frame of {len} bytes exceeds the MTU");
        let frame = &mut self.buf[..len];
        let result = fill(frame);

        *self.tag = self.tag.wrapping_add(1);
        let len32 = len as u32; // <= MAX_FRAME, fits the 11-bit fields
        self.bus.write(
            reg::TX_DATA_FIFO,
            TX_CMD_A_FIRST_SEGMENT | TX_CMD_A_LAST_SEGMENT | len32,
        );
        self.bus
            .write(reg::TX_DATA_FIFO, (u32::from(*self.tag) << 16) | len32);
        for chunk in frame.chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            self.bus.write(reg::TX_DATA_FIFO, u32::from_le_bytes(word));
        }
        self.stats.tx_frames = self.stats.tx_frames.wrapping_add(1);
        drain_tx_status(self.bus, self.stats);
        result
    }
}

/// smoltcp's receive token: a frame already copied out of the RX FIFO.
pub struct RxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.frame)
    }
}

/// smoltcp's transmit token: room for one frame in the TX FIFO.
pub struct TxToken<'a, B: Bus> {
    tx: Tx<'a, B>,
}

impl<B: Bus> phy::TxToken for TxToken<'_, B> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        self.tx.send(len, f)
    }
}

impl<B: Bus> Device for Lan9118<B> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, B>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // Check for TX room first: a frame popped from the RX FIFO cannot be put back.
        if !self.tx_ready() {
            return None;
        }
        let len = self.try_receive()?;
        let tx = Tx {
            bus: &mut self.bus,
            buf: &mut self.tx_buf,
            tag: &mut self.tag,
            stats: &mut self.stats,
        };
        Some((
            RxToken {
                frame: &self.rx_buf[..len],
            },
            TxToken { tx },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        if !self.tx_ready() {
            return None;
        }
        Some(TxToken { tx: Tx::new(self) })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = Some(1);
        caps
    }
}

#[cfg(test)]
mod tests;
