//! `es nginx` and `es validate` on the test bed (hosts 12-14).
//!
//! nginx runs as the deploy user from a config in its home (pid, logs and temp
//! paths there too; port 8090), proxying to an upstream defined by
//! `include upstreamA.conf;` (a backend on 127.0.0.1:8960) or `upstreamB.conf`
//! (127.0.0.1:8970). The backends are `python3 -m http.server`, started as root
//! inside each host and killed by the pid files the tests write.

mod common;

use std::process::{Command, Output};

use common::{expect_code, text, Sandbox, Testbed};

const HOSTS: [usize; 3] = [12, 13, 14];

/// Runs a bash script as root inside host `n`, and checks it succeeded.
fn root_sh(tb: &Testbed, n: usize, script: &str) -> String {
    let out = tb.exec(n, &["bash", "-c", script]);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "host {n}: script failed\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout
}

/// Shell code that stops the processes the pid files in `dir` name (nginx,
/// http.server backends, the supervisord stand-in) and waits for them; a
/// stale pid file's pid may be anyone's now (see `common::STOP_PID`).
fn kill_pids(dir: &str) -> String {
    format!(
        r#"{stop_pid}for f in {dir}/*.pid; do
  [ -f "$f" ] || continue
  stop_pid "$f" 'nginx|http\.server|supervisord\.conf'
  rm -f "$f"
done
"#,
        stop_pid = common::STOP_PID
    )
}

/// Shell code that starts an http.server on 127.0.0.1:`port` serving `root`,
/// its pid in `pidfile`, and waits until it answers.
fn start_backend(root: &str, port: u16, pidfile: &str) -> String {
    format!(
        r#"cd {root}
setsid nohup python3 -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 </dev/null &
echo $! > {pidfile}
i=0
until curl -s -o /dev/null http://127.0.0.1:{port}/; do
  i=$((i+1)); [ $i -lt 100 ] || {{ echo "backend on {port} did not come up" >&2; exit 1; }}
  sleep 0.1
done
"#
    )
}

/// Shell code starting, as `user`, a stand-in for venv `venv`'s supervisord (a
/// process whose command line names `VENV/etc/supervisord.conf`, its pid in
/// `VENV/tmp/supervisord.pid` and `DIR/sup.pid`) serving `DIR/www` on each of
/// `ports` from a child (pid in `DIR/pN.pid`), and waiting until they answer.
fn start_backends_under_supervisord(user: &str, dir: &str, venv: &str, ports: &[u16]) -> String {
    let code = format!(
        r#"import os, subprocess, sys, time
os.makedirs("{venv}/tmp", exist_ok=True)
open("{venv}/tmp/supervisord.pid", "w").write(str(os.getpid()))
open("{dir}/sup.pid", "w").write(str(os.getpid()))
for i, port in enumerate(sys.argv[3:]):
    child = subprocess.Popen(["python3", "-m", "http.server", port, "--bind", "127.0.0.1"],
                             cwd="{dir}/www", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    open("{dir}/p%d.pid" % i, "w").write(str(child.pid))
while True:
    time.sleep(60)
"#
    );
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut script = format!(
        "runuser -u {user} -- setsid nohup python3 -c '{code}' -c {venv}/etc/supervisord.conf {} >/dev/null 2>&1 </dev/null &\n",
        ports.join(" ")
    );
    for port in &ports {
        script.push_str(&format!(
            "i=0; until curl -s -o /dev/null http://127.0.0.1:{port}/; do i=$((i+1)); [ $i -lt 100 ] || {{ echo \"backend on {port} did not come up\" >&2; exit 1; }}; sleep 0.1; done\n"
        ));
    }
    script
}

/// Kills what a test started on its hosts, even when the test fails.
struct Cleanup {
    dirs: Vec<(usize, String)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Not Testbed::get(): its health check must not panic while unwinding.
        for (n, dir) in &self.dirs {
            let _ = Command::new("bash")
                .arg(common::repo_root().join("testbed/testbed.sh"))
                .args(["exec", &n.to_string(), "bash", "-c", &kill_pids(dir)])
                .output();
        }
    }
}

/// The nginx test directory in the deploy user's home.
fn ngx_dir(tb: &Testbed) -> String {
    format!("/home/{}/es-ngx", tb.user)
}

/// Where the backends' pid files go (root's, in the host's own /home).
fn backends_dir(tb: &Testbed) -> String {
    format!("/home/{}/es-ngx-backends", tb.user)
}

fn nginx_conf(dir: &str) -> String {
    common::nginx_conf_in(
        dir,
        "    include upstreamA.conf;\n    server {\n        listen 8090;\n        location / { proxy_pass http://backend; }\n    }\n",
    )
}

/// Sets up host `n`: a fresh nginx directory, and the two backends A and B.
fn setup_nginx_host(tb: &Testbed, n: usize) {
    let dir = ngx_dir(tb);
    let backends = backends_dir(tb);
    let user = &tb.user;
    // Whatever a previous run left: its nginx (pid file in the dir), its backends.
    let script = format!(
        r#"set -e
{kill}
rm -rf {dir}
mkdir -p {dir}/tmp {dir}/a {dir}/b
cat > {dir}/nginx.conf <<'EOF'
{conf}EOF
echo 'upstream backend {{ server 127.0.0.1:8960; }}' > {dir}/upstreamA.conf
echo 'upstream backend {{ server 127.0.0.1:8970; }}' > {dir}/upstreamB.conf
echo 'backend A of host {n}' > {dir}/a/index.html
echo 'backend B of host {n}' > {dir}/b/index.html
chown -R {user}: {dir}
mkdir -p {backends}
{kill_backends}
{a}
{b}
"#,
        kill = kill_pids(&dir),
        conf = nginx_conf(&dir),
        kill_backends = kill_pids(&backends),
        a = start_backend(&format!("{dir}/a"), 8960, &format!("{backends}/a.pid")),
        b = start_backend(&format!("{dir}/b"), 8970, &format!("{backends}/b.pid")),
    );
    root_sh(tb, n, &script);
}

fn config(tb: &Testbed, extra: &str) -> String {
    let hosts: Vec<String> = HOSTS
        .iter()
        .map(|n| format!("\"{}\"", tb.addr(*n)))
        .collect();
    format!(
        "[project]\nname = \"ngxtest\"\n\n[roles]\nweb = [{}]\n\n{}\n{extra}",
        hosts.join(", "),
        tb.ssh_section()
    )
}

fn es(sb: &Sandbox, args: &[&str]) -> Output {
    sb.es().args(args).output().expect("running es")
}

/// What nginx on host `n` answers at `/`; empty when nothing answers.
fn fetch(tb: &Testbed, n: usize) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://{}:8090/", tb.addr(n)))
        .output()
        .expect("running curl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn host_conf(tb: &Testbed, n: usize) -> String {
    root_sh(tb, n, &format!("cat {}/nginx.conf", ngx_dir(tb)))
}

fn nginx_pid(tb: &Testbed, n: usize) -> Option<String> {
    let out = tb.exec(
        n,
        &[
            "bash",
            "-c",
            &format!(
                "pid=$(cat {}/nginx.pid) && [ -d /proc/$pid ] && echo $pid",
                ngx_dir(tb)
            ),
        ],
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn start_switch_rollback_refusals_and_stop() {
    let tb = bed!();
    let sb = Sandbox::new();
    for n in HOSTS {
        setup_nginx_host(&tb, n);
    }
    let _cleanup = Cleanup {
        dirs: HOSTS
            .iter()
            .flat_map(|n| [(*n, ngx_dir(&tb)), (*n, backends_dir(&tb))])
            .collect(),
    };
    sb.write_config(&config(
        &tb,
        "[deploy]\ndefault_role = \"web\"\n\n[nginx]\nbin = \"/usr/sbin/nginx\"\nconf = \"~/es-ngx/nginx.conf\"\n",
    ));
    let original = host_conf(&tb, 12);
    assert!(original.contains("include upstreamA.conf;"));

    // test, then start: A is served everywhere.
    let (_, stderr) = expect_code(&es(&sb, &["nginx", "test", "-R", "web"]), 0);
    assert!(stderr.contains("3 ok, 0 failed"), "{stderr}");
    let (_, stderr) = expect_code(&es(&sb, &["nginx", "start"]), 0);
    assert!(stderr.contains("started (pid"), "{stderr}");
    let pids: Vec<String> = HOSTS
        .iter()
        .map(|n| nginx_pid(&tb, *n).expect("nginx runs"))
        .collect();
    for n in HOSTS {
        assert_eq!(fetch(&tb, n), format!("backend A of host {n}"));
    }
    // Starting again leaves the running nginx alone.
    let (_, stderr) = expect_code(&es(&sb, &["nginx", "start"]), 0);
    assert!(stderr.contains("already running"), "{stderr}");
    for (i, n) in HOSTS.iter().enumerate() {
        assert_eq!(nginx_pid(&tb, *n).as_ref(), Some(&pids[i]));
    }

    // Dry run: shows the line, changes nothing.
    let (stdout, _) = expect_code(
        &es(
            &sb,
            &["nginx", "switch", "upstreamA", "upstreamB", "--dry-run"],
        ),
        0,
    );
    assert!(
        stdout.contains("-     include upstreamA.conf;")
            && stdout.contains("+     include upstreamB.conf;"),
        "{stdout}"
    );
    assert_eq!(host_conf(&tb, 12), original);

    // Switch to B: served everywhere, the previous config kept as .es-bak.
    let (_, stderr) = expect_code(&es(&sb, &["nginx", "switch", "upstreamA", "upstreamB"]), 0);
    assert!(stderr.contains("3 ok, 0 failed"), "{stderr}");
    assert!(stderr.contains("reloaded"), "{stderr}");
    for n in HOSTS {
        assert_eq!(fetch(&tb, n), format!("backend B of host {n}"), "host {n}");
        let conf = host_conf(&tb, n);
        assert_eq!(conf, original.replace("upstreamA", "upstreamB"));
        let bak = root_sh(&tb, n, &format!("cat {}/nginx.conf.es-bak", ngx_dir(&tb)));
        assert_eq!(bak, original);
    }

    // Rollback: switching again, the other way.
    expect_code(&es(&sb, &["nginx", "switch", "upstreamB", "upstreamA"]), 0);
    for n in HOSTS {
        assert_eq!(fetch(&tb, n), format!("backend A of host {n}"), "host {n}");
        assert_eq!(host_conf(&tb, n), original);
    }

    // SRC absent on one host only: that host fails, by name, and its config is untouched;
    // the others switch.
    root_sh(
        &tb,
        13,
        &format!(
            "sed -i 's/upstreamA/upstreamB/' {dir}/nginx.conf && su {user} -c '/usr/sbin/nginx -c {dir}/nginx.conf -s reload'",
            dir = ngx_dir(&tb),
            user = tb.user
        ),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before_13 = host_conf(&tb, 13);
    let out = es(&sb, &["nginx", "switch", "upstreamA", "upstreamB"]);
    let (_, stderr) = expect_code(&out, 1);
    assert!(stderr.contains("2 ok, 1 failed"), "{stderr}");
    let failed_line = stderr
        .lines()
        .find(|l| l.contains("FAILED"))
        .unwrap_or_default();
    assert!(
        failed_line.contains(tb.addr(13)) && failed_line.contains("does not occur"),
        "{stderr}"
    );
    assert_eq!(host_conf(&tb, 13), before_13, "host 13's config changed");
    for n in HOSTS {
        assert_eq!(fetch(&tb, n), format!("backend B of host {n}"), "host {n}");
    }

    // A switch that gives a config nginx refuses is rolled back; nginx keeps serving.
    let before: Vec<String> = HOSTS.iter().map(|n| host_conf(&tb, *n)).collect();
    let out = es(&sb, &["nginx", "switch", "upstreamB.conf", "missing.conf"]);
    let (_, stderr) = expect_code(&out, 1);
    assert!(stderr.contains("0 ok, 3 failed"), "{stderr}");
    assert!(stderr.contains("restored"), "{stderr}");
    for (i, n) in HOSTS.iter().enumerate() {
        assert_eq!(
            host_conf(&tb, *n),
            before[i],
            "host {n}: config not restored"
        );
        assert_eq!(fetch(&tb, *n), format!("backend B of host {n}"), "host {n}");
        assert_eq!(nginx_pid(&tb, *n).as_ref(), Some(&pids[i]));
    }

    // Bad usage is refused before any host is contacted.
    expect_code(&es(&sb, &["nginx", "switch", "", "x"]), 2);
    expect_code(&es(&sb, &["nginx", "switch", "same", "same"]), 2);

    // Through sudo (the test bed's user has it): test and reload as root.
    let (_, stderr) = expect_code(&es(&sb, &["-v", "nginx", "test", "--sudo"]), 0);
    assert!(stderr.contains("3 ok, 0 failed"), "{stderr}");
    assert!(stderr.contains("$ sudo -n "), "{stderr}");
    let (_, stderr) = expect_code(&es(&sb, &["nginx", "reload", "--sudo"]), 0);
    assert!(stderr.contains("3 ok, 0 failed"), "{stderr}");
    for n in HOSTS {
        assert_eq!(fetch(&tb, n), format!("backend B of host {n}"), "host {n}");
    }

    // reload, then stop: nothing answers any more; stopping again is fine.
    let (_, stderr) = expect_code(&es(&sb, &["nginx", "reload"]), 0);
    assert!(stderr.contains("reloaded (pid"), "{stderr}");
    let (_, stderr) = expect_code(&es(&sb, &["nginx", "stop"]), 0);
    assert!(stderr.contains("stopped"), "{stderr}");
    for n in HOSTS {
        assert_eq!(nginx_pid(&tb, n), None, "host {n}: nginx still runs");
        assert_eq!(fetch(&tb, n), "", "host {n}");
    }
    let (_, stderr) = expect_code(&es(&sb, &["nginx", "stop"]), 0);
    assert!(stderr.contains("not running"), "{stderr}");
    // reload needs a running nginx.
    expect_code(&es(&sb, &["nginx", "reload"]), 1);
}

#[test]
fn validate_checks_every_port_from_the_host() {
    let tb = bed!();
    let sb = Sandbox::new();
    let dir = &format!("/home/{}/es-validate", tb.user);
    let _cleanup = Cleanup {
        dirs: HOSTS.iter().map(|n| (*n, dir.clone())).collect(),
    };
    // Two processes per host on 127.0.0.1:8930 and :8931: reachable only from
    // the host. es validate counts a port only when its listener belongs to
    // the venv's supervisord (PREFIX/v, PREFIX being the default ~/w): they
    // are children of a stand-in whose command line names v's supervisord.conf.
    let venv = format!("/home/{}/w/v", tb.user);
    for n in HOSTS {
        root_sh(
            &tb,
            n,
            &format!(
                "set -e\nmkdir -p {dir}/www/sub\n{}\nchown -R {user}: {dir}\n{}",
                kill_pids(dir),
                start_backends_under_supervisord(&tb.user, dir, &venv, &[8930, 8931]),
                user = tb.user,
            ),
        );
    }
    sb.write_config(&config(
        &tb,
        "[deploy]\nprocess_count = 2\nvenv_ports = { v = \"893\", w = \"894\" }\ndefault_venv = \"v\"\n",
    ));

    let (_, stderr) = expect_code(&es(&sb, &["validate", "-R", "web", "v"]), 0);
    assert!(stderr.contains("3 ok, 0 failed"), "{stderr}");
    // A 404 is outside the accepted 200-399 (deploy.health.status): it fails,
    // unless the range says otherwise.
    let (_, stderr) = expect_code(&es(&sb, &["validate", "-R", "web", "--path", "/health"]), 1);
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    let (_, stderr) = expect_code(
        &es(
            &sb,
            &[
                "validate", "-R", "web", "--path", "/health", "--status", "200-499",
            ],
        ),
        0,
    );
    assert!(stderr.contains("3 ok, 0 failed"), "{stderr}");
    // A redirect is not followed: 301 passes 200-399, not 200-299.
    let args = [
        "validate",
        "-R",
        "web",
        "--path",
        "/sub",
        "--header",
        "Host: shop.example",
    ];
    expect_code(&es(&sb, &args), 0);
    let (_, stderr) = expect_code(&es(&sb, &[&args[..], &["--status", "200-299"]].concat()), 1);
    assert!(stderr.contains("HTTP 301"), "{stderr}");
    expect_code(
        &es(&sb, &["validate", "-R", "web", "--header", "no colon"]),
        2,
    );

    // One dead process on host 13: exit 1, the host and the port named.
    root_sh(
        &tb,
        13,
        &format!("kill $(cat {dir}/p1.pid); rm -f {dir}/p1.pid; sleep 0.3"),
    );
    let (_, stderr) = expect_code(&es(&sb, &["validate", "-R", "web", "v"]), 1);
    assert!(stderr.contains("2 ok, 1 failed"), "{stderr}");
    let failed_line = stderr
        .lines()
        .find(|l| l.contains("FAILED"))
        .unwrap_or_default();
    assert!(
        failed_line.contains(tb.addr(13))
            && failed_line.contains("8931")
            && !failed_line.contains("8930"),
        "{stderr}"
    );

    // A venv where nothing runs fails everywhere; one without ports is bad usage.
    let (_, stderr) = expect_code(
        &es(&sb, &["validate", "-R", "web", "w", "--timeout", "2"]),
        1,
    );
    assert!(stderr.contains("0 ok, 3 failed"), "{stderr}");
    expect_code(&es(&sb, &["validate", "-R", "web", "nope"]), 2);
}
