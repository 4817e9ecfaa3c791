//! Starting the server in the background for `slipway up`, and pointing at its dashboard.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cli::Listen;
use crate::client::Client;
use slipway_control::dto;

/// Starts `slipway server` in the background (its own process group, output in
/// `<data>/server.log`) and waits until its API answers.
pub(crate) async fn start_server(
    client: &Client,
    data: &Path,
    listen: &Listen,
) -> anyhow::Result<()> {
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

/// Prints where the dashboard is, with the admin token in the URL's fragment when this user
/// can read it (the token file is private to the user running the server).
pub(crate) async fn print_dashboard_url(client: &Client, data: &Path) {
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
