//! Loopback addresses for listeners that tests start.
//!
//! A port found free by binding and releasing it can be taken by someone
//! else before the node binds it. On 127.0.0.1 that happens: concurrent
//! test processes probe there, and every outgoing connection takes its
//! ephemeral source port there. So each address gets its own loopback IP
//! (`127.A.B.C`, all of 127/8 is local on Linux), derived from the process
//! id and a counter: nobody else binds or connects from it.

use std::sync::atomic::{AtomicU32, Ordering};

/// A free port on `ip` (bound, then released).
pub fn free_port_on(ip: &str) -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((ip, 0))?;
    Ok(listener.local_addr()?.port())
}

/// The next loopback IP of this process: `127.A.B.C` with `A` from the
/// process id and `B.C` from a counter (62 500 addresses before it wraps).
fn next_loopback_ip() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!("127.{}.{}.{}", 1 + pid % 250, 1 + (n / 250) % 250, 1 + n % 250)
}

/// A free `ip:port` for one listener, on an IP of its own.
pub fn try_free_addr() -> std::io::Result<String> {
    let ip = next_loopback_ip();
    let port = free_port_on(&ip)?;
    Ok(format!("{ip}:{port}"))
}

/// [`try_free_addr`], panicking (for tests) if no port can be bound.
pub fn free_addr() -> String {
    try_free_addr().unwrap_or_else(|e| panic!("cannot bind an ephemeral loopback port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_has_its_own_ip_and_can_be_bound() {
        let a = free_addr();
        let b = free_addr();
        let ip = |s: &str| s.rsplit_once(':').map(|(ip, _)| ip.to_owned()).unwrap();
        assert_ne!(ip(&a), ip(&b));
        assert!(ip(&a).starts_with("127."));
        std::net::TcpListener::bind(&a).unwrap();
        std::net::TcpListener::bind(&b).unwrap();
    }
}
