//! systemd/Quadlet INI serializer with systemd's quoting rules, and a small parser.
//!
//! Owns how a value becomes text on a `Key=value` line so that no input can break out of its
//! line or change meaning (systemd.syntax(7), systemd.unit(5) "Specifiers", systemd.service(5)
//! "Command lines"). It does not know which keys exist: the section types in
//! [`super::units`] choose a [`Value`] and a [`Ctx`] per key.
//!
//! Two value shapes exist:
//! - [`Value::Text`]: the rest of the line is the value, taken literally by systemd and by
//!   Quadlet (e.g. `Description=`, `HealthCmd=`, `Volume=`). Specifiers are expanded, so `%`
//!   is written `%%`. A raw value cannot carry a control character, leading/trailing
//!   whitespace or a trailing backslash (line continuation); those are rejected.
//! - [`Value::Words`]: a list of words, each written in double quotes with C escapes
//!   (`\\`, `\"`, `\n`, `\t`, `\r`, `\xNN`), as systemd's `extract_first_word(…,
//!   EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE)` and Quadlet's Go port of it read them
//!   (`Environment=`, `Exec=`, `ExecStart=`). Any string except one holding NUL round-trips.
//!
//! [`Ctx::Exec`] marks values that end up on a command line systemd executes (every Quadlet
//! `[Container]` key becomes part of the generated `ExecStart=`, and `ExecStart=` itself):
//! there `$` is written `$$` so systemd does not substitute environment variables. Verified
//! against podman 5.4's quadlet: it copies `%%` and `$$` verbatim into the generated
//! `ExecStart=`, where systemd turns them back into `%` and `$`. Quadlet also trims every
//! leading and trailing `"` from single-value keys (`HealthCmd="x"` becomes `x`), so a raw
//! value in that context may not start or end with one (rejected, not silently changed).

use std::fmt::Write as _;

/// How a key's value is read by its consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The whole rest of the line, literally (after specifier expansion).
    Text(String),
    /// Whitespace-separated words, each quoted and C-escaped.
    Words(Vec<String>),
}

/// Whether `$` is special where the value ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ctx {
    /// Not a command line: only `%` specifiers are expanded.
    Plain,
    /// On a command line systemd executes: `$VAR` is substituted too.
    Exec,
}

/// A value that cannot be written safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IniError {
    /// A raw value holds a character that would end or change its line.
    #[error("{section}.{key}: value {value:?} cannot be written as a systemd setting: {reason}")]
    Unrepresentable {
        /// Section name.
        section: String,
        /// Key name.
        key: String,
        /// The offending value.
        value: String,
        /// Why.
        reason: &'static str,
    },
}

/// One `[Section]` with its ordered `Key=value` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name inside the brackets.
    pub name: &'static str,
    /// Entries in output order; a key may repeat.
    pub entries: Vec<(&'static str, Value, Ctx)>,
}

impl Section {
    /// An empty section called `name`.
    pub fn new(name: &'static str) -> Self {
        Section {
            name,
            entries: Vec::new(),
        }
    }

    /// Adds `key=text` if `value` is `Some`.
    pub fn opt_text(&mut self, key: &'static str, value: &Option<String>, ctx: Ctx) {
        if let Some(v) = value {
            self.entries.push((key, Value::Text(v.clone()), ctx));
        }
    }

    /// Adds one `key=text` line per element.
    pub fn all_text(&mut self, key: &'static str, values: &[String], ctx: Ctx) {
        for v in values {
            self.entries.push((key, Value::Text(v.clone()), ctx));
        }
    }

    /// Adds `key=yes|no|true|false`-style literals.
    pub fn opt_bool(&mut self, key: &'static str, value: Option<bool>, yes: &str, no: &str) {
        if let Some(b) = value {
            let s = if b { yes } else { no };
            self.entries
                .push((key, Value::Text(s.to_string()), Ctx::Plain));
        }
    }

    /// Adds `key=` as a quoted word list if `words` is `Some`.
    pub fn opt_words(&mut self, key: &'static str, words: &Option<Vec<String>>, ctx: Ctx) {
        if let Some(w) = words {
            self.entries.push((key, Value::Words(w.clone()), ctx));
        }
    }
}

/// Serializes sections into a unit file. `header` lines are written first as `# ` comments.
pub fn to_string(header: &[&str], sections: &[Section]) -> Result<String, IniError> {
    let mut out = String::new();
    for line in header {
        let _ = writeln!(out, "# {line}");
    }
    let mut first = header.is_empty();
    for section in sections.iter().filter(|s| !s.entries.is_empty()) {
        if !first {
            out.push('\n');
        }
        first = false;
        let _ = writeln!(out, "[{}]", section.name);
        for (key, value, ctx) in &section.entries {
            let text = encode(value, *ctx).map_err(|reason| IniError::Unrepresentable {
                section: section.name.to_string(),
                key: (*key).to_string(),
                value: match value {
                    Value::Text(t) => t.clone(),
                    Value::Words(w) => w.join(" "),
                },
                reason,
            })?;
            let _ = writeln!(out, "{key}={text}");
        }
    }
    Ok(out)
}

/// Encodes one value for the right-hand side of `Key=`.
pub fn encode(value: &Value, ctx: Ctx) -> Result<String, &'static str> {
    match value {
        Value::Text(t) => encode_text(t, ctx),
        Value::Words(words) => {
            let mut out = String::new();
            for (i, w) in words.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                encode_word(&mut out, w, ctx)?;
            }
            Ok(out)
        }
    }
}

fn encode_text(t: &str, ctx: Ctx) -> Result<String, &'static str> {
    if t.chars().any(|c| c.is_control()) {
        return Err("it contains a control character (newline, tab, …)");
    }
    if t.trim() != t {
        return Err("it has leading or trailing whitespace, which systemd strips");
    }
    if t.ends_with('\\') {
        return Err("it ends in a backslash, which systemd reads as a line continuation");
    }
    if ctx == Ctx::Exec && (t.starts_with('"') || t.ends_with('"')) {
        return Err("it starts or ends with a double quote, which Quadlet strips");
    }
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' if ctx == Ctx::Exec => out.push_str("$$"),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn encode_word(out: &mut String, w: &str, ctx: Ctx) -> Result<(), &'static str> {
    out.push('"');
    for c in w.chars() {
        match c {
            '\0' => return Err("it contains a NUL character"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '%' => out.push_str("%%"),
            '$' if ctx == Ctx::Exec => out.push_str("$$"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            // Other Unicode control characters (C1, U+2028…) as \uXXXX so no line
            // separator of any kind appears raw.
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' || c == '\u{85}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(())
}

/// A parsed unit file: `(section, key, raw value)` in file order.
pub type Parsed = Vec<(String, String, String)>;

/// Parses a unit file the way systemd's config parser splits it: comments (`#`, `;`), sections,
/// `Key=value` with surrounding whitespace stripped, backslash line continuation.
pub fn parse(text: &str) -> Result<Parsed, String> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for (n, line) in text.split('\n').enumerate() {
        let joined;
        let line = if pending.is_empty() {
            line
        } else {
            joined = format!("{pending} {line}");
            pending.clear();
            &joined
        };
        let l = line.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r');
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(stripped) = l.strip_suffix('\\') {
            pending = stripped.to_string();
            continue;
        }
        if let Some(name) = l.strip_prefix('[') {
            section = name
                .strip_suffix(']')
                .ok_or_else(|| format!("line {}: bad section header", n + 1))?
                .to_string();
            continue;
        }
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| format!("line {}: missing '='", n + 1))?;
        out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

/// Undoes specifier (`%%`) and, in [`Ctx::Exec`], `$$` escaping of a raw text value.
pub fn unescape_text(raw: &str, ctx: Ctx) -> Result<String, String> {
    let mut out = String::new();
    let mut it = raw.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '%' => match it.next() {
                Some('%') => out.push('%'),
                other => return Err(format!("specifier %{other:?} would be expanded")),
            },
            '$' if ctx == Ctx::Exec => match it.next() {
                Some('$') => out.push('$'),
                other => return Err(format!("${other:?} would be substituted")),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Splits a raw value into words like systemd's `extract_first_word` with `EXTRACT_UNQUOTE |
/// EXTRACT_CUNESCAPE`, then undoes specifier/`$` escaping in each word.
pub fn split_words(raw: &str, ctx: Ctx) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut it = raw.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            it.next();
        }
        if it.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = it.next() {
            match (quote, c) {
                (None, ' ' | '\t') => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (_, '\\') => {
                    let e = it.next().ok_or("trailing backslash")?;
                    match e {
                        'n' => word.push('\n'),
                        't' => word.push('\t'),
                        'r' => word.push('\r'),
                        'a' => word.push('\u{7}'),
                        'b' => word.push('\u{8}'),
                        'f' => word.push('\u{c}'),
                        'v' => word.push('\u{b}'),
                        's' => word.push(' '),
                        '\\' | '"' | '\'' => word.push(e),
                        'x' => {
                            let h: String = (0..2).filter_map(|_| it.next()).collect();
                            let v = u32::from_str_radix(&h, 16).map_err(|e| e.to_string())?;
                            word.push(char::from_u32(v).ok_or("bad \\x")?);
                        }
                        'u' => {
                            let h: String = (0..4).filter_map(|_| it.next()).collect();
                            let v = u32::from_str_radix(&h, 16).map_err(|e| e.to_string())?;
                            word.push(char::from_u32(v).ok_or("bad \\u")?);
                        }
                        other => return Err(format!("unknown escape \\{other}")),
                    }
                }
                (_, c) => word.push(c),
            }
        }
        if quote.is_some() {
            return Err("unterminated quote".to_string());
        }
        words.push(unescape_text(&word, ctx)?);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(key: &'static str, value: Value, ctx: Ctx) -> Result<String, IniError> {
        let mut s = Section::new("Service");
        s.entries.push((key, value, ctx));
        to_string(&[], &[s])
    }

    #[test]
    fn exact_output() {
        let mut u = Section::new("Unit");
        u.entries.push((
            "Description",
            Value::Text("Radarr 100% \"x\"".into()),
            Ctx::Plain,
        ));
        let mut s = Section::new("Service");
        s.entries.push((
            "ExecStart",
            Value::Words(vec!["/usr/bin/echo".into(), "a b$HOME\n".into()]),
            Ctx::Exec,
        ));
        s.entries.push((
            "Environment",
            Value::Words(vec!["A=x\"y\\".into()]),
            Ctx::Plain,
        ));
        let out = to_string(&["generated"], &[u, Section::new("Empty"), s]).unwrap();
        assert_eq!(
            out,
            "# generated\n\n[Unit]\nDescription=Radarr 100%% \"x\"\n\n[Service]\n\
             ExecStart=\"/usr/bin/echo\" \"a b$$HOME\\n\"\nEnvironment=\"A=x\\\"y\\\\\"\n"
        );
    }

    #[test]
    fn text_rejects_line_breakers() {
        for bad in ["a\nb", " lead", "trail ", "cont\\", "tab\there", "cr\r"] {
            let err = one("Description", Value::Text(bad.into()), Ctx::Plain).unwrap_err();
            assert!(err.to_string().contains("Service.Description"), "{err}");
        }
        assert!(one("ExecStart", Value::Words(vec!["a\0".into()]), Ctx::Exec).is_err());
    }

    fn hostile() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            Just("%".to_string()),
            Just("%n".to_string()),
            Just("$".to_string()),
            Just("${X}".to_string()),
            Just("\\".to_string()),
            Just("\"".to_string()),
            Just("'".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("\n[Service]\nExecStart=/bin/evil".to_string()),
            Just(" ".to_string()),
            Just("\t".to_string()),
            Just(";".to_string()),
            Just("#".to_string()),
            Just("=".to_string()),
            Just("\u{7f}\u{1}\u{85}\u{2028}".to_string()),
            "[a-zA-Z0-9/._-]{0,6}",
            "\\PC{0,3}",
        ];
        proptest::collection::vec(pieces, 0..8).prop_map(|v| v.concat())
    }

    fn roundtrip_words(words: Vec<String>, ctx: Ctx) {
        let words: Vec<String> = words.into_iter().map(|w| w.replace('\0', "")).collect();
        let text = one("Environment", Value::Words(words.clone()), ctx).unwrap();
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.len(), 1, "{text}");
        let (sec, key, raw) = &parsed[0];
        assert_eq!((sec.as_str(), key.as_str()), ("Service", "Environment"));
        assert_eq!(split_words(raw, ctx).unwrap(), words, "{text}");
    }

    proptest! {
        #[test]
        fn words_roundtrip(words in proptest::collection::vec(hostile(), 1..4)) {
            roundtrip_words(words.clone(), Ctx::Plain);
            roundtrip_words(words, Ctx::Exec);
        }

        #[test]
        fn text_roundtrips_or_is_rejected(t in hostile()) {
            for ctx in [Ctx::Plain, Ctx::Exec] {
                match one("Description", Value::Text(t.clone()), ctx) {
                    Ok(text) => {
                        let parsed = parse(&text).unwrap();
                        prop_assert_eq!(parsed.len(), 1);
                        prop_assert_eq!(unescape_text(&parsed[0].2, ctx).unwrap(), t.clone());
                    }
                    Err(_) => prop_assert!(
                        t.chars().any(char::is_control)
                            || t.trim() != t
                            || t.ends_with('\\')
                            || (ctx == Ctx::Exec && (t.starts_with('"') || t.ends_with('"')))
                    ),
                }
            }
        }
    }
}
