//! `process_manager = "systemd"` on the test bed's systemd hosts 1 and 2 (host 3
//! is rebooted by tests/systemd_bed.rs): deploy, a one-at-a-time upgrade, a
//! version that cannot boot, status and a rollback without the index; the
//! processes are the hosts' systemd's, and no supervisord runs.

mod common;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{expect_code, Sandbox, Testbed};

const HOSTS: [usize; 2] = [1, 2];
/// Every project of this file is named `sd_...`: a run first stops what an
/// earlier run left (its units would hold the ports).
const PREFIX: &str = "sd_";
const PORTS: [&str; 2] = ["9600", "9601"];

/// Builds a project with versions 1.0.0 and 2.0.0 and 1.5.0, which exits at once.
fn build(tb: &Testbed, sb: &Sandbox) -> String {
    build_named(tb, sb, PREFIX)
}

/// `build`, the project's name starting with `prefix`.
fn build_named(tb: &Testbed, sb: &Sandbox, prefix: &str) -> String {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    let name = format!("{prefix}{}_{stamp}", std::process::id());
    let dir = common::create_project(sb, &name);
    std::fs::write(
        dir.join("deploy.toml"),
        format!("[project]\nname = \"{name}\"\n\n{}", tb.index_section()),
    )
    .unwrap();
    common::git(sb, &dir, &["commit", "-qam", "point at the test index"]);
    for version in ["1.0.0", "2.0.0"] {
        expect_code(&common::es_build(sb, tb, &dir, &["--version", version]), 0);
    }
    let main_py = dir.join(&name).join("main.py");
    let code = std::fs::read_to_string(&main_py).unwrap();
    std::fs::write(
        &main_py,
        format!("import sys\nsys.exit('broken on purpose')\n{code}"),
    )
    .unwrap();
    common::git(sb, &dir, &["commit", "-qam", "a build that does not start"]);
    expect_code(&common::es_build(sb, tb, &dir, &["--version", "1.5.0"]), 0);
    name
}

fn config(tb: &Testbed, name: &str, index: &str) -> String {
    let hosts: Vec<String> = HOSTS
        .iter()
        .map(|k| format!("\"{}\"", tb.systemd_hosts[k - 1]))
        .collect();
    format!(
        "[project]\nname = \"{name}\"\n\n{index}\n[roles]\nweb = [{}]\n\n{}\n\
         [deploy]\nprocess_manager = \"systemd\"\nvirtualenv_prefix = \"~/{name}\"\n\
         venv_ports = {{ a = \"960\" }}\ndefault_role = \"web\"\n",
        hosts.join(", "),
        tb.ssh_section()
    )
}

/// Stops and forgets the units an earlier run of this file left on the hosts.
fn fresh(tb: &Testbed) {
    for k in HOSTS {
        let k = k.to_string();
        let script = format!(
            "cd /home/{user} && runuser -u {user} -- env XDG_RUNTIME_DIR=/run/user/$(id -u {user}) sh -c \
             'systemctl --user stop \"{PREFIX}*\"; \
              rm -rf ~/.config/systemd/user/{PREFIX}* ~/.config/systemd/user/default.target.wants/{PREFIX}*; \
              systemctl --user daemon-reload; systemctl --user reset-failed' ; rm -rf /home/{user}/{PREFIX}*",
            user = tb.user
        );
        let out = Command::new("bash")
            .arg(common::repo_root().join("testbed/testbed.sh"))
            .args(["systemd-exec", &k, "sh", "-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success(), "cleaning systemd host {k}: {out:?}");
    }
}

/// What port `port` of systemd host `k` answers at `/` (empty when nothing answers).
fn fetch(tb: &Testbed, k: usize, port: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "3"])
        .arg(format!("http://{}:{port}/", tb.systemd_hosts[k - 1]))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn assert_serving(tb: &Testbed, name: &str, version: &str) {
    for k in HOSTS {
        for port in PORTS {
            assert_eq!(
                fetch(tb, k, port),
                format!("{name} {version} (profile prod, port {port})"),
                "systemd host {k} port {port}"
            );
        }
    }
}

fn es(sb: &Sandbox, args: &[&str]) -> Output {
    sb.es().args(args).output().unwrap()
}

#[test]
fn systemd_deploy_upgrades_one_at_a_time_refuses_a_broken_version_and_rolls_back() {
    let tb = bed!();
    fresh(&tb);
    let sb = Sandbox::new();
    let name = build(&tb, &sb);
    sb.write_config(&config(&tb, &name, &tb.index_section()));

    // First deploy: user units, instances @0 and @1 on 9600 and 9601.
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    assert!(stderr.contains("2 ok, 0 failed"), "{stderr}");
    assert_serving(&tb, &name, "1.0.0");

    // The processes are children of the host's systemd (the deploy user's
    // manager), enabled for boot, and no supervisord runs for this venv.
    let unit = format!("{name}-a");
    let probe = format!(
        "for n in 0 1; do pid=$(systemctl --user show -p MainPID --value {unit}@$n); \
         echo \"$n parent=$(ps -o comm= -p $(ps -o ppid= -p $pid)) enabled=$(systemctl --user is-enabled {unit}@$n)\"; done; \
         echo supervisord=$(pgrep -c -f '{name}/a/etc/[s]upervisord')"
    );
    let (stdout, _) = expect_code(&es(&sb, &["run", "-R", "web", "--", &probe]), 0);
    for k in HOSTS {
        let addr = &tb.systemd_hosts[k - 1];
        for line in [
            "0 parent=systemd enabled=enabled",
            "1 parent=systemd enabled=enabled",
            "supervisord=0",
        ] {
            assert!(
                stdout.contains(&format!("{addr} | {line}")),
                "no {line:?} for {addr} in\n{stdout}"
            );
        }
    }

    // An upgrade restarts one instance at a time: at every moment one of a
    // host's two ports answers (as a balancer in front of them would need).
    let stop = Arc::new(AtomicBool::new(false));
    let (gaps, probes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let poller = {
        let (stop, gaps, probes) = (stop.clone(), gaps.clone(), probes.clone());
        let addr = tb.systemd_hosts[0].clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let any = PORTS.iter().any(|port| {
                    Command::new("curl")
                        .args(["-sf", "-o", "/dev/null", "--max-time", "2"])
                        .arg(format!("http://{addr}:{port}/"))
                        .status()
                        .is_ok_and(|s| s.success())
                });
                probes.fetch_add(1, Ordering::Relaxed);
                if !any {
                    gaps.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let upgrade = es(&sb, &["deploy", "2.0.0", "a", "prod"]);
    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    expect_code(&upgrade, 0);
    assert_serving(&tb, &name, "2.0.0");
    assert!(probes.load(Ordering::Relaxed) > 0);
    assert_eq!(
        gaps.load(Ordering::Relaxed),
        0,
        "moments with neither port answering during the upgrade"
    );

    // A version that cannot boot: refused with systemd's and the journal's
    // reason, every host serving 2.0.0 again.
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "1.5.0", "a", "prod"]), 1);
    assert!(stderr.contains("broken on purpose"), "{stderr}");
    assert!(stderr.contains(&format!("{unit}@0.service")), "{stderr}");
    assert_serving(&tb, &name, "2.0.0");

    // es status reads the units.
    let (stdout, _) = expect_code(&es(&sb, &["status", "a"]), 0);
    assert!(stdout.contains("2.0.0"), "{stdout}");
    assert!(stdout.contains("2/2"), "{stdout}");

    // Rollback needs no index: the config points at a dead one.
    let dead = "[index]\nurl = \"http://127.0.0.1:9/simple/\"\n";
    sb.write_config(&config(&tb, &name, dead));
    expect_code(&es(&sb, &["rollback", "a", "--to", "1.0.0"]), 0);
    assert_serving(&tb, &name, "1.0.0");

    // `es supervisor` has nothing to drive here, and says so before any host is contacted.
    let (_, stderr) = expect_code(&es(&sb, &["supervisor", "status", "a"]), 2);
    assert!(stderr.contains("systemd"), "{stderr}");

    day_two_commands(&tb, &sb, &format!("{unit}@0.service"), "journalctl");
}

/// The same day-2 commands under supervisord, on the same hosts (other ports).
#[test]
fn ps_restart_and_logs_work_the_same_under_supervisord() {
    let tb = bed!();
    let sb = Sandbox::new();
    // What an earlier run left: its supervisords hold the ports.
    for k in HOSTS {
        let script = common::clear_prefix(&format!("/home/{}/sv_*", tb.user));
        let out = Command::new("bash")
            .arg(common::repo_root().join("testbed/testbed.sh"))
            .args(["systemd-exec", &k.to_string(), "sh", "-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success(), "cleaning systemd host {k}: {out:?}");
    }
    let name = build_named(&tb, &sb, "sv_");
    let text = config(&tb, &name, &tb.index_section())
        .replace(
            "process_manager = \"systemd\"",
            "process_manager = \"supervisord\"",
        )
        .replace("a = \"960\"", "a = \"961\"");
    sb.write_config(&text);
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    day_two_commands(&tb, &sb, &format!("{name}:{name}_0"), "tail");
    expect_code(&es(&sb, &["supervisor", "shutdown", "a"]), 0);
}

/// es ps, es restart (one at a time, health-checked) and es logs, -f included.
fn day_two_commands(tb: &Testbed, sb: &Sandbox, first: &str, follower: &str) {
    let (stdout, _) = expect_code(&es(sb, &["ps", "a"]), 0);
    for k in HOSTS {
        let addr = &tb.systemd_hosts[k - 1];
        let row = stdout
            .lines()
            .find(|l| l.starts_with(addr.as_str()) && l.contains(first))
            .unwrap_or_else(|| panic!("no {first} row for {addr} in\n{stdout}"));
        assert!(row.contains("RUNNING") && row.contains("1.0.0-"), "{row}");
    }
    let (_, stderr) = expect_code(&es(sb, &["restart", "a"]), 0);
    assert!(stderr.contains("2 ok, 0 failed"), "{stderr}");
    let (stdout, _) = expect_code(&es(sb, &["logs", "0", "a", "-n", "5"]), 0);
    for k in HOSTS {
        let addr = &tb.systemd_hosts[k - 1];
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{addr} | "))),
            "no line of {addr} in\n{stdout}"
        );
    }
    // -f follows until es is interrupted; nothing is left following on the hosts.
    let mut child = sb
        .es()
        .args(["logs", "a", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // Bounded wait for a line of each host, then Ctrl-C.
    let mut waiting: Vec<String> = HOSTS
        .iter()
        .map(|k| tb.systemd_hosts[k - 1].clone())
        .collect();
    while !waiting.is_empty() {
        let line = seen
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("es logs -f showed nothing of {waiting:?}"));
        waiting.retain(|addr| !line.starts_with(&format!("{addr} | ")));
    }
    let pid = child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "es logs -f ended by itself: {status:?}");
    // A follower ends once its watcher (polling each second) sees the SSH
    // session gone: wait for that, up to 20 s, then count what is left.
    // The first letter in brackets: the pattern does not match this shell's
    // own command line, which holds it.
    let pattern = format!("[{}]{} .*-[fF]", &follower[..1], &follower[1..]);
    let check = format!(
        "i=0; while [ $i -lt 40 ] && pgrep -u $USER -f '{pattern}' >/dev/null; do sleep 0.5; i=$((i+1)); done; pgrep -u $USER -c -f '{pattern}' || true"
    );
    let (stdout, _) = expect_code(&es(sb, &["run", "-R", "web", "--", &check]), 0);
    for k in HOSTS {
        let addr = &tb.systemd_hosts[k - 1];
        assert!(
            stdout.contains(&format!("{addr} | 0")),
            "followers left:\n{stdout}"
        );
    }
}
