//! Tests of reading and checking `deploy.toml`: compiled only for tests
//! (`#[cfg(test)] mod tests;` in mod.rs).

use super::locate::key_at;
use super::*;

fn parse_str(text: &str) -> Result<Loaded, ConfigError> {
    parse(Path::new("deploy.toml"), text.to_string())
}

#[test]
fn a_deadline_that_leaves_no_way_back_is_refused_with_its_line() {
    let err = parse_str("[deploy.health]\ntimeout = 8\nsettle = 3\ndeadline = 21\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("deploy.toml:4:")
            && text.contains("deploy.health.deadline")
            && text.contains("at least 22"),
        "{text}"
    );
    assert!(parse_str("[deploy.health]\ntimeout = 8\nsettle = 3\ndeadline = 22\n").is_ok());
}

#[test]
fn a_settle_window_out_of_range_is_refused_with_its_line() {
    for bad in ["-1", "nan", "601"] {
        let err = parse_str(&format!("[deploy.health]\nsettle = {bad}\n")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("deploy.toml:2:") && text.contains("deploy.health.settle"),
            "{text}"
        );
    }
    assert!(parse_str("[deploy.health]\nsettle = 0.5\n").is_ok());
}

#[test]
fn a_bare_file_name_has_the_current_directory_as_its_root() {
    assert_eq!(parse_str("").unwrap().root(), Path::new("."));
    let nested = parse(Path::new("conf/sec.toml"), String::new()).unwrap();
    assert_eq!(nested.root(), Path::new("conf"));
}

#[test]
fn a_key_in_an_array_of_tables_is_named_with_its_index() {
    let text = "[serve]\n[[serve.notify]]\nkind = \"json\"\n[[serve.notify]]\nkind = \"pager\"\n";
    let at = text.rfind("pager").unwrap();
    assert_eq!(key_at(text, at).as_deref(), Some("serve.notify[1].kind"));
    assert_eq!(key_at(text, 8).as_deref(), Some("serve.notify"));
}

#[test]
fn full_interface_example_parses() {
    let loaded = parse_str(include_str!("../../deploy.toml")).expect("reference deploy.toml");
    assert!(loaded.config.project.name.is_some());
}

#[test]
fn unknown_key_names_line_key_and_suggestion() {
    let err = parse_str("[project]\nname = \"x\"\n\n[ssh]\nuser = \"a\"\nconect_timeout = 5\n")
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.line, Some((6, 1)), "{text}");
    assert!(text.contains("ssh.conect_timeout"), "{text}");
    assert!(text.contains("did you mean `connect_timeout`"), "{text}");
}

#[test]
fn wrong_type_names_line_and_key() {
    let err = parse_str("[ssh]\nport = \"twenty-two\"\n").unwrap_err();
    let text = err.to_string();
    assert_eq!(err.line.map(|l| l.0), Some(2), "{text}");
    assert!(text.contains("`ssh.port`"), "{text}");
    assert!(text.contains("deploy.toml:2:"), "{text}");
}

#[test]
fn unknown_default_role_is_refused() {
    let err =
        parse_str("[roles]\nweb = [\"a\"]\n\n[deploy]\ndefault_role = \"dev\"\n").unwrap_err();
    let text = err.to_string();
    assert_eq!(err.line.map(|l| l.0), Some(5), "{text}");
    assert!(text.contains("deploy.default_role"), "{text}");
    assert!(text.contains("unknown role `dev`"), "{text}");
}

#[test]
fn process_manager_is_checked_with_its_template() {
    let loaded = parse_str("[deploy]\nprocess_manager = \"systemd\"\n").unwrap();
    assert_eq!(
        loaded.config.deploy.process_manager,
        ProcessManager::Systemd
    );
    assert_eq!(
        parse_str("").unwrap().config.deploy.process_manager,
        ProcessManager::Supervisord
    );
    let err = parse_str("[deploy]\nprocess_manager = \"runit\"\n").unwrap_err();
    let text = err.to_string();
    assert_eq!(err.line.map(|l| l.0), Some(2), "{text}");
    assert!(text.contains("deploy.process_manager"), "{text}");
    let err = parse_str(
        "[deploy]\nprocess_manager = \"systemd\"\nsupervisor_template = \"conf/supervisord.conf\"\n",
    )
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.line.map(|l| l.0), Some(3), "{text}");
    assert!(text.contains("deploy.supervisor_template"), "{text}");
    assert!(
        text.contains("is not used when deploy.process_manager is \"systemd\""),
        "{text}"
    );
}

#[test]
fn systemd_scope_is_read_and_refused_under_supervisord() {
    let loaded = parse_str(
        "[deploy]\nprocess_manager = \"systemd\"\n\n[deploy.systemd]\nscope = \"system\"\n",
    )
    .unwrap();
    assert_eq!(loaded.config.deploy.systemd.scope(), SystemdScope::System);
    let loaded = parse_str("[deploy]\nprocess_manager = \"systemd\"\n").unwrap();
    assert_eq!(loaded.config.deploy.systemd.scope(), SystemdScope::User);
    let err = parse_str("[deploy.systemd]\nscope = \"root\"\n").unwrap_err();
    assert!(err.to_string().contains("deploy.systemd.scope"), "{err}");
    let err = parse_str("[deploy.systemd]\nscop = \"user\"\n").unwrap_err();
    assert!(err.to_string().contains("scop"), "{err}");
    let err = parse_str("[deploy]\nprocess_count = 2\n\n[deploy.systemd]\nscope = \"system\"\n")
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.line.map(|l| l.0), Some(5), "{text}");
    assert!(text.contains("`deploy.systemd.scope`"), "{text}");
    assert!(
        text.contains("is not used when deploy.process_manager is \"supervisord\""),
        "{text}"
    );
}

#[test]
fn bad_host_entry_is_refused_with_line() {
    let err = parse_str("[roles]\nweb = [\"ok\", \"user@host:notaport\"]\n").unwrap_err();
    assert_eq!(err.line.map(|l| l.0), Some(2));
    assert!(err.to_string().contains("roles.web"));
}

#[test]
fn defaults_apply() {
    let loaded = parse_str("").unwrap();
    assert_eq!(loaded.config.ssh.connect_timeout, 10);
    assert_eq!(loaded.config.ssh.parallel, 30);
    assert_eq!(loaded.config.deploy.process_count, 2);
    assert_eq!(loaded.config.project.default_branch, "main");
}

#[test]
fn find_walks_up_to_the_nearest_parent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), "").unwrap();
    let nested = dir.path().join("a/b");
    std::fs::create_dir_all(&nested).unwrap();
    assert_eq!(find(&nested), Some(dir.path().join(FILE_NAME)));
}
