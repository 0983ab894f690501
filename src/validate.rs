//! `es validate`: every process port of a venv answers HTTP on every host. The
//! request is made on the host itself (curl, else python3), so the ports need
//! not be reachable from the machine running es.

use anyhow::{bail, Result};
use serde_json::json;

use crate::app::App;
use crate::bad_input;
use crate::cli::ValidateArgs;
use crate::fleet::HostCtx;
use crate::remote::{Arg, PROBE};

/// Asks one URL with python3's urllib; prints `CODE` (0 when nothing answered) and a reason.
/// What one port answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortCheck {
    pub port: String,
    /// The HTTP status, 0 when nothing answered.
    pub status: u16,
    pub reason: String,
}

impl PortCheck {
    /// Whether the status is in the accepted range (inclusive).
    pub fn ok(&self, accepted: [u16; 2]) -> bool {
        self.status >= accepted[0] && self.status <= accepted[1]
    }

    fn describe(&self) -> String {
        if self.status == 0 {
            format!("{}: no answer ({})", self.port, self.reason)
        } else {
            format!("{}: HTTP {}", self.port, self.status)
        }
    }
}

/// The ports of a venv: the prefix followed by N, for N in 0..process_count.
pub fn venv_ports(prefix: &str, process_count: u32) -> Vec<String> {
    (0..process_count).map(|n| format!("{prefix}{n}")).collect()
}

/// `es validate [VENV]` on every host of the role.
pub fn validate(app: &App, args: &ValidateArgs) -> Result<bool> {
    let loaded = app.require_config()?;
    let config = &loaded.config;
    let venv = app.venv(args.venv.as_deref())?;
    let Some(prefix) = config.deploy.venv_ports.get(&venv.name) else {
        bad_input!(
            "deploy.venv_ports has no entry for venv `{}`: its ports are unknown",
            venv.name
        );
    };
    if config.deploy.process_count == 0 {
        bad_input!("deploy.process_count is 0: there is no port to check");
    }
    let health = &config.deploy.health;
    let path = args.path.clone().unwrap_or_else(|| health.path.clone());
    if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
        bad_input!("--path must start with `/` and hold no spaces, got {path:?}");
    }
    let accepted = match &args.status {
        Some(text) => parse_status_range(text)?,
        None => health.status,
    };
    let mut headers: Vec<String> = health
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    for header in &args.headers {
        match header.split_once(':') {
            Some((name, value))
                if !name.trim().is_empty() && !header.chars().any(|c| c.is_control()) =>
            {
                headers.push(format!("{}: {}", name.trim(), value.trim()))
            }
            _ => bad_input!("--header {header:?}: give `Name: value`"),
        }
    }
    let ports = venv_ports(prefix, config.deploy.process_count);
    let script = probe_script(&ports, &path, args.timeout.max(1), &headers);
    let fleet = app.fleet(false)?;
    let report = fleet.run(|ctx| check_host(ctx, &script, &venv.dir, &ports, accepted));
    report.print_summary(&app.ui, &format!("validate {}", venv.name));
    Ok(report.all_ok())
}

/// `LOW-HIGH` (or one status) as an inclusive range.
fn parse_status_range(text: &str) -> Result<[u16; 2]> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    match (low.trim().parse::<u16>(), high.trim().parse::<u16>()) {
        (Ok(low), Ok(high)) if (100..=599).contains(&low) && low <= high && high <= 599 => {
            Ok([low, high])
        }
        _ => bad_input!("--status {text:?}: give LOW-HIGH, such as 200-299"),
    }
}

/// The command printing `PORT STATUS REASON` for every port, asked from the host itself.
pub fn probe_script(ports: &[String], path: &str, timeout: u32, headers: &[String]) -> String {
    let (timeout, ports) = (timeout.to_string(), ports.join(","));
    let mut args = vec![Arg::Value(path), Arg::Value(&timeout), Arg::Value(&ports)];
    args.extend(headers.iter().map(|h| Arg::Value(h)));
    PROBE.shell(&args)
}

/// Parses the probe's lines.
pub fn parse_probe(text: &str) -> Vec<PortCheck> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.splitn(3, ' ');
            let port = words.next()?.to_string();
            let status = words.next()?.trim().parse().unwrap_or(0);
            let reason = words.next().unwrap_or("").trim().to_string();
            Some(PortCheck {
                port,
                status,
                reason,
            })
        })
        .collect()
}

fn check_host(
    ctx: &mut HostCtx<'_>,
    script: &str,
    dir: &str,
    ports: &[String],
    accepted: [u16; 2],
) -> Result<Vec<PortCheck>> {
    ctx.step("checking ports");
    let out = ctx.check(script)?;
    let checks = parse_probe(&out.stdout);
    let host = ctx.host().to_string();
    let ui = ctx.ui();
    for check in &checks {
        ui.event(
            "port",
            &host,
            json!({ "port": check.port, "status": check.status, "ok": check.ok(accepted), "reason": check.reason }),
        );
        if ui.verbose {
            ui.note(&format!(
                "{host}: {} {}",
                check.port,
                if check.ok(accepted) {
                    format!("HTTP {}", check.status)
                } else {
                    check.describe()
                }
            ));
        }
    }
    let missing: Vec<&String> = ports
        .iter()
        .filter(|p| !checks.iter().any(|c| &c.port == *p))
        .collect();
    if !missing.is_empty() {
        bail!("no result for port(s) {missing:?}: {}", out.stderr.trim());
    }
    let mut failing: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok(accepted))
        .map(PortCheck::describe)
        .collect();
    // An answer from another venv's or program's listener is not this venv's.
    failing.extend(crate::ports::foreign_holders(ctx, dir, ports)?);
    if !failing.is_empty() {
        bail!(
            "{} of {} port(s) failing: {}",
            failing.len(),
            ports.len(),
            failing.join("; ")
        );
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_the_venv_prefix() {
        assert_eq!(venv_ports("880", 2), vec!["8800", "8801"]);
        assert_eq!(venv_ports("90", 3), vec!["900", "901", "902"]);
    }

    #[test]
    fn parses_probe_lines() {
        let checks = parse_probe("8800 200 ok\n8801 0 connection refused\n8802 503 ok\n");
        assert_eq!(checks.len(), 3);
        assert!(checks[0].ok([200, 399]));
        assert!(!checks[1].ok([200, 399]));
        assert_eq!(checks[1].describe(), "8801: no answer (connection refused)");
        assert!(!checks[2].ok([200, 399]));
        assert!(!PortCheck {
            port: "1".into(),
            status: 301,
            reason: String::new()
        }
        .ok([200, 299]));
        assert_eq!(parse_status_range("200-299").unwrap(), [200, 299]);
        assert_eq!(parse_status_range("204").unwrap(), [204, 204]);
        assert!(parse_status_range("299-200").is_err());
        assert_eq!(checks[2].describe(), "8802: HTTP 503");
    }

    /// The probe run in a real shell (with `path` as PATH when given)
    /// against a closed port and a port answering 204 only to the header
    /// given; its checks, and the request the open port got.
    fn probe_once(path: Option<&std::path::Path>) -> (Vec<PortCheck>, String, String, String) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap().port().to_string();
        drop(listener);
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = server.local_addr().unwrap().port().to_string();
        server.set_nonblocking(true).unwrap();
        let answer = std::thread::spawn(move || {
            // Bounded: a probe that never connects fails the test, not hangs it.
            let began = std::time::Instant::now();
            let mut conn = loop {
                match server.accept() {
                    Ok((conn, _)) => break conn,
                    Err(_) if began.elapsed() < std::time::Duration::from_secs(10) => {
                        std::thread::sleep(std::time::Duration::from_millis(20))
                    }
                    Err(err) => return format!("no request: {err}"),
                }
            };
            conn.set_nonblocking(false).unwrap();
            let mut request = vec![0; 4096];
            let n = conn.read(&mut request).unwrap();
            let request = String::from_utf8_lossy(&request[..n]).into_owned();
            let status =
                if request.starts_with("GET /health ") && request.contains("X-Probe: it's $(x)") {
                    "204 No Content"
                } else {
                    "400 Bad Request"
                };
            write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").unwrap();
            request
        });
        let script = probe_script(
            &[closed.clone(), open.clone()],
            "/health",
            2,
            &["X-Probe: it's $(x)".into()],
        );
        let mut sh = std::process::Command::new("/bin/sh");
        sh.arg("-c").arg(&script);
        if let Some(path) = path {
            sh.env("PATH", path);
        }
        let out = sh.output().unwrap();
        let request = answer.join().unwrap();
        let checks = parse_probe(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(checks.len(), 2, "{}", String::from_utf8_lossy(&out.stderr));
        (checks, request, closed, open)
    }

    #[test]
    fn probe_reports_a_closed_port_and_sends_its_headers_with_curl_or_python() {
        // With the machine's PATH (curl), then with the system's python3 alone.
        let bin = tempfile::tempdir().unwrap();
        for tool in ["/bin/sh", "/usr/bin/python3", "/usr/bin/tail"] {
            let name = std::path::Path::new(tool).file_name().unwrap();
            std::os::unix::fs::symlink(tool, bin.path().join(name)).unwrap();
        }
        for path in [None, Some(bin.path())] {
            let (checks, request, closed, open) = probe_once(path);
            assert_eq!(checks[0].port, closed);
            assert!(!checks[0].ok([200, 399]), "{checks:?}");
            assert_eq!(checks[1].port, open);
            assert_eq!(checks[1].status, 204, "{path:?}: {request}");
        }
    }
}
