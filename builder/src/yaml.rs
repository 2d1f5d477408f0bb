//! A span-aware YAML tree and a decoder that collects every problem.
//!
//! serde stops at the first error; a site config with ten mistakes should get
//! ten messages. So `mms.yml` is parsed once into a [`Node`] tree that keeps the
//! line and column of every value (serde-saphyr's `Spanned`), and the typed
//! settings are decoded from that tree with helpers that record a
//! [`Diagnostic`] and carry on. Pure: no I/O.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::path::{Path, PathBuf};

/// A 1-based position in a YAML file (0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    pub line: u64,
    pub col: u64,
}

/// One YAML value with the position it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub loc: Loc,
}

/// The shape of a YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A short description of what this value is, for "found …" in messages.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "nothing (null)".into(),
            Value::Bool(b) => format!("the boolean {b}"),
            Value::Int(i) => format!("the number {i}"),
            Value::Float(f) => format!("the number {f}"),
            Value::Str(s) => format!("{s:?}"),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned: serde_saphyr::Spanned<Value> = serde_saphyr::Spanned::deserialize(d)?;
        Ok(Node {
            loc: Loc {
                line: spanned.referenced.line(),
                col: spanned.referenced.column(),
            },
            value: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Value, E> {
        Err(E::custom("binary values are not supported"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Node>()? {
            let v = map.next_value::<Node>()?;
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }
}

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in an input file, with where it is and what was expected.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub loc: Loc,
    /// Dotted key path, e.g. `vm.cores` or `nfs.mounts./data`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}", self.file.display())?;
        if self.loc.line > 0 {
            write!(f, ":{}:{}", self.loc.line, self.loc.col)?;
        }
        write!(f, ": {sev}: ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub struct Diags {
    file: PathBuf,
    pub items: Vec<Diagnostic>,
}

impl Diags {
    pub fn new(file: &Path) -> Self {
        Diags {
            file: file.to_path_buf(),
            items: Vec::new(),
        }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Records an error at `loc`.
    pub fn error_at(&mut self, loc: Loc, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, loc, path, message.into());
    }

    /// Records a warning at `loc`.
    pub fn warn_at(&mut self, loc: Loc, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, loc, path, message.into());
    }

    fn push(&mut self, severity: Severity, loc: Loc, path: &str, message: String) {
        self.items.push(Diagnostic {
            severity,
            file: self.file.clone(),
            loc,
            path: path.to_owned(),
            message,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// The number of errors recorded so far (to tell whether a step added any).
    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

/// Parses YAML text into a [`Node`] tree; a syntax error becomes one diagnostic.
pub fn parse(file: &Path, text: &str) -> Result<Node, Diagnostic> {
    serde_saphyr::from_str::<Node>(text).map_err(|err| {
        let loc = err
            .location()
            .map(|l| Loc {
                line: l.line(),
                col: l.column(),
            })
            .unwrap_or_default();
        let msg = err.without_snippet().to_string();
        // serde-saphyr prefixes "error: line L column C: "; the location is ours to print.
        let msg = strip_location_prefix(&msg);
        Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            loc,
            path: String::new(),
            message: format!("invalid YAML: {msg}"),
        }
    })
}

fn strip_location_prefix(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    if let Some(rest) = first.strip_prefix("line ")
        && let Some(idx) = rest.find(": ")
        && rest[..idx].contains("column")
    {
        return rest[idx + 2..].to_owned();
    }
    first.to_owned()
}

/// Formats a serde-saphyr error as `file:line:col: message` (for strictly typed files).
pub fn format_serde_error(file: &Path, err: &serde_saphyr::Error) -> String {
    let msg = strip_location_prefix(&err.without_snippet().to_string());
    match err.location() {
        Some(l) if l.line() > 0 => format!("{}:{}:{}: {msg}", file.display(), l.line(), l.column()),
        _ => format!("{}: {msg}", file.display()),
    }
}

/// A mapping being decoded: remembers its key path and reports unknown keys.
pub struct Obj<'a> {
    pub node: &'a Node,
    pub path: String,
    entries: &'a [(Node, Node)],
}

impl<'a> Obj<'a> {
    /// Views `node` as a mapping with the given allowed keys. Reports a type
    /// error (and returns `None`) when it is not a mapping, and one error per
    /// unknown or non-string key.
    pub fn new(node: &'a Node, path: &str, allowed: &[&str], diags: &mut Diags) -> Option<Self> {
        let Value::Map(entries) = &node.value else {
            diags.error_at(
                node.loc,
                path,
                format!("expected a mapping, found {}", node.describe()),
            );
            return None;
        };
        for (k, _) in entries {
            match &k.value {
                Value::Str(key) if allowed.contains(&key.as_str()) => {}
                Value::Str(key) => diags.error_at(
                    k.loc,
                    &join(path, key),
                    format!("unknown key; expected one of: {}", allowed.join(", ")),
                ),
                _ => diags.error_at(
                    k.loc,
                    path,
                    format!("keys must be strings, found {}", k.describe()),
                ),
            }
        }
        Some(Obj {
            node,
            path: path.to_owned(),
            entries,
        })
    }

    /// The value under `key`; a `null` value counts as absent.
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }

    /// The value under `key`, or an error naming the missing key.
    pub fn require(&self, key: &str, expected: &str, diags: &mut Diags) -> Option<&'a Node> {
        let found = self.get(key);
        if found.is_none() {
            diags.error_at(
                self.node.loc,
                &self.path,
                format!("missing key `{key}` ({expected})"),
            );
        }
        found
    }

    /// The dotted path of `key` inside this mapping.
    pub fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// All entries with string keys, in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&'a str, &'a Node, &'a Node)> {
        self.entries.iter().filter_map(|(k, v)| match &k.value {
            Value::Str(s) => Some((s.as_str(), k, v)),
            _ => None,
        })
    }
}

/// Joins a key path and a key.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A string value (numbers and booleans are not silently turned into text).
pub fn string(node: &Node, path: &str, expected: &str, diags: &mut Diags) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        _ => {
            diags.error_at(
                node.loc,
                path,
                format!("expected {expected}, found {}", node.describe()),
            );
            None
        }
    }
}

/// A boolean value.
pub fn boolean(node: &Node, path: &str, diags: &mut Diags) -> Option<bool> {
    match &node.value {
        Value::Bool(b) => Some(*b),
        _ => {
            diags.error_at(
                node.loc,
                path,
                format!("expected true or false, found {}", node.describe()),
            );
            None
        }
    }
}

/// An integer within `min..=max`.
pub fn integer(node: &Node, path: &str, min: i128, max: i128, diags: &mut Diags) -> Option<i128> {
    match &node.value {
        Value::Int(i) if (min..=max).contains(i) => Some(*i),
        _ => {
            diags.error_at(
                node.loc,
                path,
                format!(
                    "expected a whole number from {min} to {max}, found {}",
                    node.describe()
                ),
            );
            None
        }
    }
}

/// The entries of a mapping whose keys are data (mount points, service names), not
/// field names: `None` with `expected a mapping of <what>, found …` for anything else.
pub fn map<'n>(
    node: &'n Node,
    path: &str,
    what: &str,
    diags: &mut Diags,
) -> Option<&'n [(Node, Node)]> {
    match &node.value {
        Value::Map(entries) => Some(entries),
        _ => {
            diags.error_at(
                node.loc,
                path,
                format!("expected a mapping of {what}, found {}", node.describe()),
            );
            None
        }
    }
}

/// A list; each item is decoded by `item` with its own path `path[i]`.
pub fn list<T>(
    node: &Node,
    path: &str,
    diags: &mut Diags,
    mut item: impl FnMut(&Node, &str, &mut Diags) -> Option<T>,
) -> Option<Vec<T>> {
    let Value::Seq(items) = &node.value else {
        diags.error_at(
            node.loc,
            path,
            format!("expected a list, found {}", node.describe()),
        );
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, n) in items.iter().enumerate() {
        match item(n, &format!("{path}[{i}]"), diags) {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Node {
        parse(Path::new("t.yml"), text).unwrap()
    }

    #[test]
    fn keeps_positions_of_nested_values() {
        let n = p("a: 1\nb:\n  c: [x, \"2\"]\n");
        let Value::Map(m) = &n.value else { panic!() };
        let (_, b) = &m[1];
        let Value::Map(bm) = &b.value else { panic!() };
        let (_, c) = &bm[0];
        let Value::Seq(items) = &c.value else {
            panic!()
        };
        assert_eq!(items[1].value, Value::Str("2".into()));
        assert_eq!((items[1].loc.line, items[1].loc.col), (3, 10));
    }

    #[test]
    fn syntax_error_has_position_and_no_snippet() {
        let d = parse(Path::new("x.yml"), "a: 1\n  b: [\n").unwrap_err();
        assert_eq!((d.loc.line, d.loc.col), (2, 4));
        let s = d.to_string();
        assert!(s.starts_with("x.yml:2:4: error: invalid YAML: "), "{s}");
        assert!(!s.contains('\n'), "{s}");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let d = parse(Path::new("x.yml"), "a: 1\na: 2\n").unwrap_err();
        assert!(d.message.contains("duplicate"), "{}", d.message);
    }

    #[test]
    fn obj_reports_every_unknown_key() {
        let n = p("a: 1\nzz: 2\nyy: 3\n");
        let mut d = Diags::new(Path::new("t.yml"));
        let o = Obj::new(&n, "", &["a"], &mut d).unwrap();
        assert_eq!(d.items.len(), 2);
        assert_eq!(d.items[0].path, "zz");
        assert_eq!(d.items[1].loc.line, 3);
        assert!(o.get("a").is_some());
    }

    #[test]
    fn scalar_helpers_reject_wrong_types() {
        let n = p("s: 5\nb: \"true\"\ni: \"7\"\n");
        let mut d = Diags::new(Path::new("t.yml"));
        let o = Obj::new(&n, "", &["s", "b", "i"], &mut d).unwrap();
        assert!(string(o.get("s").unwrap(), "s", "a name", &mut d).is_none());
        assert!(boolean(o.get("b").unwrap(), "b", &mut d).is_none());
        assert!(integer(o.get("i").unwrap(), "i", 0, 9, &mut d).is_none());
        assert_eq!(d.error_count(), 3);
        assert!(d.items[2].message.contains("from 0 to 9, found \"7\""));
    }

    #[test]
    fn never_panics_on_odd_inputs() {
        for text in [
            "",
            "~",
            "[1, 2",
            "? [a]\n: b\n",
            "a: !!binary aGk=\n",
            "&a [*a]",
            "\t",
        ] {
            let _ = parse(Path::new("t.yml"), text);
        }
    }
}
