//! A host entry as written in `[roles]`, `-H` or `ssh.proxy_jump`: `local`, or
//! `[user@]host[:port]`. Pure parsing, used by the configuration's checks and
//! by host resolution.

/// A host entry: `local`, or `[user@]host[:port]` where host may be an ssh config alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSpec {
    /// This machine, without SSH.
    Local,
    Remote {
        user: Option<String>,
        host: String,
        port: Option<u16>,
    },
}

impl HostSpec {
    /// Parses `local`, `host`, `user@host`, `host:port`, `user@[v6addr]:port`.
    pub fn parse(entry: &str) -> Result<HostSpec, String> {
        let entry = entry.trim();
        if entry == "local" {
            return Ok(HostSpec::Local);
        }
        if entry.is_empty() {
            return Err("empty host entry".into());
        }
        if entry.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!(
                "bad host entry {entry:?}: no spaces or slashes allowed"
            ));
        }
        let (user, rest) = match entry.split_once('@') {
            Some((user, rest)) if !user.is_empty() => (Some(user.to_string()), rest),
            Some(_) => return Err(format!("bad host entry {entry:?}: empty user before @")),
            None => (None, entry),
        };
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("bad host entry {entry:?}: missing ]"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("bad host entry {entry:?}")),
            }
        } else if rest.matches(':').count() == 1 {
            let (host, port) = rest.split_once(':').unwrap_or((rest, ""));
            (host, Some(port))
        } else {
            (rest, None)
        };
        if host.is_empty() {
            return Err(format!("bad host entry {entry:?}: empty host name"));
        }
        let port = match port {
            Some(port) => Some(port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                format!("bad host entry {entry:?}: port {port:?} is not a number from 1 to 65535")
            })?),
            None => None,
        };
        Ok(HostSpec::Remote {
            user,
            host: host.to_string(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(user: Option<&str>, host: &str, port: Option<u16>) -> HostSpec {
        HostSpec::Remote {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(HostSpec::parse("local"), Ok(HostSpec::Local));
        assert_eq!(HostSpec::parse("web3"), Ok(remote(None, "web3", None)));
        assert_eq!(
            HostSpec::parse("deploy@10.0.0.12:2202"),
            Ok(remote(Some("deploy"), "10.0.0.12", Some(2202)))
        );
        assert_eq!(HostSpec::parse("h:22"), Ok(remote(None, "h", Some(22))));
        assert_eq!(
            HostSpec::parse("u@[fe80::1]:2222"),
            Ok(remote(Some("u"), "fe80::1", Some(2222)))
        );
        assert_eq!(
            HostSpec::parse("fe80::1"),
            Ok(remote(None, "fe80::1", None))
        );
    }

    #[test]
    fn refuses_bad_entries() {
        for bad in [
            "", "@h", "u@", "h:0", "h:99999", "h:x", "a b", "[::1", "u@:22",
        ] {
            assert!(HostSpec::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
