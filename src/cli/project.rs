//! The arguments of the project commands: `es create`, `es init`, `es build`,
//! `es version` and `es pypi`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Project name: package, distribution, console script and program name
    #[arg(required_unless_present = "list", value_name = "NAME")]
    pub name: Option<String>,

    /// Template to start from (see `es templates`)
    #[arg(
        short = 't',
        long = "template",
        default_value = "default",
        value_name = "TEMPLATE"
    )]
    pub template: String,

    /// Git URL to push the first commit to (as remote `origin`, branch main)
    #[arg(long, value_name = "URL", conflicts_with = "no_push")]
    pub remote: Option<String>,

    /// Do not push, and do not ask for a remote URL
    #[arg(long)]
    pub no_push: bool,

    /// What runs the processes on the hosts: the project gets that manager's
    /// template (conf/supervisord.conf or conf/systemd.service) to edit
    #[arg(long, value_enum, default_value_t, value_name = "MANAGER")]
    pub process_manager: crate::config::ProcessManager,

    /// List the templates instead of creating a project
    #[arg(long)]
    pub list: bool,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Project name [default: `name` from pyproject.toml's [project], else from setup.py,
    /// else (with --package) the directory's name]
    #[arg(value_name = "NAME")]
    pub name: Option<String>,

    /// Write a minimal pyproject.toml when the project has no packaging
    #[arg(long)]
    pub package: bool,
}

#[derive(Args, Debug, Default)]
pub struct BuildArgs {
    /// Build name: becomes the PEP 440 local version label (VERSION+NAME)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Version to build [default: the next one of build.version_scheme]
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,

    /// Commit to build; with --branch, built as a commit of that branch
    #[arg(long, value_name = "COMMIT")]
    pub commit: Option<String>,

    /// Branch to build [default: project.default_branch, else HEAD]
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,

    /// Build only; upload nothing
    #[arg(long)]
    pub no_upload: bool,

    /// Also copy the sdist and wheel into DIR
    #[arg(long, value_name = "DIR")]
    pub dist: Option<PathBuf>,

    /// With version_scheme = "semver": the part raised
    #[arg(long, value_enum, value_name = "PART")]
    pub bump: Option<crate::version::Bump>,

    /// Build on the host of role ROLE (its first host) [default: role `build`,
    /// unless it is `local` or not defined]
    #[arg(long, value_name = "ROLE", conflicts_with = "local")]
    pub on: Option<String>,

    /// Build on this machine, whatever [roles] build says
    #[arg(long)]
    pub local: bool,
}

#[derive(Args, Debug)]
pub struct VersionArgs {
    #[command(subcommand)]
    pub which: VersionWhich,
}

#[derive(Subcommand, Debug)]
pub enum VersionWhich {
    /// The highest version of the project on the index
    Latest,
    /// The version the next `es build` gets
    Next {
        /// With version_scheme = "semver": the part raised
        #[arg(long, value_enum, value_name = "PART")]
        bump: Option<crate::version::Bump>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PypiCommand {
    /// Copy packages with their whole dependency closure from upstream into the index
    ///
    /// `pip download` resolves every requirement with its dependencies (for the
    /// hosts' Python and platform when --python / --platform, or index.python /
    /// index.platforms, are set: then only wheels are taken), and every file is
    /// uploaded; a file already on the index is skipped. --project takes the
    /// project's own dependencies ([project].dependencies of pyproject.toml),
    /// -r a requirements or lock file.
    #[command(
        after_help = "Examples:\n  es pypi sync flask gunicorn\n  es pypi sync --project\n  es pypi sync -r requirements.txt --python 3.11 --platform manylinux2014_x86_64\n  es pypi sync --from https://mirror.example/simple/ gunicorn==23.0.0"
    )]
    Sync(SyncArgs),
}

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// Upstream simple API [default: pip's configured index]
    #[arg(long = "from", value_name = "URL")]
    pub from: Option<String>,

    /// Also the project's dependencies: pyproject.toml's [project].dependencies, or, for a
    /// setup.py / setup.cfg project (or dynamic dependencies), what its build backend
    /// declares (pip resolves a copy of the project; the project itself is not uploaded)
    #[arg(long)]
    pub project: bool,

    /// A requirements or lock file (repeatable)
    #[arg(short = 'r', long = "requirement", value_name = "FILE")]
    pub requirements: Vec<PathBuf>,

    /// The hosts' Python version, such as 3.11 [default: index.python, else this machine's]
    #[arg(long, value_name = "X.Y")]
    pub python: Option<String>,

    /// The hosts' platform tag (repeatable) [default: index.platforms, else this machine's]
    #[arg(long, value_name = "TAG")]
    pub platform: Vec<String>,

    /// Requirements, as pip takes them
    #[arg(value_name = "PKG")]
    pub packages: Vec<String>,
}
