//! The status page seen by a real browser: headless Chromium (Debian's `chromium`), the
//! agent rows of its DOM, and a screenshot.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static PROFILES: AtomicU32 = AtomicU32::new(0);

/// Runs headless Chromium with `extra` arguments on `url` (bound: 60 s); returns its stdout.
pub fn chromium(extra: &[&str], url: &str) -> String {
    let profile = std::env::temp_dir().join(format!(
        "varta-chromium-{}-{}",
        std::process::id(),
        PROFILES.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&profile);
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "chromium not found: install Debian's chromium package (apt-get install -y chromium)",
        );
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&profile);
    reader.join().unwrap()
}

/// Saves a 1280×800 screenshot of `url` to `shot` and checks it is a PNG.
pub fn screenshot(url: &str, shot: &Path) {
    let _ = std::fs::remove_file(shot);
    chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,800",
            "--hide-scrollbars",
        ],
        url,
    );
    let png = std::fs::read(shot).expect("no screenshot written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "not a PNG"
    );
}

/// The value of attribute `name` in the tag text `tag`.
pub fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// The `<tr ...>` start tags of `<tbody id="agents">`, in document order.
pub fn agent_rows(dom: &str) -> Vec<String> {
    let Some(start) = dom.find("<tbody id=\"agents\">") else {
        return Vec::new();
    };
    let body = &dom[start..];
    let body = &body[..body.find("</tbody>").unwrap_or(body.len())];
    body.match_indices("<tr ")
        .map(|(i, _)| body[i..i + body[i..].find('>').unwrap()].to_string())
        .collect()
}
