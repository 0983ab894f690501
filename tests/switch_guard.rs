//! Never half-switched (hosts 37-41): hostile prefixes are refused before any
//! host is contacted; the host guards its own switch and goes back by itself
//! when es is gone before confirming it.

mod common;

use std::process::Output;

use common::{expect_code, Sandbox, Testbed};

fn config(tb: &Testbed, hosts: &[usize], prefix: &str, extra: &str) -> String {
    let entries: Vec<String> = hosts
        .iter()
        .map(|n| format!("\"{}\"", tb.addr(*n)))
        .collect();
    format!(
        "[project]\nname = \"guarded\"\n\n{}\n[roles]\nweb = [{}]\n\n{}\n[deploy]\nvirtualenv_prefix = {prefix}\nvenv_ports = {{ a = \"890\" }}\ndefault_role = \"web\"\n{extra}\n",
        tb.index_section(),
        entries.join(", "),
        tb.ssh_section(),
    )
}

fn es(sb: &Sandbox, args: &[&str]) -> Output {
    sb.es().args(args).output().unwrap()
}

#[test]
fn a_prefix_that_would_run_code_is_refused_before_any_host_is_contacted() {
    let tb = Testbed::get();
    let sb = Sandbox::new();
    let marker = common::unique("/tmp/pwned");
    for prefix in [
        format!("'~/x$(touch {marker})'"),
        format!("'~/x`touch {marker}`'"),
        "'~/my apps'".to_string(),
        "'~/a;b'".to_string(),
        "\"-rf\"".to_string(),
    ] {
        sb.write_config(&config(&tb, &[37], &prefix, ""));
        for args in [
            &["deploy", "1.0.0", "a", "prod"][..],
            &["status", "a"],
            &["run", "--", "true"],
        ] {
            let (_, stderr) = expect_code(&es(&sb, args), 2);
            assert!(
                stderr.contains("deploy.toml:") && stderr.contains("deploy.virtualenv_prefix"),
                "{prefix}: {stderr}"
            );
            // file:line:column names where the prefix is written.
            let line = config(&tb, &[37], &prefix, "")
                .lines()
                .position(|l| l.starts_with("virtualenv_prefix"))
                .unwrap()
                + 1;
            assert!(
                stderr.contains(&format!("deploy.toml:{line}:")),
                "{prefix}: {stderr}"
            );
        }
    }
    let on_host = tb.exec(37, &["sh", "-c", &format!("ls {marker} 2>&1")]);
    assert!(!on_host.status.success(), "created on the host");
    assert!(!std::path::Path::new(&marker).exists(), "created here");
}
