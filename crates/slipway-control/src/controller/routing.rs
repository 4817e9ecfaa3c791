//! The route table: built from the store's traffic and the running instances, swapped
//! into the router atomically.

use super::*;

// === impl Controller (routing) ===

impl Controller {
    /// Rebuilds the route table from the store's traffic and the running instances, and
    /// swaps it into the router atomically.
    pub fn publish_routes(&self) {
        let _publishing = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let table = match self.build_routes() {
            Ok(t) => t,
            Err(err) => {
                tracing::error!(%err, "could not build the route table; keeping the previous one");
                return;
            }
        };
        self.router.publish(table);
        self.memory.churned();
    }

    pub(super) fn build_routes(&self) -> Result<RouteTable> {
        let mut table = RouteTable::new();
        // Slipway writes only valid keys; a row with another is not routed (recovery says so).
        let hosts: HashMap<AppKey, String> = self
            .store
            .apps()?
            .iter()
            .filter(|a| !a.down)
            .filter_map(|a| Some((AppKey::parse(&a.name).ok()?, app_host(a))))
            .collect();
        let mut cache = self
            .route_settings
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut used = HashMap::new();
        for routing in self.store.routing()? {
            let slipway_state::ServiceRouting {
                app,
                service,
                traffic,
                tags,
            } = routing;
            let Some((app, host)) = hosts.get_key_value(app.as_str()) else {
                continue;
            };
            let tags: BTreeMap<String, u64> = tags.into_iter().collect();
            // The serving revision's config decides the per-service router settings.
            let Some(serving) = traffic.iter().max_by_key(|t| t.percent) else {
                continue;
            };
            let key = (app.clone(), service.clone(), serving.revision);
            let settings = match cache.remove(&key) {
                Some(settings) => settings,
                None => Arc::new(
                    self.store
                        .revision(app.as_str(), &service, serving.revision)?
                        .and_then(|r| serde_json::from_str::<ServiceSpec>(&r.config).ok())
                        .map(|s| RouteSettings {
                            sticky: s.traffic.sticky,
                            header_override: s.traffic.header_override,
                            max_concurrency: s.scaling.max_concurrency,
                            routes: s.routes,
                            max_body: s.limits.body,
                            redirect_https: s.https.redirect,
                            hsts: s.https.hsts_max_age_secs.and_then(|age| {
                                axum::http::HeaderValue::from_str(&format!("max-age={age}")).ok()
                            }),
                        })
                        .unwrap_or_default(),
                ),
            };
            used.insert(key, settings.clone());
            // Revisions with a share, then tagged revisions without one (weight 0:
            // reachable by tag host or header only).
            let mut pools: Vec<Pool> = traffic
                .iter()
                .map(|t| self.pool(app, &service, t.revision, t.percent))
                .collect();
            for rev in tags.values() {
                if !pools.iter().any(|p| p.revision == *rev) {
                    pools.push(self.pool(app, &service, *rev, 0));
                }
            }
            let target = Arc::new(Target {
                app: app.to_string(),
                service: service.clone(),
                pools,
                tags: tags.clone(),
                header_override: settings.header_override,
                sticky: settings.sticky,
                max_concurrency: settings.max_concurrency,
                max_body: settings.max_body,
                redirect_https: settings.redirect_https,
                hsts: settings.hsts.clone(),
            });
            table.add_host(&format!("{service}.{host}"), target.clone());
            for prefix in &settings.routes {
                table.add_prefix(host, prefix, target.clone());
            }
            // A tag gets its own host that always reaches its revision, whatever its
            // share (Cloud Run and Knative tag URLs).
            for (tag, rev) in &tags {
                let tagged = Arc::new(Target {
                    app: app.to_string(),
                    service: service.clone(),
                    pools: vec![self.pool(app, &service, *rev, 100)],
                    tags: BTreeMap::new(),
                    header_override: false,
                    sticky: false,
                    max_concurrency: settings.max_concurrency,
                    max_body: settings.max_body,
                    redirect_https: settings.redirect_https,
                    hsts: settings.hsts.clone(),
                });
                table.add_host(&format!("{tag}.{service}.{host}"), tagged);
            }
        }
        // Only the serving revisions' settings stay cached.
        *cache = used;
        Ok(table)
    }

    /// The router pool of one revision: its running instances and its measurements.
    pub(super) fn pool(&self, app: &AppKey, service: &str, revision: u64, weight: u32) -> Pool {
        let backends = self
            .live()
            .apps
            .get(app)
            .and_then(|a| a.get(service))
            .and_then(|s| s.get(&revision))
            .map(|r| r.instances.iter().map(|i| i.backend.clone()).collect())
            .unwrap_or_default();
        Pool {
            revision,
            weight,
            backends,
            stats: self.revision_stats(app, service, revision),
        }
    }

    /// The routes of the revision that serves most traffic: a revision's routes are part
    /// of its immutable config, so a rollback restores them too.
    pub(super) fn serving_routes(&self, app: &AppKey, service: &str) -> Option<Vec<String>> {
        let rev = self.serving_revision(app, service).ok()??;
        let spec: ServiceSpec = serde_json::from_str(&rev.config).ok()?;
        Some(spec.routes)
    }
}
