//! Nagle's algorithm off on Postgres connections, which sqlx 0.9.0 leaves on.
//!
//! sqlx 0.9.0 stopped setting `TCP_NODELAY` on its TCP sockets (launchbadge/sqlx#4335; the fix,
//! #4336, is merged upstream but not released). Most of its traffic does not notice: a
//! statement goes out in one write and the client waits for the answer. A `COPY FROM STDIN`
//! does: its rows go out in one write and `CopyDone` in a second, small one, which Nagle's
//! algorithm holds until the rows are acknowledged, and the server, waiting for `CopyDone`,
//! acknowledges only when its delayed-ACK timer fires, about 40 ms later. Every ledger `COPY`
//! would wait that long (measured: 9,000 jobs/s instead of 24,000).
//!
//! sqlx exposes neither the socket nor a hook to configure it, and this workspace forbids
//! `unsafe`, so the option is set from outside: when the pool opens a connection
//! ([`after_connect`]), each TCP socket of this process connected to the server's port is
//! duplicated with `pidfd_getfd(2)` (Linux 5.6 or later; a process may always take its own
//! descriptors) and `TCP_NODELAY` is set through the duplicate, which shares the socket.
//! Where that is refused (a seccomp filter, as in Docker's default profile, or another OS),
//! the process remembers it and the ledger keeps to its single-write `INSERT`: [`copy_is_quick`]
//! says which.
//!
//! Remove this module once sqlx sets `TCP_NODELAY` itself again.

use std::sync::atomic::{AtomicU8, Ordering};

/// No pooled connection has been opened with [`after_connect`] yet.
const UNKNOWN: u8 = 0;
/// Every connection opened with [`after_connect`] so far has Nagle's algorithm off (or is not
/// TCP).
const OFF: u8 = 1;
/// At least one could not be changed: `COPY` would stall on it.
const STUCK: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether a `COPY` runs without Nagle's stall on this process's ledger connections: true
/// once connections were opened through [`after_connect`] and every one of them was set.
pub(crate) fn copy_is_quick() -> bool {
    STATE.load(Ordering::Acquire) == OFF
}

/// Called for each new pooled connection: turns Nagle's algorithm off on the process's
/// sockets to the server's port. Never fails the connection; a refusal is logged once and
/// turns `COPY` off for the process.
/// `server_port` is `None` for a Unix-domain socket, which has no Nagle.
pub(crate) fn after_connect(server_port: Option<u16>) {
    let Some(port) = server_port else {
        let _ = STATE.compare_exchange(UNKNOWN, OFF, Ordering::AcqRel, Ordering::Acquire);
        return;
    };
    match set_nodelay_to_port(port) {
        Ok(n_set) if n_set > 0 => {
            let _ = STATE.compare_exchange(UNKNOWN, OFF, Ordering::AcqRel, Ordering::Acquire);
        }
        outcome => {
            if STATE.swap(STUCK, Ordering::AcqRel) != STUCK {
                let why = match outcome {
                    Ok(_) => "no socket to the server's port was found".to_owned(),
                    Err(error) => error.to_string(),
                };
                tracing::info!(
                    reason = %why,
                    "could not turn Nagle's algorithm off on Postgres connections; \
                     ledger batches are written by INSERT, not COPY"
                );
            }
        }
    }
}

/// Sets `TCP_NODELAY` on every TCP socket of this process whose peer is on `port`; returns how
/// many were set.
#[cfg(target_os = "linux")]
fn set_nodelay_to_port(port: u16) -> std::io::Result<usize> {
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

    let pidfd = pidfd_open(getpid(), PidfdFlags::empty())?;
    let mut n_set = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        let duplicate = match pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()) {
            Ok(duplicate) => duplicate,
            // Closed since the directory was read (the listing's own descriptor, too).
            Err(rustix::io::Errno::BADF) => continue,
            Err(error) => return Err(error.into()),
        };
        let Ok(Some(peer)) = rustix::net::getpeername(&duplicate) else {
            continue; // not a connected socket
        };
        let Ok(peer) = std::net::SocketAddr::try_from(peer) else {
            continue; // not TCP/IP
        };
        if peer.port() == port {
            rustix::net::sockopt::set_tcp_nodelay(&duplicate, true)?;
            n_set += 1;
        }
    }
    Ok(n_set)
}

#[cfg(not(target_os = "linux"))]
fn set_nodelay_to_port(_port: u16) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "setting TCP_NODELAY from outside sqlx needs Linux's pidfd_getfd",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn nagle_is_turned_off_on_the_sockets_to_the_port_and_only_those() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to_port = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let to_other = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!to_port.nodelay().unwrap() && !to_other.nodelay().unwrap());

        let n_set = set_nodelay_to_port(listener.local_addr().unwrap().port()).unwrap();

        assert_eq!(n_set, 1);
        assert!(to_port.nodelay().unwrap(), "the socket to the port");
        assert!(!to_other.nodelay().unwrap(), "a socket to another port");
    }

    #[test]
    fn copy_is_quick_only_after_a_connection_was_set_and_never_again_after_one_was_not() {
        assert!(!copy_is_quick(), "no connection opened yet");
        after_connect(None); // a Unix-domain socket
        assert!(copy_is_quick());
        // A port no socket of this process is connected to: nothing could be set.
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        after_connect(Some(unused.local_addr().unwrap().port()));
        assert!(!copy_is_quick());
        after_connect(None);
        assert!(!copy_is_quick(), "one stuck connection is enough");
    }
}
