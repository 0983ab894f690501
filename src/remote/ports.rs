//! ports.py run alone: who holds a venv's ports, asked before a switch and
//! by `es validate`.

use super::Script;

/// `python3 -c PORTS ROOT PORT...`: one line per port, `PORT ok` or
/// `PORT port N is held by pid P: COMMAND of VENV`.
pub const PORTS: Script = Script {
    source: concat!(include_str!("ports.py"), "owners_main(sys.argv[1:])\n"),
};

/// The ports.py lines as (port, who holds it when that is not the venv).
pub fn parse_owners(stdout: &str) -> Vec<(String, Option<String>)> {
    stdout
        .lines()
        .filter_map(|line| {
            let (port, rest) = line.split_once(' ')?;
            let holder = (rest != "ok").then(|| rest.to_string());
            Some((port.to_string(), holder))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::Arg;
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    /// A shell that looks like supervisord (`supervisord -c CONF`), running
    /// a python3 listener on a free port of 127.0.0.1: (the shell, the port).
    fn listener(conf: &Path) -> (Child, String) {
        let listen = "import socket, sys, time\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\nprint(s.getsockname()[1], flush=True)\ntime.sleep(60)\n";
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("python3 -c \"$LISTEN\" & wait")
            .args(["supervisord", "-c"])
            .arg(conf)
            .env("LISTEN", listen)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        (child, line.trim().to_string())
    }

    fn owners(root: &Path, ports: &[&str]) -> Vec<(String, Option<String>)> {
        let mut args = vec![Arg::Value(root.to_str().unwrap())];
        args.extend(ports.iter().map(|p| Arg::Value(p)));
        let out = Command::new("sh")
            .arg("-c")
            .arg(PORTS.python("python3", &args))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_owners(&String::from_utf8_lossy(&out.stdout))
    }

    fn stop(mut child: Child) {
        Command::new("pkill")
            .args(["-P", &child.id().to_string()])
            .status()
            .unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_listener_of_another_process_is_named_with_its_venv() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let other = root.join("other");
        let (child, port) = listener(&other.join("etc/supervisord.conf"));
        let found = owners(&root.join("a"), &[&port]);
        stop(child);
        let [(p, Some(holder))] = found.as_slice() else {
            panic!("not named: {found:?}");
        };
        assert_eq!(p, &port);
        let prefix = format!("port {port} is held by pid ");
        assert!(holder.starts_with(&prefix), "{holder}");
        assert!(
            holder.contains("python3 -c import socket, sys, time s = socket.socket()"),
            "{holder}"
        );
        assert!(
            holder.ends_with(&format!(" of {}", other.display())),
            "{holder}"
        );
    }

    #[test]
    fn a_listener_below_the_venvs_supervisord_is_ours_and_a_free_port_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let conf = root.join("etc/supervisord.conf");
        let (child, port) = listener(&conf);
        std::fs::create_dir(root.join("tmp")).unwrap();
        std::fs::write(root.join("tmp/supervisord.pid"), child.id().to_string()).unwrap();
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let free_port = free.local_addr().unwrap().port().to_string();
        drop(free);
        let found = owners(&root, &[&port, &free_port]);
        // The same listener seen from another venv is foreign.
        let elsewhere = owners(&root.join("b"), &[&port]);
        stop(child);
        assert_eq!(found, vec![(port.clone(), None), (free_port, None)]);
        assert!(elsewhere[0].1.is_some(), "{elsewhere:?}");
    }

    #[test]
    fn owner_lines_parse() {
        assert_eq!(
            parse_owners("8800 ok\n8801 port 8801 is held by pid 7: x\n"),
            vec![
                ("8800".to_string(), None),
                (
                    "8801".to_string(),
                    Some("port 8801 is held by pid 7: x".into())
                )
            ]
        );
    }
}
