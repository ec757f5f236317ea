//! `--hw-watchdog PATH` against a fake device: a FIFO whose read end the test holds open
//! (non-blocking). The real daemon pets it (one byte) while its loop turns, stops while the
//! loop is held (the `test-hooks` feature's `VARTA_TEST_BLOCK_FILE`), resumes after, and writes
//! the magic close `V` on a clean exit, but not when it is killed.

mod ops_support;

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ops_support::{tmpdir, wait};

/// The read end of a fake watchdog device, and every byte read from it so far.
struct FakeDevice {
    fifo: File,
    got: Vec<u8>,
    /// The daemon closed its end.
    closed: bool,
}

impl FakeDevice {
    fn create(path: &Path) -> FakeDevice {
        let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
        assert!(ok, "mkfifo {}", path.display());
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap();
        FakeDevice {
            fifo,
            got: Vec::new(),
            closed: false,
        }
    }

    /// Reads what is there; returns how many bytes.
    fn poll(&mut self) -> usize {
        let mut buf = [0u8; 256];
        let mut n = 0;
        loop {
            match self.fifo.read(&mut buf) {
                Ok(0) => {
                    // No writer (before the daemon opened it, or after it closed it).
                    self.closed = !self.got.is_empty();
                    return n;
                }
                Ok(k) => {
                    self.got.extend_from_slice(&buf[..k]);
                    n += k;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
                Err(e) => panic!("reading the fake device: {e}"),
            }
        }
    }

    fn wait_pets(&mut self, n: usize, what: &str) {
        let mut seen = 0;
        wait(Duration::from_secs(15), what, || {
            seen += self.poll();
            (seen >= n).then_some(())
        });
    }
}

#[test]
fn hw_watchdog_is_petted_while_the_loop_turns_and_closed_with_v_on_a_clean_exit() {
    let dir = tmpdir("hw-watchdog");
    let dev_path = dir.join("watchdog");
    let mut dev = FakeDevice::create(&dev_path);
    let block = dir.join("block");
    let dev_arg = dev_path.display().to_string();
    let mut obs = ops_support::daemon_env(
        &dir,
        &["--hw-watchdog", &dev_arg],
        &[("VARTA_TEST_BLOCK_FILE", &block)],
    );
    // Idle, the loop still turns for the watchdog (at least every half of the assumed 2 s).
    dev.wait_pets(3, "three pets of an idle observer");
    assert!(dev.got.iter().all(|b| *b == b'1'), "{:?}", dev.got);

    // A held loop pets no more.
    std::fs::write(&block, b"").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    dev.poll();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(dev.poll(), 0, "petted while the loop was held");

    std::fs::remove_file(&block).unwrap();
    dev.wait_pets(1, "a pet once the loop turns again");

    let status = obs.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    dev.poll();
    assert!(dev.closed, "the daemon's end is closed after exit");
    assert_eq!(dev.got.last(), Some(&b'V'), "magic close: {:?}", dev.got);
    assert_eq!(dev.got.iter().filter(|b| **b == b'V').count(), 1);
}

#[test]
fn hw_watchdog_is_not_disarmed_when_the_observer_dies() {
    let dir = tmpdir("hw-watchdog-kill");
    let dev_path = dir.join("watchdog");
    let mut dev = FakeDevice::create(&dev_path);
    let dev_arg = dev_path.display().to_string();
    let mut obs = ops_support::daemon(&dir, &["--hw-watchdog", &dev_arg]);
    dev.wait_pets(1, "the first pet");
    obs.kill();
    dev.poll();
    assert!(dev.closed);
    assert!(!dev.got.contains(&b'V'), "{:?}", dev.got);
}

#[test]
fn hw_watchdog_that_cannot_be_opened_is_a_setup_error_naming_the_flag() {
    let dir = tmpdir("hw-watchdog-missing");
    let missing = dir.join("no-such-device");
    let out = Command::new(ops_support::varta_watch())
        .arg("--socket")
        .arg(dir.join("s.sock"))
        .arg("--hw-watchdog")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--hw-watchdog") && err.contains("no-such-device"),
        "{err}"
    );
}
