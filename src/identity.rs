//! Who runs es, and on which machine: named in locks, ledgers and builds, and
//! used to tell whether a lock's holder is a process of this machine. A leaf
//! module, on whoami rather than `getpwuid` by hand and `/etc/hostname`
//! (missing on many machines, which made them all "unknown", the same machine).

/// Who runs es: `$USER`, `$LOGNAME`, else the password database.
pub fn login() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| whoami::username().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// This machine's name (the kernel's host name, as `hostname` prints it).
pub fn machine() -> String {
    whoami::hostname()
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_is_named_as_hostname_names_it() {
        let out = std::process::Command::new("hostname").output().unwrap();
        let expected = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(machine(), expected);
        assert_ne!(login(), "");
    }
}
