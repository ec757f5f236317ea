//! The status page in a real browser against the REAL daemon: real agents (`varta agent`) beat
//! into `varta-watch run`, one is frozen, and headless Chromium (Debian's `chromium`) loads the
//! page the daemon serves on its `--prom-addr`. The DOM must show the frozen agent first, as
//! stalled; a screenshot is saved to `target/status-page.png`. With `--prom-token-file`, the
//! page itself loads without the token and asks for it, and every data path wants it.
//!
//! Needs `cargo build -p varta-tools` first, and `chromium` on `PATH` (`apt-get install -y
//! chromium`; `scripts/test.sh` installs it).

#[path = "common/page.rs"]
mod page;
mod policy_support;

use std::path::PathBuf;

use page::{agent_rows, attr, chromium, screenshot};
use policy_support::observer::{metric_in, tmpdir, write_file};
use policy_support::Daemon;
use varta_watch::control::client::Client;
use varta_watch::control::snapshot::RowState;
use varta_watch::control::Request;

/// A bearer token (64 hex digits, as `--prom-token-file` wants it).
const TOKEN: &str = "5e0c5e0c5e0c5e0c5e0c5e0c5e0c5e0c5e0c5e0c5e0c5e0c5e0c5e0c5e0c5e0c";

/// Numbers the browser profiles, so that parallel tests never share one.
#[test]
fn the_page_shows_the_frozen_agent_first_as_stalled() {
    let obs = Daemon::start(
        "page",
        300,
        "[[class]]\nname = \"browser-test\"\nmatch = { listener = \"unix\" }\n",
        &[],
    );
    let agents: Vec<_> = ["pagepoke-a", "pagepoke-b", "pagepoke-c"]
        .iter()
        .map(|n| obs.agent(n))
        .collect();
    let pids: Vec<u32> = agents.iter().map(|a| a.pid()).collect();
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
    let mut client = Client::connect(Some(obs.socket())).unwrap();
    client
        .request(&Request::SilenceAdd {
            matchers: vec![format!("pid={}", pids[0])],
            duration: "2h".into(),
            comment: "kernel upgrade".into(),
        })
        .unwrap();

    let page = obs.url();
    let dom = chromium(&["--dump-dom"], &page);
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
    let dom = chromium(&["--dump-dom"], &format!("{}#state=stalled", page));
    let rows = agent_rows(&dom);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        attr(&rows[0], "data-pid"),
        Some(frozen.to_string().as_str())
    );
    let dom = chromium(
        &["--dump-dom"],
        &format!("{}#class=browser-test&state=ok", page),
    );
    let rows = agent_rows(&dom);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| attr(r, "data-state") == Some("ok")));
    let dom = chromium(&["--dump-dom"], &format!("{}#class=other", page));
    assert!(agent_rows(&dom).is_empty());
    assert!(dom.contains("<div id=\"empty\">No agents.</div>"), "{dom}");

    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/status-page.png");
    screenshot(&page, &shot);
}

/// The daemon with `--prom-token-file` and one agent beating into it.
fn daemon_with_token(tag: &str) -> (Daemon, policy_support::Agent) {
    let dir = tmpdir(&format!("{tag}-token"));
    let token = write_file(&dir.join("token"), &format!("{TOKEN}\n"), 0o600);
    let obs = Daemon::start(
        tag,
        300,
        "",
        &["--prom-token-file", token.to_str().unwrap()],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let agent = obs.agent("tokenpoke");
    let pid = agent.pid();
    obs.wait_for("the agent beating", |s| {
        s.agents
            .iter()
            .any(|a| a.pid == pid && a.state == RowState::Ok)
    });
    (obs, agent)
}

#[test]
fn with_a_token_the_page_loads_without_it_and_every_data_path_wants_it() {
    let (obs, agent) = daemon_with_token("open-page");
    let d = &obs.obs;

    // The page itself: static HTML with the token form, no data.
    let (code, page) = d.get("/", None);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<!doctype html>"), "{page}");
    assert!(page.contains("<form id=\"auth\""), "{page}");
    assert!(
        !page.contains(&format!("\"pid\":{}", agent.pid())),
        "{page}"
    );

    // Every data path: 401 without the token or with a wrong one, each counted.
    let wrong = TOKEN.replace('5', "6");
    let refused = [
        ("/api/agents", None),
        ("/api/events?since=0", None),
        ("/metrics", None),
        ("/api/agents", Some(wrong.as_str())),
    ];
    for (path, token) in refused {
        let (code, body) = d.get(path, token);
        assert_eq!(code, 401, "{path} with {token:?}: {body}");
        assert!(body.contains("bearer token required"), "{body}");
    }

    // With it: 200 and the data.
    let (code, agents) = d.get("/api/agents", Some(TOKEN));
    assert_eq!(code, 200, "{agents}");
    assert!(
        agents.contains(&format!("\"pid\":{}", agent.pid())),
        "{agents}"
    );
    let (code, events) = d.get("/api/events?since=0", Some(TOKEN));
    assert_eq!(code, 200, "{events}");
    let (code, metrics) = d.get("/metrics", Some(TOKEN));
    assert_eq!(code, 200, "{metrics}");
    assert_eq!(
        metric_in(&metrics, "varta_prom_auth_failures_total"),
        4.0,
        "the four refusals counted, the open page not"
    );
}

#[test]
fn the_page_asks_for_the_token_when_the_api_answers_401() {
    let (obs, agent) = daemon_with_token("token-page");
    let dom = chromium(&["--dump-dom"], &obs.url());
    assert!(
        dom.contains("<form id=\"auth\" autocomplete=\"off\" class=\"shown\">"),
        "{dom}"
    );
    assert!(dom.contains("token needed"), "{dom}");
    assert!(agent_rows(&dom).is_empty(), "{dom}");
    assert!(
        !dom.contains(&format!("data-pid=\"{}\"", agent.pid())),
        "no data without the token: {dom}"
    );
    // The page's own request for the data was refused and counted.
    let (code, metrics) = obs.obs.get("/metrics", Some(TOKEN));
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metric_in(&metrics, "varta_prom_auth_failures_total") >= 1.0,
        "{metrics}"
    );
}

#[test]
fn silences_are_managed_over_http_behind_the_token() {
    let (obs, agent) = daemon_with_token("http-silences");
    let d = &obs.obs;
    let add = format!(
        "{{\"cmd\":\"silence_add\",\"matchers\":[\"pid={}\"],\"duration\":\"2h\",\"comment\":\"disk swap\"}}",
        agent.pid()
    );
    // Without the token: refused and counted, nothing added.
    let (code, body) = d.post("/api/control", &add, None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = d.post("/api/control", "{\"cmd\":\"silence_list\"}", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"silences\":[]"), "{body}");
    // With it: added, listed, shown on the agent, expired.
    let (code, body) = d.post("/api/control", &add, Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"comment\":\"disk swap\""), "{body}");
    let (_, list) = d.post("/api/control", "{\"cmd\":\"silence_list\"}", Some(TOKEN));
    assert!(list.contains("disk swap"), "{list}");
    let (_, agents) = d.get("/api/agents", Some(TOKEN));
    assert!(agents.contains("\"silenced\":true"), "{agents}");
    let id = list
        .split("\"id\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .expect("silence id")
        .to_string();
    let (code, body) = d.post(
        "/api/control",
        &format!("{{\"cmd\":\"silence_expire\",\"id\":{id}}}"),
        Some(TOKEN),
    );
    assert_eq!(code, 200, "{body}");
    let (_, list) = d.post("/api/control", "{\"cmd\":\"silence_list\"}", Some(TOKEN));
    assert!(list.contains("\"silences\":[]"), "{list}");
    // A request that does not parse, and one the observer refuses, are 400 with the reason.
    let (code, body) = d.post("/api/control", "{not json", Some(TOKEN));
    assert_eq!(code, 400, "{body}");
    let (code, body) = d.post(
        "/api/control",
        "{\"cmd\":\"silence_add\",\"matchers\":[\"colour=blue\"],\"duration\":\"2h\"}",
        Some(TOKEN),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"ok\":false"), "{body}");
}
