//! The test bed's systemd hosts: a real systemd as PID 1 on a root of its own,
//! reached by es like any other host, and booting one leaves the machine's
//! shared directories alone.

mod common;

use std::path::PathBuf;

use common::{expect_code, unique, Sandbox, Testbed};

/// `es run -R web -- CMD` on the given systemd hosts (1-based).
fn es_run(tb: &Testbed, hosts: &[usize], cmd: &str) -> std::process::Output {
    let sb = Sandbox::new();
    let entries: Vec<String> = hosts
        .iter()
        .map(|k| format!("\"{}\"", tb.systemd_hosts[k - 1]))
        .collect();
    sb.write_config(&format!(
        "[roles]\nweb = [{}]\n\n{}",
        entries.join(", "),
        tb.ssh_section()
    ));
    sb.es()
        .args(["run", "-R", "web", "--", cmd])
        .output()
        .expect("running es")
}

/// Removes the probe files even when the test fails.
struct Probes(Vec<PathBuf>);

impl Drop for Probes {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_dir_all(path);
            let _ = std::fs::remove_file(path);
        }
    }
}

#[test]
fn systemd_hosts_run_systemd_as_pid_1_with_a_lingering_user_manager() {
    let tb = bed!();
    assert!(tb.systemd_hosts.len() >= 3, "{:?}", tb.systemd_hosts);
    let out = es_run(
        &tb,
        &[1, 2],
        "echo pid1=$(ps -o comm= -p 1) system=$(systemctl is-system-running) \
         user=$(systemctl --user is-system-running) $(loginctl show-user \"$USER\" -p Linger)",
    );
    let (stdout, _) = expect_code(&out, 0);
    for k in [1, 2] {
        let line = format!(
            "{} | pid1=systemd system=running user=running Linger=yes",
            tb.systemd_hosts[k - 1]
        );
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in\n{stdout}"
        );
    }
}

#[test]
fn a_user_unit_outlives_the_ssh_session_and_its_parent_is_the_hosts_systemd() {
    let tb = bed!();
    let unit = unique("es-probe");
    let out = es_run(
        &tb,
        &[1],
        &format!("systemd-run --user --quiet --unit {unit} sleep 120"),
    );
    expect_code(&out, 0);
    let out = es_run(
        &tb,
        &[1],
        &format!(
            "pid=$(systemctl --user show -p MainPID --value {unit}); \
             echo state=$(systemctl --user is-active {unit}) parent=$(ps -o comm= -p $(ps -o ppid= -p $pid)); \
             systemctl --user stop {unit}"
        ),
    );
    let (stdout, _) = expect_code(&out, 0);
    let line = format!("{} | state=active parent=systemd", tb.systemd_hosts[0]);
    assert!(
        stdout.lines().any(|l| l == line),
        "no {line:?} in\n{stdout}"
    );
}

/// systemd-tmpfiles empties `/tmp` at boot: on a host sharing the machine's
/// root, that would be the machine's `/tmp`. A systemd host has its own root,
/// so booting (and powering off) one leaves every file of the machine's
/// `/tmp` and `/var/tmp` where it was, however old.
#[test]
fn booting_a_systemd_host_leaves_the_machines_tmp_and_var_tmp_alone() {
    let tb = bed!();
    let name = unique("es-survives-boot");
    let probes = Probes(vec![
        PathBuf::from("/tmp").join(&name),
        PathBuf::from("/var/tmp").join(&name),
        PathBuf::from("/tmp").join(format!("{name}.d")),
    ]);
    std::fs::write(&probes.0[0], "machine").unwrap();
    std::fs::write(&probes.0[1], "machine").unwrap();
    std::fs::create_dir(&probes.0[2]).unwrap();
    // Old enough for any age-based cleaning rule of tmpfiles.d.
    for path in &probes.0 {
        let status = std::process::Command::new("touch")
            .args(["-d", "60 days ago"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }

    tb.control(&["systemd-restart", "3"]);

    for path in &probes.0 {
        assert!(
            path.exists(),
            "{} is gone after a systemd host booted",
            path.display()
        );
    }
    assert_eq!(std::fs::read_to_string(&probes.0[0]).unwrap(), "machine");
    // The host's own /tmp is not the machine's, and the host is up again.
    let out = es_run(
        &tb,
        &[3],
        &format!("test -e /tmp/{name} && echo shared || echo own; ps -o comm= -p 1"),
    );
    let (stdout, _) = expect_code(&out, 0);
    let addr = &tb.systemd_hosts[2];
    assert!(stdout.contains(&format!("{addr} | own")), "{stdout}");
    assert!(stdout.contains(&format!("{addr} | systemd")), "{stdout}");
}
