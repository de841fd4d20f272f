//! Free TCP ports on 127.0.0.1 for servers that cannot be told to bind port 0.
//!
//! `redis-server` and `postgres` take a port number, not a listener, so a port is picked
//! by binding port 0 and dropping the listener. Another process can take the port in
//! between; the private instances retry with a new port when their server reports that
//! the address is in use.

use std::net::{Ipv4Addr, TcpListener};

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// # Panics
/// Panics when the operating system refuses to bind an ephemeral port on 127.0.0.1,
/// which means the machine cannot run the tests at all.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("binding an ephemeral port on 127.0.0.1 should always work");
    listener
        .local_addr()
        .expect("a bound listener has a local address")
        .port()
}

/// Whether a server's log says it could not bind its port, so a retry on another port
/// may succeed.
pub(crate) fn log_reports_port_in_use(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("could not bind")
}
