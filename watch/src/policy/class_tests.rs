//! Tests of [`super`]: classes from TOML and the command line, first match, bounds.
use super::*;

fn vars(pid: u32) -> crate::recovery::command::Vars<'static> {
    crate::recovery::command::Vars {
        pid,
        listener: "unix",
        agent: "unix:1",
        status: "ok",
        reason: "stall",
    }
}

fn defaults() -> Defaults {
    Defaults {
        threshold_ns: 1_000_000_000,
        recovery: Some(CommandTemplate::parse("restart {pid}").unwrap()),
        recovery_debounce_ns: 10_000_000_000,
    }
}

#[derive(Debug, Deserialize)]
struct File {
    class: Vec<ClassConfig>,
}

fn parse(toml_text: &str) -> Vec<ClassConfig> {
    toml::from_str::<File>(toml_text).unwrap().class
}

const EXAMPLE: &str = r#"
[[class]]
name = "backup"
match = { unit = "backup*.service" }
threshold-ms = 30000
recovery-cmd = "systemctl restart backup.service"
recovery = "stall"
severity = "warning"
labels = { team = "storage" }

[[class]]
name = "sensors"
match = { listener = "udp*", pid = "1000-1999" }
threshold-ms = 5000

[[class]]
name = "root-daemons"
[class.match]
uid = 0
exe = "/usr/sbin/*"

[[class]]
name = "quiet"
match = { comm = "cron*" }
recovery = "never"
severity = "info"
"#;

fn facts(f: impl FnOnce(&mut AgentFacts)) -> AgentFacts {
    let mut a = AgentFacts {
        pid: 42,
        listener: "unix".into(),
        key: Some("none".into()),
        ..AgentFacts::default()
    };
    f(&mut a);
    a
}

#[test]
fn first_match_wins_and_settings_fall_back_to_the_default() {
    let set = ClassSet::new(&defaults(), parse(EXAMPLE)).unwrap();
    assert_eq!(set.len(), 5);

    let backup = facts(|f| {
        f.unit = Some("backup-nightly.service".into());
        f.uid = Some(0);
        f.exe = Some("/usr/sbin/backupd".into());
    });
    // Also matches root-daemons, but backup comes first.
    let id = set.resolve(&backup);
    assert_eq!(set.get(id).name, "backup");
    let p = set.get(id);
    assert_eq!(p.threshold_ns, 30_000_000_000);
    assert_eq!(p.recovery_policy, RecoveryPolicy::Stall);
    assert!(p.recovery_policy.on_stall() && !p.recovery_policy.on_crash());
    assert_eq!(p.severity, Severity::Warning);
    assert_eq!(p.labels.get("team").map(String::as_str), Some("storage"));
    assert_eq!(
        p.recovery.as_ref().unwrap().render(&vars(1)),
        vec!["systemctl", "restart", "backup.service"]
    );

    let root = facts(|f| {
        f.uid = Some(0);
        f.exe = Some("/usr/sbin/sshd".into());
    });
    let p = set.get(set.resolve(&root));
    assert_eq!(p.name, "root-daemons");
    // Inherited from the default class.
    assert_eq!(p.threshold_ns, 1_000_000_000);
    assert_eq!(
        p.recovery.as_ref().unwrap().render(&vars(9)),
        vec!["restart", "9"]
    );
    assert_eq!(p.recovery_debounce_ns, 10_000_000_000);

    // uid must be known to match a uid matcher.
    let unknown_uid = facts(|f| f.exe = Some("/usr/sbin/sshd".into()));
    assert_eq!(set.resolve(&unknown_uid), ClassId::DEFAULT);

    let sensor = facts(|f| {
        f.listener = "udp0".into();
        f.pid = 1500;
    });
    assert_eq!(set.get(set.resolve(&sensor)).name, "sensors");
    let other_pid = facts(|f| {
        f.listener = "udp0".into();
        f.pid = 2000;
    });
    assert_eq!(set.resolve(&other_pid), ClassId::DEFAULT);
    assert_eq!(set.get(ClassId::DEFAULT).name, "default");

    let cron = facts(|f| f.comm = Some("crond".into()));
    let p = set.get(set.resolve(&cron));
    assert_eq!((p.name.as_str(), p.severity), ("quiet", Severity::Info));
    assert!(!p.recovery_policy.on_stall() && !p.recovery_policy.on_crash());

    // Unknown ids fall back to the default class instead of panicking.
    assert_eq!(set.get(ClassId(200)).name, "default");
    assert_eq!(set.by_name("sensors"), Some(ClassId(2)));
    assert_eq!(set.by_name("nope"), None);
}

#[test]
fn distinct_thresholds_name_their_classes() {
    let set = ClassSet::new(&defaults(), parse(EXAMPLE)).unwrap();
    assert_eq!(
        set.thresholds(),
        vec![
            (1_000_000_000, vec![ClassId(0), ClassId(3), ClassId(4)]),
            (5_000_000_000, vec![ClassId(2)]),
            (30_000_000_000, vec![ClassId(1)]),
        ]
    );
}

#[test]
fn a_class_without_matchers_takes_everything_after_it() {
    let set = ClassSet::new(
        &defaults(),
        parse("[[class]]\nname = \"all\"\nthreshold-ms = 7\n"),
    )
    .unwrap();
    assert_eq!(set.get(set.resolve(&facts(|_| {}))).threshold_ns, 7_000_000);
}

#[test]
fn bad_sections_name_class_and_rule() {
    let d = defaults();
    let err = |t: &str| ClassSet::new(&d, parse(t)).unwrap_err();
    assert_eq!(
        err("[[class]]\nname = \"a\"\n[[class]]\nname = \"a\"\n"),
        ClassError::DuplicateName("a".into())
    );
    assert_eq!(
        err("[[class]]\nname = \"default\"\n"),
        ClassError::DuplicateName("default".into())
    );
    assert_eq!(err("[[class]]\nname = \"\"\n"), ClassError::EmptyName(0));
    assert_eq!(
        err("[[class]]\nname = \"a\"\nmatch = { pid = \"9-3\" }\n"),
        ClassError::BadPid {
            class: "a".into(),
            value: "9-3".into()
        }
    );
    assert_eq!(
        err("[[class]]\nname = \"a\"\nthreshold-ms = 0\n"),
        ClassError::ZeroThreshold("a".into())
    );
    assert_eq!(
        err("[[class]]\nname = \"a\"\nrecovery-cmd = \"x 'y\"\n"),
        ClassError::BadRecoveryCmd {
            class: "a".into(),
            why: CommandError::UnclosedQuote
        }
    );
    assert_eq!(
        err("[[class]]\nname = \"a\"\nlabels = { \"bad-label\" = \"x\" }\n"),
        ClassError::BadLabel {
            class: "a".into(),
            label: "bad-label".into()
        }
    );
    assert_eq!(
        err("[[class]]\nname = \"a\"\nlabels = { pid = \"x\" }\n"),
        ClassError::BadLabel {
            class: "a".into(),
            label: "pid".into()
        }
    );
    let many: String = (0..=MAX_CLASSES)
        .map(|i| format!("[[class]]\nname = \"c{i}\"\n"))
        .collect();
    assert_eq!(err(&many), ClassError::TooMany(MAX_CLASSES + 1));
    let e = toml::from_str::<File>("[[class]]\nname = \"a\"\nmatch = { colour = \"red\" }\n")
        .unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
    assert!(err("[[class]]\nname = \"a\"\nmatch = { pid = \"9-3\" }\n")
        .to_string()
        .contains("\"a\": pid \"9-3\""));
}

#[test]
fn the_command_line_form_equals_the_toml_form() {
    let cli: ClassConfig =
        "backup:unit=backup*.service,pid=10-20,threshold-ms=30000,recovery=stall,severity=warning,label.team=storage"
            .parse()
            .unwrap();
    let toml_form = parse(
        r#"
[[class]]
name = "backup"
match = { unit = "backup*.service", pid = "10-20" }
threshold-ms = 30000
recovery = "stall"
severity = "warning"
labels = { team = "storage" }
"#,
    );
    assert_eq!(cli, toml_form[0]);
    assert_eq!(
        "x".parse::<ClassConfig>(),
        Err(ClassArgError::Shape("x".into()))
    );
    assert_eq!(
        "x:colour=red".parse::<ClassConfig>(),
        Err(ClassArgError::UnknownKey {
            class: "x".into(),
            key: "colour".into()
        })
    );
    assert_eq!(
        "x:recovery=sometimes".parse::<ClassConfig>(),
        Err(ClassArgError::BadValue {
            class: "x".into(),
            key: "recovery".into(),
            value: "sometimes".into()
        })
    );
    assert!(matches!(
        "x:uid=root".parse::<ClassConfig>(),
        Err(ClassArgError::BadValue { .. })
    ));
    // Checked like a TOML section once in a set.
    let bad_pid: ClassConfig = "x:pid=9-3".parse().unwrap();
    assert!(matches!(
        ClassSet::new(&defaults(), vec![bad_pid]),
        Err(ClassError::BadPid { .. })
    ));
}

#[test]
fn sixty_four_classes_resolve_to_distinct_ids() {
    let many: String = (0..MAX_CLASSES)
        .map(|i| format!("[[class]]\nname = \"c{i}\"\nmatch = {{ pid = {i} }}\n"))
        .collect();
    let set = ClassSet::new(&defaults(), parse(&many)).unwrap();
    for i in 0..MAX_CLASSES {
        let id = set.resolve(&facts(|f| f.pid = i as u32));
        assert_eq!(usize::from(id.0), i + 1);
        assert_eq!(set.get(id).name, format!("c{i}"));
    }
    assert_eq!(set.resolve(&facts(|f| f.pid = 64)), ClassId::DEFAULT);
}
