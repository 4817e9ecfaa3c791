//! What the API reads: status, revisions, logs and the `/metrics` scrape.

use super::*;

// === impl Controller (queries) ===

impl Controller {
    /// Gathers what one `/metrics` scrape shows.
    pub fn scrape(&self) -> crate::metrics::Scrape {
        let mut scrape = crate::metrics::Scrape::default();
        let stats: Vec<_> = {
            let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            stats
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect()
        };
        for ((app, service, revision), s) in stats {
            scrape.revisions.push(crate::metrics::RevisionSample::new(
                labels(&app, &service, &[("revision", &revision.to_string())]),
                &s.totals(),
                s.in_flight(),
            ));
        }
        scrape.revisions.sort_by(|a, b| a.labels.cmp(&b.labels));
        let live = self.live();
        for (app, services) in &live.apps {
            for (service, revisions) in services {
                for (revision, lr) in revisions {
                    for i in &lr.instances {
                        let state = i.instance.state().borrow().clone();
                        let (name, _) = state_label(&state);
                        let key = labels(
                            app,
                            service,
                            &[("revision", &revision.to_string()), ("state", name)],
                        );
                        *scrape.instances.entry(key).or_default() += 1;
                        if let Some(usage) = i.instance.usage() {
                            let key = labels(
                                app,
                                service,
                                &[
                                    ("revision", &revision.to_string()),
                                    ("instance", i.instance.id()),
                                ],
                            );
                            scrape.usage.push((key, usage, i.limits));
                        }
                    }
                }
            }
        }
        drop(live);
        scrape.backups = self.backup_gauges();
        scrape.databases = self.database_gauges();
        scrape.certificates = self
            .certificates(None)
            .into_iter()
            .map(|c| crate::metrics::CertificateSample {
                labels: vec![("app".into(), c.app), ("host".into(), c.host)],
                not_after: c
                    .expires_in_secs
                    .map(|left| jiff::Timestamp::now().as_second() + left),
                failing: i64::from(c.failures > 0),
                failures: c.failures_total,
            })
            .collect();
        scrape.client_connections = self.router.client_connections() as u64;
        scrape.with_counters(&self.counters)
    }

    pub fn status(&self, app: &AppKey) -> Result<dto::AppStatus> {
        let row = self
            .store
            .app(app.as_str())?
            .ok_or_else(|| ControlError::NotFound(unknown_app(app)))?;
        let port = self.config.router_addr.port();
        let host = app_host(&row);
        let mut services = Vec::new();
        for name in self.store.services(app.as_str())? {
            let traffic = self.store.traffic(app.as_str(), &name)?;
            let tags = self.store.tags(app.as_str(), &name)?;
            let revisions = self.store.revisions(app.as_str(), &name)?;
            let routes = self.serving_routes(app, &name).unwrap_or_default();
            let mut instances = Vec::new();
            let mut problem = None;
            let mut problem_lines = Vec::new();
            {
                let live = self.live();
                if let Some(revs) = live.apps.get(app).and_then(|a| a.get(&name)) {
                    for (rev, lr) in revs {
                        let routed = traffic.iter().any(|t| t.revision == *rev);
                        for i in &lr.instances {
                            let state = i.instance.state().borrow().clone();
                            let (state_name, detail) = state_label(&state);
                            if let InstanceState::Backoff {
                                reason, restarts, ..
                            } = &state
                                && problem.is_none()
                            {
                                problem = Some(format!(
                                    "crash loop: instance {} {reason} ({restarts} restarts)",
                                    i.instance.id()
                                ));
                                problem_lines = i.instance.last_lines(10);
                            }
                            instances.push(dto::InstanceStatus {
                                id: i.instance.id().to_owned(),
                                revision: *rev,
                                state: state_name.to_owned(),
                                detail,
                                port: i.instance.port(),
                                pid: i.instance.pid(),
                                restarts: i.instance.restarts(),
                                in_flight: i.backend.in_flight(),
                                routed: routed && i.backend.is_ready(),
                                resources: i.resources(),
                            });
                        }
                    }
                }
            }
            if problem.is_none()
                && let Some(last) = revisions.last()
                && last.state == RevisionState::Failed
            {
                problem = Some(format!(
                    "last deploy (revision {}) failed: {}",
                    last.number, last.message
                ));
            }
            let serving: Vec<u64> = traffic.iter().map(|t| t.revision).collect();
            let ready = instances
                .iter()
                .filter(|i| i.state == "ready" && serving.contains(&i.revision))
                .count() as u32;
            let total = instances
                .iter()
                .filter(|i| serving.contains(&i.revision))
                .count() as u32;
            // Figures over the last minute, summed over the revisions that serve; the rate
            // over the last 5 seconds, to show what happens now.
            let mut figures = dto::Figures::default();
            for t in &traffic {
                let stats = self.revision_stats(app, &name, t.revision);
                let snap = stats.snapshot(Duration::from_secs(60));
                figures.requests += snap.requests;
                figures.errors += snap.errors;
                figures.rps += stats.recent_rps();
                figures.in_flight += snap.in_flight;
                let worst = |a: Option<f64>, b: Option<Duration>| match (a, b) {
                    (Some(a), Some(b)) => Some(a.max(b.as_secs_f64() * 1000.0)),
                    (a, b) => a.or(b.map(|b| b.as_secs_f64() * 1000.0)),
                };
                figures.p50_ms = worst(figures.p50_ms, snap.p50);
                figures.p95_ms = worst(figures.p95_ms, snap.p95);
                figures.p99_ms = worst(figures.p99_ms, snap.p99);
            }
            services.push(dto::ServiceStatus {
                figures,
                url: format!("http://{name}.{host}:{port}/"),
                route_urls: routes
                    .iter()
                    .map(|r| format!("http://{host}:{port}{r}"))
                    .collect(),
                traffic: traffic
                    .iter()
                    .map(|t| dto::TrafficShare {
                        revision: t.revision,
                        percent: t.percent,
                    })
                    .collect(),
                latest_revision: revisions.last().map(|r| r.number),
                tags: tags
                    .into_iter()
                    .map(|(tag, revision)| dto::TagInfo { tag, revision })
                    .collect(),
                instances,
                ready,
                total,
                problem,
                problem_lines,
                name,
            });
        }
        Ok(dto::AppStatus {
            app: app.to_string(),
            environment: row.environment.clone(),
            host,
            down: row.down,
            router: self.config.router_addr.to_string(),
            services,
            limits_unavailable: self.driver.limits_unavailable(),
            databases: self.database_status(app),
            certificates: self.certificates(Some(app)),
        })
    }

    pub fn revisions(&self, app: &AppKey, service: &str) -> Result<Vec<dto::RevisionInfo>> {
        if self.store.app(app.as_str())?.is_none() {
            return Err(ControlError::NotFound(unknown_app(app)));
        }
        let traffic = self.store.traffic(app.as_str(), service)?;
        let revisions = self.store.revisions(app.as_str(), service)?;
        if revisions.is_empty()
            && !self
                .store
                .services(app.as_str())?
                .iter()
                .any(|s| s == service)
        {
            return Err(ControlError::NotFound(format!(
                "app {app} has no service `{service}`"
            )));
        }
        Ok(revisions
            .into_iter()
            .map(|r| dto::RevisionInfo {
                traffic: traffic
                    .iter()
                    .find(|t| t.revision == r.number)
                    .map_or(0, |t| t.percent),
                instances: self.running_count(app, service, r.number) as u32,
                number: r.number,
                created_at: r.created_at,
                digest: r.digest,
                state: r.state.as_str().to_owned(),
                message: r.message,
            })
            .collect())
    }

    pub fn log_dir(&self, app: &AppKey, service: &str) -> PathBuf {
        self.config
            .data_dir
            .join("logs")
            .join(app.as_str())
            .join(service)
    }

    /// The log lines of a service's instances (optionally of one revision), merged by
    /// time, the last `tail` of them.
    pub fn logs(
        &self,
        app: &AppKey,
        service: &str,
        revision: Option<u64>,
        tail: usize,
    ) -> Result<Vec<dto::LogLine>> {
        check_name("service", service)?;
        if self.store.app(app.as_str())?.is_none() {
            return Err(ControlError::NotFound(unknown_app(app)));
        }
        if !self
            .store
            .services(app.as_str())?
            .iter()
            .any(|s| s == service)
            && self.store.revisions(app.as_str(), service)?.is_empty()
        {
            return Err(ControlError::NotFound(format!(
                "app {app} has no service `{service}`"
            )));
        }
        let mut lines = Vec::new();
        for (id, path) in self.log_files(app, service, revision) {
            // Each file's own last `tail` lines hold the last `tail` of them all.
            for l in slipway_runtime::read_last_lines(&path, tail) {
                lines.push(dto::LogLine {
                    ts: l.ts,
                    instance: id.clone(),
                    stream: l.stream,
                    text: l.text,
                });
            }
        }
        lines.sort_by(|a, b| a.ts.cmp(&b.ts));
        let skip = lines.len().saturating_sub(tail);
        Ok(lines.split_off(skip))
    }

    /// The current log file of every instance of a service (of one revision if given), with
    /// the instance id. Rotated files (`<file>.<n>`) are not listed.
    pub fn log_files(
        &self,
        app: &AppKey,
        service: &str,
        revision: Option<u64>,
    ) -> Vec<(String, std::path::PathBuf)> {
        let Ok(entries) = std::fs::read_dir(self.log_dir(app, service)) else {
            return Vec::new();
        };
        let prefix = revision.map(|r| format!("{service}-r{r}-"));
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let id = name.strip_suffix(".log")?;
                if prefix.as_ref().is_some_and(|p| !id.starts_with(p)) {
                    return None;
                }
                Some((id.to_owned(), entry.path()))
            })
            .collect()
    }
}

pub(super) fn state_label(state: &InstanceState) -> (&'static str, Option<String>) {
    match state {
        InstanceState::Starting => ("starting", None),
        InstanceState::Ready => ("ready", None),
        InstanceState::Unready { reason } => ("unready", Some(reason.clone())),
        InstanceState::Backoff { reason, .. } => ("backoff", Some(reason.clone())),
        InstanceState::Stopping => ("stopping", None),
        InstanceState::Stopped => ("stopped", None),
        InstanceState::Failed { reason } => ("failed", Some(reason.clone())),
    }
}
