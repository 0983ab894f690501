//! Never half-switched (hosts 37-41): hostile prefixes are refused before any
//! host is contacted; the host guards its own switch and goes back by itself
//! when es is gone before confirming it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{deploy_until, expect_code, signal, Sandbox, Testbed};

/// The project on the index: 1.0.0 and 4.0.0 serve; 2.0.0 runs but never
/// answers; 3.0.0 answers, then exits about 3 s later.
struct Built {
    name: String,
    _sandbox: Sandbox,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let tb = Testbed::get();
        let sb = Sandbox::new();
        let name = common::unique("guard");
        let dir = common::create_project(&sb, &name);
        std::fs::write(
            dir.join("deploy.toml"),
            format!("[project]\nname = \"{name}\"\n\n{}", tb.index_section()),
        )
        .unwrap();
        let main = dir.join(&name).join("main.py");
        let serving = std::fs::read_to_string(&main).unwrap();
        let hang = serving.replace(
            "    server = make_server(",
            "    import time\n    time.sleep(10**6)\n    server = make_server(",
        );
        let crash = serving.replace(
            "        server.serve_forever()",
            "        import threading\n        threading.Timer(3.3, lambda: os._exit(1)).start()\n        server.serve_forever()",
        );
        for (version, code) in [
            ("1.0.0", &serving),
            ("4.0.0", &serving),
            ("2.0.0", &hang),
            ("3.0.0", &crash),
        ] {
            std::fs::write(&main, code).unwrap();
            common::git(&sb, &dir, &["commit", "-qam", version, "--allow-empty"]);
            expect_code(
                &common::es_build(&sb, &tb, &dir, &["--version", version]),
                0,
            );
        }
        Built {
            name,
            _sandbox: sb,
        }
    })
}

/// A deploy.toml for project `name` on hosts `hosts`, venv `a` under
/// PREFIX (as written in TOML) on ports PORT0 and PORT1; `extra` goes on
/// in the `[deploy]` table.
fn config(
    tb: &Testbed,
    name: &str,
    hosts: &[usize],
    prefix: &str,
    port: &str,
    extra: &str,
) -> String {
    let entries: Vec<String> = hosts
        .iter()
        .map(|n| format!("\"{}\"", tb.addr(*n)))
        .collect();
    format!(
        "[project]\nname = \"{name}\"\n\n{}\n[roles]\nweb = [{}]\n\n{}keepalive = 2\n\n[deploy]\nvirtualenv_prefix = {prefix}\nvenv_ports = {{ a = \"{port}\" }}\ndefault_role = \"web\"\n{extra}\n",
        tb.index_section(),
        entries.join(", "),
        tb.ssh_section(),
    )
}

fn es(sb: &Sandbox, args: &[&str]) -> Output {
    sb.es().args(args).output().unwrap()
}

#[test]
fn a_prefix_that_would_run_code_is_refused_before_any_host_is_contacted() {
    let tb = bed!();
    let sb = Sandbox::new();
    let marker = common::unique("/tmp/pwned");
    for prefix in [
        format!("'~/x$(touch {marker})'"),
        format!("'~/x`touch {marker}`'"),
        "'~/my apps'".to_string(),
        "'~/a;b'".to_string(),
        "\"-rf\"".to_string(),
    ] {
        let text = config(&tb, "guarded", &[37], &prefix, "890", "");
        sb.write_config(&text);
        for args in [
            &["deploy", "1.0.0", "a", "prod"][..],
            &["status", "a"],
            &["run", "--", "true"],
        ] {
            let (_, stderr) = expect_code(&es(&sb, args), 2);
            assert!(
                stderr.contains("deploy.toml:") && stderr.contains("deploy.virtualenv_prefix"),
                "{prefix}: {stderr}"
            );
            // file:line:column names where the prefix is written.
            let line = text
                .lines()
                .position(|l| l.starts_with("virtualenv_prefix"))
                .unwrap()
                + 1;
            assert!(
                stderr.contains(&format!("deploy.toml:{line}:")),
                "{prefix}: {stderr}"
            );
        }
    }
    let on_host = tb.exec(37, &["sh", "-c", &format!("ls {marker} 2>&1")]);
    assert!(!on_host.status.success(), "created on the host");
    assert!(!std::path::Path::new(&marker).exists(), "created here");
}

/// Stops what an earlier run left under `~/PREFIX` on host `n` and removes it.
fn fresh(tb: &Testbed, n: usize, prefix: &str) {
    let script = common::clear_prefix(&format!("/home/{}/{prefix}", tb.user));
    tb.exec(n, &["sh", "-c", &script]);
}

/// What host `n` itself gets from its own port (no link needed).
fn local_fetch(tb: &Testbed, n: usize, port: &str) -> String {
    let out = tb.exec(
        n,
        &[
            "curl",
            "-s",
            "--max-time",
            "2",
            &format!("http://127.0.0.1:{port}/"),
        ],
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether both processes of host `n` (PORT0, PORT1) serve `version`, asked on the host.
fn serves(tb: &Testbed, n: usize, port: &str, version: &str) -> bool {
    (0..2).all(|i| {
        local_fetch(tb, n, &format!("{port}{i}"))
            .starts_with(&format!("{} {version} ", built().name))
    })
}

/// Whether venv `a` under PREFIX on host `n` holds a deploy lock.
fn locked(tb: &Testbed, n: usize, prefix: &str) -> bool {
    tb.exec(
        n,
        &[
            "test",
            "-d",
            &format!("/home/{}/{prefix}/a/.es/lock", tb.user),
        ],
    )
    .status
    .success()
}

fn host_text(tb: &Testbed, n: usize, path: &str) -> String {
    let out = tb.exec(n, &["cat", &format!("/home/{}/{path}", tb.user)]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (bounded) until host `n` serves `version` from both ports with no
/// lock left; returns how long that took.
fn wait_back(tb: &Testbed, n: usize, prefix: &str, version: &str, bound: Duration) -> Duration {
    let began = Instant::now();
    while began.elapsed() < bound {
        if serves(tb, n, "890", version) && !locked(tb, n, prefix) {
            return began.elapsed();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "host {n} does not serve {version} unlocked after {bound:?}: 8900 {:?}, 8901 {:?}, locked {}; guard: {}{}",
        local_fetch(tb, n, "8900"),
        local_fetch(tb, n, "8901"),
        locked(tb, n, prefix),
        host_text(tb, n, &format!("{prefix}/a/.es/guard/reason")),
        host_text(tb, n, &format!("{prefix}/a/.es/guard/log")),
    )
}

/// The switch deadline of these tests, and the health wait of the version
/// that never answers: es confirms within 17 s, the host keeps 8 + 3 s for
/// going back.
const DEADLINE: u64 = 28;
const GUARDED: &str = "\n[deploy.health]\ntimeout = 8\ndeadline = 28\n";
/// What observing a host from here may add to the deadline (its checks run
/// every 250 ms and each asks the host four times).
const OBSERVED_WITHIN: Duration = Duration::from_secs(2);

/// Host `n` on 1.0.0 under PREFIX, then a deploy of 2.0.0 (which never
/// answers) that `fault` interrupts once the switch has begun; the host must
/// go back to 1.0.0 by itself, unlocked, and say why.
/// `heal` undoes the fault before the last deploy; `ssh` goes on in the
/// `[ssh]` table.
fn guarded_switch_survives(
    n: usize,
    prefix: &str,
    ssh: &str,
    fault: impl FnOnce(&Testbed, u32),
    heal: impl FnOnce(),
) {
    let tb = Testbed::get();
    let sb = Sandbox::new();
    fresh(&tb, n, prefix);
    let name = &built().name;
    sb.write_config(
        &config(&tb, name, &[n], &format!("\"~/{prefix}\""), "890", GUARDED)
            .replace("keepalive = 2\n", &format!("keepalive = 2\n{ssh}")),
    );
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    assert!(serves(&tb, n, "890", "1.0.0"));

    let mut armed_at = None;
    let mut child = deploy_until(&sb, &["2.0.0", "a", "prod"], ": switch", |pid| {
        armed_at = Some(Instant::now());
        std::thread::sleep(Duration::from_secs(2));
        fault(&tb, pid);
    });
    // Bounded well past the deadline, to say how late it was when it is.
    let took = wait_back(&tb, n, prefix, "1.0.0", Duration::from_secs(DEADLINE + 20));
    let since_switch = armed_at.unwrap().elapsed();
    assert!(
        since_switch <= Duration::from_secs(DEADLINE) + OBSERVED_WITHIN,
        "host {n} served 1.0.0 unlocked only {since_switch:?} after the switch began (deadline {DEADLINE}s)"
    );
    let reason = host_text(&tb, n, &format!("{prefix}/a/.es/guard/reason"));
    assert!(
        reason.contains("es did not confirm release 2.0.0")
            && reason.contains("went back to 1.0.0"),
        "{reason}"
    );
    let ledger = host_text(&tb, n, &format!("{prefix}/a/.es/releases.jsonl"));
    let last: serde_json::Value = serde_json::from_str(ledger.lines().last().unwrap()).unwrap();
    assert_eq!(last["action"], "guard", "{ledger}");
    assert_eq!(last["outcome"], "reverted by the host", "{ledger}");
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "host {n}: serving 1.0.0 unlocked {:.1}s after the switch began (deadline {DEADLINE}s; {:.1}s of waiting here)",
        since_switch.as_secs_f64(),
        took.as_secs_f64()
    );
    // The next deploy works without --force.
    heal();
    expect_code(&es(&sb, &["deploy", "4.0.0", "a", "prod"]), 0);
    assert!(serves(&tb, n, "890", "4.0.0"));
}

#[test]
fn sigkill_of_es_during_the_health_wait_the_host_goes_back_by_itself() {
    let _bed = bed!();
    guarded_switch_survives(38, "guard_kill", "", |_, pid| signal(pid, "-KILL"), || ());
}

#[test]
fn double_ctrl_c_during_the_health_wait_the_host_goes_back_by_itself() {
    let _bed = bed!();
    guarded_switch_survives(
        39,
        "guard_intr",
        "",
        |_, pid| {
            signal(pid, "-INT");
            std::thread::sleep(Duration::from_millis(200));
            signal(pid, "-INT");
        },
        || (),
    );
}

/// Brings host `n`'s link back up, even when the test fails.
struct LinkUp(usize, String);

impl Drop for LinkUp {
    fn drop(&mut self) {
        let (n, bridge) = (self.0, &self.1);
        let _ = Testbed::get().exec(
            n,
            &[
                "sh",
                "-c",
                &format!("ip link set eth0 up; ip route replace default via {bridge}; sysctl -qw net.ipv4.tcp_retries2=15"),
            ],
        );
    }
}

/// `guarded_switch_survives` for host `n` with the link of host `cut` (`n`
/// itself, or its bastion) going down during the health wait, without a
/// reset (the host's side goes down; it is checked from inside while the
/// link is down); the link comes back before the last deploy.
fn link_cut_survives(n: usize, prefix: &str, ssh: &str, cut: usize) {
    let tb = Testbed::get();
    let restore = std::cell::RefCell::new(Some(LinkUp(cut, tb.bridge_addr.clone())));
    guarded_switch_survives(
        n,
        prefix,
        ssh,
        |tb, _| {
            let down = tb.exec(
                cut,
                &[
                    "sh",
                    "-c",
                    "sysctl -qw net.ipv4.tcp_retries2=3 && ip link set eth0 down",
                ],
            );
            assert!(down.status.success(), "{down:?}");
        },
        || {
            drop(restore.borrow_mut().take());
            std::thread::sleep(Duration::from_secs(1));
        },
    );
}

#[test]
fn a_link_cut_during_the_health_wait_the_host_goes_back_by_itself() {
    let _bed = bed!();
    link_cut_survives(37, "guard_link", "", 37);
}

/// A host reached through a bastion (`ssh.proxy_jump`, host 36): the
/// bastion's link is cut during the health wait; the host behind it (35)
/// goes back by itself, as for its own link.
#[test]
fn a_bastion_cut_during_the_health_wait_the_host_behind_it_goes_back_by_itself() {
    let tb = bed!();
    let bastion = 36;
    let proxy_jump = format!("proxy_jump = \"{}@{}\"\n", tb.user, tb.addr(bastion));
    link_cut_survives(35, "guard_bastion", &proxy_jump, bastion);
}

/// The summary line of host `n`.
fn summary_line(stderr: &str, tb: &Testbed, n: usize) -> String {
    let addr = format!("  {} ", tb.addr(n));
    stderr
        .lines()
        .rev()
        .find(|l| l.starts_with(&addr))
        .unwrap_or_else(|| panic!("no summary line for host {n} in\n{stderr}"))
        .to_string()
}

#[test]
fn a_version_that_crashes_3s_after_answering_is_refused_with_the_defaults() {
    let tb = bed!();
    let sb = Sandbox::new();
    let (n, prefix) = (40, "guard_settle");
    fresh(&tb, n, prefix);
    sb.write_config(&config(
        &tb,
        &built().name,
        &[n],
        &format!("\"~/{prefix}\""),
        "891",
        "",
    ));
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "3.0.0", "a", "prod"]), 1);
    let line = summary_line(&stderr, &tb, n);
    assert!(
        line.contains("FAILED") && line.contains("at switch"),
        "{stderr}"
    );
    assert!(stderr.contains("settle window"), "{stderr}");
    assert!(
        stderr.contains("back on 1.0.0, which serves again"),
        "{stderr}"
    );
    assert!(serves(&tb, n, "891", "1.0.0"));
}

#[test]
fn a_post_hook_failing_on_one_host_leaves_the_fleet_on_one_version() {
    let tb = bed!();
    let sb = Sandbox::new();
    let (hosts, prefix) = ([40, 41], "guard_post");
    for n in hosts {
        fresh(&tb, n, prefix);
    }
    let name = &built().name;
    let prefix_toml = format!("\"~/{prefix}\"");
    sb.write_config(&config(&tb, name, &hosts, &prefix_toml, "890", ""));
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    let hook = format!("post_hooks = ['test \"$ES_HOST\" != {}']", tb.addr(41));
    sb.write_config(&config(&tb, name, &hosts, &prefix_toml, "890", &hook));
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "4.0.0", "a", "prod"]), 1);
    assert!(
        summary_line(&stderr, &tb, 41).contains("a post hook failed; back on 1.0.0"),
        "{stderr}"
    );
    assert!(
        summary_line(&stderr, &tb, 40).contains("reverted"),
        "{stderr}"
    );
    for n in hosts {
        assert!(serves(&tb, n, "890", "1.0.0"), "host {n}: {stderr}");
        assert!(!locked(&tb, n, prefix), "host {n}: {stderr}");
    }
    // One version everywhere: es status agrees.
    let (_, stderr) = expect_code(&es(&sb, &["status", "a"]), 0);
    assert!(!stderr.contains("different versions"), "{stderr}");
}

/// Undoes the ledger's mounts on host `n`, even when the test fails.
struct Unmount(usize, Vec<String>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for path in &self.1 {
            Testbed::get().exec(self.0, &["umount", path]);
        }
    }
}

#[test]
fn a_full_disk_at_the_ledger_write_fails_the_deploy_and_keeps_whole_lines() {
    let tb = bed!();
    let sb = Sandbox::new();
    let (n, prefix) = (41, "guard_ledger");
    fresh(&tb, n, prefix);
    sb.write_config(&config(
        &tb,
        &built().name,
        &[n],
        &format!("\"~/{prefix}\""),
        "892",
        "",
    ));
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);

    // The ledger alone on a tiny tmpfs (bound over the file), its page nearly
    // full and the rest of the tmpfs taken: the next line fits only in part.
    let ledger = format!("/home/{}/{prefix}/a/.es/releases.jsonl", tb.user);
    let disk = format!("/tmp/{prefix}-disk");
    let script = format!(
        r#"set -e
mkdir -p {disk}
mount -t tmpfs -o size=8k,mode=0777 tmpfs {disk}
cp {ledger} {disk}/ledger
chmod 666 {disk}/ledger
mount --bind {disk}/ledger {ledger}
size=$(stat -c %s {ledger})
printf '{{"pad":"%s"}}\n' "$(head -c $((4090 - size - 11)) /dev/zero | tr '\0' x)" >> {ledger}
dd if=/dev/zero of={disk}/fill bs=1k 2>/dev/null || true
stat -c %s {ledger}"#
    );
    let _unmount = Unmount(n, vec![ledger.clone(), disk.clone()]);
    let out = tb.exec(n, &["sh", "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    let before = host_text(&tb, n, &format!("{prefix}/a/.es/releases.jsonl"));
    assert_eq!(before.len(), 4090, "{before}");

    let (_, stderr) = expect_code(&es(&sb, &["deploy", "4.0.0", "a", "prod"]), 1);
    let line = summary_line(&stderr, &tb, n);
    assert!(
        line.contains("FAILED") && line.contains("at finish"),
        "{stderr}"
    );
    assert!(stderr.contains("ledger: cannot append"), "{stderr}");
    assert!(stderr.contains("the deploy lock was released"), "{stderr}");
    assert!(!stderr.contains("may remain"), "{stderr}");
    assert!(
        stderr.contains("the host runs 4.0.0"),
        "read back: {stderr}"
    );
    assert!(!locked(&tb, n, prefix));
    let after = host_text(&tb, n, &format!("{prefix}/a/.es/releases.jsonl"));
    assert_eq!(after, before, "the ledger keeps whole lines only");
    for l in after.lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
}

#[test]
fn a_failed_first_deploy_is_said_and_rollback_never_picks_a_failed_release() {
    let tb = bed!();
    let sb = Sandbox::new();
    let (n, prefix) = (38, "guard_first");
    fresh(&tb, n, prefix);
    let name = &built().name;
    sb.write_config(&config(
        &tb,
        name,
        &[n],
        &format!("\"~/{prefix}\""),
        "893",
        GUARDED,
    ));

    // A first deploy that never answers: said as such, nothing left running.
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 1);
    let line = summary_line(&stderr, &tb, n);
    assert!(line.contains("FAILED"), "{stderr}");
    assert!(
        stderr.contains("this host runs no healthy release (supervisord stopped"),
        "{stderr}"
    );
    assert!(!stderr.contains("went back"), "{stderr}");
    let root = format!("/home/{}/{prefix}/a", tb.user);
    let marks = tb.exec(n, &["sh", "-c", &format!("ls {root}/releases/*/failed")]);
    assert!(marks.status.success(), "no failed mark: {marks:?}");
    let running = tb.exec(
        n,
        &[
            "sh",
            "-c",
            &format!("pgrep -f {root}/etc/[s]upervisord.conf"),
        ],
    );
    assert!(
        !running.status.success(),
        "supervisord still runs: {running:?}"
    );

    // 1.0.0, then 4.0.0; 2.0.0 fails again (it was current last, for a moment).
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    expect_code(&es(&sb, &["deploy", "4.0.0", "a", "prod"]), 0);
    expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 1);
    assert!(serves(&tb, n, "893", "4.0.0"));

    // The previous release is 1.0.0, never the failed 2.0.0.
    let (_, stderr) = expect_code(&es(&sb, &["rollback", "a"]), 0);
    assert!(serves(&tb, n, "893", "1.0.0"), "{stderr}");
    let (_, stderr) = expect_code(&es(&sb, &["rollback", "a", "--to", "2.0.0"]), 1);
    assert!(stderr.contains("no 2.0.0 release is kept here"), "{stderr}");
    assert!(serves(&tb, n, "893", "1.0.0"));
}

#[test]
fn a_bare_config_file_name_runs_secret_commands_in_its_directory() {
    let tb = bed!();
    let sb = Sandbox::new();
    let text = config(&tb, &built().name, &[37], "\"~/guard_bare\"", "894", "")
        + "\n[deploy.secrets]\nTOKEN = { command = \"cat token.txt; exit 7\" }\n";
    std::fs::write(sb.work.path().join("sec.toml"), text).unwrap();
    std::fs::write(sb.work.path().join("token.txt"), "t0ken\n").unwrap();
    // The command runs (and its own failure is what is reported), before any host.
    let (_, stderr) = expect_code(
        &es(&sb, &["-c", "sec.toml", "deploy", "1.0.0", "a", "prod"]),
        2,
    );
    assert!(stderr.contains("TOKEN: its command failed"), "{stderr}");
    assert!(!stderr.contains("No such file"), "{stderr}");
}

#[test]
fn a_hook_past_command_timeout_is_ended_on_the_host() {
    let tb = bed!();
    let sb = Sandbox::new();
    let (n, prefix) = (40, "guard_hook");
    fresh(&tb, n, prefix);
    let mut text = config(
        &tb,
        &built().name,
        &[n],
        &format!("\"~/{prefix}\""),
        "895",
        "pre_hooks = [\"sleep 41.5 & sleep 42.5\"]",
    );
    text = text.replace("keepalive = 2\n", "keepalive = 2\ncommand_timeout = 4\n");
    sb.write_config(&text);
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 1);
    assert!(stderr.contains("pre hook 1"), "{stderr}");
    assert!(!locked(&tb, n, prefix), "{stderr}");
    // The hook's shell and both its sleeps are gone (bounded wait).
    let mut left = String::new();
    for _ in 0..40 {
        let out = tb.exec(n, &["sh", "-c", "pgrep -af '[s]leep 4[12].5'"]);
        left = String::from_utf8_lossy(&out.stdout).into_owned();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(left.is_empty(), "still running on the host: {left}");
}

/// Ctrl-C during a long release hook stops the hook on the host (its shell
/// and its children: the process group), nothing is switched, the lock is
/// released, the summary says so, and es exits 130 instead of waiting the
/// ten minutes the hook would take (command_timeout is 15 minutes here).
#[test]
fn ctrl_c_during_a_release_hook_stops_the_hook_on_the_host() {
    let tb = bed!();
    let sb = Sandbox::new();
    let (n, prefix) = (42, "guard_hook_int");
    fresh(&tb, n, prefix);
    let hook = "release_hooks = [\"trap 'echo hook-got-term > ~/guard_hook_int.term; exit 143' TERM; sleep 600.5 & wait\"]";
    let text = config(
        &tb,
        &built().name,
        &[n],
        &format!("\"~/{prefix}\""),
        "897",
        hook,
    )
    .replace("keepalive = 2\n", "keepalive = 2\ncommand_timeout = 900\n");
    sb.write_config(&text);
    tb.exec(
        n,
        &[
            "rm",
            "-f",
            &format!("/home/{}/guard_hook_int.term", tb.user),
        ],
    );
    let hook_running = || {
        let out = tb.exec(n, &["sh", "-c", "pgrep -f '[s]leep 600.5'"]);
        out.status.success()
    };
    let mut child = sb
        .es()
        .args(["deploy", "1.0.0", "a", "prod"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut began = false;
    for _ in 0..480 {
        if hook_running() {
            began = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if !began {
        let _ = child.kill();
        panic!(
            "the hook never ran: {:?}",
            child.wait_with_output().unwrap()
        );
    }
    signal(child.id(), "-INT");
    // Bounded: es that waited for the hook would take ten minutes.
    let mut ended = false;
    for _ in 0..480 {
        if child.try_wait().unwrap().is_some() {
            ended = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = common::text(&out);
    assert!(
        ended,
        "es still waits for the hook 2 minutes after Ctrl-C:\n{stdout}\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("release hook 1 stopped by the interrupt"),
        "{stderr}"
    );
    // The hook was signalled (its trap ran) and nothing of it is left.
    let mut left = true;
    for _ in 0..40 {
        left = hook_running();
        if !left {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(!left, "the hook still runs on the host");
    assert_eq!(
        host_text(&tb, n, "guard_hook_int.term").trim(),
        "hook-got-term"
    );
    assert!(!locked(&tb, n, prefix), "{stderr}");
    let current = tb.exec(
        n,
        &[
            "test",
            "-e",
            &format!("/home/{}/{prefix}/a/current", tb.user),
        ],
    );
    assert!(!current.status.success(), "switched: {stderr}");
}

/// A relay to the bed's index on the bridge that answers es (whose requests
/// come from the bridge's own address) and leaves the hosts' requests
/// unanswered: an index that hangs while the hosts stage. Ended when dropped.
struct HangingIndex {
    relay: std::process::Child,
    url: String,
}

impl HangingIndex {
    fn start(tb: &Testbed) -> HangingIndex {
        let code = r#"
import socket, sys, threading, urllib.parse
bridge, index = sys.argv[1], urllib.parse.urlsplit(sys.argv[2])
listener = socket.create_server((bridge, 0))
print(listener.getsockname()[1], flush=True)
held = []
def pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
while True:
    conn, (peer, _) = listener.accept()
    if peer != bridge:
        held.append(conn)  # never answered
        continue
    upstream = socket.create_connection((index.hostname, index.port))
    threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()
"#;
        let mut relay = Command::new("python3")
            .args(["-c", code, &tb.bridge_addr, &tb.index_url])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut port = String::new();
        BufReader::new(relay.stdout.take().unwrap())
            .read_line(&mut port)
            .unwrap();
        let path = tb.index_url.splitn(4, '/').nth(3).unwrap_or("simple/");
        HangingIndex {
            relay,
            url: format!("http://{}:{}/{path}", tb.bridge_addr, port.trim()),
        }
    }
}

impl Drop for HangingIndex {
    fn drop(&mut self) {
        let _ = self.relay.kill();
        let _ = self.relay.wait();
    }
}

/// An index that stops answering while the hosts stage costs index.timeout
/// once (not again for each of the installer's retries), and the failure
/// says so; the host keeps serving its release, unlocked.
#[test]
fn an_index_that_hangs_during_staging_fails_it_naming_index_timeout() {
    let tb = bed!();
    let sb = Sandbox::new();
    let (n, prefix) = (43, "guard_index");
    fresh(&tb, n, prefix);
    let name = &built().name;
    let text = config(&tb, name, &[n], &format!("\"~/{prefix}\""), "898", "");
    sb.write_config(&text);
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    let hanging = HangingIndex::start(&tb);
    sb.write_config(&text.replace(
        &format!("url = \"{}\"\n", tb.index_url),
        &format!("url = \"{}\"\ntimeout = 3\n", hanging.url),
    ));
    let began = Instant::now();
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "4.0.0", "a", "prod"]), 1);
    assert!(
        stderr.contains("the index did not answer within 3s (index.timeout)"),
        "{stderr}"
    );
    eprintln!(
        "a hanging index (index.timeout 3): the deploy failed after {:.1}s: {}",
        began.elapsed().as_secs_f64(),
        summary_line(&stderr, &tb, n)
    );
    assert!(serves(&tb, n, "898", "1.0.0"), "{stderr}");
    assert!(!locked(&tb, n, prefix), "{stderr}");
}

#[test]
fn a_hook_printing_100_mb_is_streamed_in_bounded_memory() {
    let tb = bed!();
    let sb = Sandbox::new();
    let (n, prefix) = (41, "guard_output");
    fresh(&tb, n, prefix);
    let hook = "pre_hooks = [\"head -c 100000000 /dev/zero | tr '\\\\0' x | fold -w 100; echo hook-done\"]";
    sb.write_config(&config(
        &tb,
        &built().name,
        &[n],
        &format!("\"~/{prefix}\""),
        "896",
        hook,
    ));
    // The release is one that answers; only the memory of es is measured here.
    let out = Command::new("/usr/bin/time")
        .args(["-f", "max-rss-kb=%M", env!("CARGO_BIN_EXE_es")])
        .args(["deploy", "1.0.0", "a", "prod"])
        .current_dir(sb.work.path())
        .env("HOME", sb.home.path())
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let (stdout, stderr) = common::text(&out);
    assert!(
        out.status.success(),
        "{}",
        &stderr[stderr.len().saturating_sub(3000)..]
    );
    assert!(stdout.contains("hook-done"), "the output is shown");
    assert!(stdout.len() > 100_000_000, "all of it: {}", stdout.len());
    let rss: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("max-rss-kb="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}", &stderr[stderr.len().saturating_sub(2000)..]));
    eprintln!(
        "es deploy with 100 MB of hook output: max RSS {} MB",
        rss / 1024
    );
    assert!(rss < 100 * 1024, "max RSS {rss} kB");
}
