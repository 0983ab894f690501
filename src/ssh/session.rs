//! One SSH session to one host (libssh2 through the ssh2 crate): connect with a
//! timeout, verify the host key, authenticate, run commands, upload files.

use crate::failure::{FailureKind, Kinded};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ssh2::{BlockDirections, HashType, MethodType, Session};

use super::known_hosts::{self, KnownHosts, Verdict};
use super::{ConnectOptions, Output, Stdin};
use crate::hosts::SshTarget;
use crate::quote::{quote, quote_path};

/// An authenticated SSH session, reused for every step of a job on its host.
pub struct SshSession {
    session: Session,
    /// The transport's descriptor, polled while commands run.
    socket: Box<dyn AsRawFd + Send>,
    sftp: Option<ssh2::Sftp>,
    command_timeout: Duration,
    keepalive: Duration,
}

/// Host key algorithms libssh2 offers for each known_hosts key type.
fn algorithms_for(key_type: &str) -> &'static [&'static str] {
    match key_type {
        "ssh-ed25519" => &["ssh-ed25519"],
        "ecdsa-sha2-nistp256" => &["ecdsa-sha2-nistp256"],
        "ecdsa-sha2-nistp384" => &["ecdsa-sha2-nistp384"],
        "ecdsa-sha2-nistp521" => &["ecdsa-sha2-nistp521"],
        "ssh-rsa" => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
        _ => &[],
    }
}

const ALL_HOST_KEY_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
];

impl SshSession {
    /// Connects, checks the host key and authenticates, all within the connect timeout.
    pub fn connect(target: &SshTarget, options: &ConnectOptions) -> Result<SshSession> {
        let socket = tcp_connect(&target.hostname, target.port, options.connect_timeout)?;
        // A peer that vanishes without a reset is noticed by keepalives: sent
        // every `keepalive`, and the kernel drops a connection whose data stays
        // unacknowledged for three of them (TCP_USER_TIMEOUT), as OpenSSH's
        // ServerAliveInterval / ServerAliveCountMax would.
        set_user_timeout(&socket, options.keepalive * 3);
        let stream = socket.try_clone().context("cloning the socket")?;
        SshSession::over(Box::new(socket), stream, target, options)
    }

    /// An SSH session over `stream` (a TCP connection, or a tunnel through a
    /// bastion); `socket` is the same transport, kept for polling.
    pub fn over<S: AsRawFd + 'static>(
        socket: Box<dyn AsRawFd + Send>,
        stream: S,
        target: &SshTarget,
        options: &ConnectOptions,
    ) -> Result<SshSession> {
        let session = handshake(stream, target, options)?;
        Ok(SshSession {
            session,
            socket,
            sftp: None,
            command_timeout: options.command_timeout,
            keepalive: options.keepalive,
        })
    }

    /// Runs a command through the remote user's shell, keeping stdout, stderr and status apart.
    pub fn exec(&mut self, command: &str) -> Result<Output> {
        self.exec_with(command, Stdin::Closed, None)
    }

    /// Like [`exec`](Self::exec), stdin as `stdin` says; with a `sink`, the
    /// output goes to it as it comes (`true` for stderr) and only its last
    /// 64 KiB are kept.
    pub fn exec_with(
        &mut self,
        command: &str,
        stdin: Stdin,
        mut sink: Option<super::Sink<'_>>,
    ) -> Result<Output> {
        let mut channel = self
            .session
            .channel_session()
            .map_err(|e| anyhow!("opening a channel: {}", e.message()))?;
        channel
            .exec(command)
            .map_err(|e| anyhow!("starting the command: {}", e.message()))?;
        // Nothing is ever sent on stdin: a command that reads it gets EOF,
        // at once or when es is interrupted.
        let mut stdin_open = stdin == Stdin::ClosedOnInterrupt;
        if !stdin_open {
            channel
                .send_eof()
                .map_err(|e| anyhow!("closing the command's stdin: {}", e.message()))?;
        }
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let deadline = std::time::Instant::now() + self.command_timeout;
        self.session.set_blocking(false);
        let result = (|| -> Result<()> {
            let mut buf = [0u8; 32 * 1024];
            loop {
                if std::time::Instant::now() > deadline {
                    return Err(Kinded::new(
                        FailureKind::Timeout,
                        format!(
                            "the command did not finish within {}s (ssh.command_timeout)",
                            self.command_timeout.as_secs()
                        ),
                    )
                    .into());
                }
                let _ = self.session.keepalive_send();
                // Non-blocking: tried again on the next turn until it went out.
                if stdin_open && crate::interrupt::requested() && channel.send_eof().is_ok() {
                    stdin_open = false;
                }
                let mut progressed = false;
                for (stream_id, kept) in [(0, &mut stdout), (1, &mut stderr)] {
                    match channel.stream(stream_id).read(&mut buf) {
                        Ok(0) => {}
                        Ok(n) => {
                            match sink.as_mut() {
                                Some(out) => {
                                    out(stream_id == 1, &buf[..n]);
                                    keep_tail(kept, &buf[..n]);
                                }
                                None => kept.extend_from_slice(&buf[..n]),
                            }
                            progressed = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => return Err(self.lost(e)),
                    }
                }
                if !progressed {
                    if channel.eof() {
                        return Ok(());
                    }
                    self.wait_socket();
                }
            }
        })();
        self.session.set_blocking(true);
        result?;
        channel
            .wait_close()
            .map_err(|e| anyhow!("closing the channel: {}", e.message()))?;
        let status = channel
            .exit_status()
            .map_err(|e| anyhow!("reading the exit status: {}", e.message()))?;
        Ok(Output {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            status,
        })
    }

    /// Runs `command` on a remote terminal (a pty the size of ours), with
    /// this terminal's keys going to it and its output coming here, until it
    /// exits; returns its exit status. No command timeout: a shell is used for
    /// as long as its user likes; keepalives still find a dead peer.
    pub fn interactive(&mut self, command: &str) -> Result<i32> {
        let mut channel = self
            .session
            .channel_session()
            .map_err(|e| anyhow!("opening a channel: {}", e.message()))?;
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        let (cols, rows) = super::tty::size();
        channel
            .request_pty(&term, None, Some((cols, rows, 0, 0)))
            .map_err(|e| anyhow!("asking for a terminal: {}", e.message()))?;
        channel
            .exec(command)
            .map_err(|e| anyhow!("starting the command: {}", e.message()))?;
        let raw = super::tty::RawMode::enter();
        self.session.set_blocking(false);
        let result = self.pump(&mut channel);
        self.session.set_blocking(true);
        drop(raw);
        result?;
        let _ = channel.wait_close();
        channel
            .exit_status()
            .map_err(|e| anyhow!("reading the exit status: {}", e.message()))
    }

    /// Moves stdin to the channel and the channel's output to stdout/stderr
    /// until the remote side ends.
    fn pump(&self, channel: &mut ssh2::Channel) -> Result<()> {
        let mut stdin_open = true;
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let _ = self.session.keepalive_send();
            let mut progressed = false;
            for stream_id in [0, 1] {
                match channel.stream(stream_id).read(&mut buf) {
                    Ok(0) => {}
                    Ok(n) => {
                        let written = if stream_id == 0 {
                            let mut out = std::io::stdout().lock();
                            out.write_all(&buf[..n]).and_then(|()| out.flush())
                        } else {
                            std::io::stderr().write_all(&buf[..n])
                        };
                        written.context("writing to the terminal")?;
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(self.lost(e)),
                }
            }
            if !pending.is_empty() {
                match channel.write(&pending) {
                    Ok(n) => {
                        pending.drain(..n);
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(self.lost(e)),
                }
            }
            if channel.eof() {
                return Ok(());
            }
            if progressed {
                continue;
            }
            // Nothing moved: wait for the socket or for a key.
            let mut fds = [
                libc::pollfd {
                    fd: self.socket.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: libc::STDIN_FILENO,
                    events: if stdin_open && pending.is_empty() {
                        libc::POLLIN
                    } else {
                        0
                    },
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds for the duration of the call.
            unsafe {
                libc::poll(fds.as_mut_ptr(), 2, 100);
            }
            if stdin_open && fds[1].revents != 0 {
                let mut keys = [0u8; 4096];
                // SAFETY: reads into a buffer owned here, at most its length.
                let n =
                    unsafe { libc::read(libc::STDIN_FILENO, keys.as_mut_ptr().cast(), keys.len()) };
                if n > 0 {
                    pending.extend_from_slice(&keys[..n as usize]);
                } else {
                    stdin_open = false;
                    let _ = channel.send_eof();
                }
            }
        }
    }

    /// The error for a broken connection: a dead peer, said as such.
    fn lost(&self, err: std::io::Error) -> anyhow::Error {
        let text = err.to_string();
        let message = if text.contains("timed out") || err.kind() == ErrorKind::TimedOut {
            format!(
                "the host stopped answering: no reply to keepalives for {}s (connection lost)",
                self.keepalive.as_secs() * 3
            )
        } else {
            format!("the connection broke while reading command output: {text}")
        };
        Kinded::new(FailureKind::Connect, message).into()
    }

    /// Waits until the socket is ready in the direction libssh2 is blocked on.
    fn wait_socket(&self) {
        let events = match self.session.block_directions() {
            BlockDirections::Inbound => libc::POLLIN,
            BlockDirections::Outbound => libc::POLLOUT,
            BlockDirections::Both => libc::POLLIN | libc::POLLOUT,
            BlockDirections::None => libc::POLLIN,
        };
        let mut fd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe {
            libc::poll(&mut fd, 1, 100);
        }
    }

    /// The session's SFTP channel, opened at the first use.
    fn sftp(&mut self) -> Result<&ssh2::Sftp> {
        if self.sftp.is_none() {
            let sftp = self
                .session
                .sftp()
                .map_err(|e| anyhow!("starting SFTP: {}", e.message()))?;
            self.sftp = Some(sftp);
        }
        self.sftp
            .as_ref()
            .ok_or_else(|| anyhow!("SFTP unavailable"))
    }

    /// Reads a whole file over SFTP (bounded by ssh.command_timeout, as every
    /// blocking call). `path` is absolute, or relative to the home directory.
    pub fn download(&mut self, path: &str) -> Result<Vec<u8>> {
        let mut file = self
            .sftp()?
            .open(Path::new(path))
            .map_err(|e| anyhow!("opening {path}: {}", e.message()))?;
        let mut contents = Vec::new();
        file.read_to_end(&mut contents)
            .with_context(|| format!("reading {path}"))?;
        Ok(contents)
    }

    /// Writes `contents` to `path` atomically: a temporary file next to it, then a rename.
    /// `path` is absolute or starts with `~/`.
    pub fn upload(&mut self, contents: &[u8], path: &str, mode: i32) -> Result<()> {
        // SFTP paths are relative to the home directory when they do not start with `/`.
        let sftp_path = path.strip_prefix("~/").unwrap_or(path);
        let temp = format!("{sftp_path}.es-tmp-{}", std::process::id());
        let sftp = self.sftp()?;
        let mut file = sftp
            .open_mode(
                Path::new(&temp),
                ssh2::OpenFlags::WRITE | ssh2::OpenFlags::CREATE | ssh2::OpenFlags::TRUNCATE,
                mode,
                ssh2::OpenType::File,
            )
            .map_err(|e| anyhow!("creating {temp}: {}", e.message()))?;
        file.write_all(contents)
            .with_context(|| format!("writing {temp}"))?;
        drop(file);
        let temp_shell = if path.starts_with("~/") {
            quote_path(&format!("~/{temp}"))
        } else {
            quote(&temp).into_owned()
        };
        let rename = format!("mv -f {temp_shell} {}", quote_path(path));
        let out = self.exec(&rename)?;
        if out.status != 0 {
            bail!("moving the upload into {path}: {}", out.stderr.trim());
        }
        Ok(())
    }
}

/// Handshake, host key check and authentication over `stream`, within the
/// connect timeout; the session then gets the command timeout and keepalives.
pub(super) fn handshake<S: AsRawFd + 'static>(
    stream: S,
    target: &SshTarget,
    options: &ConnectOptions,
) -> Result<Session> {
    let mut session = Session::new().context("creating an SSH session")?;
    session.set_tcp_stream(stream);
    session.set_timeout(options.connect_timeout.as_millis().min(u32::MAX as u128) as u32);

    // Prefer host key types already known for this host, as OpenSSH does,
    // so a host known by its ed25519 key is not refused for offering ECDSA first.
    let known = KnownHosts::shared(&options.known_hosts_files);
    let mut preferred: Vec<&str> = known
        .key_types_for(&target.hostname, target.port)
        .iter()
        .flat_map(|t| algorithms_for(t).iter().copied())
        .collect();
    for algorithm in ALL_HOST_KEY_ALGORITHMS {
        if !preferred.contains(algorithm) {
            preferred.push(algorithm);
        }
    }
    // Unsupported names are ignored by libssh2; a failure here only loses the preference.
    let _ = session.method_pref(MethodType::HostKey, &preferred.join(","));

    session
        .handshake()
        .map_err(|e| anyhow!("SSH handshake failed: {}", e.message()))?;
    verify_host_key(&session, target, &known, options)?;
    authenticate(&session, target)?;
    // Blocking calls (SFTP) get the command timeout.
    session.set_timeout(options.command_timeout.as_millis().min(u32::MAX as u128) as u32);
    let keepalive = options.keepalive.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
    session.set_keepalive(true, keepalive);
    Ok(session)
}

/// Appends `bytes` to `kept`, keeping only its last 64 KiB.
fn keep_tail(kept: &mut Vec<u8>, bytes: &[u8]) {
    const KEEP: usize = 64 * 1024;
    kept.extend_from_slice(bytes);
    if kept.len() > 2 * KEEP {
        kept.drain(..kept.len() - KEEP);
    }
}

/// TCP_USER_TIMEOUT: how long sent data may stay unacknowledged before the
/// kernel drops the connection (best effort: a failure keeps the default).
pub(super) fn set_user_timeout(socket: &TcpStream, timeout: Duration) {
    let millis = timeout.as_millis().min(u32::MAX as u128) as libc::c_uint;
    // SAFETY: a valid socket descriptor and a pointer to a c_uint of the given size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&millis as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        );
    }
}

pub(super) fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let addresses: Vec<_> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .collect();
    let mut last_error = None;
    for address in &addresses {
        match TcpStream::connect_timeout(address, timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(err) => last_error = Some(err),
        }
    }
    match last_error {
        Some(err) if err.kind() == ErrorKind::TimedOut || err.kind() == ErrorKind::WouldBlock => {
            bail!(
                "connecting to {host}:{port}: timed out after {}s",
                timeout.as_secs()
            )
        }
        Some(err) => bail!("connecting to {host}:{port}: {err}"),
        None => bail!("{host} resolves to no address"),
    }
}

fn verify_host_key(
    session: &Session,
    target: &SshTarget,
    known: &KnownHosts,
    options: &ConnectOptions,
) -> Result<()> {
    let (key, _) = session
        .host_key()
        .ok_or_else(|| anyhow!("the server sent no host key"))?;
    let fingerprint = session
        .host_key_hash(HashType::Sha256)
        .map(known_hosts::fingerprint)
        .unwrap_or_else(|| "(no fingerprint)".into());
    let key_type = known_hosts::key_type_of(key).unwrap_or_else(|| "unknown".into());
    let mut verdict = known.check(&target.hostname, target.port, key);
    if verdict == Verdict::NotFound {
        // Perhaps recorded since the shared copy was read (earlier in this
        // run, or by another es): the files decide.
        verdict =
            KnownHosts::load(&options.known_hosts_files).check(&target.hostname, target.port, key);
    }
    match verdict {
        Verdict::Match => Ok(()),
        Verdict::Changed => Err(Kinded::new(
            FailureKind::HostKey,
            format!(
                "HOST KEY CHANGED for {}:{}: it now presents {key_type} {fingerprint}, \
                 which does not match known_hosts. This may be an attack (or the host was \
                 reinstalled): check the fingerprint, then remove the old entry with \
                 `ssh-keygen -R {}`. Refused.",
                target.hostname, target.port, target.hostname
            ),
        )
        .into()),
        Verdict::NotFound if options.accept_new_host_keys => {
            known_hosts::record(&options.record_file, &target.hostname, target.port, key)
                .context("recording the new host key")
        }
        Verdict::NotFound => Err(Kinded::new(
            FailureKind::HostKey,
            format!(
                "host {}:{} is not in known_hosts (its {key_type} key is {fingerprint}); \
                 check the fingerprint, then run again with --accept-new-host-keys to record it",
                target.hostname, target.port
            ),
        )
        .into()),
    }
}

fn authenticate(session: &Session, target: &SshTarget) -> Result<()> {
    let user = target.user.as_str();
    let mut tried = Vec::new();
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        if session.userauth_agent(user).is_ok() && session.authenticated() {
            return Ok(());
        }
        tried.push("ssh-agent".to_string());
    }
    let mut encrypted = Vec::new();
    for file in &target.identity_files {
        if !file.is_file() {
            continue;
        }
        if is_encrypted_key(file) {
            encrypted.push(file.display().to_string());
            continue;
        }
        tried.push(file.display().to_string());
        if session.userauth_pubkey_file(user, None, file, None).is_ok() && session.authenticated() {
            return Ok(());
        }
    }
    let mut message = format!("authentication as {user} failed");
    if tried.is_empty() {
        message.push_str(": no ssh-agent and no identity file found");
    } else {
        message.push_str(&format!("; tried {}", tried.join(", ")));
    }
    if !encrypted.is_empty() {
        message.push_str(&format!(
            "; skipped passphrase-protected {} (add it to ssh-agent with `ssh-add`)",
            encrypted.join(", ")
        ));
    }
    Err(Kinded::new(FailureKind::Auth, message).into())
}

/// Whether a private key file needs a passphrase (OpenSSH or PEM format).
fn is_encrypted_key(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    if text.contains("ENCRYPTED") {
        return true;
    }
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    use base64::Engine;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(body.trim()) else {
        return false;
    };
    // openssh-key-v1\0, then string ciphername: "none" when unencrypted.
    let Some(rest) = bytes.strip_prefix(b"openssh-key-v1\0") else {
        return false;
    };
    rest.get(4..8) != Some(b"none")
}
