//! The ports `es init` gives a project: its own pair of prefixes, derived
//! from its name, so that two projects initialised for the same hosts do not
//! both take 880N and 881N (a deploy names a port another process holds, but
//! that is better avoided from the start).

/// The `venv_ports` prefixes of venvs a and b for `project`: two different
/// three-digit prefixes from 810 to 899 (ports 8100-8999 for up to ten
/// processes), the same for the same name.
pub fn venv_port_prefixes(project: &str) -> (u32, u32) {
    // FNV-1a: stable across Rust versions, unlike the std hasher.
    let hash = project.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let a = 810 + 2 * (hash % 45);
    (a, a + 1)
}

/// The init template's deploy.toml with the project's own ports.
pub fn with_project_ports(deploy_toml: &str, project: &str) -> String {
    let (a, b) = venv_port_prefixes(project);
    deploy_toml
        .replacen(
            "venv_ports = { a = \"880\", b = \"881\" }",
            &format!("venv_ports = {{ a = \"{a}\", b = \"{b}\" }}   # chosen for this project: check that nothing else listens there (es run -- ss -ltn)"),
            1,
        )
        .replacen(
            "process N of venv a listens on 880N (8800, 8801, ...)",
            &format!("process N of venv a listens on {a}N ({a}0, {a}1, ...)"),
            1,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_get_their_own_distinct_prefixes() {
        let names = ["flaskr", "shopapi", "wagtail_site", "backend"];
        let pairs: Vec<(u32, u32)> = names.iter().map(|n| venv_port_prefixes(n)).collect();
        for (a, b) in &pairs {
            assert!((810..=899).contains(a) && *b == a + 1, "{a} {b}");
        }
        assert_eq!(venv_port_prefixes("flaskr"), pairs[0]);
        let distinct: std::collections::BTreeSet<u32> = pairs.iter().map(|p| p.0).collect();
        assert!(distinct.len() > 1, "{pairs:?}");
    }

    #[test]
    fn the_template_line_is_replaced() {
        let text = include_str!("../templates/init/deploy.toml");
        let out = with_project_ports(text, "shopapi");
        let (a, b) = venv_port_prefixes("shopapi");
        assert!(out.contains(&format!("venv_ports = {{ a = \"{a}\", b = \"{b}\" }}")));
        assert!(out.contains(&format!("listens on {a}N")));
        assert!(!out.contains("\"880\""));
    }
}
