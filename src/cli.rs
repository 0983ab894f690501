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
