//! The control socket (`api=PATH`, `--api PATH`): port forwards added and removed while the
//! guest runs, counters and connections as JSON, in slirp4netns's request shapes.
//!
//! Owns: the listening socket, at most [`MAX_CLIENTS`] client connections, their line
//! framing and limits, and the replies (the forward table is `forwards.rs`'s). Runs inside
//! the loop: its descriptors sit in the same poller as libslirp's (added to each fill set,
//! answered after the wait), every socket is non-blocking, and it never waits on a client.
//! Never on the per-frame path: with `api` unset the loop does not reach this module.
//!
//! Framing: one JSON object per line, several per connection. A request that arrives
//! without its newline (slirp4netns's clients write one object and wait) is answered as
//! slirp4netns does: the reply, then the connection closes. A client that stops reading
//! holds one pending reply and nothing more: its requests are read again only when its reply
//! is gone.

pub mod client;
pub mod connections;
pub mod forwards;
pub mod request;
pub mod socket;

use crate::config::HostFwdRule;
use crate::event_loop::Host;
use crate::poller::{Poller, Readiness, Slot};
use crate::slirp::Stack;
use forwards::{Forward, ForwardTable};
use request::{Request, RequestError};
use serde_json::{json, Map, Value};
use socket::ControlSocket;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

/// Longest request line, newline excluded; a longer one gets an error and the connection
/// closes.
pub const MAX_LINE: usize = 64 * 1024;
/// Clients served at once; more are refused (one error line, then closed) and counted.
pub const MAX_CLIENTS: usize = 8;
/// Connections accepted per loop iteration: a flood of connects cannot hold the loop.
const ACCEPTS_PER_ITERATION: usize = 16;
/// How long the listener is not watched after `accept` found no descriptor or memory free: a
/// level-triggered listener that cannot be accepted from would spin the loop. libslirp caps
/// the loop's wait at 1 s, so the listener is watched again within about this long.
const ACCEPT_PAUSE_MS: i64 = 1000;

/// What the control socket counts (`api_*` in the stats line).
#[derive(Debug, Default, Clone, Copy)]
pub struct ApiCounters {
    /// Requests answered (errors included).
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Connections refused because [`MAX_CLIENTS`] were connected.
    pub clients_refused: u64,
    /// Times the listener was not watched for a while because `accept` found no descriptor.
    pub accept_pauses: u64,
}

struct Client {
    stream: UnixStream,
    /// Bytes read and not yet a whole request.
    input: Vec<u8>,
    /// Reply bytes not yet written (at most one reply: no request is read meanwhile).
    output: Vec<u8>,
    /// The client sent EOF: answer what is left, then close.
    eof: bool,
    /// Close once `output` is written.
    closing: bool,
    slot: Option<Slot>,
}

impl Client {
    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    fn wants_input(&self) -> bool {
        self.output.is_empty() && !self.closing && !self.eof
    }

    /// Write what the socket takes now; `false` when the client is gone.
    fn flush(&mut self) -> bool {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => return false,
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    fn reply(&mut self, reply: &Value) {
        // Serializing a Value cannot fail (no maps with non-string keys).
        let _ = serde_json::to_writer(&mut self.output, reply);
        self.output.push(b'\n');
    }
}

/// The control socket and its clients.
pub struct ApiServer {
    socket: ControlSocket,
    /// The guest address of a forward added without one (`dhcpstart`).
    dhcp_start: std::net::Ipv4Addr,
    listener_slot: Option<Slot>,
    /// Monotonic ms until which the listener is not watched (see [`ACCEPT_PAUSE_MS`]).
    listener_paused_until: Option<i64>,
    clients: Vec<Client>,
    forwards: ForwardTable,
    pub counters: ApiCounters,
}

/// The loop's view of what the API reads but does not own: the counters line.
pub trait StatsSource {
    fn stats_line(&mut self, stack: &mut Stack<Host<'_>>) -> String;
}

impl<F: FnMut(&mut Stack<Host<'_>>) -> String> StatsSource for F {
    fn stats_line(&mut self, stack: &mut Stack<Host<'_>>) -> String {
        self(stack)
    }
}

/// libslirp's version and ours, for `version`.
fn version_reply(stack: &Stack<Host<'_>>) -> Value {
    json!({"return": {
        "version": env!("CARGO_PKG_VERSION"),
        "name": "bhyve-slirp-helper",
        "libslirp": stack.version(),
    }})
}

fn error_reply(desc: impl std::fmt::Display) -> Value {
    json!({"error": {"desc": desc.to_string()}})
}

/// Every `key=value` of the stats line: numbers as JSON numbers, names (the poller) as strings.
pub fn stats_object(line: &str) -> Value {
    let mut out = Map::new();
    for field in line.split_whitespace() {
        if let Some((key, value)) = field.split_once('=') {
            let value = match value.parse::<u64>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::from(value),
            };
            out.insert(key.to_owned(), value);
        }
    }
    Value::Object(out)
}

impl ApiServer {
    /// Serve `socket`; `installed` are the config's rules as installed (ids 1..=N).
    /// `add_refused`: why adding a forward cannot work after the sandbox, if it cannot.
    /// `dhcp_start` is the guest address of a forward added without one (IPv4).
    pub fn new(
        socket: ControlSocket,
        installed: &[HostFwdRule],
        add_refused: Option<&'static str>,
        dhcp_start: std::net::Ipv4Addr,
    ) -> ApiServer {
        ApiServer {
            dhcp_start,
            socket,
            listener_slot: None,
            listener_paused_until: None,
            clients: Vec::with_capacity(MAX_CLIENTS),
            forwards: ForwardTable::new(installed, add_refused),
            counters: ApiCounters::default(),
        }
    }

    pub fn forwards(&self) -> &[Forward] {
        self.forwards.entries()
    }

    /// ` api_requests=… api_errors=… api_clients=… api_clients_refused=… api_accept_pauses=…`
    /// for the stats line.
    pub fn stats_fields(&self) -> String {
        format!(
            " api_requests={} api_errors={} api_clients={} api_clients_refused={} \
             api_accept_pauses={}",
            self.counters.requests,
            self.counters.errors,
            self.clients.len(),
            self.counters.clients_refused,
            self.counters.accept_pauses
        )
    }

    /// Add our descriptors to this iteration's fill set (after `slirp_pollfds_fill`).
    pub fn fill(&mut self, poller: &mut Poller) {
        // Watched at the client limit too: a client beyond it is refused at once rather than
        // left waiting in the backlog.
        let now_ms = crate::sys::monotonic_ns() / 1_000_000;
        if self
            .listener_paused_until
            .is_some_and(|until| now_ms >= until)
        {
            self.listener_paused_until = None;
        }
        self.listener_slot = match self.listener_paused_until {
            None => poller.add(self.socket.as_fd().as_raw_fd(), Readiness::IN),
            Some(_) => None,
        };
        for client in &mut self.clients {
            let mut events = Readiness::EMPTY;
            if client.wants_input() {
                events |= Readiness::IN;
            }
            if !client.output.is_empty() {
                events |= Readiness::OUT;
            }
            // Even with no interest, HUP and ERR are reported: a client that left is closed.
            client.slot = poller.add(client.fd(), events);
        }
    }

    /// After the wait: accept, read, answer, write, close. Never blocks.
    pub fn serve(&mut self, stack: &mut Stack<Host<'_>>, stats: &mut dyn StatsSource) {
        let listener_ready = self
            .listener_slot
            .is_some_and(|s| !stack.host().poller.revents(s).is_empty());
        // Clients first: one just accepted has nothing to say yet.
        let mut i = 0;
        while i < self.clients.len() {
            let revents = match self.clients[i].slot {
                Some(slot) => stack.host().poller.revents(slot),
                None => Readiness::EMPTY,
            };
            let keep = self.serve_client(i, revents, stack, stats);
            if keep {
                i += 1;
            } else {
                let client = self.clients.swap_remove(i);
                // The poller drops its registration while the descriptor is still open.
                stack.host().poller.closing(client.fd());
                drop(client);
            }
        }
        if listener_ready {
            self.accept(&mut stack.host().poller);
        }
    }

    fn accept(&mut self, poller: &mut Poller) {
        for _ in 0..ACCEPTS_PER_ITERATION {
            let stream = match self.socket.accept() {
                Ok(Some(stream)) => stream,
                Ok(None) => return,
                // No descriptor or memory for it: the listener stays readable, so it is not
                // watched for a while instead of spinning the loop.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    self.counters.accept_pauses += 1;
                    let now_ms = crate::sys::monotonic_ns() / 1_000_000;
                    self.listener_paused_until = Some(now_ms + ACCEPT_PAUSE_MS);
                    return;
                }
                // A client that left before the accept (ECONNABORTED): nothing to serve.
                Err(_) => return,
            };
            if self.clients.len() >= MAX_CLIENTS {
                self.counters.clients_refused += 1;
                let mut refused = Client {
                    stream,
                    input: Vec::new(),
                    output: Vec::new(),
                    eof: true,
                    closing: true,
                    slot: None,
                };
                refused.reply(&error_reply(format!(
                    "too many clients: {MAX_CLIENTS} are connected"
                )));
                // Best effort on a fresh socket's empty buffer; closed either way.
                let _ = refused.flush();
                continue;
            }
            poller.opened(stream.as_raw_fd());
            self.clients.push(Client {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                eof: false,
                closing: false,
                slot: None,
            });
        }
    }

    /// One client's turn; `false` when it is to be closed.
    fn serve_client(
        &mut self,
        index: usize,
        revents: Readiness,
        stack: &mut Stack<Host<'_>>,
        stats: &mut dyn StatsSource,
    ) -> bool {
        let client = &mut self.clients[index];
        if !client.output.is_empty() && !client.flush() {
            return false;
        }
        if client.wants_input()
            && revents.intersects(Readiness::IN | Readiness::HUP | Readiness::ERR)
        {
            // One read per iteration, never past the line limit (+1 to see it exceeded).
            let room = (MAX_LINE + 1).saturating_sub(client.input.len());
            let start = client.input.len();
            client.input.resize(start + room.max(1), 0);
            match client.stream.read(&mut client.input[start..]) {
                Ok(0) => {
                    client.input.truncate(start);
                    client.eof = true;
                }
                Ok(n) => client.input.truncate(start + n),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    client.input.truncate(start)
                }
                Err(_) => return false,
            }
        }
        // Answer whole requests while the reply side is free.
        while self.clients[index].output.is_empty() && !self.clients[index].closing {
            let Some(request) = self.next_request(index) else {
                break;
            };
            let reply = match request {
                Ok(bytes) => self.execute(&bytes, stack, stats),
                Err(e) => {
                    self.counters.requests += 1;
                    self.counters.errors += 1;
                    error_reply(e)
                }
            };
            let client = &mut self.clients[index];
            client.reply(&reply);
            if !client.flush() {
                return false;
            }
        }
        let client = &mut self.clients[index];
        if client.eof && client.input.is_empty() {
            client.closing = true;
        }
        if revents.intersects(Readiness::ERR) && client.output.is_empty() && client.input.is_empty()
        {
            return false;
        }
        !(client.closing && client.output.is_empty())
    }

    /// The next request of client `index`: `Some(Ok(bytes))`, `Some(Err(_))` for a framing
    /// error (the connection then closes after the reply), `None` to wait for more bytes.
    fn next_request(&mut self, index: usize) -> Option<Result<Vec<u8>, RequestError>> {
        let client = &mut self.clients[index];
        loop {
            if let Some(pos) = client.input.iter().position(|&b| b == b'\n') {
                if pos > MAX_LINE {
                    return Some(Err(too_long(client)));
                }
                let line: Vec<u8> = client.input.drain(..=pos).take(pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(Ok(line));
            }
            if client.input.len() > MAX_LINE {
                return Some(Err(too_long(client)));
            }
            if client.input.iter().all(u8::is_ascii_whitespace) {
                if client.eof {
                    client.input.clear();
                }
                return None;
            }
            // No newline: a slirp4netns client sends one object without it, then waits (or
            // half-closes). A complete object (or input that can never become one) is its
            // request; the connection closes after the reply, as slirp4netns's does. Parsed
            // only when it can be complete (ends with '}', or does not start as an object),
            // so a client trickling bytes does not make every read a 64 KiB parse.
            let text = client.input.trim_ascii();
            let may_be_whole = text.ends_with(b"}") || !text.starts_with(b"{");
            let complete = client.eof
                || (may_be_whole
                    && match serde_json::from_slice::<Value>(&client.input) {
                        Ok(_) => true,
                        Err(e) => !e.is_eof(),
                    });
            if !complete {
                return None;
            }
            client.closing = true;
            return Some(Ok(std::mem::take(&mut client.input)));
        }
    }

    /// Run one request and say how it went. Every refusal starts as slirp4netns's does
    /// (`bad request: COMMAND: …`), and where slirp4netns names the field or the libslirp call
    /// that failed, ours begins with its exact text and adds why, so scripts that match on
    /// slirp4netns's errors keep working.
    fn execute(
        &mut self,
        bytes: &[u8],
        stack: &mut Stack<Host<'_>>,
        stats: &mut dyn StatsSource,
    ) -> Value {
        self.counters.requests += 1;
        let reply = match request::parse(bytes) {
            Err(e) => Err(e.to_string()),
            Ok(Request::AddHostFwd(rule)) => self
                .forwards
                .add(rule.with_guest_default(self.dhcp_start), |r| {
                    stack.add_hostfwd(r)
                }),
            Ok(Request::RemoveHostFwd { id }) => {
                self.forwards.remove(id, |r| stack.remove_hostfwd(r))
            }
            Ok(Request::Stats) => {
                let mut line = stats.stats_line(stack);
                line.push_str(&self.stats_fields());
                Ok(stats_object(&line))
            }
            Ok(Request::Connections) => connections::parse(&stack.connection_info())
                .map(|rows| json!({ "connections": rows }))
                .map_err(|e| format!("connections: {e}")),
            Ok(Request::Version) => return version_reply(stack),
            Ok(Request::ListHostFwd) => {
                // slirp4netns answers this one without the "return" wrapper
                // (`{"entries":[…]}`), and scripts read `.entries`; the shape is
                // `{"return":{"entries":[…]}}`. Both, so that either works.
                let list = self.forwards.list();
                return json!({ "entries": list["entries"].clone(), "return": list });
            }
        };
        match reply {
            Ok(value) => json!({ "return": value }),
            Err(desc) => {
                self.counters.errors += 1;
                error_reply(desc)
            }
        }
    }
}

fn too_long(client: &mut Client) -> RequestError {
    client.input.clear();
    client.closing = true;
    RequestError(format!(
        "request line longer than {MAX_LINE} bytes; closing the connection"
    ))
}
