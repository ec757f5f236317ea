//! `keyfile`: arbitrary bytes as the text of a key file and of an accepted-key list
//! (`vlp_core::keyfile`). Never a panic; a key that parses prints back (64 lowercase hex
//! characters) to text that parses to the same key, alone and as a one-line list; a list never
//! holds a key twice, and each of its keys parses alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vlp_core::keyfile::{parse_key_list, parse_key_text};
use vlp_core::Key;

fn hex(k: &Key) -> String {
    k.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(k) = parse_key_text(&text) {
        let again = parse_key_text(&format!("# a comment\n\n  {}  \n", hex(&k))).unwrap();
        assert_eq!(again.as_bytes(), k.as_bytes());
        let list = parse_key_list(&hex(&k)).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].as_bytes(), k.as_bytes());
    }
    if let Ok(keys) = parse_key_list(&text) {
        assert!(!keys.is_empty());
        for (i, k) in keys.iter().enumerate() {
            assert!(keys[..i].iter().all(|o| o.as_bytes() != k.as_bytes()));
            let alone = parse_key_text(&hex(k)).unwrap();
            assert_eq!(alone.as_bytes(), k.as_bytes());
        }
    }
});
