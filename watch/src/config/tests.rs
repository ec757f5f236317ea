//! The configuration is defined once: every flag is a TOML key with the same effect.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{ConfigError, RunArgs};

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("varta-cfg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.0.join(name);
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One setting in both spellings: TOML value text, and the command-line values (none for a
/// switch; several for a repeatable flag).
struct Setting {
    key: String,
    toml: String,
    cli: Vec<String>,
}

fn set(key: &str, toml: impl Into<String>, cli: &[&str]) -> Setting {
    Setting {
        key: key.to_string(),
        toml: toml.into(),
        cli: cli.iter().map(|s| (*s).to_string()).collect(),
    }
}

fn cli_args(settings: &[Setting]) -> Vec<OsString> {
    let mut v = Vec::new();
    for s in settings {
        if s.cli.is_empty() {
            v.push(OsString::from(format!("--{}", s.key)));
        }
        for c in &s.cli {
            v.push(OsString::from(format!("--{}", s.key)));
            v.push(OsString::from(c));
        }
    }
    v
}

fn toml_text(settings: &[Setting]) -> String {
    settings
        .iter()
        .map(|s| format!("{} = {}\n", s.key, s.toml))
        .collect()
}

fn load(args: &[OsString]) -> String {
    format!("{:?}", RunArgs::load(args))
}

/// A sample value for each flag, with the settings it needs beside it. A flag without a
/// sample fails the test: a new flag must be added here, and so is checked from a file too.
fn sample(key: &str, keys: &Path) -> Option<(Setting, Vec<Setting>)> {
    let k = |name: &str| keys.join(name).display().to_string();
    let udp = || {
        vec![
            set("udp-port", "0", &["0"]),
            set("allow-plaintext-udp", "true", &[]),
        ]
    };
    let port = || vec![set("udp-port", "0", &["0"])];
    let rec = || vec![set("recovery-exec", "\"/bin/true\"", &["/bin/true"])];
    let audited = || {
        vec![
            set("recovery-exec", "\"/bin/true\"", &["/bin/true"]),
            set(
                "recovery-audit-file",
                format!("\"{}\"", k("audit")),
                &[&k("audit")],
            ),
        ]
    };
    let s = match key {
        "socket" => (
            set(key, "\"/tmp/varta-cfg.sock\"", &["/tmp/varta-cfg.sock"]),
            vec![],
        ),
        "no-socket" => (set(key, "true", &[]), udp()),
        "socket-mode" => (set(key, "\"0640\"", &["0640"]), vec![]),
        "threshold-ms" => (set(key, "250", &["250"]), vec![]),
        "allow-uid" => (set(key, "[4242, 4343]", &["4242", "4343"]), vec![]),
        "udp-port" => (
            set(key, "7777", &["7777"]),
            vec![set("allow-plaintext-udp", "true", &[])],
        ),
        "udp-bind-addr" => (set(key, "\"127.0.0.2\"", &["127.0.0.2"]), udp()),
        "allow-plaintext-udp" => (set(key, "true", &[]), port()),
        "key-file" => (set(key, format!("\"{}\"", k("k1")), &[&k("k1")]), port()),
        "accepted-key-file" => (
            set(
                key,
                format!("[\"{}\", \"{}\"]", k("k1"), k("k2")),
                &[&k("k1"), &k("k2")],
            ),
            port(),
        ),
        "master-key-file" => (set(key, format!("\"{}\"", k("km")), &[&k("km")]), port()),
        "udp-rcvbuf-bytes" => (set(key, "131072", &["131072"]), udp()),
        "max-hold-us" => (set(key, "1500", &["1500"]), vec![]),
        "workers" => (set(key, "\"2\"", &["2"]), vec![]),
        "deadline-spin-us" => (set(key, "0", &["0"]), vec![]),
        "tracker-capacity" => (set(key, "1234", &["1234"]), vec![]),
        "evict-after-ms" => (set(key, "5000", &["5000"]), vec![]),
        "format" => (set(key, "\"json\"", &["json"]), vec![]),
        "export-file" => (
            set(key, "\"/tmp/varta-cfg.tsv\"", &["/tmp/varta-cfg.tsv"]),
            vec![],
        ),
        "export-max-bytes" => (set(key, "8192", &["8192"]), vec![]),
        "prom-addr" => (set(key, "\"127.0.0.1:9999\"", &["127.0.0.1:9999"]), vec![]),
        "metrics-max-agents" => (set(key, "7", &["7"]), vec![]),
        "http-max-connections" => (set(key, "9", &["9"]), vec![]),
        "http-header-timeout-ms" => (set(key, "1500", &["1500"]), vec![]),
        "http-idle-timeout-ms" => (set(key, "2500", &["2500"]), vec![]),
        "recovery-exec" => (
            set(key, "\"/bin/echo {pid}\"", &["/bin/echo {pid}"]),
            vec![],
        ),
        "recovery-exec-file" => (set(key, format!("\"{}\"", k("cmd")), &[&k("cmd")]), vec![]),
        "recovery-env" => (set(key, "[\"A=1\", \"B=2\"]", &["A=1", "B=2"]), rec()),
        "recovery-inherit-env"
        | "recovery-capture-stdio"
        | "recovery-allow-agent-keys"
        | "secure-udp-i-accept-recovery-on-unauthenticated-transport"
        | "plaintext-udp-i-accept-recovery-on-unauthenticated-transport" => {
            (set(key, "true", &[]), rec())
        }
        "recovery-capture-bytes" => (
            set(key, "512", &["512"]),
            vec![
                set("recovery-exec", "\"/bin/true\"", &["/bin/true"]),
                set("recovery-capture-stdio", "true", &[]),
            ],
        ),
        "recovery-audit-file" => (
            set(key, format!("\"{}\"", k("audit")), &[&k("audit")]),
            rec(),
        ),
        "recovery-audit-key-file" => (set(key, format!("\"{}\"", k("k1")), &[&k("k1")]), audited()),
        "recovery-audit-sync-every" => (set(key, "3", &["3"]), audited()),
        "recovery-audit-max-bytes" => (set(key, "65536", &["65536"]), audited()),
        "audit-sync-interval-ms" => (set(key, "20", &["20"]), audited()),
        "audit-fsync-budget-ms" | "audit-rotation-budget-ms" => {
            (set(key, "75", &["75"]), audited())
        }
        "shutdown-grace-ms" => (set(key, "250", &["250"]), vec![]),
        "recovery-debounce-ms" => (set(key, "77", &["77"]), rec()),
        "recovery-timeout-ms" => (set(key, "88", &["88"]), rec()),
        "recovery-allow-unattested" => (set(key, "true", &[]), rec()),
        "rt-priority" => (set(key, "10", &["10"]), vec![]),
        "self-watchdog-secs" => (set(key, "3", &["3"]), vec![]),
        "class" => (
            set(
                key,
                "[\"fast:comm=pump*,threshold-ms=50\", \"slow:pid=100-199\"]",
                &["fast:comm=pump*,threshold-ms=50", "slow:pid=100-199"],
            ),
            vec![],
        ),
        "prom-token-file" => (set(key, format!("\"{}\"", k("k1")), &[&k("k1")]), vec![]),
        "prom-rate-limit-per-sec" => (set(key, "5", &["5"]), vec![]),
        "prom-rate-limit-burst" => (
            set(key, "7", &["7"]),
            vec![set("prom-rate-limit-per-sec", "5", &["5"])],
        ),
        "heartbeat-file" => (
            set(key, "\"/tmp/varta-cfg.hb\"", &["/tmp/varta-cfg.hb"]),
            vec![],
        ),
        "clock-source" => (set(key, "\"boottime\"", &["boottime"]), vec![]),
        "uds-rcvbuf-bytes" => (set(key, "65536", &["65536"]), vec![]),
        "tracker-eviction-policy" => (set(key, "\"balanced\"", &["balanced"]), vec![]),
        "shutdown-after-secs" => (set(key, "60", &["60"]), vec![]),
        "i-accept-secure-udp-non-loopback" => (
            set(key, "true", &[]),
            vec![
                set("udp-port", "0", &["0"]),
                set("key-file", format!("\"{}\"", k("k1")), &[&k("k1")]),
                set("udp-bind-addr", "\"0.0.0.0\"", &["0.0.0.0"]),
            ],
        ),
        "allow-cross-namespace-agents" | "strict-namespace-check" => {
            (set(key, "true", &[]), vec![])
        }
        "iteration-budget-ms" => (set(key, "100", &["100"]), vec![]),
        "read-timeout-ms" | "eviction-scan-window" | "scrape-budget-ms" => {
            (set(key, "100", &["100"]), vec![])
        }
        "signal-handler-mode" => (set(key, "\"libc\"", &["libc"]), vec![]),
        "state-file" => (
            set(key, "\"/tmp/varta-cfg.state\"", &["/tmp/varta-cfg.state"]),
            vec![],
        ),
        "state-interval-ms" => (
            set(key, "250", &["250"]),
            vec![set(
                "state-file",
                "\"/tmp/varta-cfg.state\"",
                &["/tmp/varta-cfg.state"],
            )],
        ),
        "alertmanager-url" => (
            set(
                key,
                "[\"http://127.0.0.1:9093\", \"http://127.0.0.2:9093\"]",
                &["http://127.0.0.1:9093", "http://127.0.0.2:9093"],
            ),
            vec![],
        ),
        "alert-resend-ms" => (
            set(key, "1500", &["1500"]),
            vec![set(
                "alertmanager-url",
                "\"http://127.0.0.1:9093\"",
                &["http://127.0.0.1:9093"],
            )],
        ),
        "hw-watchdog" => (set(key, "\"/dev/watchdog0\"", &["/dev/watchdog0"]), vec![]),
        "export-file-sync-every" => (set(key, "16", &["16"]), vec![]),
        "export-format" => (set(key, "\"varta\"", &["varta"]), vec![]),
        "max-beat-rate" => (set(key, "50", &["50"]), vec![]),
        "global-beat-rate" => (set(key, "5000", &["5000"]), vec![]),
        "global-beat-burst" => (
            set(key, "9000", &["9000"]),
            vec![set("global-beat-rate", "5000", &["5000"])],
        ),
        "max-key-derivations-per-sec" => (set(key, "100", &["100"]), vec![]),
        _ => return None,
    };
    Some(s)
}

#[test]
fn every_flag_is_a_toml_key_with_the_same_effect() {
    let dir = Dir::new("once");
    for (name, hex) in [("k1", "11"), ("k2", "22"), ("km", "33")] {
        dir.write(name, &hex.repeat(32), 0o600);
    }
    dir.write("cmd", "/bin/echo {pid} {reason}\n", 0o600);
    let cmd = RunArgs::command();
    let mut checked = 0;
    for arg in cmd.get_arguments() {
        let Some(key) = arg.get_long() else { continue };
        if key == "config" {
            continue;
        }
        let (setting, context) = sample(key, &dir.0)
            .unwrap_or_else(|| panic!("--{key} has no sample in this test: add one"));
        let base = load(&cli_args(&context));
        let mut all = context;
        all.push(setting);
        let from_cli = load(&cli_args(&all));
        assert!(from_cli.starts_with("Ok("), "--{key}: {from_cli}");
        let file = dir.write("c.toml", &toml_text(&all), 0o600);
        let from_file = load(&[OsString::from("--config"), file.into_os_string()]);
        assert_eq!(from_file, from_cli, "key `{key}` in a file means --{key}");
        assert_ne!(from_file, base, "key `{key}` takes effect");
        checked += 1;
    }
    assert!(checked >= 27, "only {checked} flags walked");
}

fn load_file(dir: &Dir, text: &str, extra: &[&str]) -> Result<super::Config, ConfigError> {
    let file = dir.write("c.toml", text, 0o600);
    let mut args = vec![OsString::from("--config"), file.into_os_string()];
    args.extend(extra.iter().map(OsString::from));
    RunArgs::load(&args)
}

#[test]
fn command_line_wins_and_repeatable_flags_add_up() {
    let dir = Dir::new("wins");
    let cfg = load_file(
        &dir,
        "threshold-ms = 250\nformat = \"json\"\nallow-uid = [7]\nrt-priority = 5\n",
        &["--threshold-ms", "40", "--allow-uid", "8"],
    )
    .unwrap();
    assert_eq!(cfg.threshold_ns, 40_000_000, "the flag wins");
    assert_eq!(cfg.format, super::Format::Json, "the file fills in");
    assert!(cfg.allowed_uids.contains(&7) && cfg.allowed_uids.contains(&8));
    assert_eq!(
        cfg.rt_priority,
        Some(5),
        "rt-priority from a file is not ignored"
    );
}

#[test]
fn bad_files_are_refused_by_rule() {
    let dir = Dir::new("bad");
    let err = |text: &str| load_file(&dir, text, &[]).unwrap_err();
    assert!(
        matches!(err("no-such-key = 1\n"), ConfigError::UnknownKey { key, .. } if key == "no-such-key")
    );
    assert!(
        matches!(err("config = \"x\"\n"), ConfigError::UnknownKey { key, .. } if key == "config")
    );
    assert!(matches!(
        err("no-socket = 1\n"),
        ConfigError::KeyShape { .. }
    ));
    assert!(matches!(
        err("threshold-ms = [1, 2]\n"),
        ConfigError::KeyShape { .. }
    ));
    assert!(matches!(
        err("threshold-ms = [\n"),
        ConfigError::FileSyntax { .. }
    ));
    let e = err("threshold-ms = \"abc\"\n");
    assert!(
        matches!(&e, ConfigError::FileValue { msg, .. } if msg.contains("--threshold-ms")),
        "{e}"
    );
    // Millisecond settings are bounded: no overflow when turned into nanoseconds.
    let e = err("evict-after-ms = 9223372036854775807\n");
    assert!(
        matches!(
            e,
            ConfigError::OutOfRange {
                flag: "evict-after-ms",
                ..
            }
        ),
        "{e}"
    );
    let e = err("recovery-debounce-ms = 9223372036854775807\n");
    assert!(
        matches!(&e, ConfigError::Recovery(msg) if msg.starts_with("--recovery-debounce-ms")),
        "{e}"
    );

    // Ownership and permission rules, as for key files.
    let open = dir.write("open.toml", "threshold-ms = 5\n", 0o666);
    let e = RunArgs::load(&[OsString::from("--config"), open.into_os_string()]).unwrap_err();
    assert!(
        matches!(&e, ConfigError::FileUnsafe { rule, .. } if rule.contains("0666")),
        "{e}"
    );
    let target = dir.write("real.toml", "threshold-ms = 5\n", 0o600);
    let link = dir.0.join("link.toml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = RunArgs::load(&[OsString::from("--config"), link.into_os_string()]).unwrap_err();
    assert!(
        matches!(&e, ConfigError::FileUnsafe { rule, .. } if rule.contains("symbolic link")),
        "{e}"
    );
    let e =
        RunArgs::load(&[OsString::from("--config"), dir.0.clone().into_os_string()]).unwrap_err();
    assert!(
        matches!(&e, ConfigError::FileUnsafe { rule, .. } if rule.contains("regular")),
        "{e}"
    );
}

#[test]
fn example_config_is_read_through_the_flags() {
    let text = include_str!("../../varta-watch.example.toml");
    let args = super::file::to_args(Path::new("example"), text, &RunArgs::command()).unwrap();
    let parsed = RunArgs::parse(&args).unwrap();
    assert_eq!(parsed.threshold_ms, Some(1000));
    assert_eq!(parsed.allow_uid, vec![1000]);
    assert_eq!(parsed.format, Some(super::Format::Text));
}

#[test]
fn class_and_name_sections_are_policy_and_come_before_the_flags() {
    let dir = Dir::new("policy");
    let text = r#"
threshold-ms = 500

[[class]]
name = "backup"
match = { unit = "backup*.service" }
threshold-ms = 30000
severity = "warning"
labels = { team = "storage" }

[[name]]
name = "pump-{pid}"
listener = "udp0"
"#;
    let cfg = load_file(&dir, text, &["--class", "fast:comm=pump*,threshold-ms=50"]).unwrap();
    let names: Vec<&str> = cfg.policy.classes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["backup", "fast"], "sections, then flags");
    assert_eq!(cfg.policy.classes[0].threshold_ms, Some(30_000));
    assert_eq!(cfg.policy.names.len(), 1);
    assert_eq!(cfg.class_defaults.threshold_ns, 500_000_000);

    // The same class from a section or the flag is the same class.
    let section = load_file(
        &dir,
        "[[class]]\nname = \"fast\"\nmatch = { comm = \"pump*\" }\nthreshold-ms = 50\n",
        &[],
    )
    .unwrap();
    let flag = RunArgs::load(&[
        OsString::from("--class"),
        OsString::from("fast:comm=pump*,threshold-ms=50"),
    ])
    .unwrap();
    assert_eq!(section.policy, flag.policy);

    // Bad sections are refused by rule, naming the class.
    let err = |text: &str| load_file(&dir, text, &[]).unwrap_err().to_string();
    assert!(
        err("[[class]]\nname = \"x\"\nthreshold-ms = 0\n").contains("\"x\": threshold-ms"),
        "zero threshold"
    );
    assert!(err("[[class]]\nname = \"x\"\nbogus = 1\n").contains("bogus"));
    assert!(err("[[name]]\nname = \"x\"\n").contains("needs at least one of"));
    assert!(
        err("[[class]]\nname = \"x\"\nrecovery-cmd = \"/bin/true\"\n")
            .contains("needs recovery enabled"),
    );
    let e = RunArgs::load(&[OsString::from("--class"), OsString::from("nocolon")]).unwrap_err();
    assert!(e.to_string().contains("NAME:KEY=VALUE"), "{e}");
}

#[test]
fn an_accepted_key_file_holds_one_key_per_line() {
    let dir = Dir::new("keylist");
    let one = dir.write("one", &"11".repeat(32), 0o600);
    let list = dir.write(
        "list",
        &format!(
            "# rotation keys\n{}\n\n# the next one\n{}\n",
            "22".repeat(32),
            "33".repeat(32)
        ),
        0o600,
    );
    let args: Vec<OsString> = [
        "--udp-port",
        "0",
        "--key-file",
        one.to_str().unwrap(),
        "--accepted-key-file",
        list.to_str().unwrap(),
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let cfg = RunArgs::load(&args).unwrap();
    let keys = &cfg.udp.as_ref().unwrap().keys;
    let want = |h: &str| vlp_core::Key::from_hex(&h.repeat(32)).unwrap();
    assert_eq!(keys, &vec![want("11"), want("22"), want("33")]);
    // A bad line is refused, naming the file.
    let bad = dir.write("bad", &format!("{}\nnot-a-key\n", "22".repeat(32)), 0o600);
    let args: Vec<OsString> = [
        "--udp-port",
        "0",
        "--accepted-key-file",
        bad.to_str().unwrap(),
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let e = RunArgs::load(&args).unwrap_err();
    assert!(
        matches!(
            &e,
            ConfigError::KeyFile {
                flag: "accepted-key-file",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn workers_is_a_count_or_auto() {
    let workers = |v: &str| {
        RunArgs::load(&[OsString::from("--workers"), OsString::from(v)]).map(|c| c.workers)
    };
    assert_eq!(workers("3").unwrap(), 3);
    let auto = workers("auto").unwrap();
    assert!((1..=super::MAX_WORKERS).contains(&auto), "{auto}");
    let e = workers("0").unwrap_err().to_string();
    assert_eq!(e, "--workers 0: must be between 1 and 64");
    let e = workers("many").unwrap_err().to_string();
    assert!(e.starts_with("--workers many: expected a number"), "{e}");
    assert_eq!(RunArgs::load(&[]).unwrap().workers, 1);
}

#[test]
fn deadline_spin_is_bounded_and_can_be_off() {
    let spin = |v: &str| {
        RunArgs::load(&[OsString::from("--deadline-spin-us"), OsString::from(v)])
            .map(|c| c.deadline_spin_ns)
    };
    assert_eq!(spin("0").unwrap(), 0);
    assert_eq!(spin("40").unwrap(), 40_000);
    let e = spin("20000").unwrap_err().to_string();
    assert_eq!(e, "--deadline-spin-us 20000: must be between 0 and 10000");
    assert_eq!(
        RunArgs::load(&[]).unwrap().deadline_spin_ns,
        super::resolve::DEADLINE_SPIN_US * 1_000
    );
}
