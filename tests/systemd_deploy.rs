//! `process_manager = "systemd"` on the test bed's systemd hosts 1 and 2 (host 3
//! is rebooted by tests/systemd_bed.rs): deploy, a one-at-a-time upgrade behind
//! nginx with no failed request, a version that cannot boot, status and a
//! rollback without the index; the processes are the hosts' systemd's, and no
//! supervisord runs.

mod common;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{deploy_until, expect_code, signal, Sandbox, Testbed};

const HOSTS: [usize; 2] = [1, 2];
/// Every project of this file is named `sd_...`: a run first stops what an
/// earlier run left (its units would hold the ports).
const PREFIX: &str = "sd_";
const PORTS: [&str; 2] = ["9600", "9601"];

/// Builds a project with versions 1.0.0 and 2.0.0 and 1.5.0, which exits at
/// once (and, for the guard's test, 3.0.0, which never answers; for the
/// fault tests, 2.5.0, which answers 500).
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
    if prefix == GUARD_PREFIX {
        // 3.0.0 starts and never answers: its health wait lasts.
        std::fs::write(
            &main_py,
            code.replace(
                "    server = make_server(",
                "    import time\n    time.sleep(10**6)\n    server = make_server(",
            ),
        )
        .unwrap();
        common::git(sb, &dir, &["commit", "-qam", "a build that never answers"]);
        expect_code(&common::es_build(sb, tb, &dir, &["--version", "3.0.0"]), 0);
    }
    if prefix == FAULT_PREFIX {
        // 2.5.0 starts and answers 500.
        std::fs::write(
            &main_py,
            code.replacen("self.reply(200,", "self.reply(500,", 1),
        )
        .unwrap();
        common::git(sb, &dir, &["commit", "-qam", "a build that answers 500"]);
        expect_code(&common::es_build(sb, tb, &dir, &["--version", "2.5.0"]), 0);
    }
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

/// `fresh` for PREFIX, then a project built by `build_named` and its
/// deploy.toml with venv `a` on port prefix `port`: its name and deploy.toml.
fn fresh_project(tb: &Testbed, sb: &Sandbox, prefix: &str, port: &str) -> (String, String) {
    fresh(tb, prefix);
    let name = build_named(tb, sb, prefix);
    let text =
        config(tb, &name, &tb.index_section()).replace("a = \"960\"", &format!("a = \"{port}\""));
    (name, text)
}

/// Whether systemd host `k` serves `version` of project `name` on `ports`.
fn serves(tb: &Testbed, k: usize, name: &str, ports: [&str; 2], version: &str) -> bool {
    ports
        .iter()
        .all(|port| fetch(tb, k, port) == format!("{name} {version} (profile prod, port {port})"))
}

/// Stops and forgets the units of projects named `prefix...` that an earlier
/// run of this file left on the hosts: the deploy user's and the system's.
fn fresh(tb: &Testbed, prefix: &str) {
    for k in HOSTS {
        let script = format!(
            "cd /home/{user} && runuser -u {user} -- env XDG_RUNTIME_DIR=/run/user/$(id -u {user}) sh -c \
             'systemctl --user stop \"{prefix}*\"; \
              rm -rf ~/.config/systemd/user/{prefix}* ~/.config/systemd/user/default.target.wants/{prefix}*; \
              systemctl --user daemon-reload; systemctl --user reset-failed' ; \
             systemctl stop '{prefix}*'; \
             rm -f /etc/systemd/system/{prefix}* /etc/systemd/system/multi-user.target.wants/{prefix}*; \
             systemctl daemon-reload; systemctl reset-failed '{prefix}*'; rm -rf /home/{user}/{prefix}*",
            user = tb.user
        );
        let out = systemd_exec(k, &script);
        assert!(out.status.success(), "cleaning systemd host {k}: {out:?}");
    }
}

/// Where the upgrade test's nginx on systemd host 1 listens.
const NGINX_PORT: u16 = 8191;

/// nginx as root inside systemd host `k` (its own, not a unit: the host's
/// nginx.service is masked), listening on `listen` in front of `ports`, its
/// files in /tmp/es-sd-nginx-LISTEN. Stopped when dropped, even when the
/// test fails.
struct HostNginx(usize, String);

impl HostNginx {
    fn start(k: usize, listen: u16, ports: [&str; 2]) -> HostNginx {
        let dir = format!("/tmp/es-sd-nginx-{listen}");
        let conf = format!(
            "worker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n access_log off;\n client_body_temp_path {dir}/body;\n proxy_temp_path {dir}/proxy;\n\
             fastcgi_temp_path {dir}/fastcgi;\n uwsgi_temp_path {dir}/uwsgi;\n scgi_temp_path {dir}/scgi;\n\
             upstream app {{ server 127.0.0.1:{} max_fails=0; server 127.0.0.1:{} max_fails=0; }}\n\
             server {{ listen {listen}; location / {{ proxy_pass http://app; }} }}\n}}\n",
            ports[0], ports[1]
        );
        let script = format!(
            "{stop_pid}stop_pid {dir}/nginx.pid nginx\nrm -rf {dir} && mkdir -p {dir} && \
             cat > {dir}/nginx.conf <<'EOF'\n{conf}EOF\n/usr/sbin/nginx -c {dir}/nginx.conf",
            stop_pid = common::STOP_PID
        );
        let out = systemd_exec(k, &script);
        assert!(out.status.success(), "nginx on systemd host {k}: {out:?}");
        HostNginx(k, dir)
    }
}

impl Drop for HostNginx {
    fn drop(&mut self) {
        let _ = systemd_exec(
            self.0,
            &format!("{}stop_pid {}/nginx.pid nginx", common::STOP_PID, self.1),
        );
    }
}

/// Requests to `url` in a loop until dropped: how many answered, how many
/// failed, and the versions seen.
struct Poller {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, usize, std::collections::BTreeSet<String>)>>,
}

impl Poller {
    fn start(url: String) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut answered, mut failed) = (0, 0);
            let mut versions = std::collections::BTreeSet::new();
            while !flag.load(Ordering::Relaxed) {
                let out = Command::new("curl")
                    .args(["-sf", "--max-time", "10", &url])
                    .output()
                    .unwrap();
                if out.status.success() {
                    answered += 1;
                    let body = String::from_utf8_lossy(&out.stdout).into_owned();
                    versions.insert(body.split_whitespace().nth(1).unwrap_or("").to_string());
                } else {
                    failed += 1;
                }
            }
            (answered, failed, versions)
        });
        Poller {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops (half a second later) and says (answered, failed, versions).
    fn finish(mut self) -> (usize, usize, std::collections::BTreeSet<String>) {
        std::thread::sleep(Duration::from_millis(500));
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// `sh -c SCRIPT` as root inside systemd host `k`.
fn systemd_exec(k: usize, script: &str) -> Output {
    Command::new("bash")
        .arg(common::repo_root().join("testbed/testbed.sh"))
        .args(["systemd-exec", &k.to_string(), "sh", "-c", script])
        .output()
        .unwrap()
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
    fresh(&tb, PREFIX);
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

    // An upgrade restarts one instance at a time, behind nginx (the host's
    // own, as root, balancing over both ports; max_fails=0: a restarting
    // instance is retried, never shunned): no request fails.
    let _nginx = HostNginx::start(1, NGINX_PORT, PORTS);
    let poller = Poller::start(format!("http://{}:{NGINX_PORT}/", tb.systemd_hosts[0]));
    let upgrade = es(&sb, &["deploy", "2.0.0", "a", "prod"]);
    let (answered, failed, versions) = poller.finish();
    expect_code(&upgrade, 0);
    assert_serving(&tb, &name, "2.0.0");
    assert_eq!(
        failed, 0,
        "requests through nginx that failed during the upgrade ({answered} answered)"
    );
    assert!(answered >= 20, "only {answered} requests were made");
    assert!(
        versions.contains("1.0.0") && versions.contains("2.0.0"),
        "{versions:?}"
    );
    eprintln!("systemd upgrade behind nginx: {answered} requests, 0 failed");

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
        let out = systemd_exec(k, &script);
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

/// The projects of the guard's test (stopped by its own fresh start).
const GUARD_PREFIX: &str = "sdg_";

/// SIGKILL of es during the health wait of a version that never answers, on
/// systemd hosts: each host's guard puts the previous release back by itself
/// (the units restarted on it), unlocked, without any command from es, as
/// under supervisord (tests/switch_guard.rs); the next deploy needs no --force.
#[test]
fn sigkill_of_es_during_a_systemd_health_wait_each_host_goes_back_by_itself() {
    let tb = bed!();
    let sb = Sandbox::new();
    let (name, text) = fresh_project(&tb, &sb, GUARD_PREFIX, "962");
    let text = text + "\n[deploy.health]\ntimeout = 8\ndeadline = 28\n";
    sb.write_config(&text);
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    let serves = |version: &str| {
        HOSTS
            .iter()
            .all(|&k| serves(&tb, k, &name, ["9620", "9621"], version))
    };
    let venv = format!("/home/{}/{name}/a", tb.user);
    let locked = || {
        HOSTS.iter().any(|&k| {
            systemd_exec(k, &format!("test -d {venv}/.es/lock"))
                .status
                .success()
        })
    };
    assert!(serves("1.0.0"));

    let mut killed_at = None;
    let mut child = deploy_until(&sb, &["3.0.0", "a", "prod"], ": switch", |pid| {
        std::thread::sleep(Duration::from_secs(2));
        signal(pid, "-KILL");
        killed_at = Some(std::time::Instant::now());
    });
    let _ = child.wait();
    // Bounded well past the deadline (28 s), to say how late it was when it is.
    let mut back = false;
    for _ in 0..200 {
        if serves("1.0.0") && !locked() {
            back = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if let Some(at) = killed_at.filter(|_| back) {
        let after_kill = at.elapsed();
        eprintln!(
            "systemd hosts: serving 1.0.0 unlocked {:.1}s after es was killed, 2 s into the switch (deadline 28s)",
            after_kill.as_secs_f64()
        );
        // The kill came 2 s into the switch; observing adds up to 2 s.
        assert!(
            after_kill <= Duration::from_secs(28),
            "back only {after_kill:?} after the kill (deadline 28 s from the switch)"
        );
    }
    for k in HOSTS {
        let reason = systemd_exec(k, &format!("cat {venv}/.es/guard/reason"));
        let reason = String::from_utf8_lossy(&reason.stdout);
        assert!(
            back && reason.contains("es did not confirm release 3.0.0")
                && reason.contains("went back to 1.0.0"),
            "systemd host {k}: back {back}, locked {}; guard: {reason}",
            locked()
        );
    }
    expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);
    assert!(serves("2.0.0"));
}

/// `es create --process-manager systemd` as a user would take it: the
/// project's own conf/systemd.service (edited here) and deploy.toml (only
/// pointed at the bed) build, deploy to the systemd hosts and serve, and the
/// installed unit is the project's.
#[test]
fn a_project_created_for_systemd_deploys_with_its_own_unit_template() {
    let tb = bed!();
    let sb = Sandbox::new();
    fresh(&tb, "sdc_");
    let name = common::unique("sdc");
    let dir = common::create_project_with(&sb, &name, &["--process-manager", "systemd"]);
    let text = std::fs::read_to_string(dir.join("deploy.toml")).unwrap();
    assert!(text.contains("process_manager = \"systemd\""), "{text}");
    let hosts: Vec<String> = HOSTS
        .iter()
        .map(|k| tb.systemd_hosts[k - 1].clone())
        .collect();
    std::fs::write(
        dir.join("deploy.toml"),
        common::point_at_test_bed(&tb, &text, &hosts, &name, "{ a = \"963\" }"),
    )
    .unwrap();
    let unit = dir.join("conf/systemd.service");
    let template = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(
        &unit,
        template.replacen(
            "[Service]\n",
            "[Service]\nEnvironment=ES_TEMPLATE_MARK=from-the-project\n",
            1,
        ),
    )
    .unwrap();
    common::git(
        &sb,
        &dir,
        &["commit", "-qam", "deploy to the systemd hosts"],
    );
    let (stdout, _) = expect_code(&common::es_build(&sb, &tb, &dir, &[]), 0);
    let version = stdout.lines().last().unwrap().trim().to_string();

    // default_role (dev) and default_venv (a) from the generated deploy.toml.
    let out = sb
        .es()
        .current_dir(&dir)
        .args(["deploy", "latest", "prod"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 0);
    assert!(stderr.contains("2 ok, 0 failed"), "{stderr}");
    for k in HOSTS {
        for port in ["9630", "9631"] {
            assert_eq!(
                fetch(&tb, k, port),
                format!("{name} {version} (profile prod, port {port})"),
                "systemd host {k} port {port}"
            );
        }
    }
    let probe = format!("grep -c from-the-project ~/.config/systemd/user/{name}-a@.service");
    let out = sb
        .es()
        .current_dir(&dir)
        .args(["run", "--", &probe])
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    for addr in &hosts {
        assert!(stdout.contains(&format!("{addr} | 1")), "{stdout}");
    }
}

/// Projects of the fault tests below: `sdf_...`, ports 9640 and 9641.
const FAULT_PREFIX: &str = "sdf_";

/// The fault tests of supervisord hosts (tests/releases.rs), on the systemd
/// hosts: a version answering 500, a unit file that does not start, a full
/// disk on one host, Ctrl-C between batches. Every host keeps serving a
/// good release, unlocked, and the next deploy works.
#[test]
fn the_supervisord_fault_tests_pass_under_systemd() {
    let tb = bed!();
    let sb = Sandbox::new();
    let (name, text) = fresh_project(&tb, &sb, FAULT_PREFIX, "964");
    sb.write_config(&text);
    let serving = |k: usize, version: &str| serves(&tb, k, &name, ["9640", "9641"], version);
    let venv = format!("/home/{}/{name}/a", tb.user);
    let unlocked = |k: usize| {
        !systemd_exec(k, &format!("test -d {venv}/.es/lock"))
            .status
            .success()
    };
    let line = |stderr: &str, k: usize| -> String {
        let entry = format!("  {} ", tb.systemd_hosts[k - 1]);
        stderr
            .lines()
            .rev()
            .find(|l| l.starts_with(&entry))
            .unwrap_or_else(|| panic!("no summary line for systemd host {k} in\n{stderr}"))
            .to_string()
    };
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);

    // A version that answers 500: refused, back on 1.0.0.
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "2.5.0", "a", "prod"]), 1);
    assert!(
        stderr.contains("answered 500 (accepted 200-399)"),
        "{stderr}"
    );
    for k in HOSTS {
        assert!(serving(k, "1.0.0") && unlocked(k), "host {k}: {stderr}");
    }

    // The project's own unit file that systemd refuses (ExecStart must be an
    // absolute path): systemd's reason, and the previous unit and release back.
    std::fs::write(
        sb.work.path().join("bad.service"),
        DEFAULT_UNIT.replace("ExecStart={{ venv_dir }}", "ExecStart=relative"),
    )
    .unwrap();
    sb.write_config(&text.replace(
        "process_manager = \"systemd\"\n",
        "process_manager = \"systemd\"\nsystemd_template = \"bad.service\"\n",
    ));
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 1);
    assert!(stderr.contains("bad unit file setting"), "{stderr}");
    for k in HOSTS {
        assert!(serving(k, "1.0.0") && unlocked(k), "host {k}: {stderr}");
        let unit = systemd_exec(
            k,
            &format!(
                "cat /home/{}/.config/systemd/user/{name}-a@.service",
                tb.user
            ),
        );
        let unit = String::from_utf8_lossy(&unit.stdout);
        assert!(!unit.contains("ExecStart=relative"), "host {k}: {unit}");
    }
    sb.write_config(&text);

    // A full disk on host 2 (a small tmpfs over the venv prefix in its mount
    // namespace; the running processes keep their files): host 2 fails as
    // disk_full and keeps serving 1.0.0, host 1 switches (--max-fail 1).
    let prefix = format!("/home/{}/{name}", tb.user);
    let full = systemd_exec(
        2,
        &format!(
            "mount -t tmpfs -o size=2m,mode=0777 tmpfs {prefix} && \
             dd if=/dev/zero of={prefix}/fill bs=64k 2>/dev/null; true"
        ),
    );
    assert!(full.status.success(), "{full:?}");
    let report = sb.work.path().join("report.json");
    let deploy = es(
        &sb,
        &[
            "deploy",
            "2.0.0",
            "a",
            "prod",
            "--max-fail",
            "1",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let unmount = systemd_exec(2, &format!("umount {prefix}"));
    let (_, stderr) = expect_code(&deploy, 1);
    assert!(unmount.status.success(), "{unmount:?}");
    assert_eq!(
        common::failure_kind(&report, &tb.systemd_hosts[1]),
        "disk_full",
        "{stderr}"
    );
    assert!(
        line(&stderr, 2).contains("No space left on device"),
        "{stderr}"
    );
    assert!(line(&stderr, 1).contains("switched"), "{stderr}");
    assert!(serving(1, "2.0.0") && serving(2, "1.0.0"), "{stderr}");
    assert!(unlocked(1) && unlocked(2), "{stderr}");

    // Ctrl-C during the first batch's post hook: that host finishes, the
    // other is not switched; no lock is left.
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    sb.write_config(&text.replace(
        "default_role = \"web\"\n",
        "default_role = \"web\"\npost_hooks = [\"sleep 2\"]\n",
    ));
    let out = common::interrupted_deploy(
        &sb,
        &["2.0.0", "a", "prod", "--batch", "1"],
        ": post hook 1",
    );
    let (_, stderr) = expect_code(&out, 130);
    assert!(line(&stderr, 1).contains("switched"), "{stderr}");
    assert!(line(&stderr, 2).contains("not switched"), "{stderr}");
    assert!(serving(1, "2.0.0") && serving(2, "1.0.0"), "{stderr}");
    assert!(unlocked(1) && unlocked(2), "{stderr}");
    // Run again, the deploy finishes the job.
    expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);
    assert!(serving(1, "2.0.0") && serving(2, "2.0.0"));
}

/// The built-in unit template, as `es create --process-manager systemd` writes it.
const DEFAULT_UNIT: &str = include_str!("../templates/systemd.service");

/// Projects of the migration test: `sdm_...`, ports 9670 and 9671.
const MOVE_PREFIX: &str = "sdm_";

/// A venv moves from supervisord to systemd with one deploy, and back with
/// a rollback: a handover that fails leaves supervisord serving; the one
/// that works goes process by process behind nginx with no failed request,
/// and supervisord is stopped only once the units are healthy.
#[test]
fn a_venv_moves_from_supervisord_to_systemd_and_back() {
    let tb = bed!();
    let sb = Sandbox::new();
    for k in HOSTS {
        let script = common::clear_prefix(&format!("/home/{}/{MOVE_PREFIX}*", tb.user));
        let out = systemd_exec(k, &script);
        assert!(out.status.success(), "cleaning systemd host {k}: {out:?}");
    }
    let (name, systemd) = fresh_project(&tb, &sb, MOVE_PREFIX, "967");
    let ports = ["9670", "9671"];
    let supervisord = systemd.replace(
        "process_manager = \"systemd\"",
        "process_manager = \"supervisord\"",
    );
    let serving = |version: &str| HOSTS.iter().all(|&k| serves(&tb, k, &name, ports, version));
    // Who runs the processes on every host: "systemd" or "supervisord", and
    // whether a supervisord of this venv runs, and how many units are active.
    let probe = format!(
        "for port in {p0} {p1}; do pid=$(ss -Hltnp \"sport = :$port\" | sed -n 's/.*pid=\\([0-9]*\\).*/\\1/p' | head -1); \
         echo \"$port parent=$(ps -o comm= -p $(ps -o ppid= -p $pid))\"; done; \
         echo supervisord=$(pgrep -c -f '{name}/a/etc/[s]upervisord'); \
         echo units=$(systemctl --user list-units --plain --no-legend --state=active '{name}-a@*' | wc -l)",
        p0 = ports[0],
        p1 = ports[1]
    );
    let runs = |manager: &str| {
        let (stdout, _) = expect_code(&es(&sb, &["run", "-R", "web", "--", &probe]), 0);
        let (parent, supervisords, units) = match manager {
            "systemd" => ("systemd", 0, 2),
            _ => ("supervisord", 1, 0),
        };
        for k in HOSTS {
            let addr = &tb.systemd_hosts[k - 1];
            for line in [
                format!("{} parent={parent}", ports[0]),
                format!("{} parent={parent}", ports[1]),
                format!("supervisord={supervisords}"),
                format!("units={units}"),
            ] {
                assert!(
                    stdout.contains(&format!("{addr} | {line}")),
                    "{manager}: no {line:?} for {addr} in\n{stdout}"
                );
            }
        }
    };

    sb.write_config(&supervisord);
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    runs("supervisord");

    // To systemd with a version that cannot boot: refused, and supervisord
    // serves 1.0.0 again on every host.
    sb.write_config(&systemd);
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "1.5.0", "a", "prod"]), 1);
    assert!(stderr.contains("broken on purpose"), "{stderr}");
    assert!(serving("1.0.0"), "{stderr}");
    runs("supervisord");

    // To systemd for real, behind nginx: one process at a time, no failed request.
    let nginx = HostNginx::start(1, 8192, ports);
    let poller = Poller::start(format!("http://{}:8192/", tb.systemd_hosts[0]));
    let moved = es(&sb, &["deploy", "2.0.0", "a", "prod"]);
    let (answered, failed, versions) = poller.finish();
    let (_, stderr) = expect_code(&moved, 0);
    assert!(serving("2.0.0"), "{stderr}");
    runs("systemd");
    assert_eq!(
        failed, 0,
        "requests through nginx that failed during the move ({answered} answered): {stderr}"
    );
    assert!(
        versions.contains("1.0.0") && versions.contains("2.0.0"),
        "{versions:?}"
    );
    eprintln!("supervisord -> systemd behind nginx: {answered} requests, 0 failed");
    drop(nginx);

    // Back to supervisord with a rollback to 1.0.0 (a release staged for it).
    expect_code(&es(&sb, &["rollback", "a", "--to", "1.0.0"]), 0);
    assert!(serving("1.0.0"));
    runs("supervisord");
    // And the same deploy again moves it to systemd again.
    expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);
    assert!(serving("2.0.0"));
    runs("systemd");
}

/// Projects of the system units' test: `sds_...`, ports 9660 and 9661.
const SYSTEM_PREFIX: &str = "sds_";

/// `[deploy.systemd] scope = "system"`: the units are the system's
/// (/etc/systemd/system, written by root through the deploy user's
/// passwordless sudo), their processes children of PID 1 running as the
/// deploy user; an upgrade, a version that cannot boot, es ps and es logs
/// work as with user units.
#[test]
fn system_units_run_the_app_as_the_deploy_user_through_sudo() {
    let tb = bed!();
    let sb = Sandbox::new();
    let (name, text) = fresh_project(&tb, &sb, SYSTEM_PREFIX, "966");
    let ports = ["9660", "9661"];
    let text = text + "\n[deploy.systemd]\nscope = \"system\"\n";
    sb.write_config(&text);
    let assert_serving = |version: &str| {
        for k in HOSTS {
            for port in ports {
                assert_eq!(
                    fetch(&tb, k, port),
                    format!("{name} {version} (profile prod, port {port})"),
                    "systemd host {k} port {port}"
                );
            }
        }
    };

    let (_, stderr) = expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    assert!(stderr.contains("2 ok, 0 failed"), "{stderr}");
    assert_serving("1.0.0");

    // Each instance's process is PID 1's child, runs as the deploy user and
    // is enabled; the unit is root's, in /etc/systemd/system, and the deploy
    // user has none of its own.
    let unit = format!("{name}-a");
    let probe = format!(
        "for n in 0 1; do pid=$(systemctl show -p MainPID --value {unit}@$n); \
         echo \"$n ppid=$(ps -o ppid= -p $pid | tr -d ' ') parent=$(ps -o comm= -p $(ps -o ppid= -p $pid)) \
         user=$(ps -o user= -p $pid) enabled=$(systemctl is-enabled {unit}@$n)\"; done; \
         f=/etc/systemd/system/{unit}@.service; \
         echo \"unit=$(stat -c '%U %a' $f) $(grep -c '^User={user}$' $f) $(grep -c '^WantedBy=multi-user.target$' $f)\"; \
         ls ~/.config/systemd/user/{unit}@.service 2>/dev/null | wc -l | sed 's/^/user_units=/'",
        user = tb.user
    );
    let (stdout, _) = expect_code(&es(&sb, &["run", "-R", "web", "--", &probe]), 0);
    for k in HOSTS {
        let addr = &tb.systemd_hosts[k - 1];
        for line in [
            format!("0 ppid=1 parent=systemd user={} enabled=enabled", tb.user),
            format!("1 ppid=1 parent=systemd user={} enabled=enabled", tb.user),
            "unit=root 644 1 1".to_string(),
            "user_units=0".to_string(),
        ] {
            assert!(
                stdout.contains(&format!("{addr} | {line}")),
                "no {line:?} for {addr} in\n{stdout}"
            );
        }
    }

    // An upgrade, then a version that cannot boot: refused with the system
    // journal's lines, every host serving 2.0.0 again.
    expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);
    assert_serving("2.0.0");
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "1.5.0", "a", "prod"]), 1);
    assert!(stderr.contains("broken on purpose"), "{stderr}");
    assert!(stderr.contains(&format!("{unit}@0.service")), "{stderr}");
    assert_serving("2.0.0");

    // es ps reads the system units; es logs the system journal.
    let (stdout, _) = expect_code(&es(&sb, &["ps", "a"]), 0);
    for k in HOSTS {
        let addr = &tb.systemd_hosts[k - 1];
        for n in 0..2 {
            let row = stdout
                .lines()
                .find(|l| {
                    l.starts_with(addr.as_str()) && l.contains(&format!("{unit}@{n}.service"))
                })
                .unwrap_or_else(|| panic!("no {unit}@{n} row for {addr} in\n{stdout}"));
            assert!(row.contains("RUNNING") && row.contains("2.0.0-"), "{row}");
        }
    }
    let (stdout, _) = expect_code(&es(&sb, &["logs", "a", "-n", "20"]), 0);
    for k in HOSTS {
        let addr = &tb.systemd_hosts[k - 1];
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{addr} | ")) && l.contains(&name)),
            "no journal line of {name} on {addr} in\n{stdout}"
        );
    }
    let (stdout, _) = expect_code(&es(&sb, &["status", "a"]), 0);
    assert!(stdout.contains("2/2"), "{stdout}");

    // What this test started is no one else's to stop.
    fresh(&tb, SYSTEM_PREFIX);
}
