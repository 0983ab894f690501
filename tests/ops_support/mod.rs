//! Support shared by the fleet operations tests (tests/fleet_ops.rs and
//! tests/fleet_exec.rs, hosts 45-50): the project built once per run, the
//! deploy.toml, and looks at the hosts.
#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use crate::common::{self, expect_code, Sandbox, Testbed};

/// The project built once per run: versions 1.0.0 and 2.0.0, each answering
/// `NAME VERSION` on `/`.
pub struct Built {
    pub name: String,
    _sandbox: Sandbox,
}

const APP: &str = r#"def application(environ, start_response):
    body = b"__NAME__ __VERSION__\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

const MAIN: &str = r#"import os
import sys


def main():
    port = sys.argv[1]
    gunicorn = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "gunicorn")
    os.execv(gunicorn, [gunicorn, "--bind", "0.0.0.0:" + port, "--workers", "1",
                        "--graceful-timeout", "5", "__NAME__.app:application"])
"#;

pub fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let tb = Testbed::get();
        let sb = Sandbox::new();
        let name = common::unique("ops");
        let dir = common::create_project(&sb, &name);
        std::fs::write(
            dir.join("deploy.toml"),
            format!("[project]\nname = \"{name}\"\n\n{}", tb.index_section()),
        )
        .unwrap();
        let main = MAIN.replace("__NAME__", &name);
        std::fs::write(dir.join(&name).join("main.py"), main).unwrap();
        let pyproject = std::fs::read_to_string(dir.join("pyproject.toml")).unwrap();
        std::fs::write(
            dir.join("pyproject.toml"),
            pyproject.replace("dependencies = []", "dependencies = [\"gunicorn\"]"),
        )
        .unwrap();
        for version in ["1.0.0", "2.0.0"] {
            let app = APP
                .replace("__NAME__", &name)
                .replace("__VERSION__", version);
            std::fs::write(dir.join(&name).join("app.py"), app).unwrap();
            common::git(&sb, &dir, &["add", "-A"]);
            common::git(&sb, &dir, &["commit", "-qm", version]);
            expect_code(
                &common::es_build(&sb, &tb, &dir, &["--version", version]),
                0,
            );
        }
        Built { name, _sandbox: sb }
    })
}

/// A deploy.toml for `hosts` (the first one first), deploying under `~/PREFIX`
/// with ports PORT0 and PORT1.
pub fn config(tb: &Testbed, hosts: &[usize], prefix: &str, port: &str) -> String {
    let entries: Vec<String> = hosts
        .iter()
        .map(|n| format!("\"{}\"", tb.addr(*n)))
        .collect();
    format!(
        "[project]\nname = \"{}\"\n\n{}\n[roles]\nweb = [{}]\n\n{}command_timeout = 300\n\n[deploy]\nvirtualenv_prefix = \"~/{prefix}\"\nvenv_ports = {{ a = \"{port}\" }}\ndefault_role = \"web\"\n\n[deploy.health]\ntimeout = 15\n",
        built().name,
        tb.index_section(),
        entries.join(", "),
        tb.ssh_section(),
    )
}

pub fn host_sh(tb: &Testbed, n: usize, script: &str) -> String {
    let out = tb.exec(n, &["sh", "-c", script]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The venv's directory on the hosts.
pub fn venv_dir(tb: &Testbed, prefix: &str) -> String {
    format!("/home/{}/{prefix}/a", tb.user)
}

/// Stops what an earlier run left under `~/PREFIX` and removes it.
pub fn fresh(tb: &Testbed, hosts: &[usize], prefix: &str) {
    let script = common::clear_prefix(&format!("/home/{}/{prefix}", tb.user));
    for n in hosts {
        tb.exec(*n, &["sh", "-c", &script]);
    }
}

pub fn es(sb: &Sandbox, args: &[&str]) -> Output {
    sb.es().args(args).output().unwrap()
}

pub fn spawn(sb: &Sandbox, args: &[&str]) -> Child {
    sb.es()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// What host `n` answers on `port`.
pub fn fetch(tb: &Testbed, n: usize, port: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://{}:{port}/", tb.addr(n)))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every process of host `n` (ports PORT0, PORT1) answers with `version`.
pub fn assert_serving(tb: &Testbed, n: usize, port: &str, version: &str) {
    for i in 0..2 {
        let body = fetch(tb, n, &format!("{port}{i}"));
        assert_eq!(
            body,
            format!("{} {version}", built().name),
            "host {n} port {port}{i}"
        );
    }
}

/// The number of ledger lines of the venv on host `n`.
pub fn ledger_lines(tb: &Testbed, n: usize, prefix: &str) -> usize {
    host_sh(
        tb,
        n,
        &format!(
            "cat {}/.es/releases.jsonl 2>/dev/null",
            venv_dir(tb, prefix)
        ),
    )
    .lines()
    .count()
}

/// Whether the venv on host `n` is locked.
pub fn locked(tb: &Testbed, n: usize, prefix: &str) -> bool {
    host_sh(
        tb,
        n,
        &format!("test -d {}/.es/lock && echo yes", venv_dir(tb, prefix)),
    )
    .contains("yes")
}
