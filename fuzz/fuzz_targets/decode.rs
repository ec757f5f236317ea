//! `decode`: arbitrary bytes never panic `Frame::parse`; whatever parses re-emits to exactly
//! the same bytes; every error is the one its rule predicts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vlp_core::crc::crc32c;
use vlp_core::{DecodeError, Frame, FRAME_LEN};

fn check(bytes: &[u8]) {
    match Frame::parse(bytes) {
        Ok(f) => {
            assert_eq!(
                &f.emit()[..],
                bytes,
                "parse then emit must reproduce the input"
            );
            assert_eq!(
                Frame::new(f.status(), f.pid(), f.timestamp(), f.nonce(), f.payload()),
                Ok(f)
            );
        }
        Err(DecodeError::BadLength { len }) => {
            assert_eq!(len, bytes.len());
            assert_ne!(len, FRAME_LEN);
        }
        Err(e) => {
            assert_eq!(bytes.len(), FRAME_LEN, "{e}");
            // Errors that need a valid header and CRC must not appear without them.
            let header_ok = bytes[..3] == [0x56, 0x41, 0x02];
            let crc_ok = crc32c(&bytes[..28]).to_le_bytes() == bytes[28..];
            match e {
                DecodeError::BadMagic => assert_ne!(bytes[..2], [0x56, 0x41]),
                DecodeError::BadVersion => assert!(bytes[..2] == [0x56, 0x41] && bytes[2] != 2),
                DecodeError::BadCrc { expected, actual } => {
                    assert!(header_ok && !crc_ok);
                    assert_eq!(expected, crc32c(&bytes[..28]));
                    assert_eq!(actual.to_le_bytes(), bytes[28..]);
                }
                _ => assert!(header_ok && crc_ok, "{e} before the CRC was checked"),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // Random bytes almost never carry a valid header and CRC; give the field rules (4-8) the
    // same input with both fixed up.
    if data.len() >= 28 {
        let mut b = [0u8; FRAME_LEN];
        b[..28].copy_from_slice(&data[..28]);
        b[..3].copy_from_slice(&[0x56, 0x41, 0x02]);
        let crc = crc32c(&b[..28]);
        b[28..].copy_from_slice(&crc.to_le_bytes());
        check(&b);
    }
});
