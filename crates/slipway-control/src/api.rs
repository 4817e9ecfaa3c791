//! The REST API under `/v1`, served on the Unix socket (what the CLI uses) and on the
//! admin listener. Long operations (deploy, rollback, following logs) answer with a
//! stream of newline-delimited JSON so clients can show progress as it happens; the
//! operation itself runs in its own task and finishes even if the client goes away.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::{Notify, mpsc};
use utoipa::OpenApi;

use crate::controller::{ControlError, Controller};
use crate::dto::{self, Progress};

#[derive(Clone)]
pub struct ApiState {
    pub controller: Arc<Controller>,
    pub info: dto::ServerInfo,
    /// Notified when a client asks the server to stop.
    pub stop: Arc<Notify>,
}

/// The read-only part of the API, for the admin TCP listener: any local user can reach a
/// TCP port, so nothing there may change state or run commands. Changes go through the
/// Unix socket, which only the data dir's owner can open.
pub fn read_only_router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/server", get(server_info))
        .route("/v1/apps", get(list_apps))
        .route("/v1/apps/{app}", get(app_status))
        .route(
            "/v1/apps/{app}/services/{service}/revisions",
            get(revisions),
        )
        .route("/v1/apps/{app}/services/{service}/logs", get(logs))
        .route(
            "/v1/apps/{app}/services/{service}/release",
            get(release_output),
        )
        .route(
            "/v1/apps/{app}/services/{service}/rollout",
            get(rollout_status),
        )
        .route("/v1/events", get(events))
        .route("/v1/events/stream", get(events_stream))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/server", get(server_info))
        .route("/v1/server/stop", post(server_stop))
        .route("/v1/apps", get(list_apps).post(apply))
        .route("/v1/apps/{app}", get(app_status))
        .route("/v1/apps/{app}/deploy", post(deploy))
        .route("/v1/apps/{app}/down", post(down))
        .route("/v1/apps/{app}/secrets", get(list_secrets))
        .route(
            "/v1/apps/{app}/secrets/{name}",
            axum::routing::put(set_secret).delete(remove_secret),
        )
        .route(
            "/v1/apps/{app}/services/{service}/revisions",
            get(revisions),
        )
        .route("/v1/apps/{app}/services/{service}/rollback", post(rollback))
        .route("/v1/apps/{app}/services/{service}/logs", get(logs))
        .route(
            "/v1/apps/{app}/services/{service}/release",
            get(release_output),
        )
        .route("/v1/apps/{app}/services/{service}/traffic", post(traffic))
        .route("/v1/apps/{app}/services/{service}/promote", post(promote))
        .route("/v1/apps/{app}/services/{service}/runs", post(run_plan))
        .route(
            "/v1/apps/{app}/services/{service}/runs/finished",
            post(run_finished),
        )
        .route("/v1/apps/{app}/services/{service}/tags", post(tag))
        .route(
            "/v1/apps/{app}/services/{service}/rollout",
            get(rollout_status),
        )
        .route(
            "/v1/apps/{app}/services/{service}/rollout/{action}",
            post(rollout_action),
        )
        .route("/v1/events", get(events))
        .route("/v1/events/stream", get(events_stream))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .with_state(state)
}

#[utoipa::path(post, path = "/v1/apps/{app}/services/{service}/traffic",
    params(("app" = String, Path), ("service" = String, Path)), request_body = dto::TrafficRequest,
    responses((status = 200, body = Vec<dto::TrafficShare>), (status = 409, body = dto::ApiError)))]
async fn traffic(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    Json(req): Json<dto::TrafficRequest>,
) -> ApiResult<Json<Vec<dto::TrafficShare>>> {
    let targets = req
        .targets
        .iter()
        .map(|t| (t.revision, t.percent))
        .collect();
    Ok(Json(
        s.controller
            .set_traffic(&app, &service, targets, req.latest)
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/apps/{app}/services/{service}/tags",
    params(("app" = String, Path), ("service" = String, Path)), request_body = dto::TagRequest,
    responses((status = 200, description = "tag set or removed"), (status = 404, body = dto::ApiError)))]
async fn tag(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    Json(req): Json<dto::TagRequest>,
) -> ApiResult<StatusCode> {
    s.controller
        .set_tag(&app, &service, &req.tag, req.revision)
        .await?;
    Ok(StatusCode::OK)
}

#[utoipa::path(get, path = "/v1/apps/{app}/services/{service}/rollout",
    params(("app" = String, Path), ("service" = String, Path)),
    responses((status = 200, body = dto::RolloutStatus), (status = 404, body = dto::ApiError)))]
async fn rollout_status(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
) -> ApiResult<Json<dto::RolloutStatus>> {
    Ok(Json(s.controller.rollout_status(&app, &service)?))
}

#[utoipa::path(post, path = "/v1/apps/{app}/services/{service}/rollout/{action}",
    params(("app" = String, Path), ("service" = String, Path), ("action" = String, Path, description = "promote | pause | resume | abort")),
    responses((status = 200, body = dto::RolloutStatus), (status = 409, body = dto::ApiError)))]
async fn rollout_action(
    State(s): State<ApiState>,
    Path((app, service, action)): Path<(String, String, String)>,
) -> ApiResult<Json<dto::RolloutStatus>> {
    let action: slipway_core::deploy::RolloutAction =
        action.parse().map_err(ControlError::Invalid)?;
    Ok(Json(
        s.controller.rollout_action(&app, &service, action).await?,
    ))
}

#[utoipa::path(post, path = "/v1/apps/{app}/services/{service}/promote",
    params(("app" = String, Path, description = "the target: app or app@environment"), ("service" = String, Path)),
    request_body = dto::PromoteRequest,
    responses((status = 200, description = "newline-delimited JSON stream of Progress", body = dto::Progress)))]
async fn promote(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    Json(req): Json<dto::PromoteRequest>,
) -> Response {
    let c = s.controller.clone();
    progress_stream(move |tx| async move { c.promote(&app, &service, &req.from, tx).await })
}

/// Prometheus metrics in the OpenMetrics text format.
async fn metrics(State(s): State<ApiState>) -> Response {
    let body = crate::metrics::encode(s.controller.scrape());
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Errors turned into answers in one place: status code plus `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let code = match &e {
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Invalid(_) => StatusCode::CONFLICT,
            ControlError::Spec(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ControlError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

impl From<slipway_state::StoreError> for ApiError {
    fn from(e: slipway_state::StoreError) -> Self {
        ControlError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(dto::ApiError { error: self.1 })).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

#[utoipa::path(get, path = "/v1/server", responses((status = 200, body = dto::ServerInfo)))]
async fn server_info(State(s): State<ApiState>) -> Json<dto::ServerInfo> {
    Json(s.info.clone())
}

#[utoipa::path(post, path = "/v1/server/stop", responses((status = 202, description = "the server stops its instances and exits")))]
async fn server_stop(State(s): State<ApiState>) -> StatusCode {
    s.stop.notify_one();
    StatusCode::ACCEPTED
}

#[utoipa::path(get, path = "/v1/apps", responses((status = 200, body = Vec<dto::AppSummary>)))]
async fn list_apps(State(s): State<ApiState>) -> ApiResult<Json<Vec<dto::AppSummary>>> {
    let apps = s.controller.store().apps()?;
    Ok(Json(
        apps.into_iter()
            .map(|a| dto::AppSummary {
                environment: a.environment,
                host: a.host,
                name: a.name,
                spec_path: a.spec_path,
                down: a.down,
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/v1/apps", request_body = dto::ApplyRequest,
    responses((status = 200, body = dto::ApplyResponse), (status = 422, body = dto::ApiError)))]
async fn apply(
    State(s): State<ApiState>,
    Json(req): Json<dto::ApplyRequest>,
) -> ApiResult<Json<dto::ApplyResponse>> {
    let environment = req
        .environment
        .as_deref()
        .unwrap_or(slipway_state::DEVELOPMENT);
    let (key, spec) = s
        .controller
        .apply(std::path::Path::new(&req.spec_path), environment)?;
    Ok(Json(dto::ApplyResponse {
        app: key,
        environment: spec.environment,
        host: spec.host,
        services: spec.services.into_keys().collect(),
    }))
}

#[utoipa::path(get, path = "/v1/apps/{app}", params(("app" = String, Path)),
    responses((status = 200, body = dto::AppStatus), (status = 404, body = dto::ApiError)))]
async fn app_status(
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<dto::AppStatus>> {
    Ok(Json(s.controller.status(&app)?))
}

/// Streams `Progress` lines while `op` runs; ends with `Done`.
fn progress_stream<F, Fut>(op: F) -> Response
where
    F: FnOnce(mpsc::UnboundedSender<Progress>) -> Fut,
    Fut: std::future::Future<Output = Result<bool, ControlError>> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let fut = op(tx.clone());
    tokio::spawn(async move {
        let ok = match fut.await {
            Ok(ok) => ok,
            Err(e) => {
                let _ = tx.send(Progress::Failed {
                    service: String::new(),
                    revision: None,
                    error: e.to_string(),
                    last_lines: vec![],
                });
                false
            }
        };
        let _ = tx.send(Progress::Done { ok });
    });
    ndjson(rx)
}

fn ndjson<T: serde::Serialize + Send + 'static>(rx: mpsc::UnboundedReceiver<T>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        let mut line = serde_json::to_vec(&item).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(line)), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[utoipa::path(post, path = "/v1/apps/{app}/deploy", params(("app" = String, Path)), request_body = dto::DeployRequest,
    responses((status = 200, description = "newline-delimited JSON stream of Progress", body = dto::Progress)))]
async fn deploy(
    State(s): State<ApiState>,
    Path(app): Path<String>,
    Json(req): Json<dto::DeployRequest>,
) -> Response {
    let c = s.controller.clone();
    progress_stream(move |tx| async move {
        c.deploy(&app, &req.services, req.force, req.strategy, tx)
            .await
    })
}

#[utoipa::path(post, path = "/v1/apps/{app}/services/{service}/rollback",
    params(("app" = String, Path), ("service" = String, Path)), request_body = dto::RollbackRequest,
    responses((status = 200, description = "newline-delimited JSON stream of Progress", body = dto::Progress)))]
async fn rollback(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    Json(req): Json<dto::RollbackRequest>,
) -> Response {
    let c = s.controller.clone();
    progress_stream(move |tx| async move { c.rollback(&app, &service, req.to, tx).await })
}

#[utoipa::path(post, path = "/v1/apps/{app}/down", params(("app" = String, Path)),
    responses((status = 200, description = "every instance stopped")))]
async fn down(State(s): State<ApiState>, Path(app): Path<String>) -> ApiResult<StatusCode> {
    s.controller.down(&app).await?;
    Ok(StatusCode::OK)
}

#[utoipa::path(get, path = "/v1/apps/{app}/secrets", params(("app" = String, Path, description = "the app, or `app@environment`")),
    responses((status = 200, body = Vec<dto::SecretInfo>)))]
async fn list_secrets(
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<dto::SecretInfo>>> {
    Ok(Json(s.controller.secrets(&app)?))
}

#[utoipa::path(put, path = "/v1/apps/{app}/secrets/{name}",
    params(("app" = String, Path, description = "the app, or `app@environment`"), ("name" = String, Path)),
    request_body = dto::SetSecretRequest,
    responses((status = 200, body = dto::SecretInfo), (status = 409, body = dto::ApiError)))]
async fn set_secret(
    State(s): State<ApiState>,
    Path((app, name)): Path<(String, String)>,
    Json(req): Json<dto::SetSecretRequest>,
) -> ApiResult<Json<dto::SecretInfo>> {
    let version = s.controller.set_secret(&app, &name, req.value.as_bytes())?;
    Ok(Json(dto::SecretInfo {
        name,
        version,
        updated_at: slipway_state::now(),
    }))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/secrets/{name}",
    params(("app" = String, Path, description = "the app, or `app@environment`"), ("name" = String, Path)),
    responses((status = 200, description = "removed"), (status = 404, body = dto::ApiError)))]
async fn remove_secret(
    State(s): State<ApiState>,
    Path((app, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.controller.remove_secret(&app, &name)?;
    Ok(StatusCode::OK)
}

#[utoipa::path(get, path = "/v1/apps/{app}/services/{service}/revisions",
    params(("app" = String, Path), ("service" = String, Path)),
    responses((status = 200, body = Vec<dto::RevisionInfo>)))]
async fn revisions(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
) -> ApiResult<Json<Vec<dto::RevisionInfo>>> {
    Ok(Json(s.controller.revisions(&app, &service)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct ReleaseQuery {
    /// Default: the newest revision that ran a release command.
    revision: Option<u64>,
}

#[utoipa::path(get, path = "/v1/apps/{app}/services/{service}/release",
    params(("app" = String, Path), ("service" = String, Path), ReleaseQuery),
    responses((status = 200, body = dto::ReleaseOutput), (status = 404, body = dto::ApiError)))]
async fn release_output(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    Query(q): Query<ReleaseQuery>,
) -> ApiResult<Json<dto::ReleaseOutput>> {
    Ok(Json(
        s.controller.release_output(&app, &service, q.revision)?,
    ))
}

#[utoipa::path(post, path = "/v1/apps/{app}/services/{service}/runs",
    params(("app" = String, Path), ("service" = String, Path)), request_body = dto::RunRequest,
    responses((status = 200, body = dto::RunPlan), (status = 404, body = dto::ApiError)))]
async fn run_plan(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    Json(req): Json<dto::RunRequest>,
) -> ApiResult<Json<dto::RunPlan>> {
    Ok(Json(s.controller.run_plan(&app, &service, &req).await?))
}

#[utoipa::path(post, path = "/v1/apps/{app}/services/{service}/runs/finished",
    params(("app" = String, Path), ("service" = String, Path)), request_body = dto::RunExit,
    responses((status = 200, description = "recorded"), (status = 404, body = dto::ApiError)))]
async fn run_finished(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    Json(req): Json<dto::RunExit>,
) -> ApiResult<StatusCode> {
    s.controller.run_finished(&app, &service, &req)?;
    Ok(StatusCode::OK)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct LogsQuery {
    revision: Option<u64>,
    /// How many of the latest lines to send first (default 100).
    tail: Option<usize>,
    /// Keep the answer open and send new lines as they are written.
    #[serde(default)]
    follow: bool,
}

#[utoipa::path(get, path = "/v1/apps/{app}/services/{service}/logs",
    params(("app" = String, Path), ("service" = String, Path), LogsQuery),
    responses((status = 200, description = "newline-delimited JSON stream of LogLine", body = dto::LogLine)))]
async fn logs(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let tail = q.tail.unwrap_or(100);
    // Where following starts: the files' ends before the first lines are read, so that a
    // line written in between is sent twice at worst, never lost.
    let follow = q.follow.then(|| {
        slipway_runtime::LogTail::at_end(
            s.controller
                .log_files(&app, &service, q.revision)
                .into_iter()
                .map(|(_, path)| path),
        )
    });
    let first = s.controller.logs(&app, &service, q.revision, tail)?;
    let (tx, rx) = mpsc::unbounded_channel();
    for l in first {
        let _ = tx.send(l);
    }
    if let Some(mut follower) = follow {
        let c = s.controller.clone();
        tokio::spawn(async move {
            // Reads what was appended to the log files since the last look, four times a
            // second; lines of different instances go out in time order within each look.
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if tx.is_closed() {
                    return;
                }
                let files = c.log_files(&app, &service, q.revision);
                let mut new: Vec<dto::LogLine> = follower
                    .poll(files.iter().map(|(_, path)| path.clone()))
                    .into_iter()
                    .map(|(path, l)| dto::LogLine {
                        ts: l.ts,
                        instance: files
                            .iter()
                            .find(|(_, p)| *p == path)
                            .map(|(id, _)| id.clone())
                            .unwrap_or_default(),
                        stream: l.stream,
                        text: l.text,
                    })
                    .collect();
                new.sort_by(|a, b| a.ts.cmp(&b.ts));
                for l in new {
                    if tx.send(l).is_err() {
                        return;
                    }
                }
            }
        });
    }
    Ok(ndjson(rx))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct EventsQuery {
    app: Option<String>,
    service: Option<String>,
    /// Only events with a greater id (for paging forward).
    after: Option<i64>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/events", params(EventsQuery), responses((status = 200, body = Vec<dto::EventInfo>)))]
async fn events(
    State(s): State<ApiState>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Vec<dto::EventInfo>>> {
    let events = s.controller.store().events(&slipway_state::EventFilter {
        app: q.app,
        service: q.service,
        after: q.after,
        limit: q.limit,
    })?;
    Ok(Json(events.into_iter().map(event_info).collect()))
}

#[utoipa::path(get, path = "/v1/events/stream", params(EventsQuery),
    responses((status = 200, description = "server-sent events: one `event` per stored event (JSON EventInfo), ids are event ids; resumes after `after` or Last-Event-ID")))]
async fn events_stream(
    State(s): State<ApiState>,
    Query(q): Query<EventsQuery>,
    headers: axum::http::HeaderMap,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    // A reconnecting EventSource sends the last id it saw; start after it.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let store_filter = slipway_state::EventFilter {
        app: q.app,
        service: q.service,
        after: resume.or(q.after),
        limit: Some(q.limit.unwrap_or(100)),
    };
    let controller = s.controller.clone();
    // The store is the source of truth, so following is a poll of it: nothing is
    // missed across reconnects or server restarts, and no fan-out state is kept.
    let stream = futures_util::stream::unfold(
        (store_filter, Vec::<EventInfoBuf>::new(), true),
        move |(mut filter, mut pending, first)| {
            let controller = controller.clone();
            async move {
                loop {
                    if let Some(e) = pending.pop() {
                        let event = Event::default()
                            .id(e.id.to_string())
                            .event("event")
                            .data(serde_json::to_string(&e).unwrap_or_default());
                        return Some((Ok(event), (filter, pending, false)));
                    }
                    if !first {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let events = controller.store().events(&filter).unwrap_or_default();
                    if let Some(last) = events.last() {
                        filter.after = Some(last.id);
                    } else if filter.after.is_none() {
                        filter.after = Some(0);
                    }
                    pending = events.into_iter().rev().map(event_info).collect();
                    if pending.is_empty() && first {
                        return Some((
                            Ok(Event::default().comment("following")),
                            (filter, pending, false),
                        ));
                    }
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

type EventInfoBuf = dto::EventInfo;

fn event_info(e: slipway_state::Event) -> dto::EventInfo {
    dto::EventInfo {
        id: e.id,
        ts: e.ts,
        app: e.app,
        service: e.service,
        revision: e.revision,
        kind: e.kind,
        message: e.message,
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Slipway API",
        description = "Everything the slipway CLI does, as JSON over HTTP."
    ),
    paths(
        server_info,
        server_stop,
        list_apps,
        apply,
        app_status,
        deploy,
        rollback,
        down,
        list_secrets,
        set_secret,
        remove_secret,
        revisions,
        logs,
        release_output,
        events,
        events_stream,
        traffic,
        tag,
        rollout_status,
        rollout_action,
        promote,
        run_plan,
        run_finished
    )
)]
struct ApiDoc;

/// The OpenAPI document of this API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}
