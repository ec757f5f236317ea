//! The global agent and the last-gasp panic beat, with a host-side fake send hook.
//!
//! One test function on purpose: it installs a process-wide panic hook. The std panic hook
//! runs at the panic site before unwinding, like a firmware `#[panic_handler]`, so a panic
//! inside a critical section finds the agent still borrowed, exactly as on a device.

use std::sync::Mutex as StdMutex;

use varta_client_nostd::{Agent, Error, GlobalAgent, Key, Kind, LastGasp, StackError, Status};
use vlp_core::envelope::MasterDatagram;
use vlp_core::kdf::derive_agent_key;
use vlp_core::{Frame, NONCE_TERMINAL};

const MASTER: [u8; 32] = [0x33; 32];
const PID: u32 = 0xB00;

static AGENT: GlobalAgent = GlobalAgent::new();
static WIRE: StdMutex<Vec<Vec<u8>>> = StdMutex::new(Vec::new());
static OUTCOMES: StdMutex<Vec<LastGasp>> = StdMutex::new(Vec::new());
static REFUSE: StdMutex<bool> = StdMutex::new(false);

fn hook(d: &[u8]) -> bool {
    if *REFUSE.lock().unwrap() {
        return false;
    }
    WIRE.lock().unwrap().push(d.to_vec());
    true
}

fn open(d: &[u8]) -> (u32, Frame) {
    let dg = MasterDatagram::from_bytes(d).unwrap();
    let (iv, f) = dg
        .open(&derive_agent_key(&Key::from_bytes(MASTER), dg.pid()))
        .unwrap();
    (iv.counter, f)
}

fn wire_send(d: &[u8]) -> Result<(), StackError> {
    WIRE.lock().unwrap().push(d.to_vec());
    Ok(())
}

#[test]
fn global_agent_and_last_gasp() {
    // Before anything is installed.
    assert_eq!(AGENT.last_gasp(1, 1), LastGasp::NoHook);
    AGENT.set_last_gasp_hook(hook);
    assert_eq!(AGENT.last_gasp(1, 1), LastGasp::Failed(Error::NotInstalled));
    assert_eq!(
        AGENT.try_beat(&mut wire_send, Status::Ok, 0, 1),
        Err(Error::NotInstalled)
    );

    let mut a = Agent::master(PID, Key::from_bytes(MASTER));
    a.start([5; 16]);
    assert!(AGENT.install(a).unwrap().is_none());

    // Ordinary beats through the global agent.
    AGENT.try_beat(&mut wire_send, Status::Ok, 0, 10).unwrap();
    AGENT.try_beat(&mut wire_send, Status::Ok, 0, 20).unwrap();

    // Re-entrance (an interrupt firing inside a beat) is refused, not deadlocked.
    let inner = AGENT.with(|_| AGENT.try_beat(&mut wire_send, Status::Ok, 0, 25));
    assert_eq!(inner, Ok(Err(Error::Busy)));
    let gasp_inside = AGENT.with(|_| AGENT.last_gasp(0, 25)).unwrap();
    assert_eq!(gasp_inside, LastGasp::Failed(Error::Busy));

    // A refusing hook reports it and consumes nothing.
    *REFUSE.lock().unwrap() = true;
    assert_eq!(AGENT.last_gasp(0, 26), LastGasp::HookRefused);
    *REFUSE.lock().unwrap() = false;

    // Async-style send in flight when the panic comes: the last gasp burns the in-flight IV.
    let in_flight = AGENT.prepare(Kind::Beat(Status::Ok, 0), 30).unwrap();
    wire_send(in_flight.as_bytes()).unwrap(); // "on the wire", not yet finished

    // The panic hook stands in for #[panic_handler]: it runs before unwinding.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let line = info.location().map_or(0, |l| l.line());
        OUTCOMES.lock().unwrap().push(AGENT.last_gasp(line, 40));
    }));
    // Panic outside any critical section: the last gasp goes out.
    let panic_line = line!() + 1;
    let r = std::panic::catch_unwind(|| panic!("task overflowed"));
    assert!(r.is_err());
    // Panic inside a beat (agent borrowed): nothing is sent, nothing deadlocks.
    let r = std::panic::catch_unwind(|| {
        AGENT.with(|_| panic!("inside the critical section")).ok();
    });
    assert!(r.is_err());
    std::panic::set_hook(prev);

    let outcomes = OUTCOMES.lock().unwrap().clone();
    assert_eq!(outcomes, [LastGasp::Sent, LastGasp::Failed(Error::Busy)]);

    // finish() of the burned beat is stale: it was superseded by the last gasp.
    assert_eq!(
        AGENT.finish(&in_flight, Ok(())),
        Err(Error::Session(vlp_core::SessionError::StaleBeat))
    );

    let wire = WIRE.lock().unwrap().clone();
    let opened: Vec<(u32, Frame)> = wire.iter().map(|d| open(d)).collect();
    // beats (counters 1, 2), the in-flight beat (3), the terminal frame (4: 3 was burned).
    let counters: Vec<u32> = opened.iter().map(|(c, _)| *c).collect();
    assert_eq!(counters, [1, 2, 3, 4]);
    let (_, terminal) = opened[3];
    assert_eq!(terminal.nonce(), NONCE_TERMINAL);
    assert_eq!(terminal.status(), Status::Critical);
    assert_eq!(terminal.payload(), panic_line);
    assert_eq!(terminal.timestamp(), 40);

    // Installing again replaces the agent and hands the old one back.
    let old = AGENT.install(Agent::plain(9)).unwrap().unwrap();
    assert_eq!(old.pid(), PID);
}
