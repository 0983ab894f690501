//! The nginx site `es init` writes for a Django project: static and media
//! files from the venv's shared dir, the rest to the app's processes. It is
//! an es template (rendered per host once deploy.extra_templates lists it).

/// The site template, as written into `conf/nginx-site.conf`.
pub const DJANGO_SITE: &str = include_str!("../templates/nginx/django-site.conf");

/// Where `es init` writes it.
pub const DJANGO_SITE_PATH: &str = "conf/nginx-site.conf";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_site_renders_with_the_deploy_variables() {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let text = env
            .render_str(
                DJANGO_SITE,
                minijinja::context! {
                    project => "shop", virtualenv_name => "a", host => "web1",
                    root => "/home/d/shop/a", shared_dir => "/home/d/shop/a/shared",
                    port => "880", process_count => 2,
                },
            )
            .unwrap();
        assert!(text.contains(
            "upstream shop_a {\n    server 127.0.0.1:8800;\n    server 127.0.0.1:8801;\n}"
        ));
        assert!(text.contains("alias /home/d/shop/a/shared/media/;"));
        assert!(text.contains("include /home/d/shop/a/current/etc/nginx-site.conf;"));
        assert!(text.contains("    include /home/d/shop/a/maintenance/*.conf;"));
    }
}
