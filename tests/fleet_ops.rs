//! Operating the fleet between deploys (hosts 45-50): deploy locks taken in
//! order, waited for, held by hand and broken when their deploy is gone.
//! A real gunicorn app built by `es build`, served from the test index; each
//! test deploys under its own prefix and ports (tests/ops_support).

mod common;
mod ops_support;

use std::time::{Duration, Instant};

use common::{expect_code, text, Sandbox, Testbed};
use ops_support::{
    assert_serving, config, es, fresh, host_sh, ledger_lines, locked, spawn, venv_dir,
};

#[test]
fn of_two_deploys_started_together_exactly_one_deploys_and_the_other_takes_nothing() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [45, 46, 47];
    let prefix = "ops_race";
    fresh(&tb, &hosts, prefix);
    sb.write_config(&config(&tb, &hosts, prefix, "910"));
    for version in ["1.0.0", "2.0.0"] {
        expect_code(&es(&sb, &["deploy", version, "a", "prod"]), 0);
    }
    let mut current = "2.0.0";
    for round in 1..=10 {
        let before: Vec<usize> = hosts
            .iter()
            .map(|n| ledger_lines(&tb, *n, prefix))
            .collect();
        // Both in the same instant: one asks for the other version, one for the current one.
        let other = if current == "1.0.0" { "2.0.0" } else { "1.0.0" };
        let a = spawn(&sb, &["deploy", other, "a", "prod"]);
        let b = spawn(&sb, &["deploy", current, "a", "prod"]);
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let codes = (a.status.code(), b.status.code());
        let (winner, loser, version) = match codes {
            (Some(0), Some(1)) => (&a, &b, other),
            (Some(1), Some(0)) => (&b, &a, current),
            _ => panic!(
                "round {round}: exit codes {codes:?}\n--- a\n{}\n--- b\n{}",
                text(&a).1,
                text(&b).1
            ),
        };
        let (_, lost) = text(loser);
        assert!(
            lost.contains("venv a is locked (on ")
                && lost.contains("nothing was staged or switched"),
            "round {round}: {lost}"
        );
        assert!(lost.contains("(always taken first) is not ours"), "{lost}");
        let (_, won) = text(winner);
        assert!(won.contains("3 ok, 0 failed"), "round {round}: {won}");
        // The loser took no lock and wrote nothing: one ledger line per host, the winner's.
        for (i, n) in hosts.iter().enumerate() {
            assert_eq!(
                ledger_lines(&tb, *n, prefix),
                before[i] + 1,
                "round {round}, host {n}"
            );
            assert!(
                !locked(&tb, *n, prefix),
                "round {round}: host {n} still locked"
            );
            assert_serving(&tb, *n, "910", version);
        }
        println!("round {round}: {version} deployed, the other deploy refused");
        current = version;
    }
}

#[test]
fn lock_wait_deploys_right_after_the_deploy_holding_the_lock() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [48, 49];
    let prefix = "ops_wait";
    fresh(&tb, &hosts, prefix);
    sb.write_config(&config(&tb, &hosts, prefix, "920"));
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    let first = spawn(&sb, &["deploy", "2.0.0", "a", "prod"]);
    // The second starts once the first holds the lock of the first host.
    let until = Instant::now() + Duration::from_secs(60);
    while !locked(&tb, 48, prefix) {
        assert!(
            Instant::now() < until,
            "the first deploy never took its lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = es(&sb, &["deploy", "1.0.0", "a", "prod", "--lock-wait", "120"]);
    let (_, stderr) = expect_code(&second, 0);
    let (_, first_err) = expect_code(&first.wait_with_output().unwrap(), 0);
    assert!(first_err.contains("2 ok, 0 failed"), "{first_err}");
    assert!(
        stderr.contains("waiting up to 120s (--lock-wait) for the deploy lock held by"),
        "{stderr}"
    );
    assert!(
        stderr.contains("deploying 2.0.0"),
        "the holder is named: {stderr}"
    );
    assert!(stderr.contains("2 ok, 0 failed"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "920", "1.0.0");
        assert!(!locked(&tb, n, prefix));
    }
}

#[test]
fn a_held_lock_refuses_deploys_naming_its_message_until_released() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [50, 48];
    let prefix = "ops_hold";
    fresh(&tb, &hosts, prefix);
    sb.write_config(&config(&tb, &hosts, prefix, "930"));
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    let (_, stderr) = expect_code(&es(&sb, &["lock", "acquire", "a", "-m", "incident 42"]), 0);
    assert!(stderr.contains("venv a is held on 2 hosts"), "{stderr}");
    let (stdout, _) = expect_code(&es(&sb, &["lock", "status", "a"]), 1);
    assert!(stdout.contains("held: \"incident 42\""), "{stdout}");
    let (stdout, stderr) = expect_code(&es(&sb, &["status", "a"]), 1);
    assert!(
        format!("{stdout}{stderr}").contains("incident 42"),
        "{stdout}{stderr}"
    );
    let report = sb.work.path().join("report.json");
    let report_arg = report.to_str().unwrap();
    let (_, stderr) = expect_code(
        &es(
            &sb,
            &["deploy", "2.0.0", "a", "prod", "--report", report_arg],
        ),
        1,
    );
    assert!(stderr.contains("held: \"incident 42\""), "{stderr}");
    for n in hosts {
        assert_eq!(common::failure_kind(&report, tb.addr(n)), "locked");
    }
    assert!(
        stderr.contains("nothing was staged or switched"),
        "{stderr}"
    );
    // --force does not break a hold.
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod", "--force"]), 1);
    assert!(stderr.contains("`es lock release`"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "930", "1.0.0");
    }
    expect_code(&es(&sb, &["lock", "release", "a"]), 0);
    expect_code(&es(&sb, &["lock", "status", "a"]), 0);
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);
    assert!(stderr.contains("2 ok, 0 failed"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "930", "2.0.0");
    }
}

/// Starts `es ARGS`, SIGKILLs it once it holds the lock on host `n`; returns its pid.
fn kill_once_locked(sb: &Sandbox, tb: &Testbed, n: usize, prefix: &str, args: &[&str]) -> u32 {
    let mut child = spawn(sb, args);
    let pid = child.id();
    let owner = format!("{}/.es/lock/owner", venv_dir(tb, prefix));
    let until = Instant::now() + Duration::from_secs(60);
    while !host_sh(tb, n, &format!("cat {owner} 2>/dev/null")).contains(&format!("\"pid\":{pid}")) {
        assert!(Instant::now() < until, "es never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    pid
}

#[test]
fn the_lock_of_a_killed_es_is_broken_without_force_and_rollback_force_recovers() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [49, 50];
    let prefix = "ops_dead";
    fresh(&tb, &hosts, prefix);
    sb.write_config(&config(&tb, &hosts, prefix, "940"));
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);
    expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);

    // A SIGKILLed deploy's lock: named as gone, with the command that clears it.
    let pid = kill_once_locked(&sb, &tb, 49, prefix, &["deploy", "1.0.0", "a", "prod"]);
    assert!(locked(&tb, 49, prefix));
    let (stdout, stderr) = expect_code(&es(&sb, &["status", "a"]), 1);
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains(&format!("left by a deploy that is gone (pid {pid})"))
            && said.contains(&format!("`es lock release -H {} a`", tb.addr(49))),
        "{said}"
    );
    // The rollback breaks it by itself.
    let (_, stderr) = expect_code(&es(&sb, &["rollback", "a"]), 0);
    assert!(
        stderr.contains(&format!(
            "breaking the deploy lock left by a deploy that is gone (pid {pid})"
        )),
        "{stderr}"
    );
    for n in hosts {
        assert_serving(&tb, n, "940", "1.0.0");
        assert!(!locked(&tb, n, prefix));
    }

    // So does the next deploy.
    let pid = kill_once_locked(&sb, &tb, 49, prefix, &["deploy", "2.0.0", "a", "prod"]);
    let (_, stderr) = expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);
    assert!(stderr.contains(&format!("gone (pid {pid})")), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "940", "2.0.0");
    }

    // A lock left an hour ago by a deploy of another machine: only --force breaks it.
    let plant = format!(
        "mkdir {d}/.es/lock && echo '{{\"user\":\"ci\",\"machine\":\"gone-runner\",\"pid\":4242,\"deploy_id\":\"x1\",\"version\":\"9.9\"}}' > {d}/.es/lock/owner && chown -R {u} {d}/.es/lock && touch -d '-1 hour' {d}/.es/lock",
        d = venv_dir(&tb, prefix),
        u = tb.user
    );
    for n in hosts {
        host_sh(&tb, n, &plant);
    }
    let (_, stderr) = expect_code(&es(&sb, &["rollback", "a"]), 1);
    assert!(
        stderr.contains("ci@gone-runner (pid 4242, deploying 9.9"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was rolled back"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "940", "2.0.0");
    }
    let (_, stderr) = expect_code(&es(&sb, &["rollback", "a", "--force"]), 0);
    assert!(stderr.contains("held by ci@gone-runner"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "940", "1.0.0");
        assert!(!locked(&tb, n, prefix));
    }
}

/// `es ARGS` run as from another machine: in a UTS namespace of its own,
/// whose host name is `name` (the lock records the machine by its host name).
fn es_on_machine(sb: &Sandbox, name: &str, args: &[&str]) -> std::process::Output {
    let es = sb.es();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--uts",
        "sh",
        "-c",
        &format!("hostname {name} && exec \"$0\" \"$@\""),
    ])
    .arg(es.get_program())
    .args(args)
    .current_dir(sb.work.path());
    for (key, value) in es.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd.output().unwrap()
}

#[test]
fn a_deploy_keeps_its_locks_fresh_through_a_pause_so_another_machines_force_cannot_take_them() {
    let tb = bed!();
    let sb = Sandbox::new();
    let hosts = [46, 47];
    let prefix = "ops_fresh";
    fresh(&tb, &hosts, prefix);
    // --force takes a lock of another machine once it is older than
    // command_timeout; the deploy refreshes its locks every third of it.
    let toml =
        config(&tb, &hosts, prefix, "935").replace("command_timeout = 300", "command_timeout = 12");
    assert!(toml.contains("command_timeout = 12"), "{toml}");
    sb.write_config(&toml);
    // Both releases staged once, so that the deploy below only switches.
    expect_code(&es(&sb, &["deploy", "2.0.0", "a", "prod"]), 0);
    expect_code(&es(&sb, &["deploy", "1.0.0", "a", "prod"]), 0);

    let deploy = spawn(
        &sb,
        &[
            "deploy", "2.0.0", "a", "prod", "--batch", "1", "--pause", "40",
        ],
    );
    let until = Instant::now() + Duration::from_secs(90);
    while ops_support::fetch(&tb, 46, "9350") != format!("{} 2.0.0", ops_support::built().name) {
        assert!(Instant::now() < until, "host 46 never switched");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Well past command_timeout after host 46's switch, in the pause: host 47
    // waits for its batch, and both locks are still this deploy's.
    std::thread::sleep(Duration::from_secs(20));
    let other = es_on_machine(
        &sb,
        "es-other-runner",
        &["deploy", "1.0.0", "a", "prod", "--force"],
    );
    let (_, stderr) = text(&other);
    assert_eq!(other.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("that deploy may still be running on its machine"),
        "{stderr}"
    );
    let out = deploy.wait_with_output().unwrap();
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("2 ok, 0 failed"), "{stderr}");
    for n in hosts {
        assert_serving(&tb, n, "935", "2.0.0");
        assert!(!locked(&tb, n, prefix));
    }
}
