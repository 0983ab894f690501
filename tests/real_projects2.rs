//! Real projects, round two, on the test bed (hosts 42-44): an answer to a
//! health check counts only from this venv's own listener, and a port that
//! another project already serves is named before anything switches.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{expect_code, unique, Sandbox, Testbed};

/// Points the deploy.toml of `es create` at `hosts` of the test bed, venvs
/// under `~/PREFIX`, with `venv_ports` as given.
fn point_at_test_bed(
    tb: &Testbed,
    text: &str,
    hosts: &[usize],
    prefix: &str,
    venv_ports: &str,
) -> String {
    let hosts: Vec<String> = hosts
        .iter()
        .map(|n| format!("\"{}\"", tb.addr(*n)))
        .collect();
    let mut out = String::new();
    let mut section = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            section = trimmed.to_string();
        }
        let key = trimmed.split('=').next().unwrap_or("").trim();
        let replaced = match (section.as_str(), key) {
            ("[index]", "url") => Some(format!("url = \"{}\"", tb.index_url)),
            ("[index]", "upload_url") => Some(format!("upload_url = \"{}\"", tb.upload_url)),
            ("[roles]", "dev") => Some(format!("dev = [{}]", hosts.join(", "))),
            ("[ssh]", "user") => Some(format!(
                "user = \"{}\"\nidentity_file = \"{}\"\nknown_hosts = \"{}\"",
                tb.user,
                tb.key.display(),
                tb.known_hosts.display()
            )),
            ("[deploy]", "virtualenv_prefix") => {
                Some(format!("virtualenv_prefix = \"~/{prefix}\""))
            }
            ("[deploy]", "venv_ports") => Some(format!("venv_ports = {venv_ports}")),
            _ => None,
        };
        out.push_str(&replaced.unwrap_or_else(|| line.to_string()));
        out.push('\n');
    }
    out
}

/// A project made by `es create`, pointed at `hosts`, committed and built;
/// returns its directory.
fn built_project(
    tb: &Testbed,
    sb: &Sandbox,
    hosts: &[usize],
    prefix: &str,
    venv_ports: &str,
) -> PathBuf {
    let dir = common::create_project(sb, &unique("rp2"));
    let config = std::fs::read_to_string(dir.join("deploy.toml")).unwrap();
    std::fs::write(
        dir.join("deploy.toml"),
        point_at_test_bed(tb, &config, hosts, prefix, venv_ports),
    )
    .unwrap();
    common::git(sb, &dir, &["commit", "-qam", "deploy to the test bed"]);
    let out = common::es_build(sb, tb, &dir, &[]);
    expect_code(&out, 0);
    dir
}

/// Stops every supervisord under `~/PREFIX` on `hosts` and removes the prefix.
fn clean(tb: &Testbed, hosts: &[usize], prefix: &str) {
    for &n in hosts {
        let script = format!(
            "for f in /home/{u}/{prefix}/*/tmp/supervisord.pid; do [ -f \"$f\" ] && kill $(cat \"$f\") && sleep 1; done; rm -rf /home/{u}/{prefix}",
            u = tb.user
        );
        tb.exec(n, &["sh", "-c", &script]);
    }
}

fn es(sb: &Sandbox, dir: &Path, args: &[&str]) -> (i32, String) {
    let out = sb.es().current_dir(dir).args(args).output().unwrap();
    let (stdout, stderr) = common::text(&out);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// What answers on `port` of host `n`.
fn body(tb: &Testbed, n: usize, port: &str) -> String {
    let url = format!("http://{}:{port}/", tb.addr(n));
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", &url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_port_another_project_serves_is_named_before_the_switch_and_never_healthy() {
    let tb = Testbed::get();
    let sb = Sandbox::new();
    let hosts = [42, 43];
    let prefix = unique("rp2_ports");
    clean(&tb, &hosts, &prefix);
    let first = built_project(&tb, &sb, &hosts, &prefix, "{ a = \"872\" }");
    let first_name = first.file_name().unwrap().to_str().unwrap().to_string();
    let (code, out) = es(&sb, &first, &["deploy", "latest", "a", "prod"]);
    assert_eq!(code, 0, "{out}");

    // A second project of the same prefix, its venv b on the ports a serves.
    let second = built_project(&tb, &sb, &hosts, &prefix, "{ a = \"872\", b = \"872\" }");
    let (code, out) = es(&sb, &second, &["deploy", "latest", "b", "prod"]);
    assert_eq!(code, 1, "{out}");
    let holder = "port 8720 is held by pid ";
    let owner = format!(" of /home/{}/{prefix}/a", tb.user);
    assert!(out.contains(holder) && out.contains(&owner), "{out}");
    assert!(out.contains("nothing was staged or switched"), "{out}");
    for &n in &hosts {
        // b never switched; a still answers on its ports.
        let current = tb.exec(
            n,
            &[
                "test",
                "-e",
                &format!("/home/{}/{prefix}/b/current", tb.user),
            ],
        );
        assert!(!current.status.success(), "b was switched on host {n}");
        assert!(
            body(&tb, n, "8720").starts_with(&first_name),
            "host {n} stopped serving the first project"
        );
    }
    let (code, out) = es(&sb, &second, &["status", "b"]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("healthy 2/2"), "{out}");
    let (code, out) = es(&sb, &second, &["validate", "-R", "dev", "b"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(holder) && out.contains(&owner), "{out}");
    // The first project's own venv is healthy and valid.
    let (code, out) = es(&sb, &first, &["validate", "-R", "dev", "a"]);
    assert_eq!(code, 0, "{out}");

    // b served on ports of its own, then pointed at a's ports: its processes
    // run, something answers, and still b is not healthy: the holder is named.
    let moved = second.join("deploy.toml");
    let text = std::fs::read_to_string(&moved).unwrap();
    std::fs::write(&moved, text.replace("b = \"872\"", "b = \"873\"")).unwrap();
    let (code, out) = es(&sb, &second, &["deploy", "latest", "b", "prod"]);
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read_to_string(&moved).unwrap();
    std::fs::write(&moved, text.replace("b = \"873\"", "b = \"872\"")).unwrap();
    let (code, out) = es(&sb, &second, &["status", "b"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("UNHEALTHY"), "{out}");
    assert!(out.contains(holder) && out.contains(&owner), "{out}");
    let (code, out) = es(&sb, &first, &["status", "a"]);
    assert_eq!(code, 0, "{out}");
    clean(&tb, &hosts, &prefix);
}

/// A deploy.env value is a template: a mistake in it is a configuration
/// error naming the key, found before any host is contacted.
#[test]
fn a_bad_template_in_deploy_env_exits_2_naming_the_key() {
    let sb = Sandbox::new();
    sb.write_config(
        "[project]\nname = \"envtpl\"\n[index]\nurl = \"http://127.0.0.1:9/simple/\"\n\
         [roles]\nweb = [\"deploy@192.0.2.1\"]\n[deploy]\nvenv_ports = { a = \"880\" }\n\
         [deploy.env]\nDATABASE_URL = \"sqlite:///{{ shared_dir }}/db.sqlite\"\n\
         MEDIA = \"{{ no_such_variable }}/media\"\n",
    );
    let out = sb
        .es()
        .args(["deploy", "-R", "web", "1.0", "a", "prod"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 2);
    assert!(
        stderr.contains("deploy.toml: `deploy.env.MEDIA`"),
        "{stderr}"
    );
    assert!(!stderr.contains("DATABASE_URL"), "{stderr}");
}
