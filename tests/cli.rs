//! The command line itself: help, version, completions, and configuration
//! errors, which exit 2 before any host is contacted. No test bed needed.

mod common;

use common::{expect_code, Sandbox};

#[test]
fn version_and_help_teach() {
    let sb = Sandbox::new();
    let out = sb.es().arg("--version").output().unwrap();
    let (stdout, _) = expect_code(&out, 0);
    assert!(stdout.starts_with("es "), "{stdout}");

    let out = sb.es().arg("--help").output().unwrap();
    let (stdout, _) = expect_code(&out, 0);
    for command in [
        "run",
        "deploy",
        "build",
        "supervisor",
        "nginx",
        "create",
        "completions",
    ] {
        assert!(
            stdout.contains(&format!("  {command} ")),
            "{command} missing from\n{stdout}"
        );
    }
    for command in [
        &["run"][..],
        &["deploy"],
        &["build"],
        &["supervisor"],
        &["create"],
    ] {
        let out = sb.es().args(command).arg("--help").output().unwrap();
        let (stdout, _) = expect_code(&out, 0);
        assert!(
            stdout.contains("Example"),
            "es {command:?} --help has no example:\n{stdout}"
        );
    }
}

#[test]
fn completions_for_each_shell() {
    let sb = Sandbox::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef es"),
        ("fish", "complete -c es"),
    ] {
        let out = sb.es().args(["completions", shell]).output().unwrap();
        let (stdout, _) = expect_code(&out, 0);
        assert!(
            stdout.contains(marker),
            "{shell}: {marker:?} not in the script"
        );
        assert!(stdout.contains("deploy"), "{shell}: no subcommands");
    }
}

/// Runs `es run -- true` against a bad configuration; returns stderr.
fn refused(config: &str) -> String {
    let sb = Sandbox::new();
    sb.write_config(config);
    let out = sb.es().args(["run", "--", "true"]).output().unwrap();
    let (_, stderr) = expect_code(&out, 2);
    stderr
}

#[test]
fn unknown_key_names_file_line_key_and_a_suggestion() {
    let stderr =
        refused("[roles]\nweb = [\"local\"]\n\n[ssh]\nuser = \"deploy\"\nconect_timeout = 5\n");
    assert!(stderr.contains("deploy.toml:6:1"), "{stderr}");
    assert!(stderr.contains("ssh.conect_timeout"), "{stderr}");
    assert!(
        stderr.contains("did you mean `connect_timeout`"),
        "{stderr}"
    );
}

#[test]
fn wrong_type_names_file_line_and_key() {
    let stderr = refused("[roles]\nweb = [\"local\"]\n\n[ssh]\nparallel = \"lots\"\n");
    assert!(stderr.contains("deploy.toml:5:"), "{stderr}");
    assert!(stderr.contains("ssh.parallel"), "{stderr}");
}

#[test]
fn unknown_role_names_file_line_and_key() {
    let stderr = refused("[roles]\nweb = [\"local\"]\n\n[deploy]\ndefault_role = \"prod\"\n");
    assert!(stderr.contains("deploy.toml:5:"), "{stderr}");
    assert!(stderr.contains("deploy.default_role"), "{stderr}");
    assert!(stderr.contains("unknown role `prod`"), "{stderr}");

    // A role asked for on the command line that the file does not define.
    let sb = Sandbox::new();
    sb.write_config("[roles]\nweb = [\"local\"]\n");
    let out = sb
        .es()
        .args(["run", "-R", "db", "--", "true"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 2);
    assert!(
        stderr.contains("unknown role `db`") && stderr.contains("web"),
        "{stderr}"
    );
}

#[test]
fn bad_usage_exits_2() {
    let sb = Sandbox::new();
    let out = sb.es().args(["deploy"]).output().unwrap();
    expect_code(&out, 2);
    let out = sb
        .es()
        .args(["run", "-H", "user@host:notaport", "--", "true"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 2);
    assert!(stderr.contains("notaport"), "{stderr}");
    let out = sb
        .es()
        .args(["-c", "missing.toml", "run", "--", "true"])
        .output()
        .unwrap();
    expect_code(&out, 2);
}

#[test]
fn deploy_positionals_tell_a_forgotten_profile_from_a_venv() {
    let sb = Sandbox::new();
    // Hosts that do not exist: a refusal must come before any connection.
    sb.write_config(
        "[project]\nname = \"p\"\n[index]\nurl = \"http://127.0.0.1:9/simple/\"\n\
         [roles]\nweb = [\"deploy@192.0.2.1\"]\n[deploy]\ndefault_role = \"web\"\n\
         default_venv = \"a\"\nvenv_ports = { a = \"880\", b = \"881\" }\n\
         [deploy.secrets]\nK = { env = \"ES_TEST_UNSET_SECRET\" }\n",
    );
    let deploy = |args: &[&str]| {
        let out = sb
            .es()
            .arg("deploy")
            .args(args)
            .env_remove("ES_TEST_UNSET_SECRET")
            .output()
            .unwrap();
        expect_code(&out, 2).1
    };
    let stderr = deploy(&["1.0.2", "b"]);
    assert!(
        stderr.contains("`b` is a venv") && stderr.contains("no profile was given"),
        "{stderr}"
    );
    let stderr = deploy(&["1.0.2", "c", "prod"]);
    assert!(stderr.contains("unknown venv `c`"), "{stderr}");
    // A profile that would end a line of supervisord's config early.
    let stderr = deploy(&["1.0.2", "a", "prod ;x"]);
    assert!(stderr.contains("bad profile"), "{stderr}");
    // A secret that cannot be read: named, before any host.
    let stderr = deploy(&["1.0.2", "a", "prod", "--dry-run"]);
    assert!(
        stderr.contains("deploy.secrets.K") && stderr.contains("ES_TEST_UNSET_SECRET"),
        "{stderr}"
    );
    let out = sb
        .es()
        .args(["quickdeploy", "a", "prod", "main", "extra"])
        .output()
        .unwrap();
    expect_code(&out, 2);
}

#[test]
fn a_bad_proxy_jump_or_a_proxy_command_is_refused_not_ignored() {
    let stderr = refused("[roles]\nweb = [\"local\"]\n\n[ssh]\nproxy_jump = \"bastion host\"\n");
    assert!(stderr.contains("deploy.toml:5:"), "{stderr}");
    assert!(stderr.contains("ssh.proxy_jump"), "{stderr}");
    // A ProxyCommand from ~/.ssh/config: es does not run it, and says so.
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.home.path().join(".ssh")).unwrap();
    std::fs::write(
        sb.home.path().join(".ssh/config"),
        "Host inner\n  ProxyCommand nc -x proxy %h %p\n",
    )
    .unwrap();
    sb.write_config("[roles]\nweb = [\"inner\"]\n");
    let out = sb
        .es()
        .args(["run", "-R", "web", "--", "true"])
        .output()
        .unwrap();
    let (_, stderr) = expect_code(&out, 2);
    assert!(
        stderr.contains("ProxyCommand") && stderr.contains("use ProxyJump"),
        "{stderr}"
    );
}

#[test]
fn help_lists_host_options_only_for_commands_that_contact_hosts() {
    let sb = Sandbox::new();
    let help = |args: &[&str]| {
        let out = sb.es().args(args).arg("--help").output().unwrap();
        expect_code(&out, 0).0
    };
    for hostless in [
        &["version"][..],
        &["version", "latest"],
        &["create"],
        &["init"],
        &["templates"],
        &["install"],
        &["pinstall"],
        &["completions"],
        &["pypi", "sync"],
    ] {
        let text = help(hostless);
        for option in ["--accept-new-host-keys", "--role", "--hosts", "--parallel"] {
            assert!(
                !text.contains(option),
                "es {hostless:?} --help lists {option}:\n{text}"
            );
        }
        assert!(text.contains("--config"), "{text}");
    }
    for with_hosts in [
        &["deploy"][..],
        &["run"],
        &["supervisor"],
        &["nginx", "switch"],
        &["nginx", "drain"],
        &["maintenance"],
    ] {
        let text = help(with_hosts);
        for option in ["--accept-new-host-keys", "--role", "--hosts", "--parallel"] {
            assert!(
                text.contains(option),
                "es {with_hosts:?} --help lacks {option}:\n{text}"
            );
        }
    }
    // es build contacts only its build host.
    let text = help(&["build"]);
    assert!(text.contains("--accept-new-host-keys") && !text.contains("--role"));
    // Still accepted where they were, before or after the subcommand.
    let out = sb
        .es()
        .args([
            "--accept-new-host-keys",
            "version",
            "--parallel",
            "3",
            "--help",
        ])
        .output()
        .unwrap();
    expect_code(&out, 0);
}
