//! The controller's failure paths, end to end through the real store, snapshot store and
//! route table, with the in-memory driver of `fake.rs` and paused tokio time: no process
//! starts and no test waits for real, so the whole set runs in about a second.

use slipway_core::app_key::{AppKey, DEVELOPMENT};
use slipway_core::events::EventKind;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use slipway_router::{Router, RouterConfig};
use slipway_state::Store;
use tokio::sync::mpsc;

use super::fake::{Behaviour, FakeDriver};
use super::{Controller, ControllerConfig};
use crate::dto::Progress;

const APP: &str = "shop";

/// The key `APP` is stored under (in `development`).
fn app() -> AppKey {
    AppKey::parse(APP).unwrap()
}

fn spec(deploy: &str) -> String {
    format!(
        "app: shop
services:
  api:
    run: [\"./server\"]
    health:
      ready: {{ http: /ready, interval: 100ms }}
      startup_timeout: 5s
    shutdown: {{ grace: 1s }}
    deploy: {deploy}
"
    )
}

struct Scenario {
    _dir: tempfile::TempDir,
    app_dir: PathBuf,
    data_dir: PathBuf,
    store: Arc<Store>,
    driver: Arc<FakeDriver>,
    controller: Arc<Controller>,
}

impl Scenario {
    fn new(deploy: &str) -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        let app_dir = dir.path().join("app");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&app_dir).unwrap();
        std::fs::create_dir_all(&data_dir).unwrap();
        std::fs::write(app_dir.join("slipway.yaml"), spec(deploy)).unwrap();
        std::fs::write(app_dir.join("server"), "v1").unwrap();
        let store = Arc::new(Store::open(&data_dir.join("state.db")).unwrap());
        let driver = FakeDriver::new();
        let controller = Self::controller(&store, &driver, &data_dir);
        controller
            .apply(&app_dir.join("slipway.yaml"), DEVELOPMENT)
            .unwrap();
        Scenario {
            _dir: dir,
            app_dir,
            data_dir,
            store,
            driver,
            controller,
        }
    }

    fn controller(
        store: &Arc<Store>,
        driver: &Arc<FakeDriver>,
        data_dir: &std::path::Path,
    ) -> Arc<Controller> {
        Controller::with_driver(
            store.clone(),
            Router::new(RouterConfig::default()),
            ControllerConfig {
                data_dir: data_dir.to_path_buf(),
                router_addr: "127.0.0.1:1".parse().unwrap(),
                keep_logs: 5,
            },
            driver.clone(),
        )
    }

    /// A new controller on the same store and driver, as after `kill -9` of the server:
    /// the old one's instances are still "running" in the driver.
    fn restart(&mut self) {
        self.controller = Self::controller(&self.store, &self.driver, &self.data_dir);
    }

    /// A code change: the next deploy makes a new revision.
    fn edit(&self, version: &str) {
        std::fs::write(self.app_dir.join("server"), version).unwrap();
    }

    async fn deploy(&self) -> (bool, Vec<Progress>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ok = self
            .controller
            .deploy(&app(), &[], false, None, false, tx)
            .await
            .unwrap();
        let mut progress = Vec::new();
        while let Ok(p) = rx.try_recv() {
            progress.push(p);
        }
        (ok, progress)
    }

    fn traffic(&self) -> Vec<(u64, u32)> {
        self.store
            .traffic(APP, "api")
            .unwrap()
            .iter()
            .map(|t| (t.revision, t.percent))
            .collect()
    }

    /// (revision, state, message) of every revision.
    fn revisions(&self) -> Vec<(u64, String, String)> {
        self.store
            .revisions(APP, "api")
            .unwrap()
            .into_iter()
            .map(|r| (r.number, r.state.as_str().to_owned(), r.message))
            .collect()
    }

    fn events(&self) -> Vec<(String, String)> {
        self.store
            .events(&slipway_state::EventFilter {
                app: Some(APP.into()),
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|e| (e.kind, e.message))
            .collect()
    }

    fn running(&self, prefix: &str) -> usize {
        self.driver
            .running()
            .iter()
            .filter(|id| id.starts_with(prefix))
            .count()
    }

    /// Waits (in paused time) until `done` holds, for at most a minute of it.
    async fn until(&self, what: &str, done: impl Fn(&Scenario) -> bool) {
        for _ in 0..600 {
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{what} did not happen; traffic {:?}, revisions {:?}, running {:?}",
            self.traffic(),
            self.revisions(),
            self.driver.running()
        );
    }
}

fn failure(progress: &[Progress]) -> String {
    progress
        .iter()
        .find_map(|p| match p {
            Progress::Failed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no failure in {progress:?}"))
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_never_becomes_ready_fails_the_deploy_and_the_old_revision_serves() {
    let s = Scenario::new("{ keep_previous: 0s }");
    assert!(s.deploy().await.0);
    assert_eq!(s.traffic(), [(1, 100)]);

    s.driver.behave("api-r2-", Behaviour::NeverReady);
    s.edit("v2");
    let (ok, progress) = s.deploy().await;
    assert!(!ok);
    let error = failure(&progress);
    assert!(
        error.contains("did not pass its readiness probe within 5s")
            && error.contains("revision 1 keeps serving"),
        "{error}"
    );
    assert_eq!(s.traffic(), [(1, 100)]);
    assert_eq!(s.revisions()[1].1, "failed");
    assert_eq!((s.running("api-r1-"), s.running("api-r2-")), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_new_revision_that_crashes_right_after_the_switch_gives_traffic_back() {
    let s = Scenario::new("{ keep_previous: 30s }");
    assert!(s.deploy().await.0);
    s.edit("v2");
    assert!(s.deploy().await.0);
    assert_eq!(s.traffic(), [(2, 100)]);
    assert_eq!(s.running("api-r1-"), 1, "revision 1 stays warm");

    s.driver.crash("api-r2-");
    s.until("traffic back on revision 1", |s| s.traffic() == [(1, 100)])
        .await;
    let (_, state, message) = &s.revisions()[1];
    assert_eq!(state, "failed");
    assert!(
        message.contains("crashed right after taking all traffic (exited with status 1)"),
        "{message}"
    );
    assert!(
        s.events()
            .iter()
            .any(|(kind, _)| kind == EventKind::DeployRolledBack.as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn a_rollback_during_a_canary_returns_all_traffic_to_the_baseline() {
    let s = Scenario::new(
        "{ strategy: canary, steps: [10, 50, 100], interval: 1m, keep_previous: 0s }",
    );
    assert!(s.deploy().await.0);
    s.edit("v2");
    assert!(s.deploy().await.0);
    assert_eq!(s.traffic(), [(1, 90), (2, 10)]);

    let (tx, _rx) = mpsc::unbounded_channel();
    assert!(
        s.controller
            .rollback(&app(), "api", None, tx)
            .await
            .unwrap()
    );
    assert_eq!(s.traffic(), [(1, 100)]);
    assert!(!s.controller.rollout_status(&app(), "api").unwrap().active);
    assert_eq!(s.revisions()[1].1, "failed");
    s.until("revision 2 retired", |s| s.running("api-r2-") == 0)
        .await;
    assert_eq!(s.running("api-r1-"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_restart_in_the_middle_of_a_deploy_recovers_the_serving_revision() {
    let mut s = Scenario::new("{ keep_previous: 0s }");
    assert!(s.deploy().await.0);
    s.driver
        .behave("api-r2-", Behaviour::Ready(Duration::from_secs(3600)));
    s.edit("v2");
    let deploying = {
        let controller = s.controller.clone();
        tokio::spawn(async move {
            let (tx, _rx) = mpsc::unbounded_channel();
            controller.deploy(&app(), &[], false, None, false, tx).await
        })
    };
    s.until("revision 2 starting", |s| s.running("api-r2-") == 1)
        .await;
    // The server dies here: its deploy never finishes, its instances keep running.
    deploying.abort();
    let orphans = s.driver.running().len();
    s.restart();
    s.controller.recover().await.unwrap();

    assert_eq!(
        s.driver.orphans_removed().len(),
        orphans,
        "every orphan removed"
    );
    assert_eq!(s.traffic(), [(1, 100)]);
    let (_, state, message) = &s.revisions()[1];
    assert_eq!(state, "failed");
    assert!(message.starts_with("interrupted"), "{message}");
    // The serving revision starts again in the background.
    s.until("revision 1 running again", |s| s.running("api-r1-") == 1)
        .await;
    assert_eq!(s.running("api-r2-"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_deploy_the_driver_refuses_fails_with_its_reason_and_starts_nothing() {
    let s = Scenario::new("{ keep_previous: 0s }");
    s.driver.behave(
        "api-r1-",
        Behaviour::Refuse("no such image: clinic/api:1.4"),
    );
    let (ok, progress) = s.deploy().await;
    assert!(!ok);
    let error = failure(&progress);
    assert!(error.contains("no such image: clinic/api:1.4"), "{error}");
    assert!(s.traffic().is_empty());
    assert_eq!(s.revisions()[0].1, "failed");
    assert!(s.driver.running().is_empty());

    // Fixed: the next deploy serves.
    s.edit("v2");
    assert!(s.deploy().await.0);
    assert_eq!(s.traffic(), [(2, 100)]);
}

#[tokio::test(start_paused = true)]
async fn deploys_less_than_a_second_apart_still_retire_the_old_revisions() {
    let s = Scenario::new("{ keep_previous: 0s }");
    for n in 1..=10 {
        s.edit(&format!("v{n}"));
        assert!(s.deploy().await.0);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Ten revisions in about three seconds: each retires a second after it lost the
    // traffic, whatever came after it.
    let running: Vec<String> = s.driver.running();
    assert!(running.len() <= 5, "old revisions pile up: {running:?}");
    s.until("only the last revision runs", |s| {
        s.driver.running().len() == 1
    })
    .await;
    assert_eq!(s.running("api-r10-"), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_every_instance_and_ends_every_background_task() {
    let s = Scenario::new("{ keep_previous: 30s }");
    s.controller.spawn_autoscaler();
    assert!(s.deploy().await.0);
    s.edit("v2");
    assert!(s.deploy().await.0);
    // Revision 1 waits warm for its retirement, 30 s away; watchers and the autoscaler run.
    assert!(
        s.controller.tasks.len() >= 3,
        "{}",
        s.controller.tasks.len()
    );
    s.controller.shutdown().await;
    assert!(s.driver.running().is_empty(), "{:?}", s.driver.running());
    assert!(
        s.controller.tasks.is_empty(),
        "{} tasks left",
        s.controller.tasks.len()
    );
}
