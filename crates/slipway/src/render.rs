//! What the CLI prints: deploy progress lines, the status and rollout tables, sizes and
//! signal names.

use std::time::Instant;

use slipway_control::dto::{self, Progress};

/// Prints one progress line; returns false for a failure.
pub(crate) fn print_progress(p: &Progress, started: Instant) -> bool {
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
        Progress::Database { message, .. } => {
            println!("{t}  {message}");
        }
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

/// `1536` -> `1.5 KiB`.
pub(crate) fn human_bytes(n: u64) -> String {
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

/// `9` -> `SIGKILL`, for the signals a one-off command usually dies of.
pub(crate) fn signal_name(signal: i32) -> String {
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

pub(crate) fn print_rollout(r: &dto::RolloutStatus) {
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

pub(crate) fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    t.set_header(header.to_vec());
    t
}

pub(crate) fn print_status(status: &dto::AppStatus, only: Option<&str>) {
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
    if !status.databases.is_empty() {
        let mut d = table(&["DATABASE", "ENGINE", "VERSION", "STATE", "LAST BACKUP"]);
        for db in &status.databases {
            let state = if db.state == "ready" || db.state == "stopped" {
                db.state.clone()
            } else {
                problems.push((
                    format!("database {}", db.name),
                    format!("{} (its socket does not accept connections)", db.state),
                    Vec::new(),
                ));
                db.state.to_uppercase()
            };
            let backup = match (&db.backup.failing, &db.backup.last_success) {
                (Some(error), _) => {
                    problems.push((
                        format!("database {}", db.name),
                        format!("BACKUP FAILED: {error}"),
                        Vec::new(),
                    ));
                    "FAILED".to_owned()
                }
                (None, Some(at)) => at.clone(),
                (None, None) => "-".to_owned(),
            };
            d.add_row(vec![
                db.name.clone(),
                db.engine.clone(),
                db.version.clone(),
                state,
                backup,
            ]);
        }
        println!("\n{d}");
    }
    if !status.certificates.is_empty() {
        let mut c = table(&["HOST", "SOURCE", "CERTIFICATE", "EXPIRES", "RENEWS AFTER"]);
        for cert in &status.certificates {
            let bad = matches!(cert.state.as_str(), "expiring" | "expired" | "failed");
            if let Some(error) = &cert.last_error {
                problems.push((
                    format!("certificate {}", cert.host),
                    format!(
                        "ACME FAILED ({} attempt(s), next in {}s): {error}",
                        cert.failures,
                        cert.next_attempt_in_secs.unwrap_or(0)
                    ),
                    Vec::new(),
                ));
            } else if bad && cert.source == "file" {
                problems.push((
                    format!("certificate {}", cert.host),
                    format!(
                        "{}: copy a renewed certificate over its file in the TLS directory",
                        cert.state
                    ),
                    Vec::new(),
                ));
            } else if bad {
                problems.push((
                    format!("certificate {}", cert.host),
                    format!("{} and not renewed yet", cert.state),
                    Vec::new(),
                ));
            }
            c.add_row(vec![
                cert.host.clone(),
                cert.source.clone(),
                if bad {
                    cert.state.to_uppercase()
                } else {
                    cert.state.clone()
                },
                cert.not_after.clone().unwrap_or_else(|| "-".into()),
                cert.renew_after.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        println!("\n{c}");
    }
    if let Some(reason) = &status.limits_unavailable {
        println!("\nwarning: resource limits are not enforced on this server: {reason}");
    }
    if let Some(service) = only.and_then(|o| status.services.iter().find(|s| s.name == o))
        && !service.instances.is_empty()
    {
        println!();
        println!("{}", instance_table(&service.instances));
    }
    for (name, p, lines) in problems {
        println!("\n{name}: {p}");
        for l in lines {
            println!("  | {l}");
        }
    }
}

/// One row per instance: state, restarts, and cpu, memory and pids against the limits.
fn instance_table(instances: &[dto::InstanceStatus]) -> comfy_table::Table {
    let mut t = table(&[
        "INSTANCE", "REV", "STATE", "RESTARTS", "CPU", "MEMORY", "PIDS", "OOM",
    ]);
    for i in instances {
        let (cpu, memory, pids, oom) = match &i.resources {
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
            Some(r) => (
                against(
                    format!("{:.2}", r.cpu_cores),
                    r.cpu_limit_cores.map(|c| format!("{c}")),
                ),
                against(
                    show_bytes(r.memory_bytes),
                    r.memory_limit_bytes.map(show_bytes),
                ),
                against(r.pids.to_string(), r.pids_limit.map(|p| p.to_string())),
                r.oom_kills.to_string(),
            ),
        };
        t.add_row(vec![
            i.id.clone(),
            i.revision.to_string(),
            i.state.clone(),
            i.restarts.to_string(),
            cpu,
            memory,
            pids,
            oom,
        ]);
    }
    t
}

/// `used/limit`, or `used` without a limit.
fn against(used: String, limit: Option<String>) -> String {
    match limit {
        Some(limit) => format!("{used}/{limit}"),
        None => used,
    }
}

/// Bytes for people: `48.2Mi`, `1.5Gi`, `512Ki`.
fn show_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= 1 << 30 {
        format!("{:.1}Gi", b / f64::from(1u32 << 30))
    } else if bytes >= 1 << 20 {
        format!("{:.1}Mi", b / f64::from(1u32 << 20))
    } else {
        format!("{:.0}Ki", b / 1024.0)
    }
}

/// `slipway db settings`: one line per setting the spec set, with the running server's value.
pub(crate) fn print_database_settings(s: &dto::DatabaseSettings) {
    if s.settings.is_empty() {
        println!(
            "database {} ({}, {}) has no settings from slipway.yaml: the engine's defaults apply",
            s.name, s.engine, s.state
        );
        return;
    }
    println!("database {} ({}, {})", s.name, s.engine, s.state);
    let width = s
        .settings
        .iter()
        .map(|x| x.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:<width$}  {:<16}  NOW", "NAME", "SPEC");
    for x in &s.settings {
        let now = match (&x.effective, x.pending_restart) {
            (Some(v), true) => format!("{v} (the spec's value waits for a restart)"),
            (Some(v), false) => v.clone(),
            (None, _) => "-".to_owned(),
        };
        println!("{:<width$}  {:<16}  {now}", x.name, x.value);
    }
}
