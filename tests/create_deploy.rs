//! End to end on the test bed (hosts 9-11): a project made by `es create`
//! (default and django templates) builds with `es build`, deploys with
//! `es deploy`, and answers HTTP on every process port of every host.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{expect_code, unique, Sandbox, Testbed};

const HOSTS: [usize; 3] = [9, 10, 11];

/// A project made by `es create -t TEMPLATE`, its deploy.toml pointed at the
/// test bed (venvs under `~/e2e_PREFIX`, ports PORT0, PORT1), committed.
fn created_project(
    tb: &Testbed,
    sb: &Sandbox,
    template: &str,
    prefix: &str,
    port: &str,
) -> (PathBuf, String) {
    let name = unique(template);
    let dir = common::create_project_with(sb, &name, &["-t", template]);
    let config = std::fs::read_to_string(dir.join("deploy.toml")).unwrap();
    let prefix = format!("e2e_{prefix}");
    let hosts: Vec<String> = HOSTS.iter().map(|n| tb.addr(*n).to_string()).collect();
    std::fs::write(
        dir.join("deploy.toml"),
        common::point_at_test_bed(
            tb,
            &config,
            &hosts,
            &prefix,
            &format!("{{ a = \"{port}\" }}"),
        ),
    )
    .unwrap();
    common::git(sb, &dir, &["commit", "-qam", "deploy to the test bed"]);
    for n in HOSTS {
        let script = common::clear_prefix(&format!("/home/{}/{prefix}", tb.user));
        tb.exec(n, &["sh", "-c", &script]);
    }
    (dir, name)
}

/// Every process port of every host answers with the project, version and profile.
fn assert_serving(tb: &Testbed, port: &str, name: &str, version: &str, profile: &str) {
    for n in HOSTS {
        for i in 0..2 {
            let url = format!("http://{}:{port}{i}/", tb.addr(n));
            let body = Command::new("curl")
                .args(["-s", "--max-time", "10", &url])
                .output()
                .unwrap();
            let body = String::from_utf8_lossy(&body.stdout);
            assert!(
                body.starts_with(&format!("{name} {version} (profile {profile}")),
                "{url} answered {body:?}"
            );
        }
    }
}

fn create_build_deploy(template: &str, port: &str) {
    let tb = Testbed::get();
    let sb = Sandbox::new();
    let (dir, name) = created_project(&tb, &sb, template, template, port);

    let out = common::es_build(&sb, &tb, &dir, &[]);
    let (stdout, _) = expect_code(&out, 0);
    let version = stdout.lines().last().unwrap().trim().to_string();

    // default_role (dev) and default_venv (a) from the generated deploy.toml.
    let out = sb
        .es()
        .current_dir(&dir)
        .args(["deploy", "latest", "prod"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 0);
    assert!(stderr.contains("3 ok, 0 failed"), "{stderr}");
    assert_serving(&tb, port, &name, &version, "prod");
}

#[test]
fn quickdeploy_builds_and_deploys_a_branch() {
    let tb = bed!();
    let sb = Sandbox::new();
    let (dir, name) = created_project(&tb, &sb, "default", "quick", "892");
    common::git(&sb, &dir, &["branch", "-m", "feature"]);
    let out = sb
        .es()
        .current_dir(&dir)
        .args(["quickdeploy", "-R", "dev", "a", "staging", "feature"])
        .env("TWINE_USERNAME", &tb.index_user)
        .env("TWINE_PASSWORD", &tb.index_password)
        .output()
        .unwrap();
    let (stdout, stderr) = expect_code(&out, 0);
    assert!(stderr.contains("3 ok, 0 failed"), "{stderr}");
    let version = stdout
        .lines()
        .find(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no version in\n{stdout}"))
        .trim()
        .to_string();
    assert_serving(&tb, "892", &name, &version, "staging");
    // Not the default branch: the version carries the branch, and `latest`
    // (the default branch's newest) never picks it.
    assert!(version.ends_with("+feature"), "{version}");
    let out = sb
        .es()
        .current_dir(&dir)
        .args(["version", "latest"])
        .output()
        .unwrap();
    let (stdout, _) = common::text(&out);
    assert!(!stdout.contains(&version), "{stdout}");

    // A bad venv is refused before anything is built.
    let out = sb
        .es()
        .current_dir(&dir)
        .args(["quickdeploy", "-R", "dev", "no/such", "staging", "feature"])
        .output()
        .unwrap();
    expect_code(&out, 2);
}

#[test]
fn default_template_builds_deploys_and_serves() {
    let _bed = bed!();
    create_build_deploy("default", "890");
}

#[test]
fn django_template_builds_deploys_and_serves() {
    let _bed = bed!();
    create_build_deploy("django", "891");
}
