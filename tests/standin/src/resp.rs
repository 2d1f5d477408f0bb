//! A valkey/Redis stand-in: answers `PING` with `+PONG` over RESP, and the `redis-cli ping`
//! client the health command runs.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

/// The reply to one chunk of client input (inline or RESP array commands).
pub fn reply_to(input: &[u8]) -> &'static [u8] {
    let text = String::from_utf8_lossy(input).to_ascii_uppercase();
    if text.contains("PING") {
        b"+PONG\r\n"
    } else {
        b"+OK\r\n"
    }
}

/// Serves forever on `0.0.0.0:port`.
pub fn serve(port: u16) -> Result<()> {
    let listener = crate::http::listen(port)?;
    for conn in listener.incoming() {
        let Ok(mut stream) = conn else { continue };
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || stream.write_all(reply_to(&buf[..n])).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// `redis-cli [-h HOST] [-p PORT] ping` → prints `PONG`.
pub fn cli(args: &[String]) -> Result<()> {
    let (mut host, mut port) = ("127.0.0.1".to_string(), 6379u16);
    let mut it = args.iter();
    let mut command = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" => host = it.next().ok_or_else(|| anyhow!("-h needs a host"))?.clone(),
            "-p" => {
                let p = it.next().ok_or_else(|| anyhow!("-p needs a port"))?;
                port = p.parse().map_err(|_| anyhow!("-p {p:?}: not a port"))?;
            }
            other => command.push(other.to_string()),
        }
    }
    if command
        .iter()
        .map(|c| c.to_ascii_uppercase())
        .ne(["PING".to_string()])
    {
        bail!("the stand-in redis-cli only knows `ping`, got {command:?}");
    }
    let addr = (host.as_str(), port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow!("{host} has no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    let reply = String::from_utf8_lossy(&buf[..n]);
    let reply = reply.trim_end();
    if reply != "+PONG" {
        bail!("unexpected reply {reply:?}");
    }
    println!("PONG");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(reply_to(b"*1\r\n$4\r\nPING\r\n"), b"+PONG\r\n");
        assert_eq!(reply_to(b"ping\r\n"), b"+PONG\r\n");
        assert_eq!(reply_to(b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n"), b"+OK\r\n");
    }
}
