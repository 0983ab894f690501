//! The plan's pure parts: templates, process specs, names; compiled only
//! for tests (`#[cfg(test)] mod tests;` in plan.rs).

use super::*;

#[test]
fn profiles_that_would_change_supervisord_config_are_refused() {
    assert!(check_profile("prod").is_ok());
    assert!(check_profile("$(touch x) `y` 'z' & |").is_ok());
    for bad in ["", "a\nb", "a\"b", "100%", "a\\b", "a ;b", "a#b"] {
        assert!(check_profile(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn essay_templates_render_unchanged_syntax() {
    let essay = "[program:{{ project }}]\ncommand={{ venv_dir}}/bin/{{ project }} --profile={{ profile }}\nprocess_name=%(program_name)s_%(process_num)d\nnumprocs={{ process_count }}\n";
    let out = template_env()
        .render_str(
            essay,
            json!({"project": "p", "venv_dir": "/v/current", "profile": "test", "process_count": 2}),
        )
        .unwrap();
    assert_eq!(
        out,
        "[program:p]\ncommand=/v/current/bin/p --profile=test\nprocess_name=%(program_name)s_%(process_num)d\nnumprocs=2\n"
    );
}

#[test]
fn the_built_in_unit_runs_system_units_as_the_deploy_user() {
    let render = |scope: &str| {
        template_env()
            .render_str(
                DEFAULT_SYSTEMD_TEMPLATE,
                json!({"project": "p", "virtualenv_name": "a", "host": "h", "unit": "p-a",
                       "process_count": 2, "venv_dir": "/v/current", "port": "880",
                       "systemd_scope": scope, "user": "deploy"}),
            )
            .unwrap()
    };
    let system = render("system");
    assert!(system.contains("Type=exec\n# A system unit"), "{system}");
    assert!(system.contains("\nUser=deploy\nExecStart="), "{system}");
    assert!(system.ends_with("WantedBy=multi-user.target\n"), "{system}");
    let user = render("user");
    assert!(!user.contains("User="), "{user}");
    assert!(user.contains("Type=exec\nExecStart="), "{user}");
    assert!(user.contains("journalctl --user -u p-a@N."), "{user}");
    assert!(user.ends_with("WantedBy=default.target\n"), "{user}");
}

#[test]
fn relative_paths_stay_inside_the_release() {
    assert!(check_relative("k", "var/app-instance").is_ok());
    for bad in ["", "/etc", "../x", "a/../../b", "./a", "a\nb"] {
        assert!(check_relative("k", bad).is_err(), "{bad:?}");
    }
}
