//! The first deploy to fresh hosts (hosts 54-60): the tools venv is made by
//! uv taken out of its wheel on the index (no `python3 -m venv`, no pip), and
//! the release serves.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{expect_code, unique, Sandbox, Testbed};

/// A project made by `es create`, its deploy.toml pointed at `hosts` (venvs
/// under `~/PREFIX`, ports PORT0 and PORT1), built and uploaded. Returns the
/// project's directory, name and version.
fn built_project(
    tb: &Testbed,
    sb: &Sandbox,
    hosts: &[usize],
    prefix: &str,
    port: &str,
    extra_deploy: &str,
) -> (PathBuf, String, String) {
    let name = unique(prefix);
    common::create_project(sb, &name);
    let dir = sb.work.path().join(&name);
    let roles: Vec<String> = hosts
        .iter()
        .map(|n| format!("\"{}\"", tb.addr(*n)))
        .collect();
    let config = format!(
        "[project]\nname = \"{name}\"\n\n{index}\n[roles]\ndev = [{roles}]\n\n{ssh}\n\
         [deploy]\ndefault_role = \"dev\"\ndefault_venv = \"a\"\nvirtualenv_prefix = \"~/{prefix}\"\n\
         venv_ports = {{ a = \"{port}\" }}\nsupervisor_template = \"conf/supervisord.conf\"\n{extra_deploy}",
        index = tb.index_section(),
        roles = roles.join(", "),
        ssh = tb.ssh_section(),
    );
    std::fs::write(dir.join("deploy.toml"), config).unwrap();
    common::git(sb, &dir, &["commit", "-qam", "deploy to the test bed"]);
    let out = common::es_build(sb, tb, &dir, &[]);
    let (stdout, _) = expect_code(&out, 0);
    let version = stdout.lines().last().unwrap().trim().to_string();
    (dir, name, version)
}

/// Makes hosts fresh: no venvs under `~/PREFIX` (their supervisords stopped)
/// and no uv cache.
fn make_fresh(tb: &Testbed, hosts: &[usize], prefix: &str) {
    for &n in hosts {
        let script = format!(
            "{}rm -rf /home/{}/.cache/uv",
            common::clear_prefix(&format!("/home/{}/{prefix}", tb.user)),
            tb.user
        );
        let out = tb.exec(n, &["sh", "-c", &script]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What a shell command prints on host `n`, as the deploy user.
fn on_host(tb: &Testbed, n: usize, script: &str) -> String {
    let out = tb.exec(n, &["su", "-s", "/bin/sh", &tb.user, "-c", script]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn assert_serving(tb: &Testbed, hosts: &[usize], port: &str, name: &str, version: &str) {
    for &n in hosts {
        for i in 0..2 {
            let url = format!("http://{}:{port}{i}/", tb.addr(n));
            let body = Command::new("curl")
                .args(["-s", "--max-time", "10", &url])
                .output()
                .unwrap();
            let body = String::from_utf8_lossy(&body.stdout);
            assert!(
                body.starts_with(&format!("{name} {version} ")),
                "{url} answered {body:?}"
            );
        }
    }
}

#[test]
fn first_deploy_makes_the_tools_with_uv_from_its_wheel() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [54, 55, 56, 57, 58];
    let prefix = "boot_uv";
    let (dir, name, version) = built_project(&tb, &sb, &hosts, prefix, "874", "");
    make_fresh(&tb, &hosts, prefix);

    let out = sb
        .es()
        .current_dir(&dir)
        .args(["deploy", "latest", "prod"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 0);
    assert!(stderr.contains("5 ok, 0 failed"), "{stderr}");
    assert_serving(&tb, &hosts, "874", &name, &version);
    for n in hosts {
        let tools = format!("/home/{}/{prefix}/a/.es/tools", tb.user);
        // uv from the wheel: the same version the index offers, no pip in the venv.
        let uv = on_host(&tb, n, &format!("{tools}/bin/uv --version"));
        assert!(uv.starts_with("uv 0."), "host {n}: {uv:?}");
        let listing = on_host(&tb, n, &format!("ls {tools}/bin"));
        assert!(
            !listing.lines().any(|f| f.starts_with("pip")),
            "host {n}: {listing}"
        );
        assert!(
            listing.lines().any(|f| f == "supervisord"),
            "host {n}: {listing}"
        );
        let complete = on_host(&tb, n, &format!("cat {tools}/complete"));
        assert!(complete.ends_with('Z'), "host {n}: {complete:?}");
        let leftovers = on_host(&tb, n, &format!("ls -a /home/{}/{prefix}/a/.es", tb.user));
        assert!(!leftovers.contains("tools.uv"), "host {n}: {leftovers}");
    }
    // `es supervisor status` runs the tools' supervisorctl on every host.
    let out = sb
        .es()
        .current_dir(&dir)
        .args(["supervisor", "status", "a"])
        .output()
        .unwrap();
    expect_code(&out, 0);
    make_fresh(&tb, &hosts, prefix);
}

#[test]
fn installer_pip_still_makes_the_tools_with_pip() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [59];
    let prefix = "boot_pip";
    let (dir, name, version) =
        built_project(&tb, &sb, &hosts, prefix, "875", "installer = \"pip\"\n");
    make_fresh(&tb, &hosts, prefix);

    let out = sb
        .es()
        .current_dir(&dir)
        .args(["deploy", "latest", "prod"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 0);
    assert!(stderr.contains("1 ok, 0 failed"), "{stderr}");
    assert_serving(&tb, &hosts, "875", &name, &version);
    let tools = format!("/home/{}/{prefix}/a/.es/tools", tb.user);
    let listing = on_host(&tb, 59, &format!("ls {tools}/bin"));
    assert!(listing.lines().any(|f| f == "pip"), "{listing}");
    assert!(!listing.lines().any(|f| f == "uv"), "{listing}");
    make_fresh(&tb, &hosts, prefix);
}

#[test]
fn a_host_whose_python_the_project_refuses_is_named_with_both_versions() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [60];
    let prefix = "boot_py";
    make_fresh(&tb, &hosts, prefix);
    // Newer than the host's Python (this machine's, which builds it, must be newer still).
    let host_python = on_host(
        &tb,
        60,
        "python3 -c 'import platform; print(platform.python_version())'",
    );
    let needs = format!(">{host_python}");
    let name = unique(prefix);
    common::create_project(&sb, &name);
    let dir = sb.work.path().join(&name);
    let pyproject = std::fs::read_to_string(dir.join("pyproject.toml")).unwrap();
    let edited: String = pyproject
        .lines()
        .map(|l| match l.starts_with("requires-python") {
            true => format!("requires-python = \"{needs}\"\n"),
            false => format!("{l}\n"),
        })
        .collect();
    assert_ne!(edited, pyproject, "the template declares requires-python");
    std::fs::write(dir.join("pyproject.toml"), edited).unwrap();
    std::fs::write(
        dir.join("deploy.toml"),
        format!(
            "[project]\nname = \"{name}\"\n\n{}\n[roles]\ndev = [\"{}\"]\n\n{}\n[deploy]\n\
             default_role = \"dev\"\ndefault_venv = \"a\"\nvirtualenv_prefix = \"~/{prefix}\"\n\
             venv_ports = {{ a = \"877\" }}\nsupervisor_template = \"conf/supervisord.conf\"\n",
            tb.index_section(),
            tb.addr(60),
            tb.ssh_section()
        ),
    )
    .unwrap();
    common::git(&sb, &dir, &["commit", "-qam", "needs a newer python"]);
    expect_code(&common::es_build(&sb, &tb, &dir, &[]), 0);

    let out = sb
        .es()
        .current_dir(&dir)
        .args(["deploy", "latest", "prod"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 1);
    assert!(stderr.contains(&format!("Python {needs}")), "{stderr}");
    assert!(
        stderr.contains(&format!("with this host's Python {host_python} (/usr/")),
        "{stderr}"
    );
    // The tools venv, made beside the release that failed, is kept.
    let complete = on_host(
        &tb,
        60,
        &format!("cat /home/{}/{prefix}/a/.es/tools/complete", tb.user),
    );
    assert!(complete.ends_with('Z'), "{complete:?}");
    make_fresh(&tb, &hosts, prefix);
}
