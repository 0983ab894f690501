//! The arguments of the commands that act on the hosts' shells and processes
//! (`es run`, `es exec`, `es supervisor`, `es start`/`stop`/`restart`, `es logs`,
//! `es nginx`, `es validate`), and of `es serve`.

use clap::{Args, Subcommand};

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
pub struct ExecArgs {
    /// The venv [default: deploy.default_venv]
    #[arg(value_name = "VENV")]
    pub venv: Option<String>,

    /// On one host, on a terminal (shells, consoles): refused when several are chosen
    #[arg(short, long)]
    pub interactive: bool,

    /// The command and its arguments, after `--` (not a shell line: `-- sh -c '...'` for one)
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SupervisorArgs {
    /// status | reload | start | shutdown | stop | restart
    #[arg(value_parser = ["status", "reload", "start", "shutdown", "stop", "restart"])]
    pub action: String,

    /// [PROGRAM] [VENV]: VENV defaults to deploy.default_venv
    #[arg(num_args = 0..=2, value_names = ["PROGRAM", "VENV"])]
    pub args: Vec<String>,
}

/// `[PROGRAM] [VENV]` of es start, stop and restart.
#[derive(Args, Debug)]
pub struct ProgramArgs {
    /// [PROGRAM] [VENV]: VENV defaults to deploy.default_venv
    #[arg(num_args = 0..=2, value_names = ["PROGRAM", "VENV"])]
    pub args: Vec<String>,
}

/// `es logs`
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// [PROGRAM] [VENV]: VENV defaults to deploy.default_venv
    #[arg(num_args = 0..=2, value_names = ["PROGRAM", "VENV"])]
    pub args: Vec<String>,

    /// Lines of each log to show
    #[arg(short = 'n', long, default_value_t = 20, value_name = "N")]
    pub lines: u32,

    /// Keep following every host's logs until Ctrl-C
    #[arg(short = 'f', long)]
    pub follow: bool,
}

#[derive(Args, Debug)]
pub struct NginxArgs {
    #[command(subcommand)]
    pub action: NginxAction,

    /// nginx binary on the hosts [default: nginx.bin, /usr/sbin/nginx]
    #[arg(long, global = true, value_name = "PATH")]
    pub bin: Option<String>,

    /// nginx configuration on the hosts [default: nginx.conf, /etc/nginx/nginx.conf]
    #[arg(long, global = true, value_name = "PATH")]
    pub conf: Option<String>,

    /// Run nginx (and change its config) through sudo -n [default: nginx.sudo]
    #[arg(long, global = true, overrides_with = "no_sudo")]
    pub sudo: bool,

    /// Do not use sudo, even when nginx.sudo is true
    #[arg(long, global = true, overrides_with = "sudo")]
    pub no_sudo: bool,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum NginxAction {
    /// Test the config, then start nginx unless it is running
    Start,
    /// Stop nginx gracefully (-s quit) and wait for it to exit
    Stop,
    /// Test the config, then reload nginx (-s reload)
    Reload,
    /// Test the config (nginx -t)
    Test,
    /// Replace every literal SRC by DST in the config, test it, reload nginx
    #[command(
        after_help = "Examples:\n  es nginx switch upstreamA upstreamB --dry-run\n  es nginx switch upstreamA upstreamB\n  es nginx switch 127.0.0.1:8801 127.0.0.1:8811 --sudo"
    )]
    Switch {
        /// The text to replace (literal, not a pattern)
        #[arg(value_name = "SRC")]
        src: String,
        /// The text to put in its place
        #[arg(value_name = "DST")]
        dst: String,
        /// Show the lines that would change; change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Take a backend out of the upstreams (its server entries marked `down`), test, reload
    #[command(
        after_help = "Examples:\n  es nginx drain 10.0.0.12 -R lb          (every port of that host)\n  es nginx drain 10.0.0.12:8801 -R lb\n  es nginx undrain 10.0.0.12 -R lb"
    )]
    Drain {
        /// HOST (every port of it) or HOST:PORT, as the upstream's `server` entries name it
        #[arg(value_name = "BACKEND")]
        backend: String,
    },
    /// Put a drained backend back into the upstreams (`down` removed), test, reload
    Undrain {
        /// HOST or HOST:PORT, as for drain
        #[arg(value_name = "BACKEND")]
        backend: String,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Only check the [serve] settings and their secrets, then exit (2 on an error)
    #[arg(long)]
    pub check: bool,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The venv whose ports are checked [default: deploy.default_venv]
    #[arg(value_name = "VENV")]
    pub venv: Option<String>,

    /// The path asked for on every port [default: deploy.health.path, /]
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,

    /// Accepted statuses, LOW-HIGH [default: deploy.health.status, 200-399]
    #[arg(long, value_name = "LOW-HIGH")]
    pub status: Option<String>,

    /// A request header, `Name: value` (repeatable) [default: deploy.health.headers]
    #[arg(long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,

    /// Seconds to wait for each answer
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub timeout: u32,
}
