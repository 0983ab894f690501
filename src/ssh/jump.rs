//! ProxyJump, as OpenSSH does it: one authenticated SSH connection to the
//! bastion (its host key verified like any host's), carrying one direct-tcpip
//! channel per target host. Each target gets its own SSH session, with its own
//! host key check and authentication, over its channel: the session talks to
//! one end of a local socket pair, and one thread per bastion pumps bytes
//! between the other ends and the channels (libssh2 sessions are not to be
//! driven from several threads at once).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use ssh2::{Channel, Session};

use super::session::{handshake, set_user_timeout, tcp_connect};
use super::ConnectOptions;
use crate::hosts::SshTarget;

/// libssh2's "would block" (LIBSSH2_ERROR_EAGAIN).
const EAGAIN: i32 = -37;

/// A tunnel asked of a bastion: the target's address, and where the local end goes.
struct Request {
    host: String,
    port: u16,
    reply: Sender<Result<UnixStream>>,
}

/// One connection to a bastion, shared by every target behind it.
pub struct Bastion {
    requests: Mutex<Sender<Request>>,
}

/// The bastions of this run, by `user@host:port`: each is connected to once.
fn bastions() -> &'static Mutex<HashMap<String, Arc<Bastion>>> {
    static BASTIONS: OnceLock<Mutex<HashMap<String, Arc<Bastion>>>> = OnceLock::new();
    BASTIONS.get_or_init(Default::default)
}

impl Bastion {
    /// The bastion for `jump`, connecting to it the first time it is asked for.
    pub fn get(jump: &SshTarget, options: &ConnectOptions) -> Result<Arc<Bastion>> {
        let key = format!("{}@{}:{}", jump.user, jump.hostname, jump.port);
        // Held while connecting: the hosts behind one bastion wait for its one connection.
        let mut all = bastions().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bastion) = all.get(&key) {
            return Ok(bastion.clone());
        }
        let socket = tcp_connect(&jump.hostname, jump.port, options.connect_timeout)
            .with_context(|| format!("the bastion {key}"))?;
        set_user_timeout(&socket, options.keepalive * 3);
        let stream = socket.try_clone().context("cloning the socket")?;
        let session =
            handshake(stream, jump, options).with_context(|| format!("the bastion {key}"))?;
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || pump(session, socket, receiver));
        let bastion = Arc::new(Bastion {
            requests: Mutex::new(sender),
        });
        all.insert(key, bastion.clone());
        Ok(bastion)
    }

    /// A stream to `host:port` as the bastion reaches it.
    pub fn tunnel(&self, host: &str, port: u16, timeout: Duration) -> Result<UnixStream> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Request {
                host: host.to_string(),
                port,
                reply,
            })
            .map_err(|_| anyhow!("the connection to the bastion is closed"))?;
        answer.recv_timeout(timeout).map_err(|_| {
            anyhow!(
                "the bastion did not open a channel to {host}:{port} within {}s",
                timeout.as_secs()
            )
        })?
    }
}

/// One target's channel and its local socket, with what is in flight each way.
struct Link {
    channel: Channel,
    local: UnixStream,
    to_remote: Vec<u8>,
    to_local: Vec<u8>,
    local_eof: bool,
    eof_sent: bool,
    remote_eof: bool,
    closed: bool,
}

/// The bastion's thread: opens channels, moves bytes, until every link and
/// every requester is gone.
fn pump(session: Session, socket: std::net::TcpStream, requests: Receiver<Request>) {
    session.set_blocking(false);
    let mut opening: Vec<Request> = Vec::new();
    let mut links: Vec<Link> = Vec::new();
    let mut senders_gone = false;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        loop {
            match requests.try_recv() {
                Ok(request) => opening.push(request),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    senders_gone = true;
                    break;
                }
            }
        }
        opening.retain(|request| {
            match session.channel_direct_tcpip(&request.host, request.port, None) {
                Ok(channel) => {
                    let linked = UnixStream::pair().and_then(|(ours, theirs)| {
                        ours.set_nonblocking(true)?;
                        Ok((ours, theirs))
                    });
                    match linked {
                        Ok((ours, theirs)) => {
                            links.push(Link {
                                channel,
                                local: ours,
                                to_remote: Vec::new(),
                                to_local: Vec::new(),
                                local_eof: false,
                                eof_sent: false,
                                remote_eof: false,
                                closed: false,
                            });
                            let _ = request.reply.send(Ok(theirs));
                        }
                        Err(err) => {
                            let _ = request
                                .reply
                                .send(Err(anyhow!("a local socket pair: {err}")));
                        }
                    }
                    false
                }
                Err(err) if err.code() == ssh2::ErrorCode::Session(EAGAIN) => true,
                Err(err) => {
                    let _ = request.reply.send(Err(anyhow!(
                        "the bastion could not reach {}:{}: {}",
                        request.host,
                        request.port,
                        err.message()
                    )));
                    false
                }
            }
        });
        let _ = session.keepalive_send();
        for link in &mut links {
            move_bytes(link, &mut buf);
        }
        links.retain(|link| !link.closed);
        if senders_gone && links.is_empty() && opening.is_empty() {
            return;
        }
        wait(&socket, &links);
    }
}

/// Moves what can move without blocking, both ways, and notes EOFs.
fn move_bytes(link: &mut Link, buf: &mut [u8]) {
    if link.to_remote.is_empty() && !link.local_eof {
        match link.local.read(buf) {
            Ok(0) => link.local_eof = true,
            Ok(n) => link.to_remote.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => link.closed = true,
        }
    }
    if !link.to_remote.is_empty() {
        match link.channel.write(&link.to_remote) {
            Ok(n) => {
                link.to_remote.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => link.closed = true,
        }
    }
    if link.local_eof
        && link.to_remote.is_empty()
        && !link.eof_sent
        && link.channel.send_eof().is_ok()
    {
        link.eof_sent = true;
    }
    if link.to_local.is_empty() && !link.remote_eof {
        match link.channel.read(buf) {
            Ok(0) if link.channel.eof() => link.remote_eof = true,
            Ok(0) => {}
            Ok(n) => link.to_local.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => link.closed = true,
        }
    }
    if !link.to_local.is_empty() {
        match link.local.write(&link.to_local) {
            Ok(n) => {
                link.to_local.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => link.closed = true,
        }
    }
    if link.remote_eof && link.to_local.is_empty() {
        let _ = link.local.shutdown(std::net::Shutdown::Write);
        if link.local_eof || link.eof_sent {
            link.closed = true;
        }
    }
    if link.closed {
        let _ = link.channel.close();
    }
}

/// Sleeps until the bastion's socket or a local end has something (20 ms at most).
fn wait(socket: &std::net::TcpStream, links: &[Link]) {
    let mut fds: Vec<libc::pollfd> = vec![libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    for link in links {
        let mut events = 0;
        if link.to_remote.is_empty() && !link.local_eof {
            events |= libc::POLLIN;
        }
        if !link.to_local.is_empty() {
            events |= libc::POLLOUT;
        }
        fds.push(libc::pollfd {
            fd: link.local.as_raw_fd(),
            events,
            revents: 0,
        });
    }
    // SAFETY: a valid array of pollfd for the duration of the call.
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20);
    }
}
