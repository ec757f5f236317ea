//! `audit_log`: arbitrary bytes as a recovery audit file. The parser and the chain verifier
//! (SHA-256 and HMAC links, with and without an anchor) never panic; every line that parses
//! re-parses to the same record after `emit`; and a chain the verifier calls intact reports
//! as its last record the last line it was fed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varta_watch::recovery::audit::{self, Chain, Verifier};

fuzz_target!(|data: &[u8]| {
    for line in data.split(|b| *b == b'\n') {
        if let Ok(r) = audit::parse(line) {
            let again = r.emit();
            assert_eq!(audit::parse(again.as_bytes()).as_ref(), Ok(&r));
        }
    }
    let anchor = data
        .get(..8)
        .map(|b| (u64::from_le_bytes(b.try_into().unwrap()) % 64, [0u8; 32]));
    for chain in [
        Chain::Sha256,
        Chain::Hmac(zeroize::Zeroizing::new([0x5a; 32])),
    ] {
        for a in [None, anchor] {
            let mut v = Verifier::new(chain.clone(), a);
            let half = data.len() / 2;
            audit::feed_file(&mut v, 0, &data[..half]);
            audit::feed_file(&mut v, 1, &data[half..]);
            if let Ok(ok) = v.finish() {
                // Intact means every line fed was a record, in sequence.
                let lines: Vec<&[u8]> = [&data[..half], &data[half..]]
                    .iter()
                    .flat_map(|part| {
                        let mut l: Vec<&[u8]> = part.split(|b| *b == b'\n').collect();
                        if l.last().is_some_and(|x| x.is_empty()) {
                            l.pop();
                        }
                        l
                    })
                    .collect();
                assert_eq!(ok.records, lines.len() as u64);
                if let Some(last) = lines.last() {
                    let seq = audit::parse(last).expect("an intact chain parses").seq;
                    assert_eq!(ok.last.map(|(s, _)| s), Some(seq));
                    assert_eq!(ok.last.map(|(_, h)| h), Some(chain.link(last)));
                } else {
                    assert_eq!(ok.last, None);
                }
            }
        }
        let _ = audit::last_record(&chain, data);
    }
});
