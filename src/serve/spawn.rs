//! Starting a job's `es` so that it gets SIGTERM when es serve dies.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not
//! the process. Tokio may run a task on a thread that ends while the server
//! lives on, so every child is forked by one dedicated thread that lives as
//! long as the process; and a child whose parent is already gone when it sets
//! the signal (the race prctl(2) describes) ends itself at once.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};

use tokio::sync::oneshot;

type Request = (Command, oneshot::Sender<io::Result<Child>>);

/// The spawner thread's inbox; the thread runs until the process ends.
fn spawner() -> io::Result<Sender<Request>> {
    static INBOX: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();
    if let Some(inbox) = INBOX.get() {
        return Ok(inbox.lock().unwrap_or_else(|e| e.into_inner()).clone());
    }
    let (send, receive) = mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("es-serve-spawner".into())
        .spawn(move || {
            for (mut command, reply) in receive {
                let _ = reply.send(command.spawn());
            }
        })?;
    let inbox = INBOX.get_or_init(|| Mutex::new(send));
    Ok(inbox.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

/// Spawns `command` from the spawner thread, with SIGTERM as its parent-death
/// signal.
pub async fn spawn(mut command: Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl(2), getppid(2) and raise(3) are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if libc::getppid() != parent {
                libc::raise(libc::SIGTERM);
            }
            Ok(())
        });
    }
    let (reply, answer) = oneshot::channel();
    spawner()?
        .send((command, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// SIGTERM to a child `es`: its interrupt guard finishes the step and unlocks.
pub fn terminate(pid: u32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child outlives the thread that asked for it (forked there, it
    /// would get SIGTERM when that thread ends).
    #[test]
    fn children_outlive_the_thread_that_asked_for_them() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let child = std::thread::spawn(move || {
            runtime.block_on(async {
                let mut command = Command::new("sleep");
                command.arg("30");
                spawn(command).await.unwrap()
            })
        })
        .join()
        .unwrap();
        // The thread that asked has exited; the child must still be running.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut child = child;
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child died with the asking thread"
        );
        terminate(child.id());
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }
}
