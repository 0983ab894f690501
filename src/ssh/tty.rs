//! This machine's terminal for an interactive remote command: raw while it
//! runs, restored afterwards whatever happens; its size for the remote pty.

/// The terminal put in raw mode; the previous mode comes back on drop.
pub struct RawMode {
    fd: i32,
    saved: libc::termios,
}

impl RawMode {
    /// Raw mode on stdin when it is a terminal; `None` otherwise.
    pub fn enter() -> Option<RawMode> {
        let fd = libc::STDIN_FILENO;
        // SAFETY: isatty/tcgetattr/tcsetattr with a valid descriptor and a
        // termios owned here; cfmakeraw only changes that struct.
        unsafe {
            if libc::isatty(fd) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawMode { fd, saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read from the same descriptor.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

/// The terminal's columns and rows (80x24 when stdout is no terminal).
pub fn size() -> (u32, u32) {
    // SAFETY: TIOCGWINSZ fills the winsize owned here.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0 {
            return (u32::from(ws.ws_col), u32::from(ws.ws_row));
        }
    }
    (80, 24)
}
