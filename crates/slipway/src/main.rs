//! The `slipway` command: the CLI (a client of the server's REST API) and the server
//! entry point (`slipway server`).

mod client;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use client::Client;
use slipway_control::dto::{self, Progress};

#[derive(Parser)]
#[command(
    name = "slipway",
    version,
    about = "Cloud Run on your own machine: run a multi-service app behind one router, with zero-downtime deploys and instant rollback"
)]
struct Cli {
    /// Where the server keeps its state, logs and API socket.
    #[arg(long, global = true, env = "SLIPWAY_HOME")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Listen {
    /// The router's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The admin address (API over HTTP; later metrics and the dashboard).
    #[arg(long, default_value = "127.0.0.1:8081")]
    admin: SocketAddr,
}

#[derive(clap::Args, Clone)]
struct AppArg {
    /// The app to act on; default: the app of ./slipway.yaml, or the only registered app.
    #[arg(long)]
    app: Option<String>,
    #[command(flatten)]
    env: EnvArg,
}

#[derive(clap::Args, Clone)]
struct EnvArg {
    /// The environment (declared under `environments:` in slipway.yaml).
    #[arg(long = "env", env = "SLIPWAY_ENV", default_value = slipway_control::DEVELOPMENT)]
    environment: String,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server if none is running, deploy every service of DIR/slipway.yaml, print the URLs.
    Up {
        /// Directory holding slipway.yaml (or the file itself).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Leave the server running in the background and return.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        env: EnvArg,
    },
    /// Run the server (router, API, reconciler) in the foreground.
    Server {
        #[command(subcommand)]
        command: Option<ServerCommand>,
        #[command(flatten)]
        listen: Listen,
        /// Do not record request figures in the router (only to measure what recording
        /// costs: status figures, /metrics, canary analysis and autoscaling go blind).
        #[arg(long)]
        no_metrics: bool,
        /// Serve every request through hyper instead of the router's HTTP/1.1 fast path
        /// (only to compare the two).
        #[arg(long)]
        no_fast_path: bool,
        /// How many stopped instances of each service keep their logs (the most recent, for at
        /// most 7 days); the logs of older ones are deleted.
        #[arg(long, value_name = "N", default_value_t = 50,
              value_parser = clap::value_parser!(u32).range(1..))]
        keep_logs: u32,
    },
    /// Stop every instance of the app cleanly (the server keeps running).
    Down {
        #[command(flatten)]
        app: AppArg,
    },
    /// Show the status table, refreshed every second (Ctrl-C to quit).
    Top {
        #[command(flatten)]
        app: AppArg,
    },
    /// Show services, serving revision, instances and URLs.
    Status {
        service: Option<String>,
        #[command(flatten)]
        app: AppArg,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the spec and deploy every service whose config changed (or the named ones).
    Deploy {
        services: Vec<String>,
        /// Create a new revision even if nothing changed.
        #[arg(long)]
        force: bool,
        /// Override the spec's deploy strategy: blue-green, canary, rolling or recreate.
        #[arg(long, value_parser = str::parse::<dto::Strategy>)]
        strategy: Option<dto::Strategy>,
        /// Directory holding slipway.yaml (or the file itself).
        #[arg(long, short = 'f', default_value = ".")]
        file: PathBuf,
        #[command(flatten)]
        env: EnvArg,
    },
    /// Deploy to one environment the exact build serving in another (no rebuild).
    Promote {
        service: String,
        /// The environment whose serving revision is promoted.
        #[arg(long)]
        from: String,
        /// The environment to deploy it to.
        #[arg(long)]
        to: String,
        /// Directory holding slipway.yaml (or the file itself).
        #[arg(long, short = 'f', default_value = ".")]
        file: PathBuf,
    },
    /// Manage the secrets an app's services receive as environment variables.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Show the spec as it resolves for an environment.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Split a service's traffic between revisions, e.g. `--to-revisions 7=90,8=10`.
    Traffic {
        service: String,
        /// REVISION=PERCENT pairs summing to 100.
        #[arg(
            long,
            value_delimiter = ',',
            conflicts_with = "to_latest",
            required_unless_present = "to_latest"
        )]
        to_revisions: Vec<String>,
        /// All traffic to the newest ready revision.
        #[arg(long)]
        to_latest: bool,
        #[command(flatten)]
        app: AppArg,
    },
    /// Name a revision (`green=8`); it is reachable at http://<tag>.<service>.<app>.localhost whatever its share.
    Tag {
        service: String,
        /// TAG=REVISION
        #[arg(conflicts_with = "remove", required_unless_present = "remove")]
        assignment: Option<String>,
        /// Remove this tag.
        #[arg(long)]
        remove: Option<String>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Show or steer a canary rollout: status, promote, pause, resume, abort.
    Rollout {
        /// `status`, or one of the actions: promote, pause, resume, abort.
        #[arg(value_parser = ["status", "promote", "pause", "resume", "abort"])]
        action: String,
        service: String,
        /// With `status`: keep refreshing until the rollout ends.
        #[arg(short, long)]
        watch: bool,
        #[command(flatten)]
        app: AppArg,
    },
    /// List a service's revisions.
    Revisions {
        service: String,
        #[command(flatten)]
        app: AppArg,
    },
    /// Switch a service back to the previous (or given) ready revision.
    Rollback {
        service: String,
        /// The revision number to return to.
        #[arg(long)]
        to: Option<u64>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Print a service's instance logs, interleaved by time.
    Logs {
        service: String,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// Only this revision's instances.
        #[arg(long)]
        revision: Option<u64>,
        /// How many recent lines to print first.
        #[arg(long, default_value_t = 100)]
        tail: usize,
        /// Print the output of the release command instead (of --revision, or the newest).
        #[arg(long, conflicts_with = "follow")]
        release: bool,
        #[command(flatten)]
        app: AppArg,
    },
    /// Run a one-off command (a data fix, `manage.py createsuperuser`, a shell) in a
    /// revision's code with its env, secrets and volumes, attached to this terminal; exits
    /// with the command's exit code.
    #[command(
        after_help = "Example: slipway run web -- python manage.py createsuperuser --noinput"
    )]
    Run {
        service: String,
        /// The revision whose code and config to use; default: the serving one.
        #[arg(long)]
        revision: Option<u64>,
        #[command(flatten)]
        app: AppArg,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Print the event log (the audit trail).
    Events {
        #[arg(long)]
        service: Option<String>,
        /// Keep printing new events as they happen.
        #[arg(short, long)]
        follow: bool,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        app: AppArg,
    },
    /// Check a spec file and print every problem with its line and column.
    Validate {
        #[arg(default_value = "slipway.yaml")]
        file: PathBuf,
    },
    /// Print the JSON Schema of slipway.yaml (for editors).
    Schema,
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Set a secret (a new version); the value is read from stdin, or asked for without
    /// echo on a terminal, never taken from the command line.
    Set {
        name: String,
        #[command(flatten)]
        app: AppArg,
    },
    /// List the secrets that are set: names, versions and when they changed (never values).
    List {
        #[command(flatten)]
        app: AppArg,
    },
    /// Remove a secret (revisions that use an older version keep it).
    Rm {
        name: String,
        #[command(flatten)]
        app: AppArg,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the fully resolved spec of an environment (secrets by name only).
    Show {
        /// Directory holding slipway.yaml (or the file itself).
        #[arg(long, short = 'f', default_value = ".")]
        file: PathBuf,
        #[command(flatten)]
        env: EnvArg,
    },
}

#[derive(Subcommand)]
enum ServerCommand {
    /// Stop the running server: drain and stop every instance, then exit.
    Stop,
}

fn main() -> ExitCode {
    // The server starts its jobs (build, test, release) behind this binary in guard mode,
    // which takes a job's whole process group down if the server dies.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == slipway_control::GUARD_ARG) {
        slipway_control::guard_main(args);
    }
    let cli = Cli::parse();
    // Printing into a closed pipe (`slipway logs -f | head`) ends a CLI command quietly, as
    // for other command-line tools, instead of panicking in `println!`. The server keeps
    // SIGPIPE ignored: a client that hangs up while the router writes to it must cost one
    // connection, not the whole process.
    // Only commands that print what they read (and are piped into `head` or `grep -m`) get
    // the default; the others keep it ignored, so that a server closing its socket while
    // one of them writes to it (`server stop` polls a server that is exiting) is an error
    // they report, not a silent death.
    if matches!(
        cli.command,
        Command::Logs { .. }
            | Command::Events { .. }
            | Command::Status { .. }
            | Command::Revisions { .. }
            | Command::Top { .. }
            | Command::Schema
            | Command::Config { .. }
    ) {
        // SAFETY: called before the runtime starts, while this is the only thread.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLIPWAY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn data_dir(cli: &Option<PathBuf>) -> PathBuf {
    if let Some(d) = cli {
        return absolute(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/share/slipway")
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// `DIR` or `DIR/slipway.yaml` → the spec file.
fn spec_file(p: &Path) -> PathBuf {
    let p = absolute(p);
    if p.is_dir() {
        p.join("slipway.yaml")
    } else {
        p
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let data = data_dir(&cli.data_dir);
    let client = Client::new(&data);
    match cli.command {
        Command::Validate { file } => validate(&spec_file(&file)),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&slipway_spec::json_schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Server {
            command: Some(ServerCommand::Stop),
            ..
        } => {
            let info: dto::ServerInfo = client.get("/v1/server").await?;
            let _: () = client.post("/v1/server/stop", &()).await?;
            // Wait until the server has drained its instances and exited.
            let deadline = Instant::now() + Duration::from_secs(120);
            while client.is_up().await && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            println!("slipway server (pid {}) stopped", info.pid);
            Ok(ExitCode::SUCCESS)
        }
        Command::Server {
            command: None,
            listen,
            no_metrics,
            no_fast_path,
            keep_logs,
        } => {
            slipway_control::run_server(slipway_control::ServerConfig {
                data_dir: data,
                listen: listen.listen,
                admin: listen.admin,
                metrics: !no_metrics,
                fast_path: !no_fast_path,
                keep_logs: keep_logs as usize,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Up {
            dir,
            detach,
            listen,
            env,
        } => {
            up(
                &client,
                &data,
                &spec_file(&dir),
                detach,
                &listen,
                &env.environment,
            )
            .await
        }
        Command::Deploy {
            services,
            force,
            strategy,
            file,
            env,
        } => {
            let file = spec_file(&file);
            if validate_quiet(&file, &env.environment)?.is_some() {
                return Ok(ExitCode::FAILURE);
            }
            let applied: dto::ApplyResponse = client
                .post(
                    "/v1/apps",
                    &dto::ApplyRequest {
                        spec_path: file.display().to_string(),
                        environment: Some(env.environment.clone()),
                    },
                )
                .await?;
            let ok = deploy(&client, &applied.app, services, force, strategy).await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Promote {
            service,
            from,
            to,
            file,
        } => {
            check_name("service", &service)?;
            let file = spec_file(&file);
            if validate_quiet(&file, &to)?.is_some() {
                return Ok(ExitCode::FAILURE);
            }
            let applied: dto::ApplyResponse = client
                .post(
                    "/v1/apps",
                    &dto::ApplyRequest {
                        spec_path: file.display().to_string(),
                        environment: Some(to.clone()),
                    },
                )
                .await?;
            let started = Instant::now();
            let mut ok = true;
            client
                .stream(
                    "POST",
                    &format!("/v1/apps/{}/services/{service}/promote", applied.app),
                    Some(&dto::PromoteRequest { from }),
                    |p: Progress| ok &= print_progress(&p, started),
                )
                .await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Secret { command } => secret(&client, command).await,
        Command::Config {
            command: ConfigCommand::Show { file, env },
        } => config_show(&spec_file(&file), &env.environment),
        Command::Down { app } => {
            let app = resolve_app(&client, &app).await?;
            let _: () = client.post(&format!("/v1/apps/{app}/down"), &()).await?;
            println!(
                "app {app} is down: every instance stopped (revisions and traffic kept; `slipway up` brings it back)"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { service, app, json } => {
            let app = resolve_app(&client, &app).await?;
            let status: dto::AppStatus = client.get(&format!("/v1/apps/{app}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status, service.as_deref());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Traffic {
            service,
            to_revisions,
            to_latest,
            app,
        } => {
            let app = resolve_app(&client, &app).await?;
            check_name("service", &service)?;
            let mut targets = Vec::new();
            for pair in &to_revisions {
                let parsed = pair.split_once('=').and_then(|(r, p)| {
                    Some((
                        r.trim().parse::<u64>().ok()?,
                        p.trim().trim_end_matches('%').parse::<u32>().ok()?,
                    ))
                });
                let Some((revision, percent)) = parsed else {
                    bail!("`{pair}` is not REVISION=PERCENT (e.g. `--to-revisions 7=90,8=10`)");
                };
                targets.push(dto::TrafficShare { revision, percent });
            }
            let shares: Vec<dto::TrafficShare> = client
                .post(
                    &format!("/v1/apps/{app}/services/{service}/traffic"),
                    &dto::TrafficRequest {
                        targets,
                        latest: to_latest,
                    },
                )
                .await?;
            let split: Vec<String> = shares
                .iter()
                .map(|t| format!("revision {} {}%", t.revision, t.percent))
                .collect();
            println!("{service}: traffic now {}", split.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Command::Tag {
            service,
            assignment,
            remove,
            app,
        } => {
            let app = resolve_app(&client, &app).await?;
            check_name("service", &service)?;
            let (tag, revision) = match (assignment, remove) {
                (_, Some(tag)) => (tag, None),
                (Some(a), None) => {
                    let Some((tag, rev)) = a
                        .split_once('=')
                        .and_then(|(t, r)| Some((t.to_owned(), r.parse::<u64>().ok()?)))
                    else {
                        bail!("`{a}` is not TAG=REVISION (e.g. `slipway tag api green=8`)");
                    };
                    (tag, Some(rev))
                }
                (None, None) => bail!("give TAG=REVISION or --remove TAG"),
            };
            check_name("tag", &tag)?;
            let _: () = client
                .post(
                    &format!("/v1/apps/{app}/services/{service}/tags"),
                    &dto::TagRequest {
                        tag: tag.clone(),
                        revision,
                    },
                )
                .await?;
            let status: dto::AppStatus = client.get(&format!("/v1/apps/{app}")).await?;
            let port = status
                .router
                .rsplit(':')
                .next()
                .unwrap_or("8080")
                .to_owned();
            match revision {
                Some(r) => println!(
                    "tag {tag} -> revision {r}: http://{tag}.{service}.{}:{port}/",
                    status.host
                ),
                None => println!("tag {tag} removed"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollout {
            action,
            service,
            watch,
            app,
        } => {
            let app = resolve_app(&client, &app).await?;
            check_name("service", &service)?;
            let path = format!("/v1/apps/{app}/services/{service}/rollout");
            if action != "status" {
                let status: dto::RolloutStatus =
                    client.post(&format!("{path}/{action}"), &()).await?;
                print_rollout(&status);
                return Ok(ExitCode::SUCCESS);
            }
            loop {
                let status: dto::RolloutStatus = client.get(&path).await?;
                if watch {
                    print!("\x1b[2J\x1b[H");
                }
                print_rollout(&status);
                if !watch || !status.active {
                    return Ok(ExitCode::SUCCESS);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                }
            }
        }
        Command::Revisions { service, app } => {
            let app = resolve_app(&client, &app).await?;
            check_name("service", &service)?;
            let revs: Vec<dto::RevisionInfo> = client
                .get(&format!("/v1/apps/{app}/services/{service}/revisions"))
                .await?;
            let mut t = table(&[
                "REVISION",
                "CREATED",
                "CONFIG",
                "STATE",
                "TRAFFIC",
                "INSTANCES",
                "MESSAGE",
            ]);
            for r in revs {
                t.add_row(vec![
                    r.number.to_string(),
                    r.created_at,
                    r.digest.chars().take(12).collect(),
                    if r.traffic > 0 {
                        "serving".into()
                    } else {
                        r.state
                    },
                    format!("{}%", r.traffic),
                    r.instances.to_string(),
                    r.message,
                ]);
            }
            println!("{t}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            service,
            revision,
            app,
            command,
        } => {
            let app = resolve_app(&client, &app).await?;
            check_name("service", &service)?;
            let plan: dto::RunPlan = client
                .post(
                    &format!("/v1/apps/{app}/services/{service}/runs"),
                    &dto::RunRequest {
                        command,
                        revision,
                        user: local_user(),
                    },
                )
                .await?;
            let started = Instant::now();
            let status = tokio::task::spawn_blocking({
                let plan = plan.clone();
                move || run_attached(&plan)
            })
            .await??;
            use std::os::unix::process::ExitStatusExt;
            let signal = status.signal().map(signal_name);
            let _: serde_json::Value = client
                .post(
                    &format!("/v1/apps/{app}/services/{service}/runs/finished"),
                    &dto::RunExit {
                        id: plan.id,
                        revision: plan.revision,
                        code: status.code(),
                        signal,
                        elapsed_ms: started.elapsed().as_millis() as u64,
                    },
                )
                .await?;
            // A shell's convention: a command killed by signal N exits 128 + N.
            let code = status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(1);
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Rollback { service, to, app } => {
            let app = resolve_app(&client, &app).await?;
            check_name("service", &service)?;
            let started = Instant::now();
            let mut ok = true;
            client
                .stream(
                    "POST",
                    &format!("/v1/apps/{app}/services/{service}/rollback"),
                    Some(&dto::RollbackRequest { to }),
                    |p: Progress| ok &= print_progress(&p, started),
                )
                .await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Logs {
            service,
            follow,
            revision,
            tail,
            release,
            app,
        } => {
            let app = resolve_app(&client, &app).await?;
            check_name("service", &service)?;
            if release {
                let q = revision
                    .map(|r| format!("?revision={r}"))
                    .unwrap_or_default();
                let out: dto::ReleaseOutput = client
                    .get(&format!("/v1/apps/{app}/services/{service}/release{q}"))
                    .await?;
                println!(
                    "release output of revision {} ({}):",
                    out.revision, out.path
                );
                for l in out.lines {
                    println!("{l}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let mut q = format!("tail={tail}&follow={follow}");
            if let Some(r) = revision {
                q.push_str(&format!("&revision={r}"));
            }
            client
                .stream::<(), dto::LogLine>(
                    "GET",
                    &format!("/v1/apps/{app}/services/{service}/logs?{q}"),
                    None,
                    |l| {
                        // Lines of the `slipway` stream are the runtime's own notes (spawned, exited…).
                        let mark = if l.stream == "slipway" {
                            "[slipway] "
                        } else {
                            ""
                        };
                        println!("{} {} {mark}{}", l.ts, l.instance, l.text)
                    },
                )
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Events {
            service,
            follow,
            limit,
            app,
        } => {
            let app = resolve_app(&client, &app).await?;
            let mut q = format!("app={app}&limit={limit}");
            if let Some(s) = &service {
                check_name("service", s)?;
                q.push_str(&format!("&service={s}"));
            }
            let print = |e: dto::EventInfo| {
                println!(
                    "{} {:<22} {:<8} {}",
                    e.ts,
                    e.kind,
                    e.service.unwrap_or_default(),
                    e.message
                )
            };
            let events: Vec<dto::EventInfo> = client.get(&format!("/v1/events?{q}")).await?;
            let last = events.last().map(|e| e.id).unwrap_or(0);
            events.into_iter().for_each(print);
            if follow {
                client
                    .sse(&format!("/v1/events/stream?{q}&after={last}"), print)
                    .await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Top { app } => {
            let app = resolve_app(&client, &app).await?;
            loop {
                let status: dto::AppStatus = client.get(&format!("/v1/apps/{app}")).await?;
                // Clear the screen and home the cursor, then redraw.
                print!("\x1b[2J\x1b[H");
                print_status(&status, None);
                println!("\n(refreshing every second; Ctrl-C to quit)");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                }
            }
        }
    }
}

/// Prints every problem of a spec file; the exit code is 1 when there is any.
fn validate(file: &Path) -> anyhow::Result<ExitCode> {
    match validate_quiet(file, slipway_control::DEVELOPMENT)? {
        Some(_) => Ok(ExitCode::FAILURE),
        None => {
            println!("{}: ok", file.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Checks a spec locally for `environment`, printing its problems to stderr; `Some(n)`
/// when there are `n`.
fn validate_quiet(file: &Path, environment: &str) -> anyhow::Result<Option<usize>> {
    match slipway_spec::load_env(file, environment) {
        Ok(_) => Ok(None),
        Err(slipway_spec::LoadError::Io { path, source }) => {
            bail!(
                "cannot read {}: {source}\n  hint: pass the directory that holds slipway.yaml, or the file itself",
                path.display()
            )
        }
        Err(e @ slipway_spec::LoadError::Invalid { .. }) => {
            let n = match &e {
                slipway_spec::LoadError::Invalid { diagnostics, .. } => diagnostics.len(),
                _ => 0,
            };
            eprintln!("{e}");
            Ok(Some(n))
        }
    }
}

/// Names go into API paths: refuse anything that breaks the one rule, with the rule.
fn check_name(kind: &str, name: &str) -> anyhow::Result<()> {
    slipway_control::names::check_name(kind, name).map_err(anyhow::Error::msg)
}

/// The key of the app to act on in the chosen environment (`app` or `app@environment`).
async fn resolve_app(client: &Client, arg: &AppArg) -> anyhow::Result<String> {
    let environment = &arg.env.environment;
    check_name("environment", environment)?;
    let key = |app: &str| slipway_control::app_key(app, environment);
    if let Some(a) = &arg.app {
        check_name("app", a)?;
        return Ok(key(a));
    }
    let here = spec_file(Path::new("."));
    if here.exists() {
        return match slipway_spec::load(&here) {
            Ok(spec) => Ok(key(&spec.app)),
            Err(e) => bail!(
                "./slipway.yaml names the app to act on, but it is invalid:\n{e}\n  hint: fix it, or pass --app NAME"
            ),
        };
    }
    let apps: Vec<dto::AppSummary> = client.get("/v1/apps").await?;
    let names: Vec<&str> = apps
        .iter()
        .map(|a| slipway_control::split_app_key(&a.name).0)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    match names.as_slice() {
        [one] => Ok(key(one)),
        [] => bail!("no app is registered on this server; run `slipway up DIR` first"),
        many => bail!(
            "several apps are registered ({}); choose one with --app",
            many.join(", ")
        ),
    }
}

/// `slipway secret set|list|rm`.
async fn secret(client: &Client, command: SecretCommand) -> anyhow::Result<ExitCode> {
    if let SecretCommand::Set { name, .. } | SecretCommand::Rm { name, .. } = &command {
        let mut chars = name.chars();
        let ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            bail!(
                "`{name}` is not a valid secret name: use letters, digits and `_`, not starting with a digit (it becomes an environment variable)"
            );
        }
    }
    match command {
        SecretCommand::Set { name, app } => {
            let key = resolve_app(client, &app).await?;
            let value = read_secret_value(&name)?;
            if value.is_empty() {
                bail!(
                    "the value of secret {name} is empty\n  hint: pipe it in, e.g. `printf %s \"$VALUE\" | slipway secret set {name}`"
                );
            }
            let request = dto::SetSecretRequest {
                value: value.as_str().to_owned(),
            };
            let info: dto::SecretInfo = client
                .call("PUT", &format!("/v1/apps/{key}/secrets/{name}"), &request)
                .await?;
            let (app, environment) = slipway_control::split_app_key(&key);
            println!(
                "secret {} set for app {app} in environment {environment} (version {}); `slipway deploy --env {environment}` gives the services that use it a new revision",
                info.name, info.version
            );
            Ok(ExitCode::SUCCESS)
        }
        SecretCommand::List { app } => {
            let key = resolve_app(client, &app).await?;
            let secrets: Vec<dto::SecretInfo> =
                client.get(&format!("/v1/apps/{key}/secrets")).await?;
            let mut t = table(&["NAME", "VERSION", "UPDATED"]);
            for s in secrets {
                t.add_row(vec![s.name, s.version.to_string(), s.updated_at]);
            }
            println!("{t}");
            Ok(ExitCode::SUCCESS)
        }
        SecretCommand::Rm { name, app } => {
            let key = resolve_app(client, &app).await?;
            let _: () = client
                .call("DELETE", &format!("/v1/apps/{key}/secrets/{name}"), &())
                .await?;
            println!("secret {name} removed; revisions created before keep their version");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads a secret's value: from a terminal without echo, otherwise all of stdin (one
/// trailing newline dropped, as `echo` adds it).
fn read_secret_value(name: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    use std::io::{IsTerminal, Read};
    let mut value = zeroize::Zeroizing::new(String::new());
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("value of {name} (not shown): ");
        let _echo = EchoOff::new();
        stdin.read_line(&mut value)?;
        eprintln!();
    } else {
        stdin
            .lock()
            .read_to_string(&mut value)
            .context("cannot read the secret's value from stdin (it must be UTF-8 text)")?;
    }
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// Turns the terminal's echo off until dropped.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed termios that tcgetattr fills.
        unsafe {
            let mut term: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut term) != 0 {
                return EchoOff(None);
            }
            let saved = term;
            term.c_lflag &= !libc::ECHO;
            term.c_lflag |= libc::ECHONL;
            libc::tcsetattr(0, libc::TCSANOW, &term);
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, saved);
            }
        }
    }
}

/// `slipway config show`: the spec resolved for `environment`, as JSON. Secrets appear
/// by name only (values live on the server, encrypted).
fn config_show(file: &Path, environment: &str) -> anyhow::Result<ExitCode> {
    match slipway_spec::load_env(file, environment) {
        Ok(spec) => {
            println!("{}", serde_json::to_string_pretty(&spec)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(slipway_spec::LoadError::Io { path, source }) => bail!(
            "cannot read {}: {source}\n  hint: pass the directory that holds slipway.yaml with -f, or the file itself",
            path.display()
        ),
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Prints where the dashboard is, with the admin token in the URL's fragment when this user
/// can read it (the token file is private to the user running the server).
async fn print_dashboard_url(client: &Client, data: &Path) {
    let Ok(info) = client.get::<dto::ServerInfo>("/v1/server").await else {
        return;
    };
    match std::fs::read_to_string(slipway_control::dashboard::token_path(data)) {
        Ok(token) => println!("\ndashboard: http://{}/#token={}", info.admin, token.trim()),
        Err(_) => println!(
            "\ndashboard: http://{}/ (read-only without the admin token)",
            info.admin
        ),
    }
}

async fn up(
    client: &Client,
    data: &Path,
    file: &Path,
    detach: bool,
    listen: &Listen,
    environment: &str,
) -> anyhow::Result<ExitCode> {
    if validate_quiet(file, environment)?.is_some() {
        return Ok(ExitCode::FAILURE);
    }
    let started_server = if client.is_up().await {
        false
    } else {
        start_server(client, data, listen).await?;
        true
    };
    let applied: dto::ApplyResponse = client
        .post(
            "/v1/apps",
            &dto::ApplyRequest {
                spec_path: file.display().to_string(),
                environment: Some(environment.to_owned()),
            },
        )
        .await?;
    let ok = deploy(client, &applied.app, vec![], false, None).await?;
    let status: dto::AppStatus = client.get(&format!("/v1/apps/{}", applied.app)).await?;
    println!();
    print_status(&status, None);
    print_dashboard_url(client, data).await;
    if detach {
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    println!(
        "\nfollowing logs; press Ctrl-C to {}",
        if started_server { "stop" } else { "detach" }
    );
    let mut tasks = Vec::new();
    for s in &status.services {
        let path = format!(
            "/v1/apps/{}/services/{}/logs?tail=0&follow=true",
            applied.app, s.name
        );
        let c = Client::new(data);
        tasks.push(tokio::spawn(async move {
            let _ = c
                .stream::<(), dto::LogLine>("GET", &path, None, |l| {
                    println!("{} | {}", l.instance, l.text)
                })
                .await;
        }));
    }
    let _ = tokio::signal::ctrl_c().await;
    for t in tasks {
        t.abort();
    }
    if started_server {
        println!("\nstopping the server and its instances…");
        let _: () = client.post("/v1/server/stop", &()).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while client.is_up().await {
            if Instant::now() > deadline {
                bail!(
                    "the server is still running after 120s; see {}",
                    data.join("server.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts `slipway server` in the background (its own process group, output in
/// `<data>/server.log`) and waits until its API answers.
async fn start_server(client: &Client, data: &Path, listen: &Listen) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    {
        use std::os::unix::fs::DirBuilderExt;
        // The data dir holds the API socket: only its owner may reach it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data)
            .with_context(|| format!("cannot create the data directory {}", data.display()))?;
    }
    let log_path = data.join("server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .arg("server")
        .arg("--data-dir")
        .arg(data)
        .arg("--listen")
        .arg(listen.listen.to_string())
        .arg("--admin")
        .arg(listen.admin.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start `slipway server`")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if client.is_up().await {
            println!(
                "started slipway server (pid {}), log: {}",
                child.id(),
                log_path.display()
            );
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "the slipway server exited ({status}) before it was ready:\n{}",
                tail.join("\n")
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the slipway server did not answer within 20s; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn deploy(
    client: &Client,
    app: &str,
    services: Vec<String>,
    force: bool,
    strategy: Option<dto::Strategy>,
) -> anyhow::Result<bool> {
    let started = Instant::now();
    let mut ok = true;
    client
        .stream(
            "POST",
            &format!("/v1/apps/{app}/deploy"),
            Some(&dto::DeployRequest {
                services,
                force,
                strategy,
            }),
            |p: Progress| ok &= print_progress(&p, started),
        )
        .await?;
    Ok(ok)
}

/// Prints one progress line; returns false for a failure.
fn print_progress(p: &Progress, started: Instant) -> bool {
    let t = format!("{:>7.2}s", started.elapsed().as_secs_f64());
    match p {
        Progress::Starting {
            service,
            revision,
            instances,
        } => {
            println!(
                "{t}  {service:<12} starting revision {revision} ({instances} instance{})",
                if *instances == 1 { "" } else { "s" }
            );
        }
        Progress::Unchanged { service, revision } => {
            println!("{t}  {service:<12} unchanged, revision {revision} serving");
        }
        Progress::InstanceReady {
            service,
            instance,
            elapsed_ms,
            ..
        } => {
            println!("{t}  {service:<12} {instance} ready after {elapsed_ms} ms");
        }
        Progress::Switched {
            service,
            revision,
            previous,
            elapsed_ms,
        } => match previous {
            Some(p) => println!(
                "{t}  {service:<12} traffic switched: revision {p} -> {revision} ({elapsed_ms} ms)"
            ),
            None => println!("{t}  {service:<12} serving revision {revision} ({elapsed_ms} ms)"),
        },
        Progress::Failed {
            service,
            error,
            last_lines,
            ..
        } => {
            let who = if service.is_empty() {
                String::new()
            } else {
                format!("{service}: ")
            };
            eprintln!("{t}  error: {who}{error}");
            if !last_lines.is_empty() {
                eprintln!("         output:");
                for l in last_lines {
                    eprintln!("         | {l}");
                }
            }
            return false;
        }
        Progress::RolloutStarted {
            service,
            revision,
            baseline,
            percent,
            steps,
            interval_ms,
        } => {
            println!(
                "{t}  {service:<12} canary started: {percent}% of traffic on revision {revision}, {}% on {baseline}; steps {steps:?} every {:.0}s, judged on live figures",
                100 - percent,
                *interval_ms as f64 / 1000.0
            );
            println!("{t}  {service:<12} follow it with `slipway rollout status {service} -w`");
        }
        Progress::Step {
            service,
            step,
            command,
        } => {
            println!("{t}  {service:<12} {step}: {command}");
        }
        Progress::Output { service, line } => {
            println!("{t}  {service:<12} | {line}");
        }
        Progress::StepDone {
            service,
            step,
            elapsed_ms,
        } => {
            println!(
                "{t}  {service:<12} {step} succeeded in {:.1}s",
                *elapsed_ms as f64 / 1000.0
            );
        }
        Progress::Artifact { service, digest } => {
            println!(
                "{t}  {service:<12} artifact stored as {}",
                &digest[..digest.len().min(12)]
            );
        }
        Progress::Promoting {
            service,
            from,
            digest,
        } => {
            println!(
                "{t}  {service:<12} promoting the code {} of {from} (no build, nothing read from the working folder)",
                &digest[..digest.len().min(12)]
            );
        }
        Progress::Snapshot {
            service,
            digest,
            files,
            bytes,
            new_files,
            new_bytes,
            elapsed_ms,
        } => {
            println!(
                "{t}  {service:<12} code snapshot {}: {files} files, {}; {new_files} new ({}) in {elapsed_ms} ms",
                &digest[..digest.len().min(12)],
                human_bytes(*bytes),
                human_bytes(*new_bytes)
            );
        }
        Progress::StepSkipped {
            service,
            step,
            reason,
        } => {
            println!("{t}  {service:<12} {step} skipped: {reason}");
        }
        Progress::Downtime {
            service,
            downtime_ms,
        } => {
            println!(
                "{t}  {service:<12} recreate strategy: no instance served for {downtime_ms} ms"
            );
        }
        Progress::ReleaseStarted {
            service,
            revision,
            command,
        } => {
            println!("{t}  {service:<12} revision {revision}: release command: {command}");
        }
        Progress::ReleaseSucceeded {
            service, summary, ..
        } => {
            println!("{t}  {service:<12} {summary}");
        }
        Progress::Done { ok } => return *ok,
    }
    true
}

/// Runs a one-off command's plan with this terminal as its stdin, stdout and stderr, and
/// waits for it. While it runs, Ctrl-C and Ctrl-\\ are the command's to handle (the
/// terminal sends them to both); this process ignores them, as a shell does.
fn run_attached(plan: &dto::RunPlan) -> anyhow::Result<std::process::ExitStatus> {
    let Some((program, args)) = plan.argv.split_first() else {
        bail!("no command to run");
    };
    let mut child = std::process::Command::new(program)
        .args(args)
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&plan.workdir)
        .spawn()
        .with_context(|| {
            format!(
                "`{program}` could not start in revision {}'s code ({})",
                plan.revision, plan.workdir
            )
        })?;
    // SAFETY: plain signal-disposition changes; the child was forked before them, so it
    // keeps the default handling.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = child.wait();
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGQUIT, libc::SIG_DFL);
    }
    Ok(status?)
}

/// The name of the user running the CLI, for the event log.
fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        // SAFETY: getuid has no preconditions and cannot fail.
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }))
}

/// `9` -> `SIGKILL`, for the signals a one-off command usually dies of.
fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGPIPE => "SIGPIPE".into(),
        libc::SIGTERM => "SIGTERM".into(),
        other => format!("signal {other}"),
    }
}

/// `1536` -> `1.5 KiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn print_rollout(r: &dto::RolloutStatus) {
    let phase = r.state.get("phase").cloned().unwrap_or_default();
    let phase_name = phase
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("unknown");
    let step = r.state.get("step").and_then(|s| s.as_u64()).unwrap_or(0);
    let steps: Vec<u64> = r
        .config
        .get("steps")
        .and_then(|s| s.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    println!(
        "canary of {} revision {} against revision {}: {}{}",
        r.service,
        r.revision,
        r.baseline,
        phase_name,
        phase
            .get("reason")
            .and_then(|v| v.as_str())
            .map(|s| format!(" ({s})"))
            .unwrap_or_default()
    );
    if r.active {
        println!(
            "step {} of {} ({}%), steps {steps:?}",
            step + 1,
            steps.len(),
            steps.get(step as usize).copied().unwrap_or(0)
        );
    }
    let split: Vec<String> = r
        .traffic
        .iter()
        .map(|t| format!("revision {} {}%", t.revision, t.percent))
        .collect();
    println!("traffic: {}", split.join(", "));
    let analysis = r.config.get("analysis").cloned().unwrap_or_default();
    let fmt = |f: &Option<dto::StepFigures>| match f {
        Some(f) => format!(
            "{} requests, {} errors ({:.2}%), p95 {}",
            f.requests,
            f.errors,
            if f.requests > 0 {
                f.errors as f64 * 100.0 / f.requests as f64
            } else {
                0.0
            },
            f.p95_ms.map_or("-".into(), |p| format!("{p:.1} ms"))
        ),
        None => "-".into(),
    };
    if r.active {
        println!("this step, new revision: {}", fmt(&r.canary));
        println!("this step, old revision: {}", fmt(&r.baseline_figures));
        println!("thresholds: {analysis}");
        if let Some(ms) = r.next_check_in_ms {
            println!("next judgement in {:.1}s", ms as f64 / 1000.0);
        }
    }
    if let Some(history) = r.state.get("history").and_then(|h| h.as_array()) {
        for h in history {
            let outcome = h.get("outcome").cloned().unwrap_or_default();
            let kind = outcome.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
            let detail = ["summary", "reason"]
                .iter()
                .find_map(|k| outcome.get(*k).and_then(|v| v.as_str()))
                .unwrap_or("");
            println!(
                "  {}% step: {kind}{}",
                h.get("percent").and_then(|p| p.as_u64()).unwrap_or(0),
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" — {detail}")
                }
            );
        }
    }
}

fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    t.set_header(header.to_vec());
    t
}

fn print_status(status: &dto::AppStatus, only: Option<&str>) {
    println!(
        "app {}{}  (router http://{})",
        status.app,
        if status.down { " [down]" } else { "" },
        status.router
    );
    let mut t = table(&[
        "SERVICE",
        "REVISION",
        "INSTANCES",
        "REQ/S",
        "ERR%",
        "P95",
        "URL",
    ]);
    let mut problems = Vec::new();
    for s in status
        .services
        .iter()
        .filter(|s| only.is_none_or(|o| o == s.name))
    {
        let traffic = if s.traffic.is_empty() {
            "-".to_owned()
        } else {
            s.traffic
                .iter()
                .map(|t| {
                    if t.percent == 100 {
                        t.revision.to_string()
                    } else {
                        format!("{}={}%", t.revision, t.percent)
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut urls = vec![s.url.clone()];
        urls.extend(s.route_urls.iter().cloned());
        let f = &s.figures;
        t.add_row(vec![
            s.name.clone(),
            traffic,
            format!("{}/{}", s.ready, s.total),
            format!("{:.1}", f.rps),
            if f.requests == 0 {
                "-".into()
            } else {
                format!("{:.1}", f.errors as f64 * 100.0 / f.requests as f64)
            },
            f.p95_ms.map_or("-".into(), |p| format!("{p:.1}ms")),
            urls.join("  "),
        ]);
        if let Some(p) = &s.problem {
            problems.push((s.name.clone(), p.clone(), s.problem_lines.clone()));
        }
    }
    println!("{t}");
    for (name, p, lines) in problems {
        println!("\n{name}: {p}");
        for l in lines {
            println!("  | {l}");
        }
    }
}
