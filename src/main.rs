//! es: fast, trustworthy deploys of Python web services to fleets of servers.

mod app;
mod build;
mod build_host;
mod cli;
mod clock;
mod config;
mod deploy;
mod error;
mod exec;
mod failure;
mod fleet;
mod host_spec;
mod hosts;
mod identity;
mod index;
mod interrupt;
mod nginx;
mod paths;
mod pip;
mod ports;
mod processes;
mod provenance;
mod quote;
mod remote;
mod requires_python;
mod run;
mod scaffold;
mod scaffold_detect;
mod scaffold_nginx;
mod scaffold_ports;
mod scaffold_pyproject;
mod serve;
mod ssh;
mod supervisor;
mod ui;
mod validate;
mod venv;
mod version;
mod wheel_check;

use clap::FromArgMatches;

use crate::app::App;
use crate::cli::{Cli, Command};

fn main() {
    let cli = match Cli::from_arg_matches(&cli::command().get_matches()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    // es serve stops on its own signals, and tells its jobs.
    if !matches!(cli.command, Command::Serve(_)) {
        interrupt::install();
    }
    let result = dispatch(cli);
    let mut code = match &result {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(err) => {
            eprintln!("es: error: {}", fleet::describe(err));
            error::exit_code(err)
        }
    };
    if let Some(interrupted) = interrupt::exit_code() {
        code = interrupted;
    }
    std::process::exit(code);
}

/// Runs the chosen command; `Ok(false)` when a host or step failed.
fn dispatch(cli: Cli) -> anyhow::Result<bool> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut cli::command(), "es", &mut std::io::stdout());
        return Ok(true);
    }
    // Scaffolding needs no deploy.toml, and must not trip over a broken one above.
    match &cli.command {
        Command::Create(args) => return scaffold::create(&cli.global, args),
        Command::Init(args) => return scaffold::init(&cli.global, args),
        Command::Templates => return scaffold::list_templates(),
        _ => {}
    }
    let app = App::new(cli.global)?;
    match cli.command {
        Command::Run(args) => run::run(&app, &args),
        Command::Exec(args) => exec::exec(&app, &args),
        Command::Build(args) => build::build(&app, &args).map(|_| true),
        Command::Version(args) => build::version_command(&app, &args),
        Command::Pinstall { packages } => pip::pinstall(&app, &packages),
        Command::Install { args } => pip::install(&args),
        Command::Pypi(cli::PypiCommand::Sync(args)) => pip::sync(&app, &args),
        Command::Deploy(args) => deploy::command(&app, &args),
        Command::Quickdeploy(args) => deploy::quickdeploy(&app, &args),
        Command::Rollback(args) => deploy::rollback(&app, &args),
        Command::Status(args) => deploy::status(&app, &args),
        Command::Releases(args) => deploy::releases(&app, &args),
        Command::Lock(args) => deploy::lock_command(&app, &args),
        Command::Supervisor(args) => supervisor::command(&app, &args),
        Command::Ps(args) => processes::ps(&app, args.venv.as_deref()),
        Command::Start(args) => processes::program(&app, "start", &args),
        Command::Stop(args) => processes::program(&app, "stop", &args),
        Command::Restart(args) => processes::program(&app, "restart", &args),
        Command::Logs(args) => processes::logs(&app, &args),
        Command::Nginx(args) => nginx::command(&app, &args),
        Command::Maintenance(args) => nginx::maintenance::command(&app, &args),
        Command::Validate(args) => validate::validate(&app, &args),
        Command::Serve(args) => serve::command(&app, &args),
        Command::Completions { .. }
        | Command::Create(_)
        | Command::Init(_)
        | Command::Templates => Ok(true),
    }
}
