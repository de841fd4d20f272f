//! A TCP proxy the test controls, to cut a network path (workers ↔ Redis) without touching
//! either end.
//!
//! [`TcpProxy`] listens on a free port on 127.0.0.1 and forwards every connection to an
//! upstream address. The test switches its [`ProxyMode`]:
//! - [`ProxyMode::Forward`]: bytes flow both ways.
//! - [`ProxyMode::Blackhole`]: a partition. Open connections stop forwarding (nothing is read
//!   or written, so requests hang until the client's own timeout), and new connections are
//!   accepted but never connected upstream. When the partition ends, every connection held
//!   through it is closed, as TCP would after its retransmissions gave up; clients reconnect.
//! - [`ProxyMode::Refuse`]: open connections are closed and new ones are closed at once
//!   (the client sees a reset right away instead of a hang).
//!
//! [`TcpProxy::cut_all`] closes every open connection without changing the mode.
//! [`TcpProxy::strand_all`] makes every open connection go silent for good, without closing
//! it, while new connections are forwarded: what a NAT or firewall that forgets a connection
//! does (half-open sockets that only a timeout can detect).
//!
//! The proxy runs on a thread of its own with its own single-threaded Tokio runtime, so it keeps
//! forwarding while a test blocks its own thread, and its control methods are plain blocking
//! calls like the other helpers of this crate.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::thread::JoinHandle;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward bytes both ways.
    Forward,
    /// Hold every connection open and forward nothing (a partition).
    Blackhole,
    /// Close every connection at once.
    Refuse,
}

/// A forwarding TCP proxy on 127.0.0.1; dropping it closes every connection and stops it.
pub struct TcpProxy {
    port: u16,
    control: watch::Sender<State>,
    /// The proxy's thread; joined on drop.
    thread: Option<JoinHandle<()>>,
}

/// What every connection task watches: the mode, and a generation bumped by `cut_all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    mode: ProxyMode,
    generation: u64,
    /// Bumped by `strand_all`: connections opened before go silent until the proxy stops.
    stranded: u64,
    stopping: bool,
}

impl TcpProxy {
    /// Starts a proxy in [`ProxyMode::Forward`] to `upstream`.
    ///
    /// # Errors
    /// Fails when no port can be bound or the proxy's runtime cannot be built.
    pub fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding the proxy's port on 127.0.0.1")?;
        listener
            .set_nonblocking(true)
            .context("making the proxy's listener non-blocking")?;
        let port = listener.local_addr().context("proxy address")?.port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the proxy's runtime")?;
        let (control, state) = watch::channel(State {
            mode: ProxyMode::Forward,
            generation: 0,
            stranded: 0,
            stopping: false,
        });
        let thread = std::thread::Builder::new()
            .name(format!("tcp-proxy-{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    accept_loop(listener, upstream, state).await;
                });
            })
            .context("starting the proxy's thread")?;
        Ok(Self {
            port,
            control,
            thread: Some(thread),
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`, for a proxy in front of Redis.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        self.control.borrow().mode
    }

    /// Switches the mode; see [`ProxyMode`].
    pub fn set_mode(&self, mode: ProxyMode) {
        self.control.send_modify(|state| state.mode = mode);
    }

    /// Closes every open connection; new ones are handled according to the mode.
    pub fn cut_all(&self) {
        self.control
            .send_modify(|state| state.generation = state.generation.wrapping_add(1));
    }

    /// Every open connection stops forwarding for good but stays open (half-open, as after a
    /// NAT forgot it); new connections are handled according to the mode.
    pub fn strand_all(&self) {
        self.control
            .send_modify(|state| state.stranded = state.stranded.wrapping_add(1));
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.control.send_modify(|state| state.stopping = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mut state: watch::Receiver<State>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    connections.spawn(serve(client, upstream, state.clone()));
                }
            }
            changed = state.changed() => {
                if changed.is_err() || state.borrow().stopping {
                    break;
                }
            }
            // Reap finished connections so the set does not grow with every reconnect.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// One client connection: forwards until either side closes or the control says otherwise.
async fn serve(mut client: TcpStream, upstream: SocketAddr, mut state: watch::Receiver<State>) {
    let State {
        mode,
        generation,
        stranded,
        ..
    } = *state.borrow_and_update();
    match mode {
        ProxyMode::Refuse => return,
        ProxyMode::Blackhole => {
            hold_through_partition(&mut state, generation).await;
            return;
        }
        ProxyMode::Forward => {}
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let mut upward = vec![0u8; 16 * 1024];
    let mut downward = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = client_read.read(&mut upward) => {
                let Ok(n) = read else { return };
                if n == 0 || server_write.write_all(&upward[..n]).await.is_err() {
                    return;
                }
            }
            read = server_read.read(&mut downward) => {
                let Ok(n) = read else { return };
                if n == 0 || client_write.write_all(&downward[..n]).await.is_err() {
                    return;
                }
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *state.borrow_and_update();
                if now.stopping || now.generation != generation || now.mode == ProxyMode::Refuse {
                    return;
                }
                if now.stranded != stranded {
                    hold_until_stopped(&mut state).await;
                    return;
                }
                if now.mode == ProxyMode::Blackhole {
                    hold_through_partition(&mut state, generation).await;
                    return;
                }
            }
        }
    }
}

/// Holds a stranded connection open, forwarding nothing, until the proxy stops.
async fn hold_until_stopped(state: &mut watch::Receiver<State>) {
    while !state.borrow_and_update().stopping {
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// Holds a connection (by not returning) while the partition lasts, forwarding nothing.
async fn hold_through_partition(state: &mut watch::Receiver<State>, generation: u64) {
    loop {
        let now = *state.borrow_and_update();
        if now.stopping || now.generation != generation || now.mode != ProxyMode::Blackhole {
            return;
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream as StdTcpStream;
    use std::time::Duration;

    use super::*;

    fn echo_server() -> SocketAddr {
        let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let address = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        address
    }

    fn roundtrip(port: u16) -> std::io::Result<Vec<u8>> {
        let mut stream = StdTcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        stream.set_read_timeout(Some(Duration::from_millis(300)))?;
        stream.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf)?;
        Ok(buf.to_vec())
    }

    #[test]
    fn a_proxy_forwards_then_blackholes_then_forwards_again() {
        let proxy = TcpProxy::start(echo_server()).expect("proxy starts");
        assert_eq!(roundtrip(proxy.port()).expect("forwarded"), b"ping");

        proxy.set_mode(ProxyMode::Blackhole);
        assert!(
            roundtrip(proxy.port()).is_err(),
            "nothing passes a partition"
        );

        proxy.set_mode(ProxyMode::Refuse);
        assert!(roundtrip(proxy.port()).is_err(), "a refusing proxy closes");

        proxy.set_mode(ProxyMode::Forward);
        assert_eq!(roundtrip(proxy.port()).expect("healed"), b"ping");
    }

    #[test]
    fn a_stranded_connection_goes_silent_but_stays_open_while_new_ones_are_forwarded() {
        let proxy = TcpProxy::start(echo_server()).expect("proxy starts");
        let mut old = StdTcpStream::connect((Ipv4Addr::LOCALHOST, proxy.port())).expect("connect");
        old.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut buf = [0u8; 4];
        old.write_all(b"ping").expect("write");
        old.read_exact(&mut buf).expect("echo before stranding");

        proxy.strand_all();
        std::thread::sleep(Duration::from_millis(50));

        old.write_all(b"ping")
            .expect("the stranded socket still takes writes");
        let error = old
            .read_exact(&mut buf)
            .expect_err("no reply on a stranded socket");
        assert!(
            matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "silence, not a close: {error:?}"
        );
        assert_eq!(
            roundtrip(proxy.port()).expect("new connections forward"),
            b"ping"
        );
    }

    #[test]
    fn an_open_connection_stops_forwarding_during_a_partition_and_is_closed_after_it() {
        let proxy = TcpProxy::start(echo_server()).expect("proxy starts");
        let mut stream =
            StdTcpStream::connect((Ipv4Addr::LOCALHOST, proxy.port())).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut buf = [0u8; 4];
        stream.write_all(b"ping").expect("write");
        stream
            .read_exact(&mut buf)
            .expect("echo before the partition");

        proxy.set_mode(ProxyMode::Blackhole);
        std::thread::sleep(Duration::from_millis(50));
        stream
            .write_all(b"ping")
            .expect("the socket still accepts bytes");
        assert!(
            stream.read_exact(&mut buf).is_err(),
            "no echo during the partition"
        );

        proxy.set_mode(ProxyMode::Forward);
        std::thread::sleep(Duration::from_millis(50));
        let n = stream.read(&mut buf).unwrap_or(0);
        assert_eq!(
            n, 0,
            "the held connection is closed when the partition ends"
        );
    }
}
