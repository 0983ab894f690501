//! Command-line definitions (clap derive). Names follow the interface contract.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod deploy;
mod hosts;
mod project;

pub use deploy::{
    DeployArgs, LockAction, LockArgs, MaintenanceAction, MaintenanceArgs, QuickdeployArgs,
    RollbackArgs, VenvArg,
};
pub use hosts::{
    ExecArgs, LogsArgs, NginxAction, NginxArgs, ProgramArgs, RunArgs, ServeArgs, SupervisorArgs,
    ValidateArgs,
};
pub use project::{
    BuildArgs, CreateArgs, InitArgs, PypiCommand, SyncArgs, VersionArgs, VersionWhich,
};

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

/// The options that choose hosts and how to reach them: the help of a command
/// that contacts no host does not list them (they are still accepted, as
/// every global option is, before or after any subcommand).
const HOST_OPTIONS: &[&str] = &["roles", "hosts", "parallel", "accept_new_host_keys"];

/// The commands that contact no host chosen with -R / -H, and the host options
/// that still apply to them (`es build` connects to the build host).
const HOSTLESS_COMMANDS: &[(&str, &[&str])] = &[
    ("build", &["accept_new_host_keys"]),
    ("version", &[]),
    ("create", &[]),
    ("init", &[]),
    ("templates", &[]),
    ("pinstall", &[]),
    ("install", &[]),
    ("pypi", &[]),
    ("completions", &[]),
    ("serve", &[]),
];

/// The command line: the derived definition, each subcommand's help listing
/// only the global options that apply to it.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let host_options: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| HOST_OPTIONS.contains(&a.get_id().as_str()))
        .cloned()
        .collect();
    for (name, applies) in HOSTLESS_COMMANDS {
        cmd = cmd.mut_subcommand(*name, |mut sub| {
            // A hidden copy of the global option: clap propagates the parent's
            // only to subcommands that have none of that name.
            for arg in &host_options {
                if !applies.contains(&arg.get_id().as_str()) {
                    sub = sub.arg(arg.clone().hide(true));
                }
            }
            sub
        });
    }
    cmd
}

/// Options accepted before or after the subcommand.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Global options")]
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

    /// Also write the closing summary (the JSON object `--json` ends with) to FILE,
    /// whatever the output mode: for CI jobs and `es serve`
    #[arg(long, global = true, value_name = "FILE")]
    pub report: Option<PathBuf>,
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

    /// Run a command in the venv's current release on every host, its environment loaded
    ///
    /// The release's venv is activated, its es.env (deploy.env and deploy.secrets,
    /// 0600 on the host) loaded, and the command runs in the release's directory:
    /// output prefixed by host. With -i it runs on exactly one host, on a terminal,
    /// for shells and consoles. The secrets never reach a command line or es's output.
    #[command(
        after_help = "Examples:\n  es exec -R prod a -- flask --app shop db upgrade\n  es exec -H web1 a -i -- python manage.py shell\n  es exec a -- sh -c 'env | grep ^ES_'"
    )]
    Exec(ExecArgs),

    /// Stage one exact version beside the running release on every host, then switch to it, health-checked
    ///
    /// Per host: take the venv's deploy lock, run the pre hooks, stage the release
    /// (a fresh venv under VENV/releases/, PROJECT==VERSION installed from the index,
    /// the rendered supervisord.conf, es.env with deploy.env and deploy.secrets),
    /// nothing the running processes use being touched. Then the release hooks
    /// (on one host, or all), then the switch, batch by batch (--batch): `current`
    /// points to the new release and its processes restart one by one, each
    /// answering deploy.health.path within deploy.health.timeout. A host that fails
    /// goes back to its previous release; when more hosts fail than --max-fail, the
    /// hosts already switched go back too. Finally old releases are pruned
    /// (deploy.keep_releases), the outcome is written to VENV/.es/releases.jsonl and
    /// the lock released.
    #[command(
        after_help = "Examples:\n  es deploy -R dev 2026.11.22.1 a test\n  es deploy -R dev latest b prod --dry-run\n  es deploy -R prod latest a prod --batch 25% --max-fail 1 --pause 10\n  es deploy latest prod          (with deploy.default_role and deploy.default_venv set)"
    )]
    Deploy(DeployArgs),

    /// Switch every host back to its previous release (or --to VERSION), health-checked
    ///
    /// Uses only the releases kept on the hosts (deploy.keep_releases): no index is
    /// needed, and nothing is installed. The outcome goes into the ledger.
    #[command(
        after_help = "Examples:\n  es rollback -R prod a\n  es rollback -R prod a --to 2026.11.20.3"
    )]
    Rollback(RollbackArgs),

    /// Show, hold or release the venv's deploy lock on every host of the role
    ///
    /// The lock is taken on the role's first host first, then on the others, as
    /// deploys and rollbacks take it. `acquire -m MESSAGE` holds the venv (an
    /// incident, a freeze): every deploy is refused naming the message, until
    /// `release`. `release` also clears the lock of a deploy that is gone.
    #[command(
        after_help = "Examples:\n  es lock status -R prod a\n  es lock acquire -R prod a -m \"incident 42\"\n  es lock release -R prod a"
    )]
    Lock(LockArgs),

    /// One table for the fleet: version, health, programs, deployed when and by whom, build commit, lock
    ///
    /// Exits 1 when hosts run different versions, a host is unhealthy or a deploy lock is held.
    #[command(after_help = "Examples:\n  es status -R prod a\n  es status --json")]
    Status(VenvArg),

    /// The releases kept on each host, with their ledger entries
    #[command(after_help = "Examples:\n  es releases -R prod a")]
    Releases(VenvArg),

    /// Build and upload the project, then deploy the version just built
    ///
    /// `es build --branch BRANCH` (default: project.default_branch; built where
    /// `es build` builds: on the build server when [roles] build names one), then
    /// `es deploy VERSION VENV PROFILE` on the role's hosts. The deploy settings are
    /// checked before the build starts.
    #[command(
        after_help = "Examples:\n  es quickdeploy -R dev a test\n  es quickdeploy -R dev b test feature/login"
    )]
    Quickdeploy(QuickdeployArgs),

    /// Drive supervisord of a venv on every host of the role
    ///
    /// status, reload, start and shutdown act on supervisord itself; start, stop and
    /// restart with a PROGRAM (`name`, `name:*` or `name:name_0`) act on one program.
    /// `status` prints one table for the fleet and exits 1 unless every program on
    /// every host is RUNNING. `start` (supervisord or a program) and `restart` wait
    /// until the processes answer deploy.health; what fails is said in one line with
    /// supervisord's reason (spawnerr, or its fault: NO_FILE, BAD_NAME, SHUTDOWN_STATE, ...).
    #[command(
        after_help = "Examples:\n  es supervisor status a\n  es supervisor reload a\n  es supervisor restart hello_es:* a\n  es supervisor stop hello_es:hello_es_1 b"
    )]
    Supervisor(SupervisorArgs),

    /// Every process of every host: state, pid, uptime, release, health (any process manager)
    ///
    /// Exits 1 unless every process of every host is RUNNING.
    #[command(after_help = "Examples:\n  es ps -R prod a")]
    Ps(VenvArg),

    /// Start processes of a venv on every host, each checked for health
    ///
    /// PROGRAM: a process number N, the project's name (all of them, the default), or
    /// the manager's own name (`name:name_0` under supervisord, `PROJECT-VENV@0.service` under systemd).
    #[command(after_help = "Examples:\n  es start a\n  es start 1 a")]
    Start(ProgramArgs),

    /// Stop processes of a venv on every host (PROGRAM as for start)
    #[command(after_help = "Examples:\n  es stop 1 a")]
    Stop(ProgramArgs),

    /// Restart processes of a venv on every host, one at a time, each checked for health before the next
    #[command(after_help = "Examples:\n  es restart a\n  es restart -R prod 0 b")]
    Restart(ProgramArgs),

    /// The program logs of a venv, each line prefixed by its host
    ///
    /// The programs' log files under supervisord, the units' journal under systemd.
    /// PROGRAM: a process number N (default: every process). With -f every host is
    /// followed live, merged, until Ctrl-C.
    #[command(after_help = "Examples:\n  es logs a -n 50\n  es logs 0 a -f")]
    Logs(LogsArgs),

    /// Start, stop, reload or test nginx, or switch its config, on every host of the role
    ///
    /// nginx runs as `BIN -c CONF` ([nginx] bin and conf, or --bin / --conf); with
    /// [nginx] sudo = true or --sudo every nginx command goes through `sudo -n`.
    /// start tests the config, then starts nginx unless it is already running; stop
    /// asks it to quit gracefully (`-s quit`) and waits up to 15s for it to exit;
    /// reload tests, then `-s reload`; test only runs `nginx -t`. Whether nginx runs
    /// is read from the pid file named by the config's `pid` (else nginx's built-in one).
    ///
    /// switch SRC DST is the A/B switch: every literal occurrence of SRC in CONF
    /// becomes DST (a host where SRC does not occur fails, and nothing changes
    /// there). The previous config is kept as CONF.es-bak, the new one is written
    /// atomically (through a temporary file; with sudo, installed with sudo), tested
    /// with `nginx -t`, and restored when the test fails; then nginx is reloaded.
    /// Rolling back is switching again, the other way. When CONF is a symlink, the
    /// file it points to is changed (and backed up next to itself).
    ///
    /// drain BACKEND marks every `server` entry of the config's upstreams that
    /// names BACKEND (HOST: each of its ports; HOST:PORT: that one) `down`, in
    /// whichever file of the config (`nginx -T`) holds it, written and tested as
    /// switch does, then reloads nginx; undrain takes the flag away. Draining the
    /// last server of an upstream that is up is refused.
    ///
    /// nginx may run as the deploy user: give it a config whose pid, error_log,
    /// access_log and *_temp_path are in a directory the user can write, and listen
    /// on a port above 1024.
    #[command(
        after_help = "Examples:\n  es nginx start -R web\n  es nginx reload -R web --sudo\n  es nginx switch upstreamA upstreamB -R web --dry-run\n  es nginx switch upstreamA upstreamB -R web\n  es nginx switch upstreamB upstreamA -R web       (roll back)\n  es nginx drain 10.0.0.12 -R web\n  es nginx test -R web --conf ~/nginx/nginx.conf --bin /usr/sbin/nginx"
    )]
    Nginx(NginxArgs),

    /// Answer the venv's site with a maintenance page from nginx on every host of the role, or stop
    ///
    /// on: nginx answers every request of the venv's site with 503, Retry-After
    /// (nginx.maintenance_retry_after, 300s) and the maintenance page
    /// (nginx.maintenance_page, a template of the project, else es's own; -m
    /// MESSAGE shows on it), while the venv's processes keep running. The site
    /// must include `PREFIX/VENV/maintenance/*.conf` in its server block: es
    /// writes the snippet there, checks with `nginx -T` that nginx reads it (else
    /// it says which line to add and changes nothing), and reloads nginx. off:
    /// removes it and reloads. `es deploy` refuses while a host is in maintenance,
    /// unless --during-maintenance.
    #[command(
        after_help = "Examples:\n  es maintenance on -R web a -m \"Moving to the new database\"\n  es maintenance status -R web a\n  es maintenance off -R web a"
    )]
    Maintenance(MaintenanceArgs),

    /// Check that every process of a venv answers HTTP on every host of the role
    ///
    /// For every host and every port of the venv (deploy.venv_ports[VENV] followed
    /// by N, for N in 0..deploy.process_count), es asks `http://127.0.0.1:PORT/PATH`
    /// from the host itself (with curl, else python3), so the ports need not be
    /// reachable from here. A status in deploy.health.status (default 200-399; no
    /// redirect is followed) passes; anything else, no answer or a timeout fails.
    /// The summary lists the failing ports of each host.
    #[command(
        after_help = "Examples:\n  es validate -R web a\n  es validate -R web b --path /health --status 200-299 --header 'Host: shop.example' --timeout 3\n  es validate            (with deploy.default_role and deploy.default_venv set)"
    )]
    Validate(ValidateArgs),

    /// Deploy on push: the webhook, history and notification server of [serve]
    ///
    /// Receives GitHub (X-Hub-Signature-256) and GitLab (X-Gitlab-Token) push
    /// webhooks on /webhook/github and /webhook/gitlab, queues a job for every
    /// [[serve.trigger]] the push matches (one at a time per role and venv; pushes
    /// that arrive while one waits or runs are coalesced to the newest commit),
    /// builds that exact commit with `es build` and deploys it with `es deploy`.
    /// Every job, its hosts' outcomes and its full log are kept in SQLite under
    /// serve.state_dir and shown on the page (/) and the API (/api/jobs), which
    /// need a login. SIGTERM stops it gracefully: the running job finishes its
    /// step and is marked interrupted.
    #[command(
        after_help = "Examples:\n  es serve --check\n  ES_WEBHOOK_SECRET=... ES_SERVE_TOKEN=... es serve\n  curl -H 'Authorization: Bearer TOKEN' http://127.0.0.1:8765/api/jobs"
    )]
    Serve(ServeArgs),

    /// Stamp, build an sdist and a wheel of a commit, and upload them to the index
    ///
    /// The commit is exported with `git archive` into a temporary directory: the work
    /// tree and the git index are never touched, and uncommitted changes are not built.
    /// Commit: --commit, else --branch, else project.default_branch, else HEAD (with a note).
    ///
    /// The version (--version, else the next of build.version_scheme from the index) is
    /// written into pyproject.toml's [project] version, and ${version}, ${git_version}
    /// and ${release_time} are filled in setup.py, PACKAGE/settings.py or
    /// PACKAGE/settings/__init__.py, and build.stamp_files. build.pre_build commands run
    /// in the export; then `uv build` (when uv is on PATH) or `python3 -m build` makes
    /// the sdist and wheel, which are checked and uploaded. Credentials: the ~/.pypirc
    /// section named by index.repository, else TWINE_USERNAME / TWINE_PASSWORD; the
    /// password is never printed. The version built is printed on the last line of stdout.
    ///
    /// On the build server: when [roles] build names a host (not `local`), or with
    /// --on ROLE, everything above up to the build backend still happens here (export,
    /// stamping, pre_build); the stamped tree goes over SSH to the role's first host,
    /// into a work directory of its own (~/.es-build/work/...), where `python -m build`
    /// from a venv kept on that host (~/.es-build/venv, made once from index.url) makes
    /// the sdist and wheel. They come back here to be checked and uploaded, so the upload
    /// credentials never leave this machine; es-build.json in the wheel names the build
    /// host. The work directory is removed after, also when the build fails. --local
    /// builds here whatever [roles] build says.
    #[command(
        disable_version_flag = true,
        after_help = "Examples:\n  es build\n  es build --branch release --name fixbug\n  es build --commit 3f2a9c1 --version 1.2.3 --no-upload --dist dist/\n  es build --on builders     (on the first host of role builders)\n  es build --local           (here, whatever [roles] build says)"
    )]
    Build(BuildArgs),

    /// Print the highest version on the index, or the version the next build gets
    ///
    /// Example: es version next
    #[command(
        after_help = "Examples:\n  es version latest\n  es version next\n  es version next --bump minor"
    )]
    Version(VersionArgs),

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

    /// pip install packages from the project's index
    ///
    /// Example: es pinstall hello_es==2026.11.22.1
    #[command(
        after_help = "Examples:\n  es pinstall hello_es\n  es pinstall 'hello_es==2026.11.22.1' requests"
    )]
    Pinstall {
        /// Requirements, as pip takes them
        #[arg(required = true, value_name = "PKG")]
        packages: Vec<String>,
    },

    /// pip install, passing every argument through
    ///
    /// Example: es install -r requirements.txt
    #[command(
        after_help = "Examples:\n  es install requests\n  es install -- -r requirements.txt"
    )]
    Install {
        /// Arguments for `pip install`
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },

    /// Copy packages from an upstream index into the project's index
    ///
    /// Example: es pypi sync requests==2.32.3
    #[command(subcommand)]
    Pypi(PypiCommand),

    /// Print a shell completion script
    ///
    /// Example: es completions bash > /etc/bash_completion.d/es
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn hidden_host_options_are_still_accepted_before_or_after() {
        use clap::FromArgMatches;
        for args in [
            &["es", "-R", "web", "version", "latest"][..],
            &["es", "version", "latest", "-R", "web"],
            &["es", "version", "-R", "web", "latest"],
        ] {
            let matches = command().try_get_matches_from(args).unwrap();
            let cli = Cli::from_arg_matches(&matches).unwrap();
            assert_eq!(cli.global.roles, ["web"], "{args:?}");
        }
        let matches = command()
            .try_get_matches_from(["es", "build", "--accept-new-host-keys", "-H", "a,b"])
            .unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        assert!(cli.global.accept_new_host_keys);
        assert_eq!(cli.global.hosts, ["a", "b"]);
    }
}
