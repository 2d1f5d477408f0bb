//! Pure stored-path rewriting: path prefixes on component boundaries, inside plain values,
//! JSON documents, XML element text, SABnzbd's ini and Jellyfin's `.mblink` files.
//!
//! Rules (reference arr-state.md §8): the longest matching `from` wins; `/movies` matches
//! `/movies` and `/movies/…` but never `/movies2`; the rest of the value, including a trailing
//! `/`, is kept. JSON is rewritten token by token so key order and formatting stay exactly as
//! they were (Radarr's AutoTagging converter is order-sensitive); object keys are never
//! rewritten. No I/O here.

use crate::config::Rewrite;

/// One value that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Before.
    pub old: String,
    /// After.
    pub new: String,
}

/// A set of prefix rules, longest first.
#[derive(Debug, Clone, Default)]
pub struct Rewriter {
    rules: Vec<(String, String)>,
}

impl Rewriter {
    /// Builds the rule set; trailing `/` on either side is ignored.
    pub fn new(rewrites: &[Rewrite]) -> Rewriter {
        let trim = |s: &str| {
            let t = s.trim_end_matches('/');
            if t.is_empty() {
                "/".to_string()
            } else {
                t.to_string()
            }
        };
        let mut rules: Vec<(String, String)> = rewrites
            .iter()
            .map(|r| (trim(&r.from), trim(&r.to)))
            .filter(|(f, t)| f != "/" && f != t)
            .collect();
        rules.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        rules.dedup_by(|a, b| a.0 == b.0);
        Rewriter { rules }
    }

    /// No rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rewritten path, or `None` when no rule matches `value` on a component boundary.
    pub fn path(&self, value: &str) -> Option<String> {
        for (from, to) in &self.rules {
            if let Some(rest) = value.strip_prefix(from.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return Some(format!("{to}{rest}"));
            }
        }
        None
    }

    /// Rewrites every JSON string *value* that is a matching path; `None` when `text` is not a
    /// JSON object/array or nothing matched. Formatting and key order are preserved.
    pub fn json(&self, text: &str, changes: &mut Vec<Change>) -> Option<String> {
        let first = text.trim_start().chars().next()?;
        if first != '{' && first != '[' {
            return None;
        }
        serde_json::from_str::<serde_json::Value>(text).ok()?;
        let b = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        let mut i = 0;
        let mut changed = false;
        while i < b.len() {
            if b[i] != b'"' {
                i += 1;
                continue;
            }
            // find the closing quote
            let start = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            let end = i.min(b.len() - 1); // index of the closing quote
            i = end + 1;
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let is_key = j < b.len() && b[j] == b':';
            if is_key {
                continue;
            }
            let literal = &text[start..=end];
            let Ok(value) = serde_json::from_str::<String>(literal) else {
                continue;
            };
            if let Some(new) = self.path(&value) {
                let Ok(encoded) = serde_json::to_string(&new) else {
                    continue;
                };
                out.push_str(&text[last..start]);
                out.push_str(&encoded);
                last = end + 1;
                changed = true;
                changes.push(Change { old: value, new });
            }
        }
        if !changed {
            return None;
        }
        out.push_str(&text[last..]);
        Some(out)
    }

    /// A plain value that is a path, or a JSON document holding paths.
    pub fn value(&self, text: &str, changes: &mut Vec<Change>) -> Option<String> {
        if let Some(new) = self.path(text) {
            changes.push(Change {
                old: text.to_string(),
                new: new.clone(),
            });
            return Some(new);
        }
        self.json(text, changes)
    }

    /// Rewrites XML element text that is exactly a matching path (`<Path>/movies</Path>`).
    pub fn xml(&self, text: &str, changes: &mut Vec<Change>) -> Option<String> {
        let mut out = String::with_capacity(text.len());
        let mut changed = false;
        let mut rest = text;
        while let Some(gt) = rest.find('>') {
            out.push_str(&rest[..=gt]);
            rest = &rest[gt + 1..];
            let lt = rest.find('<').unwrap_or(rest.len());
            let segment = &rest[..lt];
            match self.path(segment) {
                Some(new) if !segment.is_empty() => {
                    changes.push(Change {
                        old: segment.to_string(),
                        new: new.clone(),
                    });
                    out.push_str(&new);
                    changed = true;
                }
                _ => out.push_str(segment),
            }
            rest = &rest[lt..];
        }
        out.push_str(rest);
        changed.then_some(out)
    }

    /// A Jellyfin `.mblink` file: its whole content is one path.
    pub fn mblink(&self, text: &str, changes: &mut Vec<Change>) -> Option<String> {
        let trimmed = text.trim_end_matches(['\r', '\n']);
        let new = self.path(trimmed)?;
        changes.push(Change {
            old: trimmed.to_string(),
            new: new.clone(),
        });
        Some(format!("{new}{}", &text[trimmed.len()..]))
    }
}

/// Servarr `config.xml`: an IP-pinned `<BindAddress>` (the LXC's own address) becomes `*`,
/// otherwise the app cannot bind inside the container (arr-state.md §0).
pub fn servarr_bind_any(text: &str, changes: &mut Vec<Change>) -> Option<String> {
    let start = text.find("<BindAddress>")? + "<BindAddress>".len();
    let end = start + text[start..].find("</BindAddress>")?;
    let value = text[start..end].trim();
    if value.is_empty() || value == "*" || value.parse::<std::net::IpAddr>().is_err() {
        return None;
    }
    changes.push(Change {
        old: format!("BindAddress {value}"),
        new: "BindAddress *".into(),
    });
    Some(format!("{}*{}", &text[..start], &text[end..]))
}

/// SABnzbd `[misc]` keys that hold paths relative to the old `$HOME` when not absolute.
const SAB_HOME_KEYS: &[&str] = &[
    "download_dir",
    "complete_dir",
    "dirscan_dir",
    "script_dir",
    "backup_dir",
    "email_dir",
    "password_file",
];
/// SABnzbd `[misc]` keys rewritten only when absolute.
const SAB_ABS_KEYS: &[&str] = &["nzb_backup_dir", "https_cert", "https_key", "https_chain"];

/// Options for [`sabnzbd_ini`].
#[derive(Debug, Clone)]
pub struct SabOptions {
    /// The old `$HOME` that relative download dirs resolved against (`/root` in the LXC).
    pub old_home: String,
    /// Set `[misc] port` to this (the container's port; the LXC used 7777).
    pub port: Option<u16>,
    /// Names to add to `host_whitelist` (container name, tailnet host name).
    pub whitelist: Vec<String>,
}

/// Rewrites `sabnzbd.ini`: `[misc]` directories (relative ones made absolute against the old
/// home first, kept relative when no rule matches), absolute category `dir`s, `port`, and
/// `host_whitelist`. Other sections (`[servers]` has its own `port`) are left alone.
pub fn sabnzbd_ini(
    rw: &Rewriter,
    text: &str,
    opts: &SabOptions,
    changes: &mut Vec<Change>,
) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut section = String::new();
    let mut in_categories_sub = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let eol = &line[body.len()..];
        let t = body.trim_start();
        if t.starts_with("[[") {
            in_categories_sub = section == "categories";
            out.push_str(line);
            continue;
        }
        if t.starts_with('[') {
            section = t.trim_matches(['[', ']']).trim().to_string();
            in_categories_sub = false;
            out.push_str(line);
            continue;
        }
        let Some((k, v)) = body.split_once('=') else {
            out.push_str(line);
            continue;
        };
        let key = k.trim();
        let value = v.trim();
        let indent = &body[..body.len() - body.trim_start().len()];
        let mut new_value: Option<String> = None;
        if section == "misc" && !in_categories_sub {
            if SAB_HOME_KEYS.contains(&key) && !value.is_empty() {
                let abs = if value.starts_with('/') {
                    value.to_string()
                } else {
                    format!("{}/{}", opts.old_home.trim_end_matches('/'), value)
                };
                new_value = rw.path(&abs);
            } else if SAB_ABS_KEYS.contains(&key) && value.starts_with('/') {
                new_value = rw.path(value);
            } else if key == "port" {
                new_value = opts
                    .port
                    .map(|p| p.to_string())
                    .filter(|p| p.as_str() != value);
            } else if key == "host_whitelist" {
                let mut names: Vec<String> = value
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                let before = names.len();
                for w in &opts.whitelist {
                    if !names.iter().any(|n| n.eq_ignore_ascii_case(w)) {
                        names.push(w.clone());
                    }
                }
                if names.len() != before {
                    new_value = Some(names.join(", "));
                }
            }
        } else if section == "categories"
            && in_categories_sub
            && key == "dir"
            && value.starts_with('/')
        {
            new_value = rw.path(value);
        }
        match new_value {
            Some(nv) => {
                changes.push(Change {
                    old: format!("{key} = {value}"),
                    new: format!("{key} = {nv}"),
                });
                out.push_str(&format!("{indent}{key} = {nv}{eol}"));
            }
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rw(rules: &[(&str, &str)]) -> Rewriter {
        Rewriter::new(
            &rules
                .iter()
                .map(|(f, t)| Rewrite {
                    from: (*f).into(),
                    to: (*t).into(),
                })
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn component_boundaries_longest_first_trailing_slash_kept() {
        let r = rw(&[
            ("/movies", "/data/media/movies"),
            ("/movies/kids", "/data/media/kids"),
        ]);
        assert_eq!(r.path("/movies").as_deref(), Some("/data/media/movies"));
        assert_eq!(r.path("/movies/").as_deref(), Some("/data/media/movies/"));
        assert_eq!(
            r.path("/movies/A (2001)").as_deref(),
            Some("/data/media/movies/A (2001)")
        );
        assert_eq!(
            r.path("/movies/kids/B").as_deref(),
            Some("/data/media/kids/B")
        );
        assert_eq!(r.path("/movies2"), None);
        assert_eq!(r.path("/movies2/x"), None);
        assert_eq!(r.path("movies/x"), None);
        assert_eq!(r.path("/tv"), None);
    }

    #[test]
    fn json_keeps_order_and_format_and_skips_keys() {
        let r = rw(&[("/movies", "/data/media/movies")]);
        let text =
            r#"[{"type":"RootFolderSpecification","body":{"negate":false,"value":"/movies/"}}]"#;
        let mut ch = vec![];
        let out = r.json(text, &mut ch).unwrap();
        assert_eq!(
            out,
            r#"[{"type":"RootFolderSpecification","body":{"negate":false,"value":"/data/media/movies/"}}]"#
        );
        assert_eq!(ch.len(), 1);
        let keyed = r#"{"/movies": "x", "path" : "/movies2", "p": "/movies\/a"}"#;
        let mut ch = vec![];
        let out = r.json(keyed, &mut ch).unwrap();
        assert_eq!(
            out,
            r#"{"/movies": "x", "path" : "/movies2", "p": "/data/media/movies/a"}"#
        );
        assert_eq!(r.json("not json", &mut ch), None);
        assert_eq!(r.json(r#"{"a":"/tv"}"#, &mut ch), None);
    }

    #[test]
    fn xml_and_mblink() {
        let r = rw(&[
            ("/movies", "/data/media/movies"),
            ("/var/lib/jellyfin", "/config/data"),
        ]);
        let x = "<LibraryOptions><PathInfos><MediaPathInfo><Path>/movies</Path></MediaPathInfo></PathInfos><Name>/movies2</Name></LibraryOptions>";
        let mut ch = vec![];
        let out = r.xml(x, &mut ch).unwrap();
        assert!(out.contains("<Path>/data/media/movies</Path>"));
        assert!(out.contains("<Name>/movies2</Name>"));
        assert_eq!(
            r.mblink("/movies\n", &mut ch).as_deref(),
            Some("/data/media/movies\n")
        );
        assert_eq!(r.mblink("/tv", &mut ch), None);
    }

    #[test]
    fn bind_address_pinned_to_an_ip_becomes_any() {
        let mut ch = vec![];
        let x = "<Config>\n  <BindAddress>192.168.1.23</BindAddress>\n</Config>";
        assert_eq!(
            servarr_bind_any(x, &mut ch).unwrap(),
            "<Config>\n  <BindAddress>*</BindAddress>\n</Config>"
        );
        assert_eq!(
            servarr_bind_any("<Config><BindAddress>*</BindAddress></Config>", &mut ch),
            None
        );
        assert_eq!(
            servarr_bind_any("<Config><Port>1</Port></Config>", &mut ch),
            None
        );
        assert_eq!(ch.len(), 1);
    }

    #[test]
    fn sabnzbd_ini_sections() {
        let r = rw(&[
            ("/root/Downloads", "/data/usenet"),
            ("/mnt/dl", "/data/usenet"),
        ]);
        let ini = "__version__ = 19\n[misc]\nport = 7777\nhost = 0.0.0.0\ndownload_dir = Downloads/incomplete\ncomplete_dir = /mnt/dl/complete\nadmin_dir = admin\nhost_whitelist = lxc-sab,\n[servers]\n[[news.example.com]]\nport = 563\n[categories]\n[[movies]]\ndir = movies\n[[tv]]\ndir = /mnt/dl/complete/tv\n";
        let mut ch = vec![];
        let out = sabnzbd_ini(
            &r,
            ini,
            &SabOptions {
                old_home: "/root".into(),
                port: Some(8080),
                whitelist: vec!["sabnzbd".into()],
            },
            &mut ch,
        );
        assert!(out.contains("[misc]\nport = 8080\n"), "{out}");
        assert!(
            out.contains("download_dir = /data/usenet/incomplete\n"),
            "{out}"
        );
        assert!(
            out.contains("complete_dir = /data/usenet/complete\n"),
            "{out}"
        );
        assert!(out.contains("admin_dir = admin\n"));
        assert!(out.contains("host_whitelist = lxc-sab, sabnzbd\n"), "{out}");
        assert!(out.contains("port = 563\n"), "{out}");
        assert!(out.contains("[[movies]]\ndir = movies\n"));
        assert!(out.contains("dir = /data/usenet/complete/tv\n"));
        assert_eq!(ch.len(), 5, "{ch:#?}");
    }

    proptest! {
        #[test]
        fn never_touches_a_lookalike_prefix(suffix in "[a-z0-9_-]{1,8}", tail in "(/[a-z]{0,5}){0,3}") {
            let r = rw(&[("/movies", "/data/media/movies")]);
            let v = format!("/movies{suffix}{tail}");
            prop_assert_eq!(r.path(&v), None);
            let w = format!("/movies{tail}");
            prop_assert_eq!(r.path(&w), Some(format!("/data/media/movies{tail}")));
        }

        #[test]
        fn json_rewrite_stays_valid_json(s in "[ -~]{0,20}") {
            let r = rw(&[("/a", "/b/c")]);
            let doc = serde_json::json!({"k": format!("/a/{s}"), "l": [s.clone(), "/a"]}).to_string();
            let mut ch = vec![];
            if let Some(out) = r.json(&doc, &mut ch) {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                prop_assert_eq!(v["k"].as_str().unwrap(), format!("/b/c/{s}"));
                prop_assert_eq!(v["l"][1].as_str().unwrap(), "/b/c");
            }
        }
    }
}

/// Replaces the value of the top-level member `key` of a JSON object with the JSON literal
/// `new` (e.g. `"\"sabnzbd\""` or `8080`), keeping every other byte; `None` when `text` is not
/// an object with that key, or the value is already `new`.
pub fn json_set_member(text: &str, key: &str, new: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.as_object()?.get(key)?;
    let b = text.as_bytes();
    let mut i = text.find('{')? + 1;
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let string_end = |mut i: usize| {
        // i at the opening quote; returns the index after the closing quote
        i += 1;
        while i < b.len() && b[i] != b'"' {
            if b[i] == b'\\' {
                i += 1;
            }
            i += 1;
        }
        i + 1
    };
    loop {
        i = skip_ws(i);
        if i >= b.len() || b[i] != b'"' {
            return None;
        }
        let kend = string_end(i);
        let k: String = serde_json::from_str(&text[i..kend]).ok()?;
        i = skip_ws(kend);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let vstart = skip_ws(i + 1);
        // find the end of the value
        let mut j = vstart;
        let mut depth = 0i32;
        while j < b.len() {
            match b[j] {
                b'"' => {
                    j = string_end(j);
                    if depth == 0 {
                        break;
                    }
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    if depth == 0 {
                        j += 1;
                        break;
                    }
                }
                b',' | b'}' if depth == 0 => break,
                _ => {}
            }
            j += 1;
        }
        let vend = {
            let mut e = j;
            while e > vstart && b[e - 1].is_ascii_whitespace() {
                e -= 1;
            }
            e
        };
        if k == key {
            if &text[vstart..vend] == new {
                return None;
            }
            return Some(format!("{}{new}{}", &text[..vstart], &text[vend..]));
        }
        i = skip_ws(j);
        match b.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod member_tests {
    use super::*;

    #[test]
    fn sets_one_member_and_keeps_the_rest() {
        let t = r#"{"host": "10.0.0.9", "port": 7777, "nested": {"host": "x"}, "list": [1, "a,b"], "urlBase": ""}"#;
        let t2 = json_set_member(t, "host", "\"sabnzbd\"").unwrap();
        assert_eq!(
            t2,
            r#"{"host": "sabnzbd", "port": 7777, "nested": {"host": "x"}, "list": [1, "a,b"], "urlBase": ""}"#
        );
        let t3 = json_set_member(&t2, "port", "8080").unwrap();
        assert_eq!(
            t3,
            r#"{"host": "sabnzbd", "port": 8080, "nested": {"host": "x"}, "list": [1, "a,b"], "urlBase": ""}"#
        );
        assert_eq!(json_set_member(&t3, "port", "8080"), None, "unchanged");
        assert_eq!(json_set_member(t, "missing", "1"), None);
        let last = json_set_member(t, "urlBase", "\"/sab\"").unwrap();
        assert!(last.ends_with(r#""urlBase": "/sab"}"#), "{last}");
        let after_list = json_set_member(r#"{"list":[1,{"a":2}],"k":"v"}"#, "k", "\"w\"").unwrap();
        assert_eq!(after_list, r#"{"list":[1,{"a":2}],"k":"w"}"#);
        assert_eq!(json_set_member("[1]", "k", "1"), None);
    }
}
