//! An in-memory instance driver for the controller's scenario tests: instances are state
//! machines driven by tokio time, no process is started. Each test says how the instances
//! of a revision behave (by instance-id prefix, such as `api-r2-`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slipway_runtime::{
    BoxFuture, Driver, InstanceConfig, InstanceHandle, InstanceState, NotReady, RunningInstance,
    StartError,
};
use tokio::sync::watch;

/// How the instances whose id starts with a prefix behave.
#[derive(Clone, Debug)]
pub(super) enum Behaviour {
    /// Ready after this long.
    Ready(Duration),
    /// Never passes readiness: fails when its startup timeout is over.
    NeverReady,
    /// The driver refuses to start it, with this reason.
    Refuse(&'static str),
}

pub(super) struct FakeDriver {
    behaviours: Mutex<Vec<(String, Behaviour)>>,
    instances: Mutex<Vec<Arc<FakeInstance>>>,
    orphans_removed: Mutex<Vec<u32>>,
    next_pid: AtomicU32,
}

impl FakeDriver {
    pub(super) fn new() -> Arc<FakeDriver> {
        Arc::new(FakeDriver {
            behaviours: Mutex::new(Vec::new()),
            instances: Mutex::new(Vec::new()),
            orphans_removed: Mutex::new(Vec::new()),
            next_pid: AtomicU32::new(4_000_000),
        })
    }

    /// Instances whose id starts with `prefix` behave so from now on (the longest matching
    /// prefix wins; the default is ready after 10 ms).
    pub(super) fn behave(&self, prefix: &str, behaviour: Behaviour) {
        self.behaviours
            .lock()
            .unwrap()
            .push((prefix.to_owned(), behaviour));
    }

    fn behaviour(&self, id: &str) -> Behaviour {
        self.behaviours
            .lock()
            .unwrap()
            .iter()
            .filter(|(prefix, _)| id.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(Behaviour::Ready(Duration::from_millis(10)), |(_, b)| {
                b.clone()
            })
    }

    /// The ids of the instances that run now (started, not stopped or failed).
    pub(super) fn running(&self) -> Vec<String> {
        self.instances
            .lock()
            .unwrap()
            .iter()
            .filter(|i| {
                !matches!(
                    *i.state.borrow(),
                    InstanceState::Stopped | InstanceState::Failed { .. }
                )
            })
            .map(|i| i.id.clone())
            .collect()
    }

    /// Crashes every running instance whose id starts with `prefix`: it exits and is not
    /// restarted (as an app that dies at once every time would look).
    pub(super) fn crash(&self, prefix: &str) {
        for i in self.instances.lock().unwrap().iter() {
            if i.id.starts_with(prefix) && *i.state.borrow() == InstanceState::Ready {
                i.state.send_replace(InstanceState::Backoff {
                    reason: "exited with status 1".into(),
                    restarts: 1,
                    retry_in: Duration::from_secs(3600),
                });
            }
        }
    }

    pub(super) fn orphans_removed(&self) -> Vec<u32> {
        self.orphans_removed.lock().unwrap().clone()
    }
}

impl Driver for FakeDriver {
    fn start(&self, config: InstanceConfig) -> BoxFuture<'_, Result<RunningInstance, StartError>> {
        Box::pin(async move {
            let behaviour = self.behaviour(&config.id);
            if let Behaviour::Refuse(why) = behaviour {
                return Err(StartError::Spawn {
                    id: config.id.clone(),
                    program: config.argv.first().cloned().unwrap_or_default(),
                    workdir: config.workdir.clone(),
                    source: std::io::Error::other(why),
                    hint: "the driver refused".into(),
                });
            }
            let (state, _) = watch::channel(InstanceState::Starting);
            let instance = Arc::new(FakeInstance {
                id: config.id.clone(),
                port: config.port,
                pid: self.next_pid.fetch_add(1, Ordering::Relaxed),
                state,
                log_file: config.log_file.clone(),
            });
            self.instances.lock().unwrap().push(instance.clone());
            let driven = instance.clone();
            let startup_timeout = config.startup_timeout;
            tokio::spawn(async move {
                match behaviour {
                    Behaviour::Ready(after) => {
                        tokio::time::sleep(after).await;
                        driven.state.send_if_modified(|s| {
                            let starting = *s == InstanceState::Starting;
                            if starting {
                                *s = InstanceState::Ready;
                            }
                            starting
                        });
                    }
                    Behaviour::NeverReady => {
                        tokio::time::sleep(startup_timeout).await;
                        driven.state.send_if_modified(|s| {
                            let starting = *s == InstanceState::Starting;
                            if starting {
                                *s = InstanceState::Failed {
                                    reason: format!(
                                        "did not pass its readiness probe within {startup_timeout:?}: GET /ready -> 503"
                                    ),
                                };
                            }
                            starting
                        });
                    }
                    Behaviour::Refuse(_) => unreachable!(),
                }
            });
            Ok(instance as RunningInstance)
        })
    }

    fn remove_orphan(&self, pid: u32, _started_at_ticks: u64) -> bool {
        let instances = self.instances.lock().unwrap();
        let Some(orphan) = instances.iter().find(|i| i.pid == pid) else {
            return false;
        };
        orphan.state.send_replace(InstanceState::Stopped);
        self.orphans_removed.lock().unwrap().push(pid);
        true
    }
}

pub(super) struct FakeInstance {
    id: String,
    port: u16,
    pid: u32,
    state: watch::Sender<InstanceState>,
    log_file: PathBuf,
}

impl InstanceHandle for FakeInstance {
    fn id(&self) -> &str {
        &self.id
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn started_at_ticks(&self) -> Option<u64> {
        Some(u64::from(self.pid))
    }

    fn state(&self) -> watch::Receiver<InstanceState> {
        self.state.subscribe()
    }

    fn wait_ready(&self) -> BoxFuture<'_, Result<(), NotReady>> {
        Box::pin(async move {
            let mut states = self.state.subscribe();
            let end = states
                .wait_for(|s| {
                    matches!(
                        s,
                        InstanceState::Ready
                            | InstanceState::Failed { .. }
                            | InstanceState::Stopped
                    )
                })
                .await
                .map(|s| s.clone());
            match end {
                Ok(InstanceState::Ready) => Ok(()),
                Ok(InstanceState::Failed { reason }) => Err(NotReady {
                    reason,
                    last_lines: vec!["listening on 0.0.0.0:8000".into()],
                    log_file: self.log_file.clone(),
                    log_lines: 1,
                }),
                _ => Err(NotReady {
                    reason: "the instance was stopped before it became ready".into(),
                    last_lines: Vec::new(),
                    log_file: self.log_file.clone(),
                    log_lines: 0,
                }),
            }
        })
    }

    fn last_lines(&self, _n: usize) -> Vec<String> {
        vec!["listening on 0.0.0.0:8000".into()]
    }

    fn restarts(&self) -> u32 {
        0
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.state.send_replace(InstanceState::Stopped);
        })
    }
}
