//! The transport: a connection to one host, over SSH or (for `local`) this machine.

mod jump;
pub mod known_hosts;
mod session;
mod tty;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::failure::CommandFailed;
use crate::hosts::{Target, TargetKind};
use crate::paths::expand_tilde;
pub use session::SshSession;

/// How to connect: shared by every host of a run.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub connect_timeout: Duration,
    /// known_hosts files checked together (the user's own, then `ssh.known_hosts`).
    pub known_hosts_files: Vec<PathBuf>,
    /// Where a newly accepted host key is recorded.
    pub record_file: PathBuf,
    pub accept_new_host_keys: bool,
    /// How long one remote command or transfer may take.
    pub command_timeout: Duration,
    /// Seconds between keepalives; a peer that acknowledges nothing for three
    /// of them is dropped.
    pub keepalive: Duration,
}

/// Where streamed output goes: `(is_stderr, bytes)`, as it arrives.
pub type Sink<'s> = &'s mut dyn FnMut(bool, &[u8]);

/// What a command's stdin gets. es never sends anything on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    /// End of file at once: a command that reads stdin gets nothing.
    Closed,
    /// Held open until es is interrupted (Ctrl-C, SIGTERM), then closed: a
    /// command that watches its stdin (`remote/hook.sh`) stops its work then.
    /// sshd closes it too when es or the link is gone.
    ClosedOnInterrupt,
}

/// What a command printed and how it ended.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub status: i32,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// This output, or a [`CommandFailed`] error (keeping stdout and stderr)
    /// when the command exited non-zero.
    pub fn ok(self) -> Result<Output> {
        if self.success() {
            return Ok(self);
        }
        Err(CommandFailed {
            status: self.status,
            stdout: self.stdout,
            stderr: self.stderr,
        }
        .into())
    }
}

/// An open connection to one host.
pub enum Connection {
    /// This machine, through `sh -c`.
    Local,
    Ssh(Box<SshSession>),
}

impl Connection {
    /// Opens a connection to `target`.
    pub fn open(target: &Target, options: &ConnectOptions) -> Result<Connection> {
        match &target.kind {
            TargetKind::Local => Ok(Connection::Local),
            TargetKind::Ssh(ssh) => match &ssh.jump {
                None => Ok(Connection::Ssh(Box::new(SshSession::connect(
                    ssh, options,
                )?))),
                Some(bastion) => {
                    let tunnel = jump::Bastion::get(bastion, options)?.tunnel(
                        &ssh.hostname,
                        ssh.port,
                        options.connect_timeout,
                    )?;
                    let socket = tunnel.try_clone().context("cloning the tunnel")?;
                    Ok(Connection::Ssh(Box::new(SshSession::over(
                        Box::new(socket),
                        tunnel,
                        ssh,
                        options,
                    )?)))
                }
            },
        }
    }

    /// Runs a shell command line.
    pub fn exec(&mut self, command: &str) -> Result<Output> {
        match self {
            Connection::Ssh(session) => session.exec(command),
            Connection::Local => exec_local(command, Stdin::Closed, None),
        }
    }

    /// Runs a shell command line, its stdin as `stdin` says, its output going
    /// to `sink` as it comes; the returned output keeps only the last 64 KiB
    /// of each stream.
    pub fn exec_streaming_with(
        &mut self,
        command: &str,
        stdin: Stdin,
        sink: Sink<'_>,
    ) -> Result<Output> {
        match self {
            Connection::Ssh(session) => session.exec_with(command, stdin, Some(sink)),
            Connection::Local => exec_local(command, stdin, Some(sink)),
        }
    }

    /// Runs a shell command line on a terminal, interactively (this
    /// machine's stdin, stdout and stderr); returns its exit status.
    pub fn interactive(&mut self, command: &str) -> Result<i32> {
        match self {
            Connection::Ssh(session) => session.interactive(command),
            Connection::Local => Ok(Command::new("sh")
                .arg("-c")
                .arg(command)
                .current_dir(expand_tilde("~"))
                .status()
                .context("running sh")?
                .code()
                .unwrap_or(-1)),
        }
    }

    /// Writes a file atomically (temporary file, then rename). `path` is absolute or `~/...`.
    pub fn upload(&mut self, contents: &[u8], path: &str, mode: i32) -> Result<()> {
        match self {
            Connection::Ssh(session) => session.upload(contents, path, mode),
            Connection::Local => {
                use std::io::Write;
                use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
                let path = expand_tilde(path);
                let temp = path.with_extension(format!("es-tmp-{}", std::process::id()));
                // Created with its final mode: a secret never sits in a file
                // that the umask left readable, not even for a moment.
                let _ = std::fs::remove_file(&temp);
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode as u32)
                    .open(&temp)
                    .with_context(|| format!("creating {}", temp.display()))?;
                file.write_all(contents)
                    .with_context(|| format!("writing {}", temp.display()))?;
                // The umask may have cleared bits the caller asked for.
                std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode as u32))?;
                std::fs::rename(&temp, &path)
                    .with_context(|| format!("renaming into {}", path.display()))
            }
        }
    }

    /// Reads a whole file. `path` is absolute.
    pub fn download(&mut self, path: &str) -> Result<Vec<u8>> {
        match self {
            Connection::Ssh(session) => session.download(path),
            Connection::Local => std::fs::read(path).with_context(|| format!("reading {path}")),
        }
    }
}

/// `sh -c COMMAND` on this machine, in the home directory.
fn exec_local(command: &str, stdin: Stdin, sink: Option<Sink<'_>>) -> Result<Output> {
    if let Some(sink) = sink {
        return local_streaming(command, stdin, sink);
    }
    // Stdin reads as closed.
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(expand_tilde("~"))
        .output()
        .context("running sh")?;
    Ok(Output {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status.code().unwrap_or(-1),
    })
}

/// `sh -c COMMAND` here, both streams read by threads and handed to `sink` in
/// the order they arrive; the last 64 KiB of each are kept.
fn local_streaming(command: &str, stdin: Stdin, sink: Sink<'_>) -> Result<Output> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(expand_tilde("~"))
        .stdin(match stdin {
            Stdin::Closed => Stdio::null(),
            Stdin::ClosedOnInterrupt => Stdio::piped(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running sh")?;
    let mut held_stdin = child.stdin.take();
    let (sender, receiver) = std::sync::mpsc::channel::<(bool, Vec<u8>)>();
    let mut readers = Vec::new();
    let streams: [(bool, Option<Box<dyn Read + Send>>); 2] = [
        (
            false,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        (
            true,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ];
    for (is_stderr, stream) in streams {
        let (Some(mut stream), sender) = (stream, sender.clone()) else {
            continue;
        };
        readers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || sender.send((is_stderr, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }));
    }
    drop(sender);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        let (is_stderr, chunk) = match receiver.recv_timeout(std::time::Duration::from_millis(100))
        {
            Ok(got) => got,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if crate::interrupt::requested() {
                    held_stdin = None;
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        sink(is_stderr, &chunk);
        let kept = if is_stderr { &mut stderr } else { &mut stdout };
        kept.extend_from_slice(&chunk);
        if kept.len() > 128 * 1024 {
            kept.drain(..kept.len() - 64 * 1024);
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    drop(held_stdin);
    let status = child.wait().context("waiting for sh")?;
    Ok(Output {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        status: status.code().unwrap_or(-1),
    })
}
