//! The autoscaler: the one-second tick that feeds each serving revision's concurrency to
//! its decider and scales, scale-from-zero activation from the router, and scaling down.

use super::*;
use slipway_core::events::EventKind;

// === impl Controller (autoscaling) ===

impl Controller {
    /// Runs the autoscaler every second until the server stops.
    pub fn spawn_autoscaler(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        // The router calls the activator on its own threads; starting an instance is the
        // control plane's work, so it runs here.
        let control = tokio::runtime::Handle::current();
        self.router.set_activator(Arc::new({
            let weak = weak.clone();
            move |app: &str, service: &str, revision: u64| {
                // The router names the app by its key's string form, as the table was built.
                if let Some(this) = weak.upgrade()
                    && let Ok(app) = AppKey::parse(app)
                {
                    let service = service.to_owned();
                    let task = this.clone();
                    this.spawn_on(&control, async move {
                        task.activate(&app, &service, revision).await;
                    });
                }
            }
        }));
        self.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_sweep = Instant::now();
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                let sweep = last_sweep.elapsed() >= LOG_SWEEP_EVERY;
                if sweep {
                    last_sweep = Instant::now();
                }
                // The ticks read the store and every serving revision's figures: tens of
                // milliseconds with a thousand services. On a blocking-pool thread they do not
                // hold up the async workers, which also run the router (one worker in the
                // benchmarks: a tick there showed as a 12 ms p99 against 4 ms).
                let ticked = tokio::task::spawn_blocking(move || {
                    this.autoscale_tick();
                    this.rollout_tick();
                    if sweep {
                        this.prune_all_logs();
                        this.prune_checkouts();
                    }
                })
                .await;
                if let Err(err) = ticked {
                    tracing::error!(%err, "the autoscaler and rollout tick panicked");
                }
            }
        });
    }

    /// A request is waiting for a revision that has no ready instance: start one now
    /// (a cold start) unless one is already starting.
    pub(super) async fn activate(self: &Arc<Self>, app: &AppKey, service: &str, revision: u64) {
        let now = self.epoch.elapsed();
        if let Some(s) = self
            .scalers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&(app.clone(), service.to_owned(), revision))
        {
            s.decider.poke(now);
        }
        let slot = self.slot(app, service);
        let _guard = slot.lock().await;
        if self.is_down(app) || self.running_count(app, service, revision) > 0 {
            return;
        }
        let started = Instant::now();
        self.counters.inc(
            "slipway_cold_starts",
            labels(app, service, &[("revision", &revision.to_string())]),
        );
        match self.start_revision(app, service, revision, 1, None).await {
            Ok(()) => {
                self.publish_routes();
                self.event(
                    app,
                    Some(service),
                    Some(revision),
                    EventKind::ScaleColdStart,
                    format!(
                        "cold start: revision {revision} of {service} had no instance; one was ready in {} ms",
                        started.elapsed().as_millis()
                    ),
                );
            }
            Err(f) => self.event(
                app,
                Some(service),
                Some(revision),
                EventKind::ScaleColdStartFailed,
                format!(
                    "cold start of revision {revision} of {service} failed: {}",
                    f.error
                ),
            ),
        }
    }

    /// One autoscaler pass: sample every revision that carries traffic, decide, and
    /// start or retire instances. A service busy with a deploy or rollback is skipped
    /// this second (its slot is taken) and looked at again on the next tick.
    pub(super) fn autoscale_tick(self: &Arc<Self>) {
        let now = self.epoch.elapsed();
        let mut serving = Vec::new();
        let mut last: Option<(String, Option<AppKey>)> = None;
        for row in self.store.serving_revisions().unwrap_or_default() {
            // Rows come sorted by app: each key is parsed once. Slipway writes only valid
            // keys; a row with another is left alone.
            if last.as_ref().is_none_or(|(app, _)| *app != row.app) {
                last = Some((row.app.clone(), AppKey::parse(&row.app).ok()));
            }
            let Some((_, Some(key))) = &last else {
                continue;
            };
            // A tagged revision without a share is reachable by its tag host; it scales on
            // its own requests, down to zero.
            serving.push((key.clone(), row.service, row.revision, row.tag_only));
        }
        self.prune_stats(&serving, now);
        let mut decisions = Vec::new();
        {
            let mut scalers = self.scalers.lock().unwrap_or_else(|p| p.into_inner());
            let wanted: std::collections::HashSet<(&AppKey, &str, u64)> = serving
                .iter()
                .map(|(a, s, r, _)| (a, s.as_str(), *r))
                .collect();
            scalers.retain(|(a, sv, r), _| wanted.contains(&(a, sv.as_str(), *r)));
            for (app, service, revision, tag_only) in &serving {
                let key = (app.clone(), service.clone(), *revision);
                let stats = self.revision_stats(app, service, *revision);
                let total = stats.totals().requests();
                let scaler = match scalers.entry(key) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        // The stored spec is read (and parsed) once per revision, not per tick.
                        let Ok(spec) = self.revision_spec(app, service, *revision) else {
                            continue;
                        };
                        let mut config = scaler_config(&spec);
                        if *tag_only {
                            config.min = 0;
                        }
                        // After a restart the instances may still be starting: the count
                        // they are started with is `min`, and no decision to record.
                        let running = self.running_count(app, service, *revision) as u32;
                        entry.insert(Scaler {
                            last_desired: running.max(config.min),
                            decider: slipway_autoscale::Decider::new(config),
                            last_requests: total,
                        })
                    }
                };
                scaler.decider.record(slipway_autoscale::Sample {
                    at: now,
                    concurrency: (stats.in_flight() + stats.queued()) as f64,
                    requests: total.saturating_sub(scaler.last_requests),
                });
                scaler.last_requests = total;
                let ready = self.ready_count(app, service, *revision) as u32;
                let decision = scaler.decider.scale(now, ready);
                let changed = scaler.last_desired != decision.desired;
                scaler.last_desired = decision.desired;
                decisions.push((app.clone(), service.clone(), *revision, decision, changed));
            }
        }
        for (app, service, revision, decision, changed) in decisions {
            let running = self.running_count(&app, &service, revision) as u32;
            if changed {
                self.event(
                    &app,
                    Some(&service),
                    Some(revision),
                    EventKind::ScaleDecision,
                    format!(
                        "{} instance(s) wanted, {running} running{}: {}",
                        decision.desired,
                        if decision.panic { " (panic mode)" } else { "" },
                        decision.reason
                    ),
                );
            }
            if decision.desired == running {
                continue;
            }
            let this = self.clone();
            self.spawn(async move {
                let slot = this.slot(&app, &service);
                // A deploy or rollback in progress owns the service; try again next tick.
                let Ok(_guard) = slot.try_lock() else { return };
                if this.is_down(&app) {
                    return;
                }
                let running = this.running_count(&app, &service, revision) as u32;
                if decision.desired > running {
                    let add = decision.desired - running;
                    if let Err(f) = this
                        .start_revision(&app, &service, revision, add, None)
                        .await
                    {
                        this.event(
                            &app,
                            Some(&service),
                            Some(revision),
                            EventKind::ScaleFailed,
                            format!(
                                "could not add {add} instance(s) to revision {revision}: {}",
                                f.error
                            ),
                        );
                    }
                    this.publish_routes();
                } else if decision.desired < running {
                    this.scale_down(&app, &service, revision, running - decision.desired)
                        .await;
                }
            });
        }
    }

    /// Retires `count` instances of a revision, the idlest first; each is drained first.
    pub(super) async fn scale_down(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        revision: u64,
        count: u32,
    ) {
        let mut candidates: Vec<LiveInstance> = self
            .live()
            .apps
            .get(app)
            .and_then(|a| a.get(service))
            .and_then(|s| s.get(&revision))
            .map(|r| r.instances.clone())
            .unwrap_or_default();
        candidates.sort_by_key(|i| i.backend.in_flight());
        let victims: Vec<LiveInstance> = candidates.into_iter().take(count as usize).collect();
        // Stop routing to them first, then drain and stop.
        for v in &victims {
            v.backend.set_ready(false);
        }
        let stops = victims
            .into_iter()
            .map(|i| self.stop_instance(app, service, revision, i));
        futures_util::future::join_all(stops).await;
        self.publish_routes();
    }
}

/// The autoscaler's settings from a revision's `scaling:` section.
pub(super) fn scaler_config(spec: &ServiceSpec) -> slipway_autoscale::Config {
    let s = &spec.scaling;
    slipway_autoscale::Config {
        min: s.min,
        max: s.max,
        target: f64::from(s.concurrency.max(1)),
        stable_window: s.stable_window,
        panic_window: s.panic_window,
        idle: s.idle,
        // Scale down once the burst window has calmed, halving per second at most.
        scale_down_delay: s.panic_window,
        ..slipway_autoscale::Config::default()
    }
}
