//! Proxmox form encoding (pure).
//!
//! `pveproxy` splits a form body on `&` **and** `;`, then each pair on `=` keeping
//! only the first two fields, and decodes `+` as a space. So every byte outside
//! the RFC 3986 unreserved set is percent-encoded here (`=`, `;`, `+`, `,`, `%`, …),
//! booleans are `0`/`1`, and `sshkeys` is percent-encoded once more before the
//! form encoding (reference/proxmox-api.md §1, §4.6).

/// An ordered list of form fields, encoded the way Proxmox decodes them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl std::fmt::Debug for Form {
    // Values may carry secrets (agent file-write content): print the keys only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.pairs.iter().map(|(k, _)| k))
            .finish()
    }
}

impl Form {
    /// An empty form.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a string field.
    pub fn text(mut self, key: &str, value: impl Into<String>) -> Self {
        self.pairs.push((key.to_owned(), value.into()));
        self
    }

    /// Adds an integer field.
    pub fn int(self, key: &str, value: i64) -> Self {
        self.text(key, value.to_string())
    }

    /// Adds a boolean field as `0`/`1` (Proxmox rejects `true`/`false` in forms).
    pub fn bool(self, key: &str, value: bool) -> Self {
        self.text(key, if value { "1" } else { "0" })
    }

    /// Adds an `sshkeys` value: the keys joined by newlines and percent-encoded
    /// once here (`%20` for spaces, never `+`); the form encoding adds the second layer.
    pub fn sshkeys(self, key: &str, keys: &[String]) -> Self {
        let joined = keys.join("\n");
        self.text(key, encode_urlencoded_format(&joined))
    }

    /// True when no field was added.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The fields in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The `application/x-www-form-urlencoded` body (also used as a query string).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(&percent_encode(k));
            out.push('=');
            out.push_str(&percent_encode(v));
        }
        out
    }
}

/// Percent-encodes every byte outside `A-Za-z0-9-._~` (RFC 3986 unreserved).
pub fn percent_encode(s: &str) -> String {
    encode_keeping(s, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
    })
}

/// Encodes a value for Proxmox's `urlencoded` format (`^[-%a-zA-Z0-9_.!~*'()]*$`).
pub fn encode_urlencoded_format(s: &str) -> String {
    encode_keeping(s, |b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            )
    })
}

fn encode_keeping(s: &str, keep: impl Fn(u8) -> bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`); `None` on a
/// malformed escape or invalid UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_bytes_are_encoded() {
        let f = Form::new()
            .text("size", "+59G")
            .text("boot", "order=scsi0;ide2")
            .text("net0", "virtio,bridge=vmbr0")
            .bool("full", true)
            .bool("purge", false)
            .int("newid", 101);
        assert_eq!(
            f.encode(),
            "size=%2B59G&boot=order%3Dscsi0%3Bide2&net0=virtio%2Cbridge%3Dvmbr0&full=1&purge=0&newid=101"
        );
    }

    #[test]
    fn sshkeys_are_double_encoded() {
        let keys = vec![
            "ssh-ed25519 AAAA+b/c= me@x".to_owned(),
            "ssh-rsa BBB k".to_owned(),
        ];
        let f = Form::new().sshkeys("sshkeys", &keys);
        assert_eq!(
            f.pairs()[0].1,
            "ssh-ed25519%20AAAA%2Bb%2Fc%3D%20me%40x%0Assh-rsa%20BBB%20k"
        );
        assert_eq!(
            f.encode(),
            "sshkeys=ssh-ed25519%2520AAAA%252Bb%252Fc%253D%2520me%2540x%250Assh-rsa%2520BBB%2520k"
        );
        let once = percent_decode(&f.encode()["sshkeys=".len()..], true).unwrap();
        assert_eq!(percent_decode(&once, false).unwrap(), keys.join("\n"));
    }

    #[test]
    fn debug_hides_values() {
        let f = Form::new().text("content", "hunter2");
        assert!(!format!("{f:?}").contains("hunter2"));
    }

    proptest::proptest! {
        #[test]
        fn encode_decode_round_trip(k in "[a-z0-9-]{1,8}", v in "\\PC{0,40}") {
            let f = Form::new().text(&k, v.clone());
            let enc = f.encode();
            let (ek, ev) = enc.split_once('=').unwrap();
            proptest::prop_assert!(!ev.contains(['=', ';', '&', '+', ' ']));
            proptest::prop_assert_eq!(percent_decode(ek, true).unwrap(), k);
            proptest::prop_assert_eq!(percent_decode(ev, true).unwrap(), v);
        }
    }
}
