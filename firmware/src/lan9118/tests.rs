//! The driver against a model of the controller's register interface.
//!
//! The model follows the LAN9118 data sheet and QEMU's `hw/net/lan9118.c`: FIFO words carry
//! bytes little-endian, the RX data FIFO holds each frame plus its FCS, MAC registers are
//! indirect, and touching a MAC index QEMU does not model is fatal (QEMU aborts; the model
//! panics). It also panics when the driver reads past a frame's words or leaves some unread.

use super::*;
use smoltcp::iface::{SocketSet, SocketStorage};
use smoltcp::phy::{RxToken as _, TxToken as _};
use smoltcp::socket::udp;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, IpEndpoint,
    IpProtocol, Ipv4Address, Ipv4Packet, UdpPacket,
};
use std::collections::VecDeque;
use std::vec::Vec;

const QEMU_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

struct Model {
    byte_test: u32,
    id_rev: u32,
    reset_sticks: bool,
    hw_cfg: u32,
    int_en: u32,
    mac_cmd: u32,
    mac_data: u32,
    mac_cr: u32,
    mac_addr: [u8; 6],
    mii_acc: u32,
    mii_data: u32,
    phy_bsr: u32,
    rx_status: VecDeque<u32>,
    /// Words of the frame whose status was popped, then of the frames still queued.
    rx_words: VecDeque<u32>,
    /// Words the popped frame still owes.
    rx_owed: usize,
    rx_queued_words: VecDeque<Vec<u32>>,
    tx_free: u32,
    tx_pending: Vec<u32>,
    tx_frames: Vec<(u32, u32, Vec<u8>)>,
    tx_status: VecDeque<u32>,
    tx_fail: bool,
    free_run: u32,
}

impl Model {
    fn qemu() -> Self {
        Self {
            byte_test: 0x8765_4321,
            id_rev: 0x0118_0001,
            reset_sticks: false,
            hw_cfg: 0x0005_0004,
            int_en: 0xFFFF,
            mac_cmd: 0,
            mac_data: 0,
            mac_cr: mac::CR_PRMS,
            mac_addr: QEMU_MAC,
            mii_acc: 0,
            mii_data: 0,
            phy_bsr: 0x782D,
            rx_status: VecDeque::new(),
            rx_words: VecDeque::new(),
            rx_owed: 0,
            rx_queued_words: VecDeque::new(),
            tx_free: 4608,
            tx_pending: Vec::new(),
            tx_frames: Vec::new(),
            tx_status: VecDeque::new(),
            tx_fail: false,
            free_run: 0,
        }
    }

    /// Queues a received frame (without FCS) as the controller would: status word with the
    /// length plus 4, data words little-endian, then the FCS.
    fn push_rx(&mut self, frame: &[u8], status_flags: u32) {
        let mut bytes = frame.to_vec();
        bytes.extend_from_slice(&[0xDE, 0xAD, 0xBE, 0xEF]);
        let words = bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect();
        self.rx_status
            .push_back(((bytes.len() as u32) << 16) | status_flags);
        self.rx_queued_words.push_back(words);
    }

    fn mac_reg_read(&mut self, index: u32) -> u32 {
        match index {
            mac::CR => self.mac_cr,
            mac::ADDRH => u32::from(u16::from_le_bytes([self.mac_addr[4], self.mac_addr[5]])),
            mac::ADDRL => u32::from_le_bytes([
                self.mac_addr[0],
                self.mac_addr[1],
                self.mac_addr[2],
                self.mac_addr[3],
            ]),
            mac::MII_ACC => self.mii_acc,
            mac::MII_DATA => self.mii_data,
            other => panic!("read of unmodelled MAC register {other} (QEMU aborts)"),
        }
    }

    fn mac_reg_write(&mut self, index: u32, value: u32) {
        match index {
            mac::CR => self.mac_cr = value,
            mac::ADDRH => {
                let b = value.to_le_bytes();
                self.mac_addr[4..6].copy_from_slice(&b[..2]);
            }
            mac::ADDRL => self.mac_addr[..4].copy_from_slice(&value.to_le_bytes()),
            mac::MII_ACC => {
                assert_eq!(value & 0x2, 0, "the driver only reads the PHY");
                let phy = (value >> 11) & 0x1F;
                let reg = (value >> 6) & 0x1F;
                assert_eq!(phy, 1, "the internal PHY is at address 1");
                self.mii_data = match reg {
                    1 => self.phy_bsr,
                    other => panic!("read of unmodelled PHY register {other}"),
                };
                self.mii_acc = value & !1; // completes at once
            }
            mac::MII_DATA => self.mii_data = value,
            other => panic!("write of unmodelled MAC register {other} (QEMU aborts)"),
        }
    }

    fn tx_push(&mut self, word: u32) {
        self.tx_pending.push(word);
        let [a, b, data @ ..] = self.tx_pending.as_slice() else {
            return;
        };
        let len = (a & 0x7FF) as usize;
        if data.len() < len.div_ceil(4) {
            return;
        }
        let mut frame: Vec<u8> = data.iter().flat_map(|w| w.to_le_bytes()).collect();
        frame.truncate(len);
        let tag = b >> 16;
        self.tx_status
            .push_back((tag << 16) | if self.tx_fail { STATUS_ERROR } else { 0 });
        self.tx_frames.push((*a, *b, frame));
        self.tx_pending.clear();
    }
}

impl Bus for &mut Model {
    fn read(&mut self, offset: usize) -> u32 {
        match offset {
            0x00..=0x1C => {
                assert!(self.rx_owed > 0, "RX data FIFO read past the frame");
                self.rx_owed -= 1;
                self.rx_words.pop_front().expect("RX data FIFO underflow")
            }
            reg::RX_STATUS_FIFO => {
                assert_eq!(self.rx_owed, 0, "previous frame's words not all read");
                let status = self.rx_status.pop_front().expect("RX status FIFO empty");
                let words = self.rx_queued_words.pop_front().unwrap();
                self.rx_owed = words.len();
                self.rx_words.extend(words);
                status
            }
            reg::TX_STATUS_FIFO => self.tx_status.pop_front().unwrap_or(0),
            reg::ID_REV => self.id_rev,
            reg::INT_STS => 0,
            reg::INT_EN => self.int_en,
            reg::BYTE_TEST => self.byte_test,
            reg::HW_CFG => self.hw_cfg,
            reg::RX_FIFO_INF => (self.rx_status.len() as u32) << 16,
            reg::TX_FIFO_INF => ((self.tx_status.len() as u32) << 16) | self.tx_free,
            reg::PMT_CTRL => 1,
            reg::FREE_RUN => self.free_run,
            reg::MAC_CSR_CMD => self.mac_cmd,
            reg::MAC_CSR_DATA => self.mac_data,
            other => panic!("read of unmodelled register {other:#x}"),
        }
    }

    fn write(&mut self, offset: usize, value: u32) {
        match offset {
            0x20..=0x3C => self.tx_push(value),
            reg::INT_STS | reg::RX_CFG => {}
            reg::INT_EN => self.int_en = value,
            reg::TX_CFG => {
                if value & TX_CFG_TXS_DUMP != 0 {
                    self.tx_status.clear();
                }
            }
            reg::HW_CFG => {
                if value & HW_CFG_SRST != 0 {
                    self.mac_cr = mac::CR_PRMS;
                    self.hw_cfg = if self.reset_sticks {
                        value
                    } else {
                        0x0005_0004
                    };
                }
            }
            reg::MAC_CSR_CMD => {
                let index = value & 0xF;
                self.mac_cmd = value & !MAC_CSR_BUSY;
                if value & MAC_CSR_BUSY != 0 {
                    if value & MAC_CSR_READ != 0 {
                        self.mac_data = self.mac_reg_read(index);
                    } else {
                        self.mac_reg_write(index, self.mac_data);
                    }
                }
            }
            reg::MAC_CSR_DATA => self.mac_data = value,
            other => panic!("write of unmodelled register {other:#x} = {value:#x}"),
        }
    }
}

fn ready(model: &mut Model) -> Lan9118<&mut Model> {
    let mut dev = Lan9118::new(model);
    dev.init(None).expect("init");
    dev
}

#[test]
fn init_enables_both_directions_and_leaves_promiscuous_mode() {
    let mut model = Model::qemu();
    let mac = Lan9118::new(&mut model).init(None).unwrap();
    assert_eq!(mac, QEMU_MAC);
    let cr = model.mac_cr;
    assert_eq!(cr & mac::CR_PRMS, 0);
    assert_eq!(
        cr & (mac::CR_RXEN | mac::CR_TXEN | mac::CR_FDPX),
        mac::CR_RXEN | mac::CR_TXEN | mac::CR_FDPX
    );
    assert_eq!(model.int_en, 0, "polled: no interrupt sources enabled");
}

#[test]
fn init_programs_a_supplied_mac_address() {
    let mut model = Model::qemu();
    let want = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    let mut dev = Lan9118::new(&mut model);
    assert_eq!(dev.init(Some(want)), Ok(want));
    assert_eq!(dev.mac_address(), want);
    assert_eq!(model.mac_addr, want);
}

#[test]
fn init_names_each_failed_step() {
    let mut model = Model::qemu();
    model.byte_test = 0x4321_8765;
    assert_eq!(
        Lan9118::new(&mut model).init(None),
        Err(Error::ByteTest(0x4321_8765))
    );

    let mut model = Model::qemu();
    model.id_rev = 0x9220_0000;
    assert_eq!(
        Lan9118::new(&mut model).init(None),
        Err(Error::UnknownChip(0x9220_0000))
    );

    let mut model = Model::qemu();
    model.reset_sticks = true;
    assert_eq!(
        Lan9118::new(&mut model).init(None),
        Err(Error::ResetTimeout)
    );

    let mut model = Model::qemu();
    model.mac_addr = [0; 6];
    assert_eq!(
        Lan9118::new(&mut model).init(None),
        Err(Error::NoMacAddress([0; 6]))
    );
    let mut model = Model::qemu();
    model.mac_addr = [0x01, 0, 0x5E, 0, 0, 1];
    assert!(matches!(
        Lan9118::new(&mut model).init(None),
        Err(Error::NoMacAddress(_))
    ));
}

fn test_frame(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + len) as u8).collect()
}

#[test]
fn receive_reassembles_frames_of_every_length_modulo_4() {
    let mut model = Model::qemu();
    let lens = [14, 60, 61, 62, 63, 64, 1513, MAX_FRAME];
    for len in lens {
        model.push_rx(&test_frame(len), 0);
    }
    let mut dev = ready(&mut model);
    for len in lens {
        let got = dev.try_receive().expect("a frame is waiting");
        assert_eq!(got, len);
        assert_eq!(dev.received(got), test_frame(len).as_slice());
    }
    assert_eq!(dev.try_receive(), None);
    assert_eq!(dev.stats().rx_frames, lens.len() as u32);
}

#[test]
fn receive_drops_bad_frames_and_returns_the_next_good_one() {
    let mut model = Model::qemu();
    model.push_rx(&test_frame(60), STATUS_ERROR);
    model.push_rx(&test_frame(13), 0); // runt
    model.push_rx(&test_frame(MAX_FRAME + 4), 0); // VLAN-sized: longer than we handle
    model.push_rx(&test_frame(98), 0);
    let mut dev = ready(&mut model);
    assert_eq!(dev.try_receive(), Some(98));
    assert_eq!(dev.received(98), test_frame(98).as_slice());
    assert_eq!(dev.stats().rx_dropped, 3);
    assert_eq!(dev.try_receive(), None);
}

#[test]
fn receive_yields_after_a_bounded_run_of_bad_frames() {
    let mut model = Model::qemu();
    for _ in 0..MAX_SKIPPED_PER_CALL + 1 {
        model.push_rx(&test_frame(60), STATUS_ERROR);
    }
    model.push_rx(&test_frame(60), 0);
    let mut dev = ready(&mut model);
    assert_eq!(dev.try_receive(), None, "gives the caller its loop back");
    assert_eq!(dev.try_receive(), Some(60));
}

#[test]
fn transmit_writes_both_command_words_then_the_frame() {
    let mut model = Model::qemu();
    let mut dev = ready(&mut model);
    for len in [42, 61, 63] {
        let frame = test_frame(len);
        let token = dev.transmit(Instant::ZERO).expect("room in the TX FIFO");
        token.consume(len, |buf| buf.copy_from_slice(&frame));
    }
    assert_eq!(dev.stats().tx_frames, 3);
    let tags: Vec<u32> = model.tx_frames.iter().map(|(_, b, _)| b >> 16).collect();
    assert_eq!(tags, [1, 2, 3], "each frame gets a fresh tag");
    for ((a, b, frame), len) in model.tx_frames.iter().zip([42u32, 61, 63]) {
        assert_eq!(*a, TX_CMD_A_FIRST_SEGMENT | TX_CMD_A_LAST_SEGMENT | len);
        assert_eq!(b & 0x7FF, len);
        assert_eq!(*frame, test_frame(len as usize));
    }
}

#[test]
fn try_send_refuses_oversized_frames() {
    let mut model = Model::qemu();
    let mut dev = ready(&mut model);
    let big = test_frame(MAX_FRAME + 1);
    assert_eq!(dev.try_send(&big), Err(big.as_slice()));
    assert_eq!(dev.try_send(&big[..60]), Ok(()));
    assert_eq!(model.tx_frames.len(), 1);
}

#[test]
fn a_full_tx_fifo_withholds_both_tokens_and_keeps_the_received_frame() {
    let mut model = Model::qemu();
    model.push_rx(&test_frame(60), 0);
    model.tx_free = TX_SPACE_NEEDED - 1;
    let mut dev = ready(&mut model);
    assert!(dev.transmit(Instant::ZERO).is_none());
    assert!(dev.receive(Instant::ZERO).is_none());
    assert_eq!(model.rx_status.len(), 1, "the frame stays in the FIFO");

    model.tx_free = TX_SPACE_NEEDED;
    let mut dev = Lan9118::new(&mut model);
    let (rx, _tx) = dev.receive(Instant::ZERO).expect("room again");
    assert_eq!(rx.consume(|f| f.to_vec()), test_frame(60));
}

#[test]
fn tx_status_errors_are_counted() {
    let mut model = Model::qemu();
    model.tx_fail = true;
    let mut dev = ready(&mut model);
    dev.try_send(&test_frame(60)).unwrap();
    dev.try_send(&test_frame(60)).unwrap();
    assert_eq!(dev.stats().tx_errors, 2);
    assert!(model.tx_status.is_empty(), "status FIFO drained");
}

#[test]
fn link_state_comes_from_the_phy() {
    let mut model = Model::qemu();
    let mut dev = ready(&mut model);
    assert_eq!(dev.link_up(), Ok(true));
    model.phy_bsr &= !PHY_BSR_LINK_UP;
    assert_eq!(Lan9118::new(&mut model).link_up(), Ok(false));
}

/// smoltcp over the driver over the model: the first datagram to the gateway waits for ARP,
/// then leaves as a well-formed Ethernet/IPv4/UDP frame addressed to the gateway's MAC.
#[test]
fn smoltcp_resolves_the_gateway_then_sends_udp() {
    let mut model = Model::qemu();
    let mut dev = ready(&mut model);
    let mut now = Instant::from_millis(1);
    let mut iface = crate::net::interface(
        &mut dev,
        QEMU_MAC,
        crate::net::GUEST_IP,
        crate::net::PREFIX_LEN,
        crate::net::GATEWAY_IP,
        1,
        now,
    );
    let mut rx_meta = [udp::PacketMetadata::EMPTY; 1];
    let mut rx_data = [0u8; 64];
    let mut tx_meta = [udp::PacketMetadata::EMPTY; 2];
    let mut tx_data = [0u8; 128];
    let mut storage = [SocketStorage::EMPTY; 1];
    let mut sockets = SocketSet::new(&mut storage[..]);
    let handle = sockets.add(udp::Socket::new(
        udp::PacketBuffer::new(&mut rx_meta[..], &mut rx_data[..]),
        udp::PacketBuffer::new(&mut tx_meta[..], &mut tx_data[..]),
    ));
    let socket = sockets.get_mut::<udp::Socket>(handle);
    socket.bind(49_152).unwrap();
    let remote = IpEndpoint::new(crate::net::GATEWAY_IP.into(), 40_000);
    socket.send_slice(b"hello", remote).unwrap();

    iface.poll(now, &mut dev, &mut sockets);
    assert_eq!(model.tx_frames.len(), 1, "only the ARP request so far");
    let (_, _, arp_frame) = model.tx_frames.pop().unwrap();
    let eth = EthernetFrame::new_checked(&arp_frame[..]).unwrap();
    assert_eq!(eth.dst_addr(), EthernetAddress::BROADCAST);
    assert_eq!(eth.src_addr(), EthernetAddress(QEMU_MAC));
    assert_eq!(eth.ethertype(), EthernetProtocol::Arp);
    let request = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
    let ArpRepr::EthernetIpv4 {
        operation,
        target_protocol_addr,
        source_protocol_addr,
        ..
    } = request
    else {
        panic!("not an Ethernet/IPv4 ARP packet");
    };
    assert_eq!(operation, ArpOperation::Request);
    assert_eq!(target_protocol_addr, crate::net::GATEWAY_IP);
    assert_eq!(source_protocol_addr, crate::net::GUEST_IP);

    // The gateway answers, as QEMU's slirp does.
    let reply = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(GATEWAY_MAC),
        source_protocol_addr: crate::net::GATEWAY_IP,
        target_hardware_addr: EthernetAddress(QEMU_MAC),
        target_protocol_addr: crate::net::GUEST_IP,
    };
    let mut buf = [0u8; 60];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    frame.set_dst_addr(EthernetAddress(QEMU_MAC));
    frame.set_src_addr(EthernetAddress(GATEWAY_MAC));
    frame.set_ethertype(EthernetProtocol::Arp);
    reply.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    model.push_rx(&buf, 0);

    let mut dev = Lan9118::new(&mut model);
    now += smoltcp::time::Duration::from_millis(1);
    iface.poll(now, &mut dev, &mut sockets);
    assert_eq!(sockets.get::<udp::Socket>(handle).send_queue(), 0);

    assert_eq!(model.tx_frames.len(), 1, "the held datagram left");
    let (_, _, udp_frame) = model.tx_frames.pop().unwrap();
    let eth = EthernetFrame::new_checked(&udp_frame[..]).unwrap();
    assert_eq!(eth.dst_addr(), EthernetAddress(GATEWAY_MAC));
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(
        ip.verify_checksum(),
        "QEMU drops IPv4 with a bad header checksum"
    );
    assert_eq!(ip.src_addr(), crate::net::GUEST_IP);
    assert_eq!(ip.dst_addr(), Ipv4Address::new(10, 0, 2, 2));
    assert_eq!(ip.next_header(), IpProtocol::Udp);
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(udp.src_port(), 49_152);
    assert_eq!(udp.dst_port(), 40_000);
    assert_eq!(udp.payload(), b"hello");
}
