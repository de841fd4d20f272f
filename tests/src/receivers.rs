//! Receivers the alert tests start on 127.0.0.1: an HTTP server that records every request
//! (webhooks, Slack messages, heartbeat pings) and an SMTP server that records every message.
//!
//! Both are deliberately small and hand-written so a test controls them fully: a receiver can
//! be made slow (to kill a sender mid-delivery), made to fail, stopped (every connection
//! closed, new ones refused) and started again on the same port. The HTTP server answers one
//! request per connection (`Connection: close`), so no pooled connection outlives a stop.
//! The SMTP server speaks the part of RFC 5321 a client without TLS or AUTH uses: greeting,
//! EHLO/HELO, MAIL, RCPT, DATA (with dot-unstuffing), RSET, NOOP, QUIT.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// One request the HTTP receiver got.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path with its query.
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The value of header `name` (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// When the body is not JSON.
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body of {} {} is not JSON: {e}: {}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

#[derive(Debug, Default)]
struct HttpShared {
    requests: Mutex<Vec<HttpRequest>>,
    delay_ms: AtomicU64,
    status: AtomicU16,
}

/// An HTTP/1.1 server on 127.0.0.1 that records every request and answers `status` (200 by
/// default) after `delay`.
#[derive(Debug)]
pub struct HttpReceiver {
    addr: SocketAddr,
    shared: Arc<HttpShared>,
    tasks: Option<JoinSet<()>>,
}

impl HttpReceiver {
    /// Starts on a free port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the HTTP receiver");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(HttpShared {
            status: AtomicU16::new(200),
            ..HttpShared::default()
        });
        let mut receiver = Self {
            addr,
            shared,
            tasks: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&mut self, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        let shared = self.shared.clone();
        // Connections live in a set owned by the accept loop: aborting the loop drops the
        // set, which aborts every connection.
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                connections.spawn(async move {
                    let _ = handle_http(stream, &shared).await;
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// `http://127.0.0.1:PORT` + `path`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    #[must_use]
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.shared.requests.lock().expect("requests").clone()
    }

    /// The requests to `path` (exactly, query included).
    #[must_use]
    pub fn requests_to(&self, path: &str) -> Vec<HttpRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Answers only after `delay` from now on (the request is recorded on arrival).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Answers `status` from now on.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Stops: closes the listener and every open connection; connects are refused.
    pub fn stop(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.abort_all();
        }
    }

    /// Starts again on the same port.
    ///
    /// # Panics
    /// When the port cannot be bound again.
    pub async fn restart(&mut self) {
        self.stop();
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(error) if attempts < 50 => {
                    attempts += 1;
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("rebinding {}: {error}", self.addr),
            }
        };
        self.serve(listener);
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle_http(stream: TcpStream, shared: &HttpShared) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_owned();
            if name == "content-length" {
                content_length = value.parse().unwrap_or(0);
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).await?;
    shared.requests.lock().expect("requests").push(HttpRequest {
        method,
        path,
        headers,
        body,
    });
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = shared.status.load(Ordering::SeqCst);
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    );
    let mut stream = reader.into_inner();
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// One message the SMTP receiver accepted.
#[derive(Debug, Clone)]
pub struct SmtpMessage {
    /// The `MAIL FROM` address.
    pub from: String,
    /// The `RCPT TO` addresses.
    pub to: Vec<String>,
    /// The message (headers and body) after dot-unstuffing, CRLF line ends.
    pub data: String,
}

impl SmtpMessage {
    /// The value of header `name` (case-insensitive), unfolded.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = self.data.split_once("\r\n\r\n")?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(value) = value.as_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((key, rest)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
            {
                value = Some(rest.trim().to_owned());
            }
        }
        value
    }
}

/// A minimal SMTP server on 127.0.0.1 that records every message.
#[derive(Debug)]
pub struct SmtpReceiver {
    addr: SocketAddr,
    messages: Arc<Mutex<Vec<SmtpMessage>>>,
    tasks: JoinSet<()>,
}

impl SmtpReceiver {
    /// Starts on a free port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the SMTP receiver");
        let addr = listener.local_addr().expect("local address");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        let shared = messages.clone();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                connections.spawn(async move {
                    let _ = handle_smtp(stream, &shared).await;
                });
            }
        });
        Self {
            addr,
            messages,
            tasks,
        }
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every message so far.
    #[must_use]
    pub fn messages(&self) -> Vec<SmtpMessage> {
        self.messages.lock().expect("messages").clone()
    }
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn handle_smtp(stream: TcpStream, messages: &Mutex<Vec<SmtpMessage>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write
        .write_all(b"220 localhost ESMTP upkeep-test\r\n")
        .await?;
    let mut from = String::new();
    let mut to = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let verb = command
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                write
                    .write_all(b"250-localhost\r\n250 8BITMIME\r\n")
                    .await?
            }
            "HELO" | "NOOP" => write.write_all(b"250 OK\r\n").await?,
            "RSET" => {
                from.clear();
                to.clear();
                write.write_all(b"250 OK\r\n").await?;
            }
            "MAIL" => {
                from = address_of(&command);
                write.write_all(b"250 OK\r\n").await?;
            }
            "RCPT" => {
                to.push(address_of(&command));
                write.write_all(b"250 OK\r\n").await?;
            }
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    let line = line.strip_prefix('.').unwrap_or(&line);
                    data.push_str(line);
                }
                messages.lock().expect("messages").push(SmtpMessage {
                    from: std::mem::take(&mut from),
                    to: std::mem::take(&mut to),
                    data,
                });
                write.write_all(b"250 OK queued\r\n").await?;
            }
            "QUIT" => {
                write.write_all(b"221 Bye\r\n").await?;
                return Ok(());
            }
            _ => write.write_all(b"502 Command not implemented\r\n").await?,
        }
    }
}

/// `MAIL FROM:<a@b>` → `a@b`.
fn address_of(command: &str) -> String {
    match (command.find('<'), command.rfind('>')) {
        (Some(start), Some(end)) if end > start => command[start + 1..end].to_owned(),
        _ => String::new(),
    }
}
