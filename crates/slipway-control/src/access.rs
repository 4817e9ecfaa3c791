//! Who may call what on the admin listener: roles, the class of each API route, and the
//! decision between them. Pure: no store, no clock, no HTTP types beyond the method.
//!
//! Roles, each allowing what the one before it does:
//! - `viewer` reads: status, revisions, logs, release output, rollouts, backups (the list),
//!   events and metrics.
//! - `deployer` also deploys, rolls back, moves traffic, tags, promotes, steers rollouts,
//!   takes `down`, and takes and verifies backups.
//! - `admin` also manages secrets, tokens and the server, registers apps from spec files
//!   on the server, reads database passwords, runs one-off commands and restores backups.
//!
//! `metrics` is apart: it may scrape `/metrics` and nothing else, for a Prometheus that
//! should not read logs.
//!
//! A token limited to environments (`--env`) reaches the routes of apps in those
//! environments only. Reads that span every environment are refused to it (the event log
//! without `?app=`, `/metrics`), except the list of apps, which the API filters.
//!
//! The Unix socket is not judged here: it is the local administrator's.

pub mod limiter;
pub mod token;

use std::fmt;

use axum::http::Method;
use slipway_core::app_key::AppKey;

/// What a token may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Only `/metrics`.
    Metrics,
    Viewer,
    Deployer,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Metrics, Role::Viewer, Role::Deployer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Metrics => "metrics",
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }

    /// The role named `s`.
    ///
    /// # Errors
    /// Any other name, with the list of roles.
    pub fn parse(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("`{s}` is no role; the roles are viewer, deployer, admin and metrics")
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who makes an API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Through the Unix socket: the data directory's owner.
    Local,
    /// With a token on the admin listener.
    Token {
        name: String,
        role: Role,
        /// Empty: every environment.
        environments: Vec<String>,
    },
}

impl Caller {
    /// The name the event log records.
    pub fn actor(&self) -> &str {
        match self {
            Caller::Local => "local",
            Caller::Token { name, .. } => name,
        }
    }

    /// Whether the caller may see apps of `environment`.
    pub fn sees(&self, environment: &str) -> bool {
        match self {
            Caller::Local => true,
            Caller::Token { environments, .. } => {
                environments.is_empty() || environments.iter().any(|e| e == environment)
            }
        }
    }
}

/// What a route does, as far as access goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// The liveness endpoint and the dashboard's static files: no token.
    Open,
    /// The server's version and the API document: any token but `metrics`.
    Info,
    /// `GET /v1/apps`: any token but `metrics`; the answer lists the caller's environments.
    AppList,
    /// `/metrics`.
    Metrics,
    /// A read about one environment's app, or (`None`) one that spans all environments.
    Read { environment: Option<String> },
    /// A change to one environment's app that a deployer may make.
    Deploy { environment: String },
    /// A call about one app whose key (in the path, or the event log's `app=`) is no app
    /// key (`Clinic`, `clinic@development`), so it names no environment: refused to a token
    /// limited to environments; with the role the call `needs`, any other token reaches the
    /// handler, which refuses the key with the name rule (the event log finds nothing).
    NotAnApp { needs: Role },
    /// Secrets, tokens, the server, and anything not listed.
    Admin,
}

/// Why a call is refused (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

/// The class of a request to `path` (without the query) with `method`. `query` is the
/// query string, which matters for the event log (`app=`). Anything not listed here is
/// [`Class::Admin`], so a route added without a class is the administrator's until it
/// gets one.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> Class {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (read, segments.as_slice()) {
        (true, ["healthz"] | [""] | ["dashboard", "app.js" | "style.css"]) => Class::Open,
        (true, ["metrics"]) => Class::Metrics,
        (true, ["v1", "server"] | ["v1", "openapi.json"]) => Class::Info,
        (true, ["v1", "apps"]) => Class::AppList,
        (true, ["v1", "events"] | ["v1", "events", "stream"]) => match query_param(query, "app") {
            Some(app) => read_of(&app),
            None => Class::Read { environment: None },
        },
        (true, ["v1", "apps", app]) => read_in(app),
        (true, ["v1", "apps", app, "backups"]) => read_in(app),
        // A database's settings hold no secret, unlike its connection.
        (true, ["v1", "apps", app, "databases", _, "settings"]) => read_in(app),
        (
            true,
            [
                "v1",
                "apps",
                app,
                "services",
                _,
                "revisions" | "logs" | "release" | "rollout",
            ],
        ) => read_in(app),
        (false, ["v1", "apps", app, "deploy" | "down"]) => deploy_in(app),
        (false, ["v1", "apps", app, "backups"]) => deploy_in(app),
        (false, ["v1", "apps", app, "backups", _, "verify"]) => deploy_in(app),
        (
            false,
            [
                "v1",
                "apps",
                app,
                "services",
                _,
                "rollback" | "traffic" | "promote" | "tags",
            ],
        ) => deploy_in(app),
        (false, ["v1", "apps", app, "services", _, "rollout", _]) => deploy_in(app),
        _ => Class::Admin,
    }
}

/// Whether a token with `role`, limited to `environments` (empty: all), may make a call of
/// `class`.
///
/// # Errors
/// [`Denied`] with a sentence saying what the call needs.
pub fn authorize(role: Role, environments: &[String], class: &Class) -> Result<(), Denied> {
    let in_scope = |environment: &str| {
        if environments.is_empty() || environments.iter().any(|e| e == environment) {
            Ok(())
        } else {
            Err(Denied(format!(
                "this token is limited to the environments {}, and the call is about an app in {environment}",
                environments.join(", ")
            )))
        }
    };
    let needs = |needed: Role| {
        if role >= needed && role != Role::Metrics {
            Ok(())
        } else {
            Err(Denied(format!(
                "this call needs the {needed} role or a stronger one, and the token's role is {role}"
            )))
        }
    };
    match class {
        Class::Open => Ok(()),
        Class::Metrics => {
            if role == Role::Metrics {
                return Ok(());
            }
            needs(Role::Viewer)?;
            if environments.is_empty() {
                Ok(())
            } else {
                Err(Denied(
                    "/metrics covers every environment, and this token is limited to some; scrape with a token that is not (a `metrics` token, for example)".into(),
                ))
            }
        }
        Class::Info | Class::AppList => needs(Role::Viewer),
        Class::Read { environment } => {
            needs(Role::Viewer)?;
            match environment {
                Some(environment) => in_scope(environment),
                None if environments.is_empty() => Ok(()),
                None => Err(Denied(format!(
                    "this token is limited to the environments {}: read the event log of one app at a time (`?app=APP@ENVIRONMENT`)",
                    environments.join(", ")
                ))),
            }
        }
        Class::Deploy { environment } => {
            needs(Role::Deployer)?;
            in_scope(environment)
        }
        Class::NotAnApp { needs: needed } => {
            needs(*needed)?;
            if environments.is_empty() {
                Ok(())
            } else {
                Err(Denied(format!(
                    "this token is limited to the environments {}, and the call names no app in any environment (an app is named `APP`, or `APP@ENVIRONMENT` outside development)",
                    environments.join(", ")
                )))
            }
        }
        Class::Admin => {
            needs(Role::Admin)?;
            if environments.is_empty() {
                Ok(())
            } else {
                Err(Denied(
                    "this call concerns the whole server, and this token is limited to some environments".into(),
                ))
            }
        }
    }
}

/// A read about the app keyed by path segment `app`.
fn read_in(app: &str) -> Class {
    read_of(&decode(app))
}

/// A read about the app keyed `key`, in its environment (`clinic@staging` → `staging`,
/// `clinic` → `development`).
fn read_of(key: &str) -> Class {
    match AppKey::parse(key) {
        Ok(key) => Class::Read {
            environment: Some(key.environment().to_owned()),
        },
        Err(_) => Class::NotAnApp {
            needs: Role::Viewer,
        },
    }
}

/// A change to the app keyed by path segment `app`, in its environment.
fn deploy_in(app: &str) -> Class {
    match AppKey::parse(&decode(app)) {
        Ok(key) => Class::Deploy {
            environment: key.environment().to_owned(),
        },
        Err(_) => Class::NotAnApp {
            needs: Role::Deployer,
        },
    }
}

/// The value of `name` in a query string, percent-decoded; `None` when it is absent or
/// given more than once (which value the handler would take is then not this one's to
/// guess).
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let mut values = query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| decode(k) == name)
        .map(|(_, v)| decode(v));
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// Percent-decodes a path segment or query value as axum does before a handler sees it,
/// so that `clinic%40staging` is judged as `clinic@staging`. A `+` in a query value is
/// a space there; here it stays a `+`, which no app name has either.
pub(crate) fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
