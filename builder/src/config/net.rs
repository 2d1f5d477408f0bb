//! Small, pure checks for names, addresses and paths used by the config.

use std::net::Ipv4Addr;

/// RFC 1123 host name (labels of letters, digits and dashes, 1–63 chars,
/// not starting or ending with a dash; at most 253 chars).
pub fn is_hostname(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_label)
}

/// One RFC 1123 label.
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A host name or an IPv4 address.
pub fn is_host(s: &str) -> bool {
    s.parse::<Ipv4Addr>().is_ok() || (is_hostname(s) && !looks_numeric(s))
}

fn looks_numeric(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Parses `a.b.c.d/len`.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, len) = s.split_once('/').ok_or_else(|| {
        "expected an IPv4 address with prefix length, e.g. 192.168.1.50/24".to_string()
    })?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| (8..=30).contains(l))
        .ok_or_else(|| format!("prefix length {len:?} must be a number from 8 to 30"))?;
    let mask = u32::MAX << (32 - u32::from(len));
    let host = u32::from(addr) & !mask;
    if host == 0 || host == !mask {
        return Err(format!(
            "{addr} is the network or broadcast address of /{len}; use a host address"
        ));
    }
    Ok((addr, len))
}

/// The address a rebuild's new VM uses beside the old one: `a.b.c.d` (or with ipv4's own
/// `/len`), a host address of the subnet other than the VM's address and the gateway.
pub fn rebuild_address(
    s: &str,
    address: Ipv4Addr,
    len: u8,
    gateway: Ipv4Addr,
) -> Result<Ipv4Addr, String> {
    let cidr = if s.contains('/') {
        s.to_owned()
    } else {
        format!("{s}/{len}")
    };
    let (a, l) = parse_cidr(&cidr)?;
    if l != len {
        return Err(format!("the prefix must be ipv4's /{len}"));
    }
    if a == address || a == gateway {
        return Err(
            "must differ from ipv4 and the gateway: the old VM keeps its address while the new one builds"
                .into(),
        );
    }
    if !in_subnet(a, address, len) {
        return Err(format!("outside the VM's subnet {address}/{len}"));
    }
    Ok(a)
}

/// Whether `ip` is inside `net/len`.
pub fn in_subnet(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX << (32 - u32::from(len));
    u32::from(ip) & mask == u32::from(net) & mask
}

/// An absolute path without `..`, `.` or empty components (a trailing `/` is not allowed
/// except for `/` itself).
pub fn is_clean_abs_path(s: &str) -> bool {
    s.starts_with('/')
        && (s == "/"
            || s[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."))
        && !s.chars().any(|c| c.is_control())
}

/// Whether `path` is `base` or below it, on component boundaries.
pub fn path_within(path: &str, base: &str) -> bool {
    path == base
        || base == "/"
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Parses a SHA-256 fingerprint: 32 bytes as hex, with or without `:` separators.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let hexdigits: String = s.chars().filter(|c| *c != ':').collect();
    let colons_ok = !s.contains(':') || s.split(':').all(|p| p.len() == 2);
    let bytes = hex::decode(&hexdigits).ok().filter(|_| colons_ok);
    match bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
        Some(b) => Ok(b),
        None => Err(
            "expected the certificate's SHA-256 fingerprint: 32 hex bytes like AB:CD:…:EF \
             (Proxmox shows it under Node → System → Certificates)"
                .into(),
        ),
    }
}

/// Checks an OpenSSH public key line: `type base64 [comment]`.
pub fn check_ssh_public_key(s: &str) -> Result<(), String> {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    let mut parts = s.split_whitespace();
    let (Some(kind), Some(body)) = (parts.next(), parts.next()) else {
        return Err("expected an OpenSSH public key: `ssh-ed25519 AAAA… comment`".into());
    };
    if !TYPES.contains(&kind) {
        return Err(format!("unknown SSH key type {kind:?}"));
    }
    if s.contains('\n')
        || !body.starts_with("AAAA")
        || body.len() < 60
        || !body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
    {
        return Err("the key body is not valid base64 key data".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(is_hostname("mms"));
        assert!(is_hostname("pve.example.lan"));
        assert!(!is_hostname("-mms"));
        assert!(!is_hostname("mms_1"));
        assert!(!is_hostname(""));
        assert!(!is_hostname(&"a".repeat(64)));
        assert!(is_host("192.168.1.10"));
        assert!(!is_host("192.168.1.300"));
    }

    #[test]
    fn cidr() {
        assert_eq!(
            parse_cidr("192.168.1.50/24"),
            Ok(("192.168.1.50".parse().unwrap(), 24))
        );
        assert!(parse_cidr("192.168.1.0/24").is_err());
        assert!(parse_cidr("192.168.1.255/24").is_err());
        assert!(parse_cidr("192.168.1.50").is_err());
        assert!(parse_cidr("192.168.1.50/33").is_err());
        assert!(in_subnet(
            "192.168.1.1".parse().unwrap(),
            "192.168.1.50".parse().unwrap(),
            24
        ));
        assert!(!in_subnet(
            "192.168.2.1".parse().unwrap(),
            "192.168.1.50".parse().unwrap(),
            24
        ));
    }

    #[test]
    fn paths() {
        assert!(is_clean_abs_path("/data/photos"));
        assert!(!is_clean_abs_path("data"));
        assert!(!is_clean_abs_path("/data/../etc"));
        assert!(!is_clean_abs_path("/data/"));
        assert!(path_within("/data/media", "/data"));
        assert!(!path_within("/data2", "/data"));
        assert!(path_within("/data", "/data"));
    }

    #[test]
    fn fingerprints() {
        let fp = (0..32)
            .map(|i| format!("{i:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert!(parse_fingerprint(&fp).is_ok());
        assert!(parse_fingerprint(&fp.replace(':', "")).is_ok());
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint(&fp.replacen("00", "0G", 1)).is_err());
    }
}
