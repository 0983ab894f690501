//! `es run` across the test bed: fan-out, a dead host, and host-key checking.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{expect_code, Sandbox, Testbed};

/// Hosts 1-5 belong to this file; the dead-host test stops host 5, so the
/// tests that use host 5 take turns.
static HOST5: Mutex<()> = Mutex::new(());

/// `es run -R web ARGS` in the sandbox.
fn es_run(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    sb.es()
        .args(["run", "-R", "web"])
        .args(args)
        .output()
        .unwrap()
}

fn config(tb: &Testbed, hosts: &[usize]) -> String {
    let entries: Vec<String> = hosts
        .iter()
        .map(|n| format!("\"{}\"", tb.addr(*n)))
        .collect();
    format!(
        "[roles]\nweb = [{}]\n\n{}",
        entries.join(", "),
        tb.ssh_section()
    )
}

#[test]
fn run_prints_each_hosts_own_hostname() {
    let _turn = HOST5.lock().unwrap_or_else(|e| e.into_inner());
    let tb = bed!();
    let sb = Sandbox::new();
    sb.write_config(&config(&tb, &[1, 2, 3, 4, 5]));
    let out = es_run(&sb, &["--", "hostname"]);
    let (stdout, stderr) = expect_code(&out, 0);
    for n in 1..=5 {
        let line = format!("{} | esh{n}", tb.addr(n));
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in\n{stdout}"
        );
    }
    assert!(stderr.contains("5 ok, 0 failed"), "{stderr}");
}

/// Restarts a stopped sshd even when the test fails.
struct Restart<'a>(&'a Testbed, usize);

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        self.0.control(&["start-sshd", &self.1.to_string()]);
    }
}

#[test]
fn a_dead_host_fails_alone_and_quickly() {
    let _turn = HOST5.lock().unwrap_or_else(|e| e.into_inner());
    let tb = bed!();
    let sb = Sandbox::new();
    sb.write_config(&config(&tb, &[1, 2, 3, 4, 5]));
    tb.control(&["stop-sshd", "5"]);
    let _restart = Restart(&tb, 5);

    let report = sb.work.path().join("report.json");
    let started = Instant::now();
    let out = es_run(
        &sb,
        &["--report", report.to_str().unwrap(), "--", "echo", "alive"],
    );
    let elapsed = started.elapsed();
    let (stdout, stderr) = expect_code(&out, 1);
    assert_eq!(common::failure_kind(&report, tb.addr(5)), "connect");
    assert_eq!(common::failure_kind(&report, tb.addr(1)), "");
    for n in 1..=4 {
        assert!(
            stdout.contains(&format!("{} | alive", tb.addr(n))),
            "{stdout}"
        );
    }
    assert!(
        !stdout.contains(&format!("{} | alive", tb.addr(5))),
        "{stdout}"
    );
    let dead_line = stderr
        .lines()
        .find(|l| l.contains(tb.addr(5)) && l.contains("FAILED"))
        .unwrap_or_else(|| panic!("no summary line for the dead host in\n{stderr}"));
    assert!(dead_line.contains("connect"), "{dead_line}");
    assert!(dead_line.contains("refused"), "{dead_line}");
    assert!(stderr.contains("4 ok, 1 failed"), "{stderr}");
    // connect_timeout is 3 s in the test configuration.
    assert!(elapsed < Duration::from_secs(3 + 2), "took {elapsed:?}");
}

#[test]
fn an_unreachable_address_times_out_within_connect_timeout() {
    let tb = bed!();
    let sb = Sandbox::new();
    // .250 is on the test bed's bridge network but no host has it: no answer at all.
    let silent = format!("{}.250", tb.bridge_addr.rsplit_once('.').unwrap().0);
    sb.write_config(&format!(
        "[roles]\nweb = [\"{}\", \"{silent}\"]\n\n{}",
        tb.addr(1),
        tb.ssh_section()
    ));
    let started = Instant::now();
    let out = es_run(&sb, &["--", "true"]);
    let elapsed = started.elapsed();
    let (_, stderr) = expect_code(&out, 1);
    assert!(stderr.contains("1 ok, 1 failed"), "{stderr}");
    assert!(stderr.contains(&silent), "{stderr}");
    assert!(elapsed < Duration::from_secs(3 + 2), "took {elapsed:?}");
}

/// The fingerprint of host `n`'s key as OpenSSH prints it.
fn fingerprint(tb: &Testbed, n: usize) -> String {
    let known = std::fs::read_to_string(&tb.known_hosts).unwrap();
    let line = known
        .lines()
        .find(|l| l.split_whitespace().next() == Some(tb.addr(n)))
        .expect("host in the test bed's known_hosts");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one");
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string()
}

#[test]
fn unknown_host_is_refused_then_accepted_and_recorded() {
    let tb = bed!();
    let sb = Sandbox::new();
    // known_hosts holds every host but host 2.
    let known = std::fs::read_to_string(&tb.known_hosts).unwrap();
    let without: String = known
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(tb.addr(2)))
        .map(|l| format!("{l}\n"))
        .collect();
    let partial = sb.work.path().join("partial_known_hosts");
    std::fs::write(&partial, without).unwrap();
    let text = config(&tb, &[1, 2]).replace(
        &tb.known_hosts.display().to_string(),
        &partial.display().to_string(),
    );
    sb.write_config(&text);

    let report = sb.work.path().join("report.json");
    let out = es_run(&sb, &["--report", report.to_str().unwrap(), "--", "true"]);
    let (_, stderr) = expect_code(&out, 1);
    assert_eq!(common::failure_kind(&report, tb.addr(2)), "host_key");
    let expected = fingerprint(&tb, 2);
    assert!(expected.starts_with("SHA256:"), "{expected}");
    assert!(
        stderr.contains(&expected),
        "fingerprint {expected} not in\n{stderr}"
    );
    assert!(stderr.contains("--accept-new-host-keys"), "{stderr}");
    assert!(stderr.contains("1 ok, 1 failed"), "{stderr}");

    let out = es_run(&sb, &["--accept-new-host-keys", "--", "true"]);
    expect_code(&out, 0);
    let recorded = std::fs::read_to_string(sb.home.path().join(".ssh/known_hosts")).unwrap();
    assert!(
        recorded.starts_with(&format!("{} ssh-ed25519 ", tb.addr(2))),
        "{recorded}"
    );

    // Recorded: accepted from now on without the flag.
    let out = es_run(&sb, &["--", "true"]);
    expect_code(&out, 0);
}

#[test]
fn changed_host_key_is_refused_even_with_accept_new() {
    let tb = bed!();
    let sb = Sandbox::new();
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(sb.work.path().join("other"))
        .status()
        .unwrap();
    assert!(keygen.success());
    let other = std::fs::read_to_string(sb.work.path().join("other.pub")).unwrap();
    let other_key: Vec<&str> = other.split_whitespace().take(2).collect();
    let forged = sb.work.path().join("forged_known_hosts");
    std::fs::write(&forged, format!("{} {}\n", tb.addr(3), other_key.join(" "))).unwrap();
    let text = config(&tb, &[3]).replace(
        &tb.known_hosts.display().to_string(),
        &forged.display().to_string(),
    );
    sb.write_config(&text);

    let report = sb.work.path().join("report.json");
    for extra in [&[][..], &["--accept-new-host-keys"][..]] {
        let out = sb
            .es()
            .arg("run")
            .args(extra)
            .args(["--report", report.to_str().unwrap()])
            .args(["-R", "web", "--", "touch", "/tmp/es-should-not-exist"])
            .output()
            .unwrap();
        let (_, stderr) = expect_code(&out, 1);
        assert_eq!(common::failure_kind(&report, tb.addr(3)), "host_key");
        assert!(stderr.contains("HOST KEY CHANGED"), "{stderr}");
        assert!(stderr.contains(&fingerprint(&tb, 3)), "{stderr}");
    }
    assert!(!sb.home.path().join(".ssh/known_hosts").exists());
    let check = tb.exec(3, &["test", "-e", "/tmp/es-should-not-exist"]);
    assert!(
        !check.status.success(),
        "the command ran on a host with a changed key"
    );
}

#[test]
fn hashed_known_hosts_entries_are_honoured() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hashed = sb.work.path().join("hashed_known_hosts");
    std::fs::copy(&tb.known_hosts, &hashed).unwrap();
    let status = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&hashed)
        .output()
        .unwrap();
    assert!(status.status.success());
    let text = std::fs::read_to_string(&hashed).unwrap();
    assert!(text.starts_with("|1|"), "{text}");
    sb.write_config(&config(&tb, &[1, 4]).replace(
        &tb.known_hosts.display().to_string(),
        &hashed.display().to_string(),
    ));
    let out = es_run(&sb, &["--", "true"]);
    expect_code(&out, 0);
}

#[test]
fn hosts_flag_ssh_config_alias_and_json_summary() {
    let tb = bed!();
    let sb = Sandbox::new();
    // An ~/.ssh/config alias naming host 4, its user and key.
    let ssh_dir = sb.home.path().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    std::fs::write(
        ssh_dir.join("config"),
        format!(
            "Host web-four\n  HostName {}\n  User {}\nHost *\n  IdentityFile {}\n",
            tb.addr(4),
            tb.user,
            tb.key.display()
        ),
    )
    .unwrap();
    std::fs::copy(&tb.known_hosts, ssh_dir.join("known_hosts")).unwrap();
    let out = sb
        .es()
        .args([
            "--json",
            "run",
            "-H",
            &format!("web-four,{}@{}", tb.user, tb.addr(1)),
        ])
        .args(["--", "hostname"])
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["ok"], 2);
    assert_eq!(summary["failed"], 0);
    let outputs: Vec<_> = events.iter().filter(|e| e["event"] == "output").collect();
    assert!(outputs
        .iter()
        .any(|e| e["host"] == "web-four" && e["stdout"] == "esh4\n"));
}

#[test]
fn quiet_keeps_only_the_summary_and_exit_status_follows_the_command() {
    let tb = bed!();
    let sb = Sandbox::new();
    sb.write_config(&config(&tb, &[1, 2]));
    let out = sb
        .es()
        .args(["-q", "run", "-R", "web", "--", "echo noisy; exit 7"])
        .output()
        .unwrap();
    let (stdout, stderr) = expect_code(&out, 1);
    assert!(!stdout.contains("noisy"), "{stdout}");
    assert!(stderr.contains("exit status 7"), "{stderr}");
    assert!(stderr.contains("0 ok, 2 failed"), "{stderr}");

    // Success: no line per host at all, only the count.
    let out = sb
        .es()
        .args(["-q", "run", "-R", "web", "--", "true"])
        .output()
        .unwrap();
    let (stdout, stderr) = expect_code(&out, 0);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(!stderr.contains(tb.addr(1)), "{stderr}");
    assert!(stderr.contains("2 ok, 0 failed"), "{stderr}");
}

#[test]
fn escape_sequences_from_a_host_are_shown_not_obeyed() {
    let tb = bed!();
    let sb = Sandbox::new();
    sb.write_config(&config(&tb, &[1]));
    let out = es_run(
        &sb,
        &[
            "--",
            r"printf '[2Jcleared
'; printf ']0;title' >&2; exit 3",
        ],
    );
    let (stdout, stderr) = expect_code(&out, 1);
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
    }
    assert!(stdout.contains(r"\u{1b}[2Jcleared"), "{stdout}");
    assert!(stderr.contains(r"\u{1b}]0;title\u{7}"), "{stderr}");
}

#[test]
fn local_host_runs_without_ssh() {
    let sb = Sandbox::new();
    let out = sb
        .es()
        .args(["run", "-H", "local", "--", "echo from-here"])
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    assert_eq!(stdout.trim(), "local | from-here");
}

#[test]
fn a_passphrase_protected_key_gets_a_clear_error() {
    let tb = bed!();
    let sb = Sandbox::new();
    let key = sb.work.path().join("locked_key");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "a passphrase", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(keygen.success());
    sb.write_config(
        &config(&tb, &[1]).replace(&tb.key.display().to_string(), &key.display().to_string()),
    );
    let out = es_run(&sb, &["--", "true"]);
    let (_, stderr) = expect_code(&out, 1);
    assert!(stderr.contains("passphrase-protected"), "{stderr}");
    assert!(stderr.contains("ssh-add"), "{stderr}");
    assert!(!stderr.contains("a passphrase"), "{stderr}");
}

/// Stops the ssh-agent a test started, even when the test fails.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ssh_agent_is_tried_first() {
    let tb = bed!();
    let sb = Sandbox::new();
    let socket = sb.work.path().join("agent.sock");
    let agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _agent = Agent(agent);
    for _ in 0..50 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let added = std::process::Command::new("ssh-add")
        .arg(&tb.key)
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    // No identity file anywhere: only the agent holds the key.
    let text =
        config(&tb, &[2]).replace(&format!("identity_file = \"{}\"\n", tb.key.display()), "");
    assert!(!text.contains("identity_file"), "{text}");
    sb.write_config(&text);
    let out = sb
        .es()
        .args(["run", "-R", "web", "--", "hostname"])
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    assert_eq!(stdout.trim(), format!("{} | esh2", tb.addr(2)));

    // And without the agent the same configuration has no way in.
    let out = es_run(&sb, &["--", "true"]);
    let (_, stderr) = expect_code(&out, 1);
    assert!(
        stderr.contains("authentication as deploy failed"),
        "{stderr}"
    );
}

#[test]
fn sudo_runs_the_command_as_root() {
    let tb = bed!();
    let sb = Sandbox::new();
    sb.write_config(&config(&tb, &[3]));
    let out = es_run(&sb, &["--", "id -un"]);
    let (stdout, _) = expect_code(&out, 0);
    assert_eq!(stdout.trim(), format!("{} | {}", tb.addr(3), tb.user));
    // The whole command line runs under sudo, quotes and all.
    let out = sb
        .es()
        .args([
            "run",
            "-R",
            "web",
            "--sudo",
            "--",
            "id -un; echo \"it's $(id -u)\"",
        ])
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    let a = tb.addr(3);
    assert_eq!(stdout, format!("{a} | root\n{a} | it's 0\n"));
}

#[test]
fn the_same_host_written_three_ways_is_worked_on_once() {
    let tb = bed!();
    let sb = Sandbox::new();
    sb.write_config(&config(&tb, &[2]));
    let a = tb.addr(2);
    let hosts = format!("{}@{a},{a},{a}:22", tb.user);
    let out = sb
        .es()
        .args(["run", "-H", &hosts, "--", "hostname"])
        .output()
        .unwrap();
    let (stdout, stderr) = expect_code(&out, 0);
    assert_eq!(stdout.matches("esh2").count(), 1, "{stdout}");
    assert_eq!(stderr.matches("is the same host as").count(), 2, "{stderr}");
    assert!(stderr.contains("1 ok, 0 failed"), "{stderr}");
}

#[test]
fn output_far_larger_than_memory_is_streamed_not_held() {
    let tb = bed!();
    let sb = Sandbox::new();
    sb.write_config(&config(&tb, &[3]));
    // 100 MB of output through es, counted by wc: es's own peak memory
    // (ru_maxrss of the finished children) stays far below it.
    let es = env!("CARGO_BIN_EXE_es");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{es}' run -R web -- 'yes 0123456789012345678901234567890123456789012345678 | head -c 100000000' | wc -c"
        ))
        .current_dir(sb.work.path())
        .env("HOME", sb.home.path())
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let (stdout, stderr) = expect_code(&out, 0);
    let bytes: u64 = stdout.trim().parse().unwrap();
    assert!(bytes > 100_000_000, "{bytes} bytes\n{stderr}");
    // SAFETY: getrusage fills the struct it is given.
    let peak_kib = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    };
    assert!(
        peak_kib < 60 * 1024,
        "a child of the tests peaked at {peak_kib} KiB"
    );
    println!("streamed {bytes} bytes; peak RSS of any child {peak_kib} KiB");
}
