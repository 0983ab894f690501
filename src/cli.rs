//! Command-line definitions (clap derive). Names follow the interface contract.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// es: fast, trustworthy deploys of Python web services to fleets of servers.
///
/// es reads `deploy.toml` from the current directory (or the nearest parent),
/// connects to every host of the chosen roles over SSH in parallel, and reports
/// each host's outcome. Exit status: 0 all hosts succeeded, 1 at least one host
/// or step failed, 2 bad usage or configuration (found before any host is contacted).
#[derive(Parser, Debug)]
#[command(name = "es", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,

    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted before or after the subcommand.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalOpts {
    /// Configuration file [default: deploy.toml here or in the nearest parent]
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Role(s) from [roles] to act on (repeatable)
    #[arg(short = 'R', long = "role", global = true, value_name = "ROLE")]
    pub roles: Vec<String>,

    /// Comma-separated hosts to act on instead of roles (user@host:port, alias or `local`)
    #[arg(
        short = 'H',
        long = "hosts",
        global = true,
        value_name = "HOSTS",
        value_delimiter = ','
    )]
    pub hosts: Vec<String>,

    /// Hosts worked on at once [default: ssh.parallel, 30]
    #[arg(long, global = true, value_name = "N")]
    pub parallel: Option<usize>,

    /// Accept and record the key of a host not yet in known_hosts (like OpenSSH's
    /// StrictHostKeyChecking=accept-new). A changed key is always refused.
    #[arg(long, global = true)]
    pub accept_new_host_keys: bool,

    /// Say more: every remote command and its output
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Say less: only the summary and errors
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Machine-readable output: one JSON object per line, the last one a summary
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a shell command on every host; output is prefixed by host
    ///
    /// Example: es run -R web -- uptime
    #[command(
        after_help = "Examples:\n  es run -R web -- hostname\n  es run -H deploy@10.0.0.11,web3 -- 'df -h /'\n  es run -R web --sudo -- systemctl status nginx"
    )]
    Run(RunArgs),

    /// Create a new project from a template: render it, git init, first commit, push
    ///
    /// NAME is the Python package, distribution, console script and supervisord
    /// program name; it must match ^[A-Za-z_][A-Za-z0-9_]*$. The project is made
    /// in ./NAME, which must not exist or be empty.
    #[command(
        after_help = "Examples:\n  es create shopapi --remote git@git.example.com:team/shopapi.git\n  es create shopapi -t django --no-push\n  es create --list"
    )]
    Create(CreateArgs),

    /// Add the deploy files (deploy.toml, conf/supervisord.conf) to the project here
    ///
    /// Adds only the files that are missing and never overwrites one; it lists
    /// what it skipped. No git commands are run.
    #[command(after_help = "Examples:\n  es init\n  es init shopapi")]
    Init(InitArgs),

    /// List the project templates built into es, one a line
    Templates,

    /// Print a shell completion script
    ///
    /// Example: es completions bash > /etc/bash_completion.d/es
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run the command through sudo (non-interactive: sudo -n)
    #[arg(long)]
    pub sudo: bool,

    /// The shell command; put it after `--`
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

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

    /// List the templates instead of creating a project
    #[arg(long)]
    pub list: bool,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Project name [default: `name` from pyproject.toml's [project], else from setup.py]
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
}
