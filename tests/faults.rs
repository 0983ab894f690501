//! Faults injected on the test bed (hosts 26-28): a host whose link drops
//! without a reset mid-command, a command that outlives its bound, a command
//! that reads stdin.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{expect_code, Sandbox, Testbed};

const HOSTS: [usize; 3] = [26, 27, 28];

/// The tests here take turns: one takes host 27's link down.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn config(tb: &Testbed, extra_ssh: &str) -> String {
    let entries: Vec<String> = HOSTS
        .iter()
        .map(|n| format!("\"{}\"", tb.addr(*n)))
        .collect();
    format!(
        "[roles]\nweb = [{}]\n\n{}{extra_ssh}\n",
        entries.join(", "),
        tb.ssh_section()
    )
}

/// Brings host `n`'s link back up (and its TCP retries back to the default),
/// even when the test fails.
struct LinkUp(usize, String);

impl Drop for LinkUp {
    fn drop(&mut self) {
        let (n, bridge) = (self.0, &self.1);
        let _ = Command::new("bash")
            .arg(common::repo_root().join("testbed/testbed.sh"))
            .args(["exec", &n.to_string(), "sh", "-c"])
            .arg(format!(
                "ip link set eth0 up; ip route replace default via {bridge}; sysctl -qw net.ipv4.tcp_retries2=15"
            ))
            .output();
        // Wait until it answers again, for the tests that follow.
        for _ in 0..50 {
            let ok = Command::new("bash")
                .arg(common::repo_root().join("testbed/testbed.sh"))
                .args([
                    "exec",
                    &n.to_string(),
                    "ip",
                    "link",
                    "show",
                    &format!("veth-es{n}p"),
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("state UP"))
                .unwrap_or(false);
            if ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_host_that_drops_off_mid_command_fails_within_the_keepalive_bound() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let tb = bed!();
    let sb = Sandbox::new();
    sb.write_config(&config(&tb, "keepalive = 2\ncommand_timeout = 120\n"));
    let started = Instant::now();
    let child = sb
        .es()
        .args(["run", "-R", "web", "--json", "--", "sleep 12; echo done"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // No reset: the host's side of the link goes down, and its own TCP gives up early.
    let _restore = LinkUp(27, tb.bridge_addr.clone());
    let down = tb.exec(
        27,
        &[
            "sh",
            "-c",
            "sysctl -qw net.ipv4.tcp_retries2=3 && ip link set eth0 down",
        ],
    );
    assert!(down.status.success(), "{down:?}");
    let dropped = Instant::now();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = expect_code(&out, 1);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    let host = |n: usize| {
        summary["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == tb.addr(n))
            .unwrap()
            .clone()
    };
    let dead = host(27);
    assert_eq!(dead["ok"], false, "{summary}");
    let error = dead["error"].as_str().unwrap();
    assert!(
        error.contains("stopped answering") || error.contains("connection"),
        "{error}"
    );
    // Three keepalives of 2s, plus slack; far below command_timeout (120s).
    let dead_after = dead["seconds"].as_f64().unwrap() - 2.5;
    assert!(
        dead_after < 20.0,
        "the dead host took {dead_after:.1}s to fail: {summary}"
    );
    for n in [26, 28] {
        assert_eq!(host(n)["ok"], true, "host {n}: {summary}");
    }
    assert!(stdout.contains("done"), "the others finished: {stdout}");
    println!(
        "dead host failed {:.1}s after its link dropped; the run took {:.1}s",
        dead_after,
        started.elapsed().as_secs_f64()
    );
    let _ = dropped;
}

#[test]
fn a_command_that_outlives_command_timeout_fails_and_stdin_is_closed() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let tb = bed!();
    let sb = Sandbox::new();
    sb.write_config(&config(&tb, "command_timeout = 2\n"));
    let started = Instant::now();
    let out = sb
        .es()
        .args(["run", "-R", "web", "-H", tb.addr(26), "--", "sleep 30"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 1);
    assert!(stderr.contains("did not finish within 2s"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(25), "{stderr}");

    // A command that reads stdin gets EOF at once instead of hanging.
    sb.write_config(&config(&tb, "command_timeout = 60\n"));
    let out = sb
        .es()
        .args([
            "run",
            "-R",
            "web",
            "--",
            "cat; read line || echo stdin-closed",
        ])
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    assert_eq!(stdout.matches("stdin-closed").count(), 3, "{stdout}");
}
