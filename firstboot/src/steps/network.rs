//! Taking the site's static address at cut-over.
//!
//! A rebuild of a site with a static address runs on a temporary one (DHCP or
//! `vm.network.rebuild_ipv4`) while the old VM still holds the site's address. Once the old
//! VM is stopped, `mms-firstboot cutover` moves the NIC of the default route to the static
//! address with whichever network service the image runs: NetworkManager (Fedora: the
//! connection cloud-init wrote is modified, so the change persists) or systemd-networkd
//! (a `.network` file that sorts before cloud-init's).
//!
//! Pure: [`networkd_unit`], [`nmcli_modify_args`] and the parsers of `ip -j`. I/O: [`apply`].

use crate::config::StaticAddress;
use crate::exec;
use anyhow::{Context, Result, anyhow, bail};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The systemd-networkd file written at cut-over; `05-` sorts before cloud-init's
/// `10-cloud-init-<nic>.network`, and networkd uses the first file that matches.
pub const NETWORKD_FILE: &str = "/etc/systemd/network/05-mms-static.network";

/// How long the address may take to appear on the NIC.
const SETTLE: Duration = Duration::from_secs(60);

/// The network service that owns the NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    /// NetworkManager (`nmcli`).
    NetworkManager,
    /// systemd-networkd (`networkctl`).
    Networkd,
}

/// The systemd-networkd unit for `nic` with the static address.
pub fn networkd_unit(nic: &str, n: &StaticAddress) -> String {
    let mut s = format!(
        "# Written by mms-firstboot cutover: the site's static address (vm.network).\n\
         [Match]\nName={nic}\n\n[Network]\nDHCP=no\nAddress={}/{}\nGateway={}\n",
        n.address, n.prefix, n.gateway
    );
    for d in &n.dns {
        s.push_str(&format!("DNS={d}\n"));
    }
    s
}

/// `nmcli` arguments that switch connection `conn` to the static address. IPv6 DNS servers
/// go into `ipv6.dns` (`ipv4.dns` takes IPv4 addresses only).
pub fn nmcli_modify_args(conn: &str, n: &StaticAddress) -> Vec<String> {
    let list = |v6: bool| {
        n.dns
            .iter()
            .filter(|d| d.is_ipv6() == v6)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut args: Vec<String> = [
        "connection",
        "modify",
        conn,
        "ipv4.method",
        "manual",
        "ipv4.addresses",
        &format!("{}/{}", n.address, n.prefix),
        "ipv4.gateway",
        &n.gateway.to_string(),
        "ipv4.dns",
        &list(false),
        "ipv4.ignore-auto-dns",
        "yes",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let v6 = list(true);
    if !v6.is_empty() {
        args.extend(["ipv6.dns".to_owned(), v6]);
    }
    args
}

/// The NIC of the (first) default route, from `ip -j route show default`.
pub fn default_route_nic(ip_json: &str) -> Result<String> {
    let routes: Vec<serde_json::Value> = serde_json::from_str(ip_json)
        .with_context(|| format!("`ip -j route show default` printed no JSON list: {ip_json:?}"))?;
    routes
        .iter()
        .find_map(|r| r.get("dev").and_then(serde_json::Value::as_str))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no default route: cannot tell which NIC takes the address"))
}

/// Whether `ip -j -4 addr show dev NIC` lists the address as a static (not dynamic) one.
pub fn has_static_address(ip_json: &str, n: &StaticAddress) -> bool {
    let Ok(links) = serde_json::from_str::<Vec<serde_json::Value>>(ip_json) else {
        return false;
    };
    let want = n.address.to_string();
    links
        .iter()
        .filter_map(|l| l.get("addr_info").and_then(serde_json::Value::as_array))
        .flatten()
        .any(|a| {
            a.get("local").and_then(serde_json::Value::as_str) == Some(want.as_str())
                && a.get("prefixlen").and_then(serde_json::Value::as_u64)
                    == Some(u64::from(n.prefix))
                && a.get("dynamic").and_then(serde_json::Value::as_bool) != Some(true)
        })
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = exec::run(Command::new(program).args(args), Duration::from_secs(60))?
        .checked(format!("{program} {}", args.join(" ")))?;
    Ok(out.stdout_text())
}

fn active(unit: &str) -> bool {
    exec::run(
        Command::new("systemctl").args(["is-active", "--quiet", unit]),
        Duration::from_secs(30),
    )
    .is_ok_and(|o| o.status.success())
}

/// Which network service runs.
pub fn manager() -> Result<Manager> {
    if active("NetworkManager.service") {
        Ok(Manager::NetworkManager)
    } else if active("systemd-networkd.service") {
        Ok(Manager::Networkd)
    } else {
        bail!("neither NetworkManager nor systemd-networkd is active")
    }
}

/// Moves the NIC of the default route to `n` and waits until the address is on it.
pub fn apply(n: &StaticAddress) -> Result<()> {
    let want = format!("{}/{}", n.address, n.prefix);
    let nic = default_route_nic(&run("ip", &["-j", "route", "show", "default"])?)?;
    let how = manager().with_context(|| format!("cannot take the static address {want}"))?;
    match how {
        Manager::NetworkManager => {
            let conn = run(
                "nmcli",
                &["-g", "GENERAL.CONNECTION", "device", "show", &nic],
            )?;
            let conn = conn.trim();
            if conn.is_empty() {
                bail!("NetworkManager has no connection on {nic}: cannot take {want}");
            }
            let args = nmcli_modify_args(conn, n);
            run(
                "nmcli",
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )?;
            run("nmcli", &["connection", "up", conn])?;
        }
        Manager::Networkd => {
            crate::fsutil::write_atomic(
                Path::new(NETWORKD_FILE),
                networkd_unit(&nic, n).as_bytes(),
                0o644,
            )
            .with_context(|| format!("writing {NETWORKD_FILE}"))?;
            run("networkctl", &["reload"])?;
            run("networkctl", &["reconfigure", &nic])?;
        }
    }
    let start = Instant::now();
    loop {
        let now = run("ip", &["-j", "-4", "addr", "show", "dev", &nic])?;
        if has_static_address(&now, n) {
            return Ok(());
        }
        if start.elapsed() > SETTLE {
            bail!(
                "{nic} does not have {want} {} s after {how:?} was told to take it",
                SETTLE.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> StaticAddress {
        StaticAddress {
            address: "192.168.1.50".parse().unwrap(),
            prefix: 24,
            gateway: "192.168.1.1".parse().unwrap(),
            dns: vec!["192.168.1.1".parse().unwrap(), "9.9.9.9".parse().unwrap()],
        }
    }

    #[test]
    fn networkd_unit_matches_the_nic_and_turns_dhcp_off() {
        assert_eq!(
            networkd_unit("ens18", &net()),
            "# Written by mms-firstboot cutover: the site's static address (vm.network).\n\
             [Match]\nName=ens18\n\n[Network]\nDHCP=no\nAddress=192.168.1.50/24\n\
             Gateway=192.168.1.1\nDNS=192.168.1.1\nDNS=9.9.9.9\n"
        );
    }

    #[test]
    fn nmcli_switches_the_connection_to_manual() {
        assert_eq!(
            nmcli_modify_args("cloud-init eth0", &net()).join("|"),
            "connection|modify|cloud-init eth0|ipv4.method|manual|ipv4.addresses|192.168.1.50/24|\
             ipv4.gateway|192.168.1.1|ipv4.dns|192.168.1.1,9.9.9.9|ipv4.ignore-auto-dns|yes"
        );
        let mut n = net();
        n.dns.push("2606:4700:4700::1111".parse().unwrap());
        let args = nmcli_modify_args("c", &n);
        assert_eq!(args[10], "192.168.1.1,9.9.9.9");
        assert_eq!(args[13..], ["ipv6.dns", "2606:4700:4700::1111"]);
    }

    #[test]
    fn parses_ip_json() {
        // The shape iproute2 prints (checked with iproute2 6.1: an address with a limited
        // lifetime, as a DHCP lease has, carries "dynamic":true).
        let routes = r#"[{"dst":"default","gateway":"10.0.2.2","dev":"ens3","protocol":"dhcp","prefsrc":"10.0.2.15","metric":1024,"flags":[]}]"#;
        assert_eq!(default_route_nic(routes).unwrap(), "ens3");
        assert!(default_route_nic("[]").is_err());
        assert!(default_route_nic("garbage").is_err());
        let dynamic = r#"[{"ifindex":2,"ifname":"ens3","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"fq_codel","operstate":"UP","group":"default","txqlen":1000,"addr_info":[{"family":"inet","local":"192.168.1.50","prefixlen":24,"metric":1024,"broadcast":"192.168.1.255","scope":"global","dynamic":true,"label":"ens3","valid_life_time":86391,"preferred_life_time":86391}]}]"#;
        assert!(!has_static_address(dynamic, &net()));
        let fixed = dynamic.replace(r#""dynamic":true,"#, "");
        assert!(has_static_address(&fixed, &net()));
        let other_prefix = fixed.replace(r#""prefixlen":24"#, r#""prefixlen":16"#);
        assert!(!has_static_address(&other_prefix, &net()));
        assert!(!has_static_address("[]", &net()));
    }
}
