//! UPIDs: `UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:` (pure).

/// A parsed task id. The task must be polled on `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    /// The full UPID string as the server sent it.
    pub raw: String,
    /// The node that runs the task.
    pub node: String,
    /// Task type, e.g. `qmclone`.
    pub task_type: String,
    /// Task object id (often a vmid; may be empty).
    pub id: String,
    /// Owner (`user@realm!tokenid` for tokens).
    pub user: String,
    /// Start time (seconds since the epoch).
    pub starttime: u64,
}

impl std::fmt::Display for Upid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

impl std::str::FromStr for Upid {
    type Err = String;

    /// Parses with the rules of pve-common's `UPID.pm` decoder.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not a Proxmox UPID: {s:?}");
        let fields: Vec<&str> = s.split(':').collect();
        if fields.len() != 9 || fields[0] != "UPID" || !fields[8].is_empty() {
            return Err(bad());
        }
        let node = fields[1];
        let node_ok = !node.is_empty()
            && node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !node.starts_with('-')
            && !node.ends_with('-');
        let hex = |f: &str, lens: &[usize]| {
            lens.contains(&f.len()) && f.bytes().all(|b| b.is_ascii_hexdigit())
        };
        let word = |f: &str| !f.contains(|c: char| c == '/' || c.is_whitespace());
        if !node_ok
            || !hex(fields[2], &[8])
            || !hex(fields[3], &[8, 9])
            || !hex(fields[4], &[8])
            || fields[5].is_empty()
            || !word(fields[5])
            || !word(fields[6])
            || fields[7].is_empty()
            || !word(fields[7])
        {
            return Err(bad());
        }
        Ok(Upid {
            raw: s.to_owned(),
            node: node.to_owned(),
            task_type: fields[5].to_owned(),
            id: fields[6].to_owned(),
            user: fields[7].to_owned(),
            starttime: u64::from_str_radix(fields[4], 16).map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_upid() {
        let u: Upid = "UPID:proxmox:0035D677:03AB00C3:66DC5987:qmclone:132:root@pam:"
            .parse()
            .unwrap();
        assert_eq!(u.node, "proxmox");
        assert_eq!(u.task_type, "qmclone");
        assert_eq!(u.id, "132");
        assert_eq!(u.starttime, 0x66DC5987);
        let t: Upid = "UPID:pve-2:00000001:123456789:66DC5987:imgcopy::mms@pve!build:"
            .parse()
            .unwrap();
        assert_eq!(t.id, "");
        assert_eq!(t.user, "mms@pve!build");
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "UPID:pve:1:2:3:a:b:c:",
            "UPID:pve:0035D677:03AB00C3:66DC5987:qmclone:132:root@pam",
            "UPID:-pve:0035D677:03AB00C3:66DC5987:qmclone:132:root@pam:",
            "UPID:pve:0035D677:03AB00C3:66DC5987::132:root@pam:",
        ] {
            assert!(s.parse::<Upid>().is_err(), "{s}");
        }
    }
}
