//! Taking a service out of rotation on purpose (hosts 45-50, with
//! tests/fleet_ops.rs and tests/fleet_exec.rs): `es maintenance on|off`
//! answers 503 from nginx while the processes keep running, `es deploy`
//! refuses meanwhile, and `es nginx drain|undrain` takes one backend out of
//! an upstream and puts it back.
//!
//! nginx runs on each host as the deploy user from ~/es-mnt (port 8095),
//! proxying to the venv's two processes; its server block includes the venv's
//! maintenance snippets, as the Django site `es init` writes does.

mod common;
mod ops_support;

use std::process::Command;

use common::{expect_code, Sandbox, Testbed};
use ops_support::{built, config, es, fresh, host_sh, locked, venv_dir};

const HOSTS: [usize; 2] = [49, 45];
const PREFIX: &str = "ops_mnt";
/// The venv's ports: 9580 and 9581.
const PORT: &str = "958";
const NGINX_PORT: u16 = 8095;

fn ngx_dir(tb: &Testbed) -> String {
    format!("/home/{}/es-mnt", tb.user)
}

/// nginx's config: the venv's two processes as one upstream, the answering
/// backend in X-Upstream; with `maintenance`, the include of the venv's snippets.
fn nginx_conf(tb: &Testbed, maintenance: bool) -> String {
    let dir = ngx_dir(tb);
    let include = match maintenance {
        true => format!("include {}/maintenance/*.conf;", venv_dir(tb, PREFIX)),
        false => String::new(),
    };
    common::nginx_conf_in(
        &dir,
        &format!(
            r#"    upstream app {{
        server 127.0.0.1:{PORT}0;
        server 127.0.0.1:{PORT}1;
    }}
    server {{
        listen {NGINX_PORT};
        {include}
        location / {{
            proxy_pass http://app;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
"#
        ),
    )
}

/// A fresh ~/es-mnt on every host (an nginx a previous run left is stopped),
/// holding nginx.conf (with the include) and plain.conf (without).
fn setup_nginx(tb: &Testbed) {
    let dir = ngx_dir(tb);
    let script = format!(
        r#"{stop_pid}stop_pid {dir}/nginx.pid nginx
rm -rf {dir} && mkdir -p {dir}/tmp
cat > {dir}/nginx.conf <<'EOF'
{with}EOF
cat > {dir}/plain.conf <<'EOF'
{without}EOF
chown -R {user}: {dir} && echo ok"#,
        stop_pid = common::STOP_PID,
        user = tb.user,
        with = nginx_conf(tb, true),
        without = nginx_conf(tb, false).replace(&format!("listen {NGINX_PORT}"), "listen 8096"),
    );
    for n in HOSTS {
        assert_eq!(host_sh(tb, n, &script).trim(), "ok", "host {n}");
    }
}

/// The deploy.toml: the fleet's, nginx run as the deploy user from ~/es-mnt.
fn maintenance_config(tb: &Testbed, conf: &str) -> String {
    format!(
        "{}\n[nginx]\nbin = \"/usr/sbin/nginx\"\nconf = \"~/es-mnt/{conf}\"\nmaintenance_retry_after = 120\n",
        config(tb, &HOSTS, PREFIX, PORT)
    )
}

/// nginx's answer on host `n`: status, the headers asked for, body.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

fn through_nginx(tb: &Testbed, n: usize) -> Answer {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "5"])
        .arg(format!("http://{}:{NGINX_PORT}/", tb.addr(n)))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    Answer {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        headers: head.to_lowercase(),
        body: body.trim().to_string(),
    }
}

/// What the venv's processes on host `n` answer, asked directly.
fn processes_answer(tb: &Testbed, n: usize) -> Vec<String> {
    (0..2)
        .map(|i| ops_support::fetch(tb, n, &format!("{PORT}{i}")))
        .collect()
}

#[test]
fn maintenance_answers_503_while_the_processes_run_and_deploys_wait_for_it() {
    let tb = bed!();
    let sb = Sandbox::new();
    fresh(&tb, &HOSTS, PREFIX);
    setup_nginx(&tb);
    sb.write_config(&maintenance_config(&tb, "nginx.conf"));
    let name = &built().name;
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    expect_code(&es(&sb, &["nginx", "start"]), 0);
    for n in HOSTS {
        let answer = through_nginx(&tb, n);
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, &*format!("{name} 1.0.0"))
        );
    }
    let (stdout, _) = expect_code(&es(&sb, &["maintenance", "status", "a"]), 0);
    assert_eq!(stdout.matches(" off").count(), 2, "{stdout}");

    // On: every host answers 503, the page and Retry-After; the processes run.
    let (_, stderr) = expect_code(
        &es(
            &sb,
            &[
                "maintenance",
                "on",
                "a",
                "-m",
                "incident 42: moving the <database>",
            ],
        ),
        0,
    );
    assert!(stderr.contains("2 ok"), "{stderr}");
    for n in HOSTS {
        let answer = through_nginx(&tb, n);
        assert_eq!(answer.status, 503, "host {n}: {}", answer.body);
        assert!(
            answer.headers.contains("retry-after: 120"),
            "{}",
            answer.headers
        );
        assert!(
            answer.headers.contains("content-type: text/html"),
            "{}",
            answer.headers
        );
        assert!(
            answer
                .body
                .contains(&format!("{name} is down for maintenance"))
                && answer
                    .body
                    .contains("incident 42: moving the &lt;database&gt;")
                && answer.body.contains("try again in 2 minutes"),
            "{}",
            answer.body
        );
        assert_eq!(processes_answer(&tb, n), vec![format!("{name} 1.0.0"); 2]);
    }
    let (stdout, _) = expect_code(&es(&sb, &["ps", "a"]), 0);
    assert_eq!(stdout.matches("RUNNING").count(), 4, "{stdout}");
    let (stdout, _) = expect_code(&es(&sb, &["maintenance", "status", "a"]), 0);
    assert_eq!(stdout.matches("on, set by").count(), 2, "{stdout}");
    let (_, stderr) = expect_code(&es(&sb, &["status", "a"]), 0);
    assert_eq!(
        stderr.matches("is in maintenance, set by").count(),
        2,
        "{stderr}"
    );

    // A deploy is refused, naming why, and takes nothing.
    let report = sb.work.path().join("report.json");
    let report_arg = report.to_str().unwrap();
    let (_, stderr) = expect_code(
        &es(
            &sb,
            &["deploy", "2.0.0", "a", "prod", "--report", report_arg],
        ),
        1,
    );
    for n in HOSTS {
        assert_eq!(common::failure_kind(&report, tb.addr(n)), "maintenance");
    }
    assert!(
        stderr.contains("is in maintenance") && stderr.contains("incident 42"),
        "{stderr}"
    );
    assert!(stderr.contains("--during-maintenance"), "{stderr}");
    for n in HOSTS {
        assert_eq!(processes_answer(&tb, n), vec![format!("{name} 1.0.0"); 2]);
        assert!(!locked(&tb, n, PREFIX), "host {n} keeps a lock");
    }
    // --during-maintenance deploys behind the page.
    expect_code(
        &es(
            &sb,
            &["deploy", "2.0.0", "a", "prod", "--during-maintenance"],
        ),
        0,
    );
    for n in HOSTS {
        assert_eq!(processes_answer(&tb, n), vec![format!("{name} 2.0.0"); 2]);
        assert_eq!(through_nginx(&tb, n).status, 503);
    }

    // Off: the site serves again, the new release.
    let (_, stderr) = expect_code(&es(&sb, &["maintenance", "off", "a"]), 0);
    assert!(stderr.contains("2 ok"), "{stderr}");
    for n in HOSTS {
        let answer = through_nginx(&tb, n);
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, &*format!("{name} 2.0.0"))
        );
    }
    let (_, stderr) = expect_code(&es(&sb, &["maintenance", "off", "a"]), 0);
    assert!(stderr.contains("it was not on"), "{stderr}");

    // A config that does not include the snippet: es says which line to add,
    // and leaves nothing behind.
    sb.write_config(&maintenance_config(&tb, "plain.conf"));
    let (_, stderr) = expect_code(&es(&sb, &["maintenance", "on", "a"]), 1);
    let include = format!("include {}/maintenance/*.conf;", venv_dir(&tb, PREFIX));
    assert!(stderr.contains(&include), "{stderr}");
    for n in HOSTS {
        let left = host_sh(&tb, n, &format!("ls {}/maintenance", venv_dir(&tb, PREFIX)));
        assert!(
            !left.contains("es-maintenance.conf") && !left.contains("on.json"),
            "{left}"
        );
    }
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
}

#[test]
fn drain_takes_one_backend_out_of_the_upstream_and_undrain_puts_it_back() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [50];
    let prefix = "ops_drain";
    fresh(&tb, &hosts, prefix);
    // nginx of its own on host 50 (~/es-drain, port 8097), in front of the venv.
    let dir = format!("/home/{}/es-drain", tb.user);
    let conf = nginx_conf(&tb, false)
        .replace(&ngx_dir(&tb), &dir)
        .replace(&format!("listen {NGINX_PORT}"), "listen 8097")
        .replace(&format!("127.0.0.1:{PORT}"), "127.0.0.1:959");
    let setup = format!(
        "{stop_pid}stop_pid {dir}/nginx.pid nginx\nrm -rf {dir} && mkdir -p {dir}/tmp && cat > {dir}/nginx.conf <<'EOF'\n{conf}EOF\nchown -R {user}: {dir} && echo ok",
        stop_pid = common::STOP_PID,
        user = tb.user
    );
    assert_eq!(host_sh(&tb, 50, &setup).trim(), "ok");
    sb.write_config(&format!(
        "{}\n[nginx]\nbin = \"/usr/sbin/nginx\"\nconf = \"~/es-drain/nginx.conf\"\n",
        config(&tb, &hosts, prefix, "959")
    ));
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    expect_code(&es(&sb, &["nginx", "start"]), 0);
    let ask = |count| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for i in $(seq {count}); do curl -s -o /dev/null -D - --max-time 5 http://{}:8097/ | tr -d '\\r' | sed -n 's/^X-Upstream: //p'; done",
                tb.addr(50)
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let both = ask(6);
    assert!(
        both.contains(&"127.0.0.1:9590".to_string())
            && both.contains(&"127.0.0.1:9591".to_string()),
        "{both:?}"
    );

    let (_, stderr) = expect_code(&es(&sb, &["nginx", "drain", "127.0.0.1:9590"]), 0);
    assert!(stderr.contains("drained (1 server entry"), "{stderr}");
    assert_eq!(ask(6), vec!["127.0.0.1:9591".to_string(); 6]);
    let conf_now = host_sh(&tb, 50, &format!("cat {dir}/nginx.conf"));
    assert!(
        conf_now.contains("server 127.0.0.1:9590 down;"),
        "{conf_now}"
    );
    // Again: nothing to do. Draining the last one up: refused, nothing changed.
    let (_, stderr) = expect_code(&es(&sb, &["nginx", "drain", "127.0.0.1:9590"]), 0);
    assert!(stderr.contains("already drained"), "{stderr}");
    let (_, stderr) = expect_code(&es(&sb, &["nginx", "drain", "127.0.0.1"]), 1);
    assert!(
        stderr.contains("would leave upstream app with no server up"),
        "{stderr}"
    );
    assert_eq!(host_sh(&tb, 50, &format!("cat {dir}/nginx.conf")), conf_now);
    let (_, stderr) = expect_code(&es(&sb, &["nginx", "drain", "10.9.9.9"]), 1);
    assert!(stderr.contains("no upstream"), "{stderr}");

    let (_, stderr) = expect_code(&es(&sb, &["nginx", "undrain", "127.0.0.1:9590"]), 0);
    assert!(stderr.contains("back in rotation"), "{stderr}");
    assert_eq!(host_sh(&tb, 50, &format!("cat {dir}/nginx.conf")), conf);
    let again = ask(6);
    assert!(again.contains(&"127.0.0.1:9590".to_string()), "{again:?}");
    expect_code(&es(&sb, &["nginx", "stop"]), 0);
}
