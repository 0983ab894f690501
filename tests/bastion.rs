//! ProxyJump on the test bed (hosts 28-30): host 30 also answers SSH on an
//! address only host 29 (the bastion) can reach (`testbed.sh jump 29 30`);
//! es reaches it through 29, with one connection to the bastion carrying a
//! channel per target, and checks every host key.

mod common;

use std::process::Command;

use common::{expect_code, Sandbox, Testbed};

/// The hidden address of host 30, set up (idempotently) behind host 29.
fn hidden_address() -> String {
    let out = Command::new("bash")
        .arg(common::repo_root().join("testbed/testbed.sh"))
        .args(["jump", "29", "30"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A known_hosts line for host 30's key under `addr`.
fn known_as(tb: &Testbed, n: usize, addr: &str) -> String {
    let text = std::fs::read_to_string(&tb.known_hosts).unwrap();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(tb.addr(n)))
        .unwrap_or_else(|| panic!("no known_hosts line for host {n}"));
    let key: Vec<&str> = line.split_whitespace().skip(1).collect();
    format!("{addr} {}\n", key.join(" "))
}

#[test]
fn a_host_behind_a_bastion_is_reached_and_deployed_to() {
    let tb = bed!();
    let hidden = hidden_address();
    let sb = Sandbox::new();
    let ssh_dir = sb.home.path().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();

    // Unknown host key of the hidden target: refused, fingerprint shown.
    let config = |extra: &str| {
        format!(
            "[roles]\nweb = [\"{hidden}\", \"{}\"]\n\n{}proxy_jump = \"{}@{}\"\n{extra}",
            tb.addr(28),
            tb.ssh_section(),
            tb.user,
            tb.addr(29)
        )
    };
    sb.write_config(&config(""));
    let out = sb
        .es()
        .args(["run", "-R", "web", "--", "hostname"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 1);
    assert!(
        stderr.contains(&format!("host {hidden}:22 is not in known_hosts")),
        "{stderr}"
    );
    assert!(stderr.contains("SHA256:"), "{stderr}");

    // Known: both hosts through the one bastion.
    std::fs::write(ssh_dir.join("known_hosts"), known_as(&tb, 30, &hidden)).unwrap();
    let out = sb
        .es()
        .args(["run", "-R", "web", "--", "hostname"])
        .output()
        .unwrap();
    let (stdout, stderr) = expect_code(&out, 0);
    assert!(stdout.contains(&format!("{hidden} | esh30")), "{stdout}");
    assert!(
        stdout.contains(&format!("{} | esh28", tb.addr(28))),
        "{stdout}"
    );
    assert!(stderr.contains("2 ok, 0 failed"), "{stderr}");
    // The bastion saw one SSH connection from es, whatever the number of targets:
    // the targets' connections come from the bastion's own address.
    let out = sb
        .es()
        .args([
            "run",
            "-R",
            "web",
            "--",
            "echo \"$SSH_CLIENT\" | cut -d' ' -f1",
        ])
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    assert!(
        stdout.contains(&format!("{hidden} | 10.214.0.1")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{} | {}", tb.addr(28), tb.addr(29))),
        "{stdout}"
    );

    // Without the bastion the hidden address cannot be reached at all.
    sb.write_config(&config("").replace("proxy_jump", "# proxy_jump"));
    let out = sb
        .es()
        .args(["run", "-H", &hidden, "--", "true"])
        .output()
        .unwrap();
    expect_code(&out, 1);

    // ProxyJump from ~/.ssh/config, for an alias.
    std::fs::write(
        ssh_dir.join("config"),
        format!(
            "Host hidden30\n  HostName {hidden}\n  ProxyJump {}@{}\n",
            tb.user,
            tb.addr(29)
        ),
    )
    .unwrap();
    sb.write_config(&format!(
        "[roles]\nweb = [\"hidden30\"]\n\n{}",
        tb.ssh_section()
    ));
    let out = sb
        .es()
        .args(["run", "-R", "web", "--", "hostname"])
        .output()
        .unwrap();
    let (stdout, _) = expect_code(&out, 0);
    assert!(stdout.contains("hidden30 | esh30"), "{stdout}");

    // A deploy through the bastion: built, staged, switched, serving.
    let name = format!("bastion_{}", std::process::id());
    let project = common::create_project(&sb, &name);
    std::fs::write(
        project.join("deploy.toml"),
        format!(
            "[project]\nname = \"{name}\"\n\n{}\n[roles]\nweb = [\"hidden30\"]\n\n{}\n[deploy]\nvirtualenv_prefix = \"~/bastion\"\nvenv_ports = {{ a = \"896\" }}\ndefault_role = \"web\"\n",
            tb.index_section(),
            tb.ssh_section()
        ),
    )
    .unwrap();
    common::git(
        &sb,
        &project,
        &["commit", "-qam", "deploy through the bastion"],
    );
    expect_code(
        &common::es_build(&sb, &tb, &project, &["--version", "1.0.0"]),
        0,
    );
    let out = sb
        .es()
        .current_dir(&project)
        .args(["deploy", "1.0.0", "a", "prod"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 0);
    assert!(stderr.contains("1 ok, 0 failed"), "{stderr}");
    let body = tb.exec(30, &["curl", "-s", "http://127.0.0.1:8960/"]);
    let body = String::from_utf8_lossy(&body.stdout);
    assert!(body.contains("1.0.0 (profile prod, port 8960)"), "{body}");
}
