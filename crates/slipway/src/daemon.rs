//! Starting the server in the background for `slipway up`, and pointing at its dashboard.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cli::Listen;
use crate::client::Client;
use slipway_control::dto;

/// Starts a server in the background (as `slipway up` does) if none runs for `data`, on the
/// addresses of `SLIPWAY_LISTEN` and `SLIPWAY_ADMIN`: for the commands that change the
/// desired state (deploy, promote, secret set and rm, traffic, tag, rollback, rollout
/// actions, down), which must not fail because no server has run yet. The server recovers
/// what is stored in `data`, so the command acts on the same state as with a running one.
pub(crate) async fn ensure_server(client: &Client, data: &Path) -> anyhow::Result<()> {
    if client.is_listening().await {
        return Ok(());
    }
    start_server(client, data, &Listen::from_env()?).await
}

/// Starts `slipway server` in the background (its own process group, working in the data
/// directory, output in `<data>/server.log`), waits until its API answers and says so on
/// stderr. Refuses when `SLIPWAY_NO_AUTOSTART` is set (a server that a supervisor runs must
/// not get a rival the moment it crashes).
pub(crate) async fn start_server(
    client: &Client,
    data: &Path,
    listen: &Listen,
) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("SLIPWAY_NO_AUTOSTART").is_some_and(|v| !v.is_empty()) {
        bail!(
            "no slipway server is running for the data directory {}, and SLIPWAY_NO_AUTOSTART is set, so this command does not start one\n  hint: start the server (or let its supervisor restart it) and try again",
            data.display()
        );
    }
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
        .current_dir(data)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start `slipway server`")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if client.is_up().await {
            eprintln!(
                "started slipway server (pid {}) in the background: router http://{}, admin http://{}, log {}; `slipway server stop` stops it",
                child.id(),
                listen.listen,
                listen.admin,
                log_path.display()
            );
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "the slipway server started in the background exited ({status}) before it was ready:\n{}\n  hint: `slipway up` takes --listen and --admin; other commands start the server on $SLIPWAY_LISTEN and $SLIPWAY_ADMIN (default 127.0.0.1:8080 and 127.0.0.1:8081)",
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

/// Waits until the process `pid` (a server asked to stop) has exited, or `within` has
/// passed; whether it exited. Its API stops answering as soon as it begins to stop, but it
/// holds the data directory until it has stopped every instance and exited.
pub(crate) async fn wait_exited(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let gone = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the command name, which is in parentheses.
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with(['Z', 'X'])),
            Err(_) => true,
        };
        if gone {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Prints where the dashboard is. The page asks for a token; no token is printed.
pub(crate) async fn print_dashboard_url(client: &Client) {
    let Ok(info) = client.get::<dto::ServerInfo>("/v1/server").await else {
        return;
    };
    let scheme = if info.admin_https { "https" } else { "http" };
    println!(
        "\ndashboard: {scheme}://{}/ (sign in with a token from `slipway token create NAME --role viewer`)",
        info.admin
    );
}
