//! The `slipway` command: the CLI (a client of the server's REST API) and the server
//! entry point (`slipway server`).

mod cli;
mod client;
mod daemon;
mod export;
mod render;
mod terminal;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use cli::*;
use client::Client;
use daemon::*;
use render::*;
use slipway_control::AppKey;
use slipway_control::dto::{self, Progress};
use terminal::*;

fn main() -> ExitCode {
    // The server starts its jobs (build, test, release) behind this binary in guard mode,
    // which takes a job's whole process group down if the server dies.
    let mut args = std::env::args_os();
    match args.nth(1) {
        Some(a) if a == slipway_control::GUARD_ARG => slipway_control::guard_main(args),
        _ => {}
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
    // The server's control plane gets a worker per core; a command gets one thread: a
    // multi-threaded runtime would hand every read of `logs -f` from a worker to the main
    // thread and back (~40,000 switches a second following a service writing 5 MB/s).
    let serving = matches!(cli.command, Command::Server { command: None, .. });
    let mut builder = if serving {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
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
    // Absolute: the server works in it, and paths sent to it must not depend on a cwd.
    absolute(&home.join(".local/share/slipway"))
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
        Command::Export {
            dir,
            target,
            env,
            out,
            format,
            gateway,
            skip_native,
            offline,
        } => {
            export::run(
                export::Request {
                    file: spec_file(&dir),
                    target,
                    environment: env.environment,
                    out,
                    format,
                    gateway,
                    skip_native,
                    offline,
                },
                &client,
            )
            .await
        }
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
            // Wait until the server has drained its instances and exited (its API stops
            // answering at once), so that a server started next finds the data dir free.
            if !wait_exited(info.pid, Duration::from_secs(120)).await {
                bail!(
                    "the slipway server (pid {}) is still stopping after 120s; see {}",
                    info.pid,
                    data.join("server.log").display()
                );
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
            max_request_head,
            max_request_headers,
            request_head_timeout,
            request_body_timeout,
            tls_listen,
            tls_dir,
            admin_tls_cert,
            admin_tls_key,
            acme_directory,
            acme_ca,
            acme_email,
            acme_challenge,
        } => {
            slipway_control::run_server(slipway_control::ServerConfig {
                data_dir: data,
                listen: listen.listen,
                admin: listen.admin,
                metrics: !no_metrics,
                fast_path: !no_fast_path,
                keep_logs: keep_logs as usize,
                max_head_bytes: max_request_head,
                max_headers: max_request_headers as usize,
                head_timeout: request_head_timeout,
                body_timeout: request_body_timeout,
                tls_listen,
                tls_dir: tls_dir.map(|d| std::path::absolute(&d).unwrap_or(d)),
                admin_tls: admin_tls_cert.zip(admin_tls_key).map(|(cert, key)| {
                    (
                        std::path::absolute(&cert).unwrap_or(cert),
                        std::path::absolute(&key).unwrap_or(key),
                    )
                }),
                acme: acme_directory.map(|directory| slipway_control::acme::AcmeSettings {
                    directory,
                    ca_file: acme_ca.map(|f| std::path::absolute(&f).unwrap_or(f)),
                    email: acme_email,
                    challenge: acme_challenge,
                }),
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
            restart_databases,
            file,
            env,
        } => {
            let file = spec_file(&file);
            let Some((applied, _)) =
                register(&client, &data, &file, &env.environment, None).await?
            else {
                return Ok(ExitCode::FAILURE);
            };
            let ok = deploy(
                &client,
                &applied.app,
                services,
                force,
                strategy,
                restart_databases,
            )
            .await?;
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
            let Some((applied, _)) = register(&client, &data, &file, &to, None).await? else {
                return Ok(ExitCode::FAILURE);
            };
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
        Command::Token { command } => token(&client, &data, command).await,
        Command::Secret { command } => secret(&client, &data, command).await,
        Command::Db { command } => db(&client, command).await,
        Command::Backup { command } => backup(&client, &data, command).await,
        Command::Config {
            command: ConfigCommand::Show { file, env },
        } => config_show(&spec_file(&file), &env.environment),
        Command::Down { app } => {
            ensure_server(&client, &data).await?;
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
            check_name("service", &service)?;
            ensure_server(&client, &data).await?;
            let app = resolve_app(&client, &app).await?;
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
            check_name("service", &service)?;
            ensure_server(&client, &data).await?;
            let app = resolve_app(&client, &app).await?;
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
            check_name("service", &service)?;
            if action != "status" {
                ensure_server(&client, &data).await?;
            }
            let app = resolve_app(&client, &app).await?;
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
            check_name("service", &service)?;
            ensure_server(&client, &data).await?;
            let app = resolve_app(&client, &app).await?;
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
            all,
            app,
        } => {
            let mut q = format!("limit={limit}");
            if !all {
                q.push_str(&format!("&app={}", resolve_app(&client, &app).await?));
            }
            if let Some(s) = &service {
                check_name("service", s)?;
                q.push_str(&format!("&service={s}"));
            }
            let print = |e: dto::EventInfo| {
                let by = e.actor.map_or(String::new(), |a| format!("  (by {a})"));
                // With --all, each line says whose event it is; the server's own have no app.
                let app = match (all, e.app.is_empty()) {
                    (false, _) => String::new(),
                    (true, true) => format!("{:<16} ", "(server)"),
                    (true, false) => format!("{:<16} ", e.app),
                };
                println!(
                    "{} {:<22} {app}{:<8} {}{by}",
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

/// Registers the spec file with the server (`POST /v1/apps`), which reads and checks it,
/// starting a server first (on `listen`, or `SLIPWAY_LISTEN` and `SLIPWAY_ADMIN`) when none
/// runs. The file is checked here as well only when no server runs, so that none is started
/// for a file with problems, and when the server refuses it, to show its problems with their
/// positions as `validate` does. `None`: the file has problems, printed; otherwise the
/// server's answer and whether a server was started.
async fn register(
    client: &Client,
    data: &Path,
    file: &Path,
    environment: &str,
    listen: Option<&Listen>,
) -> anyhow::Result<Option<(dto::ApplyResponse, bool)>> {
    let running = client.is_listening().await;
    if !running {
        if validate_quiet(file, environment)?.is_some() {
            return Ok(None);
        }
        match listen {
            Some(listen) => start_server(client, data, listen).await?,
            None => start_server(client, data, &Listen::from_env()?).await?,
        }
    }
    let request = dto::ApplyRequest {
        spec_path: file.display().to_string(),
        environment: Some(environment.to_owned()),
    };
    match client.post("/v1/apps", &request).await {
        Ok(applied) => Ok(Some((applied, !running))),
        Err(e) if validate_quiet(file, environment)?.is_some() => {
            tracing::debug!("the server refused the spec: {e:#}");
            Ok(None)
        }
        Err(e) => Err(e),
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
async fn resolve_app(client: &Client, arg: &AppArg) -> anyhow::Result<AppKey> {
    let environment = &arg.env.environment;
    check_name("environment", environment)?;
    let key = |app: &str| AppKey::new(app, environment).map_err(anyhow::Error::msg);
    if let Some(a) = &arg.app {
        return key(a);
    }
    let here = spec_file(Path::new("."));
    if here.exists() {
        // Only `app:` matters here: a file half-way through an edit must not stop a rollback.
        if let Some(app) = slipway_spec::app_name(&here) {
            return key(&app);
        }
        return match slipway_spec::load(&here) {
            Ok(spec) => key(&spec.app),
            Err(e) => bail!(
                "./slipway.yaml names the app to act on, but it is invalid:\n{e}\n  hint: fix it, or pass --app NAME"
            ),
        };
    }
    let apps: Vec<dto::AppSummary> = client.get("/v1/apps").await?;
    let keys: Vec<AppKey> = apps
        .iter()
        .filter_map(|a| AppKey::parse(&a.name).ok())
        .collect();
    let names: Vec<&str> = keys
        .iter()
        .map(AppKey::app)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    match names.as_slice() {
        [one] => key(one),
        [] => bail!("no app is registered on this server; run `slipway up DIR` first"),
        many => bail!(
            "several apps are registered ({}); choose one with --app",
            many.join(", ")
        ),
    }
}

/// `slipway secret set|list|rm`; `set` and `rm` start a server when none runs.
/// `slipway backup create|list|verify|restore`.
async fn backup(client: &Client, data: &Path, command: BackupCommand) -> anyhow::Result<ExitCode> {
    match command {
        BackupCommand::Create { platform: true, .. } => {
            ensure_server(client, data).await?;
            let b: dto::PlatformBackup = client.post("/v1/server/backup", &()).await?;
            println!(
                "platform backup {} in {}: {} files, {} bytes (the store, code snapshots, artifacts; secrets encrypted)",
                b.id, b.path, b.files, b.bytes
            );
            println!(
                "the master key is not in it: keep a copy of {} somewhere else, or the secrets cannot be read after a restore",
                data.join("master.key").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Restore {
            id, platform: true, ..
        } => {
            let archive = std::path::absolute(&id)?;
            let n = slipway_control::platform::restore(&archive, data)?;
            println!(
                "platform backup {} restored into {} ({n} files)",
                archive.display(),
                data.display()
            );
            println!(
                "next: put the master key back at {} (or point SLIPWAY_MASTER_KEY_FILE at it), then start the server",
                data.join("master.key").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Create { database, app, .. } => {
            if let Some(name) = &database {
                check_name("database", name)?;
            }
            ensure_server(client, data).await?;
            let key = resolve_app(client, &app).await?;
            let taken: Vec<dto::BackupInfo> = client
                .post(
                    &format!("/v1/apps/{key}/backups"),
                    &dto::BackupRequest { database },
                )
                .await?;
            for b in &taken {
                let size: u64 = b.files.iter().map(|f| f.size).sum();
                let contents = match b.keys {
                    Some(keys) => format!("{keys} keys"),
                    None => format!(
                        "{} tables, {} rows",
                        b.tables.len(),
                        b.tables.values().sum::<u64>()
                    ),
                };
                println!(
                    "backup {} of database {}: {size} bytes, {contents}; verified by a restore ({:.1}s)",
                    b.id, b.database, b.verify_seconds
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::List { app } => {
            let key = resolve_app(client, &app).await?;
            let all: Vec<dto::BackupInfo> = client.get(&format!("/v1/apps/{key}/backups")).await?;
            let mut t = table(&[
                "ID",
                "DATABASE",
                "KIND",
                "TAKEN",
                "SIZE",
                "ROWS/KEYS",
                "SERVING",
            ]);
            for b in &all {
                let serving = b
                    .revisions
                    .iter()
                    .map(|r| format!("{}@{}", r.service, r.revision))
                    .collect::<Vec<_>>()
                    .join(",");
                t.add_row(vec![
                    b.id.clone(),
                    b.database.clone(),
                    b.kind.clone(),
                    b.created_at.clone(),
                    b.files.iter().map(|f| f.size).sum::<u64>().to_string(),
                    b.keys
                        .unwrap_or_else(|| b.tables.values().sum::<u64>())
                        .to_string(),
                    serving,
                ]);
            }
            println!("{t}");
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Verify { id, app } => {
            let key = resolve_app(client, &app).await?;
            let b: dto::BackupInfo = client
                .post(&format!("/v1/apps/{key}/backups/{id}/verify"), &())
                .await?;
            println!(
                "backup {} verified: files match the manifest, the restore has the same {} row counts",
                b.id,
                b.tables.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Restore { id, to, app, .. } => {
            if let Some(name) = &to {
                check_name("database", name)?;
            }
            ensure_server(client, data).await?;
            let key = resolve_app(client, &app).await?;
            let done: dto::RestoreOutcome = client
                .post(
                    &format!("/v1/apps/{key}/backups/{id}/restore"),
                    &dto::RestoreRequest { to },
                )
                .await?;
            if let Some(safety) = &done.safety_backup {
                println!("safety backup of {} first: {safety}", done.database);
            }
            let contents = match done.keys {
                Some(keys) => format!("{keys} keys"),
                None => format!(
                    "{} tables, {} rows",
                    done.tables.len(),
                    done.tables.values().sum::<u64>()
                ),
            };
            println!(
                "backup {id} restored into database {}: {contents}",
                done.database
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `slipway db url|shell|upgrade NAME`.
async fn db(client: &Client, command: DbCommand) -> anyhow::Result<ExitCode> {
    match command {
        DbCommand::Url { name, app } => db_connect(client, &name, &app, false).await,
        DbCommand::Shell { name, app } => db_connect(client, &name, &app, true).await,
        DbCommand::Settings { name, json, app } => {
            check_name("database", &name)?;
            let key = resolve_app(client, &app).await?;
            let settings: dto::DatabaseSettings = client
                .get(&format!("/v1/apps/{key}/databases/{name}/settings"))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&settings)?);
            } else {
                render::print_database_settings(&settings);
            }
            Ok(ExitCode::SUCCESS)
        }
        DbCommand::Upgrade {
            name,
            to,
            revert,
            remove_old,
            app,
        } => {
            check_name("database", &name)?;
            let key = resolve_app(client, &app).await?;
            let request = dto::UpgradeRequest {
                to,
                revert,
                remove_old,
            };
            let done: dto::UpgradeOutcome = client
                .post(
                    &format!("/v1/apps/{key}/databases/{name}/upgrade"),
                    &request,
                )
                .await?;
            if remove_old {
                if done.removed.is_empty() {
                    println!("database {name} keeps no cluster of an earlier version");
                } else {
                    println!("removed {}", done.removed.join(", "));
                }
            } else {
                let kept = done.kept.as_deref().unwrap_or("-");
                if let Some(backup) = &done.backup {
                    println!("backup {backup} taken and verified");
                }
                println!(
                    "database {name}: PostgreSQL {} -> {}, serving; the PostgreSQL {} cluster is kept in {kept}",
                    done.from, done.version, done.from
                );
                println!(
                    "  next: set `version: \"{}\"` for {name} in slipway.yaml; `slipway db upgrade {name} --revert` goes back, `--remove-old` frees the old cluster's space",
                    done.version
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `slipway db url NAME` (`shell`: false) and `slipway db shell NAME`.
async fn db_connect(
    client: &Client,
    name: &str,
    app: &AppArg,
    shell: bool,
) -> anyhow::Result<ExitCode> {
    check_name("database", name)?;
    let key = resolve_app(client, app).await?;
    let connection: dto::DatabaseConnection = client
        .get(&format!("/v1/apps/{key}/databases/{name}/connection"))
        .await?;
    if !shell {
        println!("{}", connection.url);
        return Ok(ExitCode::SUCCESS);
    }
    use std::os::unix::process::CommandExt;
    if connection.state != "ready" {
        eprintln!(
            "warning: database {name} is {} (`slipway status` shows it); psql may not connect",
            connection.state
        );
    }
    // The URL goes through the environment, not argv, where `ps` would show the password.
    let mut client = std::process::Command::new(&connection.client);
    if connection.engine == "redis" {
        client
            .args(["-s", &connection.host])
            .env("REDISCLI_AUTH", &connection.password);
    } else {
        client
            .env("PGHOST", &connection.host)
            .env("PGPORT", connection.port.to_string())
            .env("PGUSER", &connection.user)
            .env("PGDATABASE", &connection.database)
            .env("PGPASSWORD", &connection.password);
    }
    let error = client.exec();
    bail!("cannot run {}: {error}", connection.client)
}

async fn token(client: &Client, data: &Path, command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create {
            name,
            role,
            environments,
            expires,
        } => {
            check_name("token", &name)?;
            let role = slipway_control::access::Role::parse(&role).map_err(anyhow::Error::msg)?;
            for environment in &environments {
                check_name("environment", environment)?;
            }
            let expires_in_seconds = match expires.as_deref() {
                None => None,
                Some(text) => {
                    let lifetime = slipway_spec::parse_duration(text)
                        .map_err(|e| anyhow::anyhow!("--expires {text}: {e}"))?;
                    if lifetime.as_secs() == 0 {
                        bail!("--expires {text}: a token must live at least one second");
                    }
                    Some(lifetime.as_secs())
                }
            };
            ensure_server(client, data).await?;
            let request = dto::CreateTokenRequest {
                name,
                role,
                environments,
                expires_in_seconds,
            };
            let created: dto::CreatedToken = client.post("/v1/tokens", &request).await?;
            let info = &created.info;
            let scope = if info.environments.is_empty() {
                "all environments".to_owned()
            } else {
                format!("environments {}", info.environments.join(", "))
            };
            let expiry = info
                .expires_at
                .as_deref()
                .map_or("never expires".to_owned(), |at| format!("expires {at}"));
            eprintln!(
                "token {} created: role {}, {scope}, {expiry}\nIt is shown once (the server keeps only its hash); send it to the admin listener as `Authorization: Bearer <token>`, or paste it into the dashboard:",
                info.name, info.role
            );
            println!("{}", created.token);
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List => {
            let tokens: Vec<dto::TokenInfo> = client.get("/v1/tokens").await?;
            let mut t = table(&[
                "NAME",
                "ROLE",
                "ENVIRONMENTS",
                "CREATED",
                "EXPIRES",
                "LAST USED",
            ]);
            for k in tokens {
                t.add_row(vec![
                    k.name,
                    k.role.to_string(),
                    if k.environments.is_empty() {
                        "all".to_owned()
                    } else {
                        k.environments.join(",")
                    },
                    k.created_at,
                    k.expires_at.unwrap_or_else(|| "never".into()),
                    k.last_used_at.unwrap_or_else(|| "never".into()),
                ]);
            }
            println!("{t}");
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { name } => {
            check_name("token", &name)?;
            let _: () = client
                .call("DELETE", &format!("/v1/tokens/{name}"), &())
                .await?;
            println!("token {name} revoked: the admin listener refuses it from now on");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn secret(client: &Client, data: &Path, command: SecretCommand) -> anyhow::Result<ExitCode> {
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
            ensure_server(client, data).await?;
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
            let (app, environment) = (key.app(), key.environment());
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
            ensure_server(client, data).await?;
            let key = resolve_app(client, &app).await?;
            let _: () = client
                .call("DELETE", &format!("/v1/apps/{key}/secrets/{name}"), &())
                .await?;
            println!("secret {name} removed; revisions created before keep their version");
            Ok(ExitCode::SUCCESS)
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

async fn up(
    client: &Client,
    data: &Path,
    file: &Path,
    detach: bool,
    listen: &Listen,
    environment: &str,
) -> anyhow::Result<ExitCode> {
    let Some((applied, started_server)) =
        register(client, data, file, environment, Some(listen)).await?
    else {
        return Ok(ExitCode::FAILURE);
    };
    let ok = deploy(client, &applied.app, vec![], false, None, false).await?;
    let status: dto::AppStatus = client.get(&format!("/v1/apps/{}", applied.app)).await?;
    println!();
    print_status(&status, None);
    print_dashboard_url(client).await;
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
        let info: dto::ServerInfo = client.get("/v1/server").await?;
        let _: () = client.post("/v1/server/stop", &()).await?;
        if !wait_exited(info.pid, Duration::from_secs(120)).await {
            bail!(
                "the server is still running after 120s; see {}",
                data.join("server.log").display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn deploy(
    client: &Client,
    app: &str,
    services: Vec<String>,
    force: bool,
    strategy: Option<dto::Strategy>,
    restart_databases: bool,
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
                restart_databases,
            }),
            |p: Progress| ok &= print_progress(&p, started),
        )
        .await?;
    Ok(ok)
}
