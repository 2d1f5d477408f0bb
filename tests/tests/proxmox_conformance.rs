//! The simulator's parameter table against the official PVE 9 schema subset.
//!
//! Reads `../shared/proxmox/pve-api-subset.json` relative to the repository
//! root (present in CI and development; not copied into the repo). In a bare
//! clone without it the test says plainly that it skipped.

use mms_tests::pve_sim::schema::{self, Format, Param, Ty};
use serde_json::Value;
use std::path::PathBuf;

fn schema_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/proxmox/pve-api-subset.json")
}

fn num(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn flag(v: Option<&Value>) -> bool {
    v.and_then(num).is_some_and(|n| n != 0)
}

/// Resolves `{"$same_as": "scsi0"}`.
fn resolve<'a>(props: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    let v = props.get(name)?;
    match v.get("$same_as").and_then(Value::as_str) {
        Some(other) => props.get(other),
        None => Some(v),
    }
}

fn compare_param(
    ctx: &str,
    ours: &Param,
    theirs: &Value,
    formats: &Value,
    problems: &mut Vec<String>,
) {
    let ctx = format!("{ctx} {}", ours.name);
    let ty = theirs.get("type").and_then(Value::as_str).unwrap_or("");
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(format!("{ctx}: {what}"));
        }
    };
    // Property-string keys: `optional` and `default_key` as in the schema.
    check(
        ours.optional == flag(theirs.get("optional")),
        format!(
            "optional {} vs schema {}",
            ours.optional,
            flag(theirs.get("optional"))
        ),
    );
    if ours.default_key {
        check(
            flag(theirs.get("default_key")),
            "default_key not in schema".into(),
        );
    }
    check(
        ours.requires == theirs.get("requires").and_then(Value::as_str),
        format!(
            "requires {:?} vs schema {:?}",
            ours.requires,
            theirs.get("requires")
        ),
    );
    match &ours.ty {
        Ty::Integer { min, max } => {
            check(ty == "integer", format!("type integer vs schema {ty}"));
            check(
                *min == theirs.get("minimum").and_then(num),
                format!("minimum {min:?} vs schema {:?}", theirs.get("minimum")),
            );
            check(
                *max == theirs.get("maximum").and_then(num),
                format!("maximum {max:?} vs schema {:?}", theirs.get("maximum")),
            );
        }
        Ty::Boolean => check(ty == "boolean", format!("type boolean vs schema {ty}")),
        Ty::Str {
            format,
            pattern,
            max_len,
            enumeration,
        } => {
            check(ty == "string", format!("type string vs schema {ty}"));
            check(
                *pattern == theirs.get("pattern").and_then(Value::as_str),
                format!("pattern {pattern:?} vs schema {:?}", theirs.get("pattern")),
            );
            check(
                max_len.map(|n| n as i64) == theirs.get("maxLength").and_then(num),
                format!(
                    "maxLength {max_len:?} vs schema {:?}",
                    theirs.get("maxLength")
                ),
            );
            let their_enum: Option<Vec<&str>> = theirs
                .get("enum")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect());
            check(
                enumeration.as_ref() == their_enum.as_ref(),
                format!("enum {enumeration:?} vs schema {their_enum:?}"),
            );
            let their_format = theirs.get("format");
            match format {
                None => check(
                    their_format.is_none(),
                    format!("schema has format {their_format:?}, table has none"),
                ),
                Some(Format::Named(name)) => check(
                    their_format.and_then(Value::as_str) == Some(name),
                    format!("format {name} vs schema {their_format:?}"),
                ),
                Some(Format::NamedProps(name, keys)) => {
                    check(
                        their_format.and_then(Value::as_str) == Some(name),
                        format!("format {name} vs schema {their_format:?}"),
                    );
                    match formats.get(*name).and_then(Value::as_object) {
                        None => problems.push(format!(
                            "{ctx}: named format {name} missing from schema formats"
                        )),
                        Some(obj) => compare_keys(&ctx, keys, obj, formats, problems),
                    }
                }
                Some(Format::Props(keys)) => match their_format.and_then(Value::as_object) {
                    None => problems.push(format!(
                        "{ctx}: schema format is not a property string: {their_format:?}"
                    )),
                    Some(obj) => compare_keys(&ctx, keys, obj, formats, problems),
                },
            }
        }
    }
}

fn compare_keys(
    ctx: &str,
    keys: &[Param],
    obj: &serde_json::Map<String, Value>,
    formats: &Value,
    problems: &mut Vec<String>,
) {
    for key in keys {
        match obj.get(key.name) {
            None => problems.push(format!(
                "{ctx}: property-string key {} not in schema",
                key.name
            )),
            Some(v) => compare_param(ctx, key, v, formats, problems),
        }
    }
    // Required keys of the property string must be in our table.
    for (name, v) in obj {
        if v.get("alias").is_none()
            && !flag(v.get("optional"))
            && !keys.iter().any(|k| k.name == name)
        {
            problems.push(format!(
                "{ctx}: required property-string key {name} missing from table"
            ));
        }
    }
}

#[test]
fn simulator_table_matches_official_schema() {
    let path = schema_file();
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "SKIPPED: {} is not present (a bare clone without ../shared); the simulator's \
             parameter table was NOT compared with the official schema",
            path.display()
        );
        return;
    };
    let doc: Value = serde_json::from_str(&text).expect("schema JSON");
    let methods = doc["methods"].as_object().expect("methods");
    let formats = &doc["formats"];
    let mut problems = Vec::new();
    let table = schema::endpoints();
    assert!(table.len() >= 20, "table too small");
    for ep in &table {
        let key = ep.key();
        let Some(m) = methods.get(&key) else {
            problems.push(format!("{key}: not in the official schema"));
            continue;
        };
        assert!(flag(m.get("allowtoken")), "{key} must allow API tokens");
        let props = m["parameters"]["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for p in &ep.params {
            match resolve(&props, p.name) {
                None => problems.push(format!("{key}: parameter {} not in schema", p.name)),
                Some(theirs) => compare_param(&key, p, theirs, formats, &mut problems),
            }
        }
        for (name, v) in &props {
            if !flag(v.get("optional"))
                && v.get("$same_as").is_none()
                && !ep.params.iter().any(|p| p.name == name)
            {
                problems.push(format!(
                    "{key}: required parameter {name} missing from table"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "simulator table differs from the official schema:\n{}",
        problems.join("\n")
    );
}

/// The comparison itself can fail: a deliberately wrong entry is reported.
#[test]
fn comparison_detects_a_wrong_entry() {
    let Ok(text) = std::fs::read_to_string(schema_file()) else {
        eprintln!("SKIPPED: official schema not present");
        return;
    };
    let doc: Value = serde_json::from_str(&text).expect("schema JSON");
    let theirs = &doc["methods"]["POST /nodes/{node}/qemu/{vmid}/clone"]["parameters"]["properties"]
        ["newid"];
    let wrong = Param {
        name: "newid",
        ty: Ty::Integer {
            min: Some(1),
            max: None,
        },
        optional: true,
        requires: None,
        default_key: false,
    };
    let mut problems = Vec::new();
    compare_param("clone", &wrong, theirs, &doc["formats"], &mut problems);
    assert_eq!(problems.len(), 3, "{problems:?}");
}
