//! Property test through the real Quadlet generator: random hostile environment values,
//! `Exec=` words and raw values (HealthCmd, Description) are serialized by our INI writer,
//! parsed by podman 5's quadlet, written into the generated `ExecStart=`, and split back with
//! systemd's rules — the result equals the input (nothing broke out of its line, nothing was
//! expanded as a specifier or an environment variable).

#![allow(clippy::unwrap_used)]

mod render_common;

use mms_builder::render::ini::{self, Ctx};
use mms_builder::render::units::{Body, Container, Install, Service, Unit, UnitFile};
use proptest::prelude::*;
use render_common::check_quadlet;

fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("%".to_string()),
        Just("%n".to_string()),
        Just("$".to_string()),
        Just("${A}".to_string()),
        Just("\\".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("\n".to_string()),
        Just("\t".to_string()),
        Just(" ".to_string()),
        Just(";".to_string()),
        Just("#".to_string()),
        Just("\n[Service]\nExecStart=/bin/evil".to_string()),
        "[a-zA-Z0-9/._=-]{1,5}",
        "[\u{80}-\u{7ff}]{1,2}",
    ];
    proptest::collection::vec(piece, 1..6).prop_map(|v| v.concat())
}

fn raw() -> impl Strategy<Value = String> {
    // Raw values cannot hold control characters, edge whitespace, a trailing backslash or
    // (in Quadlet keys) an edge double quote: the serializer rejects those (ini unit tests).
    hostile().prop_map(|s| {
        let s: String = s.chars().filter(|c| !c.is_control()).collect();
        let s = s
            .trim()
            .trim_end_matches('\\')
            .trim_matches('"')
            .trim()
            .to_string();
        let s = s.trim_end_matches('\\').to_string();
        if s.is_empty() { "x".to_string() } else { s }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn quadlet_round_trip(
        env in proptest::collection::vec(hostile(), 1..4),
        exec in proptest::collection::vec(hostile(), 1..4),
        health in raw(),
        desc in raw(),
    ) {
        let environment = env
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("K{i}"), v.clone()))
            .collect();
        let unit = UnitFile {
            unit: Unit { description: Some(desc.clone()), ..Unit::default() },
            body: Body::Container(
                Box::new(Container {
                    image: "docker.io/library/busybox:1".into(),
                    container_name: Some("p".into()),
                    environment,
                    health_cmd: Some(health.clone()),
                    exec: Some(exec.clone()),
                    ..Container::default()
                }),
                Service::default(),
            ),
            install: Install::default(),
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.container"), unit.render().unwrap()).unwrap();
        let out = check_quadlet(dir.path()).map_err(TestCaseError::fail)?;
        let service = out.split("---p.service---").nth(1).unwrap().split("\n---").next().unwrap();
        let parsed = ini::parse(service).map_err(TestCaseError::fail)?;
        let exec_start = parsed
            .iter()
            .find(|(s, k, _)| s == "Service" && k == "ExecStart")
            .map(|(_, _, v)| v.replacen(" --cidfile=%t/%N.cid", "", 1))
            .unwrap();
        let words = ini::split_words(&exec_start, Ctx::Exec).map_err(TestCaseError::fail)?;
        for (i, v) in env.iter().enumerate() {
            let want = format!("K{i}={v}");
            let p = words.iter().position(|w| *w == want);
            prop_assert!(p.is_some_and(|p| words[p - 1] == "--env"), "{want:?} in {words:?}");
        }
        let hc = words.iter().position(|w| w == "--health-cmd").map(|p| words[p + 1].clone());
        prop_assert_eq!(hc.as_deref(), Some(health.as_str()));
        prop_assert_eq!(&words[words.len() - exec.len()..], exec.as_slice());
        let d = parsed.iter().find(|(s, k, _)| s == "Unit" && k == "Description").unwrap();
        prop_assert_eq!(ini::unescape_text(&d.2, Ctx::Plain).unwrap(), desc);
    }
}
