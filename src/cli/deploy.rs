//! The arguments of the release commands (`es deploy`, `es rollback`,
//! `es quickdeploy`, `es lock`, `es maintenance`) and of those that take just a
//! venv (`es status`, `es releases`, `es ps`).

use clap::Args;

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// VERSION [VENV] PROFILE. VERSION is a PEP 440 version or `latest` (the highest
    /// built from the default branch); VENV, a key of deploy.venv_ports, may be left
    /// out when deploy.default_venv is set.
    #[arg(required = true, num_args = 2..=3, value_names = ["VERSION", "VENV", "PROFILE"])]
    pub args: Vec<String>,

    /// Show the steps and the rendered supervisord.conf (diffed against the host's); change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Stage the release again even when it is already on the host, and break the
    /// deploy lock of a deploy that is gone (never of one still running)
    #[arg(long)]
    pub force: bool,

    /// Hosts switched at once: N or N% [default: deploy.rollout.batch, 100%]
    #[arg(long, value_name = "N|N%")]
    pub batch: Option<String>,

    /// Failed hosts tolerated before the rollout stops and switched hosts go back:
    /// N or N% [default: deploy.rollout.max_fail, 0]
    #[arg(long, value_name = "N|N%")]
    pub max_fail: Option<String>,

    /// Seconds to wait between batches [default: deploy.rollout.pause, 0]
    #[arg(long, value_name = "SECS")]
    pub pause: Option<u64>,

    /// Wait up to SECS for a deploy lock held by another deploy (showing who
    /// holds it) instead of failing at once
    #[arg(long, value_name = "SECS")]
    pub lock_wait: Option<u64>,

    /// Deploy although the venv is in maintenance (`es maintenance on`) on a host
    #[arg(long)]
    pub during_maintenance: bool,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The venv [default: deploy.default_venv]
    #[arg(value_name = "VENV")]
    pub venv: Option<String>,

    /// Switch to this version's release instead of the previous one
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,

    /// Break the deploy lock of a deploy that is gone (never of one still running)
    #[arg(long)]
    pub force: bool,

    /// Wait up to SECS for a deploy lock held by another deploy
    #[arg(long, value_name = "SECS")]
    pub lock_wait: Option<u64>,
}

#[derive(Args, Debug)]
pub struct LockArgs {
    /// status: who holds the lock on each host | acquire: hold the venv (deploys
    /// are refused, naming MESSAGE) | release: let deploys through again
    #[arg(value_enum)]
    pub action: LockAction,

    /// The venv [default: deploy.default_venv]
    #[arg(value_name = "VENV")]
    pub venv: Option<String>,

    /// Why the venv is held (acquire): shown to every deploy refused
    #[arg(short, long, value_name = "MESSAGE")]
    pub message: Option<String>,

    /// release: also the lock of a deploy that is gone from another machine
    #[arg(long)]
    pub force: bool,

    /// acquire: wait up to SECS for a lock held by a deploy
    #[arg(long, value_name = "SECS")]
    pub lock_wait: Option<u64>,
}

/// `es maintenance`
#[derive(Args, Debug)]
pub struct MaintenanceArgs {
    /// on: answer the maintenance page | off: serve the site again | status: which hosts are in maintenance
    #[arg(value_enum)]
    pub action: MaintenanceAction,

    /// The venv [default: deploy.default_venv]
    #[arg(value_name = "VENV")]
    pub venv: Option<String>,

    /// Why (on): shown on the page and to every deploy refused meanwhile
    #[arg(short, long, value_name = "MESSAGE")]
    pub message: Option<String>,

    /// Run nginx through sudo -n [default: nginx.sudo]
    #[arg(long, overrides_with = "no_sudo")]
    pub sudo: bool,

    /// Do not use sudo, even when nginx.sudo is true
    #[arg(long, overrides_with = "sudo")]
    pub no_sudo: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaintenanceAction {
    On,
    Off,
    Status,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockAction {
    Status,
    Acquire,
    Release,
}

#[derive(Args, Debug)]
pub struct VenvArg {
    /// The venv [default: deploy.default_venv]
    #[arg(value_name = "VENV")]
    pub venv: Option<String>,
}

#[derive(Args, Debug)]
pub struct QuickdeployArgs {
    /// [VENV] PROFILE [BRANCH]: VENV (a key of deploy.venv_ports) may be left out
    /// when deploy.default_venv is set; BRANCH defaults to project.default_branch
    #[arg(required = true, num_args = 1..=3, value_names = ["VENV", "PROFILE", "BRANCH"])]
    pub args: Vec<String>,
}
