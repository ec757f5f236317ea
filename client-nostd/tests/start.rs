//! `Agent::start` / `Agent::try_start`: a dead-RNG salt is refused, and a restart with the
//! salt the session already runs on (which would restart the IV counter at 1) is refused.

use varta_client_nostd::entropy::SALT_LEN;
use varta_client_nostd::{Agent, Error, Key, Kind, StackError, Status};
use vlp_core::envelope::MasterDatagram;
use vlp_core::kdf::derive_agent_key;

const MASTER: [u8; 32] = [0x4E; 32];

fn sink(_: &[u8]) -> Result<(), StackError> {
    Ok(())
}

#[test]
fn dead_rng_salts_are_refused() {
    for dead in [[0u8; SALT_LEN], [0xFF; SALT_LEN]] {
        let mut a = Agent::master(0x401, Key::from_bytes(MASTER));
        assert_eq!(a.try_start(dead), Err(Error::Entropy));
        assert!(!a.is_started());
        // The infallible form refuses too; the sends say why.
        a.start(dead);
        assert!(!a.is_started());
        assert_eq!(
            a.prepare(Kind::Beat(Status::Ok, 0), 1).map(|_| ()),
            Err(Error::Entropy)
        );
        assert_eq!(a.try_beat(&mut sink, Status::Ok, 0, 1), Err(Error::Entropy));
        // The master key was not replaced: a good salt still derives the right agent key.
        a.try_start([0x11; SALT_LEN]).unwrap();
        let p = a.prepare(Kind::Beat(Status::Ok, 0), 1).unwrap();
        let dg = MasterDatagram::from_bytes(p.as_bytes()).unwrap();
        assert!(dg
            .open(&derive_agent_key(&Key::from_bytes(MASTER), 0x401))
            .is_ok());
    }
    let mut shared = Agent::shared(0x402, Key::from_bytes([1; 32]));
    assert_eq!(shared.try_start([0; SALT_LEN]), Err(Error::Entropy));
    // Plain agents have no IVs and ignore the salt.
    let mut plain = Agent::plain(0x403);
    assert_eq!(plain.try_start([0; SALT_LEN]), Ok(()));
}

#[test]
fn a_second_start_with_the_same_salt_does_not_restart_the_iv_counter() {
    let salt = [0x5C; SALT_LEN];
    let mut a = Agent::shared(0x404, Key::from_bytes([2; 32]));
    a.try_start(salt).unwrap();
    a.try_beat(&mut sink, Status::Ok, 0, 1).unwrap();
    let next = a.prepare(Kind::Beat(Status::Ok, 0), 2).unwrap();
    assert_eq!(next.beat().iv().unwrap().counter, 2);

    assert_eq!(a.try_start(salt), Err(Error::SaltReused));
    a.start(salt);
    // The running session is untouched: counter 2, not 1 again.
    let after = a.prepare(Kind::Beat(Status::Ok, 0), 2).unwrap();
    assert_eq!(after, next);
    assert!(a.is_started());

    // A different salt starts a new session.
    a.try_start([0x5D; SALT_LEN]).unwrap();
    let fresh = a.prepare(Kind::Beat(Status::Ok, 0), 3).unwrap();
    assert_eq!(fresh.beat().iv().unwrap().counter, 1);
    assert_ne!(
        fresh.beat().iv().unwrap().random,
        next.beat().iv().unwrap().random
    );
}
