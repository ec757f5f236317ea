//! The status page in a real browser: real agents beat into the tracker, one is frozen, a small
//! HTTP server serves the page and `/api/agents` from the same builders the observer's HTTP
//! side calls, and headless Chromium (Debian's `chromium`) loads it. The DOM must show the
//! frozen agent first, as stalled; a screenshot is saved to `target/status-page.png`.
//!
//! Needs `chromium` on `PATH` (`apt-get install -y chromium`; `scripts/test.sh` installs it).

mod policy_support;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use policy_support::{agent_child_body, Agent, Observer, TempDir};
use varta_watch::control::client::Client;
use varta_watch::control::snapshot::{RowState, SnapshotHub};
use varta_watch::control::Request;
use varta_watch::http_assets::{
    agents_json, JSON_CONTENT_TYPE, STATUS_HTML, STATUS_HTML_CONTENT_TYPE,
};

/// Not a test: the agent process the other tests start (see `policy_support::Agent`).
#[test]
#[ignore = "helper: run as a child process by the other tests, with VARTA_TEST_AGENT_SOCKET set"]
fn agent_child() {
    agent_child_body();
}

/// A small HTTP server on loopback: `/` is the page, `/api/agents` the hub's fresh snapshot;
/// with a token, `/api/*` wants `Authorization: Bearer TOKEN` (401 otherwise). The page itself
/// holds no data and must load without the token, or it could not ask for one.
struct PageServer {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PageServer {
    fn start(hub: Arc<SnapshotHub>, token: Option<&'static str>) -> PageServer {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let addr = server.server_addr().to_ip().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Acquire) {
                let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(100)) else {
                    continue;
                };
                let header = |name: &str, value: &str| {
                    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap()
                };
                if let (Some(t), true) = (token, req.url().starts_with("/api/")) {
                    let want = format!("Bearer {t}");
                    let ok = req
                        .headers()
                        .iter()
                        .any(|h| h.field.equiv("Authorization") && h.value.as_str() == want);
                    if !ok {
                        let _ =
                            req.respond(tiny_http::Response::from_string("").with_status_code(401));
                        continue;
                    }
                }
                let (body, ctype) = match req.url() {
                    "/" => (STATUS_HTML.to_string(), STATUS_HTML_CONTENT_TYPE),
                    "/api/agents" => (
                        agents_json(&hub.fresh(Duration::from_millis(500))),
                        JSON_CONTENT_TYPE,
                    ),
                    _ => {
                        let _ =
                            req.respond(tiny_http::Response::from_string("").with_status_code(404));
                        continue;
                    }
                };
                let _ = req.respond(
                    tiny_http::Response::from_string(body)
                        .with_header(header("Content-Type", ctype)),
                );
            }
        });
        PageServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs headless Chromium with `extra` arguments on `url` (bound: 60 s); returns stdout.
fn chromium(extra: &[&str], url: &str) -> String {
    let profile = TempDir::new("chromium");
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
        .arg(format!("--user-data-dir={}", profile.0.display()))
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
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// The value of attribute `name` in the tag text `tag`.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// The `<tr ...>` start tags of `<tbody id="agents">`, in document order.
fn agent_rows(dom: &str) -> Vec<String> {
    let Some(start) = dom.find("<tbody id=\"agents\">") else {
        return Vec::new();
    };
    let body = &dom[start..];
    let body = &body[..body.find("</tbody>").unwrap_or(body.len())];
    body.match_indices("<tr ")
        .map(|(i, _)| body[i..i + body[i..].find('>').unwrap()].to_string())
        .collect()
}

#[test]
fn the_page_shows_the_frozen_agent_first_as_stalled() {
    let obs = Observer::start(
        300,
        "[[class]]\nname = \"browser-test\"\nmatch = { listener = \"unix\" }\n",
    );
    let agents: Vec<Agent> = (0..3).map(|_| Agent::spawn(&obs.socket)).collect();
    let pids: Vec<u32> = agents.iter().map(Agent::pid).collect();
    obs.wait_for("three agents beating", |s| {
        pids.iter().all(|p| {
            s.agents
                .iter()
                .any(|a| a.pid == *p && a.state == RowState::Ok)
        })
    });
    // Freeze the last one spawned, so document order alone cannot put it first.
    let frozen = pids[2];
    agents[2].freeze();
    obs.wait_for("the frozen agent stalled", |s| {
        s.agents
            .iter()
            .any(|a| a.pid == frozen && a.state == RowState::Stalled)
    });

    // A silence on one healthy agent, shown with its expiry.
    let mut client = Client::connect(Some(&obs.socket)).unwrap();
    client
        .request(&Request::SilenceAdd {
            matchers: vec![format!("pid={}", pids[0])],
            duration: "2h".into(),
            comment: "kernel upgrade".into(),
        })
        .unwrap();

    let page = PageServer::start(Arc::clone(&obs.hub), None);
    let dom = chromium(&["--dump-dom"], &page.url());
    let rows = agent_rows(&dom);
    assert_eq!(rows.len(), 3, "rows: {rows:?}\nDOM:\n{dom}");
    assert_eq!(
        attr(&rows[0], "data-pid"),
        Some(frozen.to_string().as_str()),
        "{rows:?}"
    );
    assert_eq!(attr(&rows[0], "data-state"), Some("stalled"), "{rows:?}");
    for r in &rows[1..] {
        assert_eq!(attr(r, "data-state"), Some("ok"), "{rows:?}");
    }
    // The filter offers the configured classes; ages are shown.
    assert!(
        dom.contains("<option value=\"browser-test\">browser-test</option>"),
        "{dom}"
    );
    assert!(dom.contains(" ago</td>"), "{dom}");
    let silenced = rows
        .iter()
        .find(|r| attr(r, "data-pid") == Some(pids[0].to_string().as_str()))
        .unwrap();
    assert_eq!(attr(silenced, "class"), Some("silenced"), "{rows:?}");
    let silences = &dom[dom.find("<tbody id=\"silences\">").unwrap()..];
    assert!(
        silences.contains(&format!("<td>pid={}</td>", pids[0])),
        "{silences}"
    );
    assert!(silences.contains("<td class=\"num\">1h59m"), "{silences}");
    assert!(silences.contains("<td>kernel upgrade</td>"), "{silences}");

    // Filters from the address: only the stalled agent, then only the healthy ones.
    let dom = chromium(&["--dump-dom"], &format!("{}#state=stalled", page.url()));
    let rows = agent_rows(&dom);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        attr(&rows[0], "data-pid"),
        Some(frozen.to_string().as_str())
    );
    let dom = chromium(
        &["--dump-dom"],
        &format!("{}#class=browser-test&state=ok", page.url()),
    );
    let rows = agent_rows(&dom);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| attr(r, "data-state") == Some("ok")));
    let dom = chromium(&["--dump-dom"], &format!("{}#class=other", page.url()));
    assert!(agent_rows(&dom).is_empty());
    assert!(dom.contains("<div id=\"empty\">No agents.</div>"), "{dom}");

    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,800",
            "--hide-scrollbars",
        ],
        &page.url(),
    );
    let png = std::fs::read(&shot).expect("no screenshot written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "not a PNG"
    );
}

#[test]
fn the_page_asks_for_the_token_when_the_api_answers_401() {
    let obs = Observer::start(300, "");
    let _agent = Agent::spawn(&obs.socket);
    obs.wait_for("an agent", |s| !s.agents.is_empty());
    let page = PageServer::start(Arc::clone(&obs.hub), Some("s3cret"));
    let dom = chromium(&["--dump-dom"], &page.url());
    assert!(
        dom.contains("<form id=\"auth\" autocomplete=\"off\" class=\"shown\">"),
        "{dom}"
    );
    assert!(dom.contains("token needed"), "{dom}");
    assert!(agent_rows(&dom).is_empty(), "{dom}");
}
