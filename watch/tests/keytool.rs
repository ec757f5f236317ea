//! `varta-watch key derive`: the per-agent key file it writes opens exactly the datagrams
//! sealed for that agent id, and the observer holding only the master key accepts them.

mod recovery_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use recovery_support::{mono_ns, run_bin, tmpdir, write_file, Observer};
use vlp_core::{Frame, Iv, MasterDatagram, Status};

const MASTER: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";

fn sealed(key: &vlp_core::Key, pid: u32, counter: u32) -> MasterDatagram {
    let frame = Frame::new(Status::Ok, pid, mono_ns(), u64::from(counter), 0).unwrap();
    let iv = Iv {
        random: [7; 8],
        counter,
    };
    MasterDatagram::seal(key, &iv, &frame)
}

/// `varta-watch key derive --master-key-file MASTER --agent-id ID [--out OUT]`.
fn derive(master: &Path, id: u32, out: Option<&Path>) -> std::process::Output {
    let id = id.to_string();
    let mut args = vec![
        "key",
        "derive",
        "--master-key-file",
        master.to_str().unwrap(),
        "--agent-id",
        &id,
    ];
    if let Some(out) = out {
        args.extend(["--out", out.to_str().unwrap()]);
    }
    run_bin(&args)
}

#[test]
fn derived_key_file_opens_its_agent_ids_datagrams_only() {
    let dir = tmpdir("key-derive");
    let master = dir.join("master.key");
    write_file(&master, MASTER, 0o600);
    let out = dir.join("agent-4242.key");
    let r = derive(&master, 4242, Some(&out));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let meta = std::fs::symlink_metadata(&out).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.len(), 65, "64 hex and a newline: {text:?}");
    let key = vlp_core::keyfile::read_key_file(&out).unwrap();

    // The same derivation as the observer's for master-key datagrams.
    let m = vlp_core::keyfile::read_key_file(&master).unwrap();
    assert_eq!(key, vlp_core::kdf::derive_agent_key(&m, 4242));
    // It opens a datagram sealed for id 4242 by vlp-core ...
    let own = sealed(&vlp_core::kdf::derive_agent_key(&m, 4242), 4242, 1);
    assert!(own.open(&key).is_ok());
    // ... and not one sealed for another id.
    let other = sealed(&vlp_core::kdf::derive_agent_key(&m, 4243), 4243, 1);
    assert!(other.open(&key).is_err());

    // Never overwrites, never follows a link.
    let again = derive(&master, 1, Some(&out));
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--out"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text, "unchanged");
    let link = dir.join("link.key");
    std::os::unix::fs::symlink(dir.join("elsewhere"), &link).unwrap();
    let r = derive(&master, 1, Some(&link));
    assert_eq!(r.status.code(), Some(2));
    assert!(!dir.join("elsewhere").exists());

    // An unsafe master key file is refused with the rule named.
    let open = dir.join("open-master.key");
    write_file(&open, MASTER, 0o644);
    let r = derive(&open, 1, None);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--master-key-file"));
    // Without --out the key goes to stdout.
    let r = derive(&master, 4242, None);
    assert!(r.status.success());
    assert_eq!(String::from_utf8_lossy(&r.stdout), text);
}

#[test]
fn observer_with_the_master_key_accepts_an_agent_holding_only_its_own_key() {
    let dir = tmpdir("key-e2e");
    let master = dir.join("master.key");
    write_file(&master, MASTER, 0o600);
    let out = dir.join("agent.key");
    let r = derive(&master, 777, Some(&out));
    assert!(r.status.success());
    let key = vlp_core::keyfile::read_key_file(&out).unwrap();
    let obs = Observer::start(
        &dir,
        &[
            "--udp-port",
            "0",
            "--master-key-file",
            master.to_str().unwrap(),
        ],
    );
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(obs.udp.unwrap()).unwrap();
    // Speaking for another id with this key is refused; for its own id, accepted.
    s.send(&sealed(&key, 778, 1).0).unwrap();
    s.send(&sealed(&key, 777, 2).0).unwrap();
    obs.wait_for(&["\"kind\":\"new\"", "\"pid\":777"], Duration::from_secs(5));
    assert_eq!(obs.count(&["\"pid\":778"]), 0);
    assert!(
        obs.metric("varta_frame_decrypt_failures_total")
            + obs.metric("varta_frame_auth_failures_total")
            >= 1.0
    );
}
