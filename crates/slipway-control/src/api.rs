//! The REST API under `/v1`, served on the Unix socket (what the CLI uses) and on the
//! admin listener. Long operations (deploy, rollback, following logs) answer with a
//! stream of newline-delimited JSON so clients can show progress as it happens; the
//! operation itself runs in its own task and finishes even if the client goes away.
//! On the admin listener, calls reach it through the gate in `dashboard` (see `access`);
//! every call that may change something is recorded with its actor (`tokens::audit`).

mod tokens;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer};
use slipway_core::app_key::{AppKey, DEVELOPMENT};
use tokio::sync::{Notify, mpsc};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use crate::controller::{ControlError, Controller};
use crate::dto::{self, Progress};

#[derive(Clone)]
pub struct ApiState {
    pub controller: Arc<Controller>,
    pub info: dto::ServerInfo,
    /// Notified when a client asks the server to stop.
    pub stop: Arc<Notify>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/server", get(server_info))
        .route("/v1/server/stop", post(server_stop))
        .route("/v1/server/backup", post(platform_backup))
        .route("/v1/apps", get(list_apps).post(apply))
        .route("/v1/apps/{app}", get(app_status))
        .route("/v1/apps/{app}/deploy", post(deploy))
        .route("/v1/apps/{app}/down", post(down))
        .route("/v1/apps/{app}/secrets", get(list_secrets))
        .route(
            "/v1/apps/{app}/databases/{name}/connection",
            get(database_connection),
        )
        .route(
            "/v1/apps/{app}/databases/{name}/settings",
            get(database_settings),
        )
        .route(
            "/v1/apps/{app}/databases/{name}/upgrade",
            post(upgrade_database),
        )
        .route(
            "/v1/apps/{app}/backups",
            get(list_backups).post(create_backup),
        )
        .route("/v1/apps/{app}/backups/{id}/verify", post(verify_backup))
        .route("/v1/apps/{app}/backups/{id}/restore", post(restore_backup))
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
        .route(
            "/v1/tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route(
            "/v1/tokens/{name}",
            axum::routing::delete(tokens::revoke_token),
        )
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            tokens::audit,
        ))
        .with_state(state)
}

#[utoipa::path(
    post, path = "/v1/apps/{app}/services/{service}/traffic",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("service" = String, Path),
    ),
    request_body = dto::TrafficRequest,
    security(("token" = [])),
    responses(
        (status = 200, description = "the new traffic split", body = Vec<dto::TrafficShare>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 500, response = StoreFailed)
    )
)]
async fn traffic(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    ApiJson(req): ApiJson<dto::TrafficRequest>,
) -> ApiResult<Json<Vec<dto::TrafficShare>>> {
    let app = app_key(&app)?;
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

#[utoipa::path(
    post, path = "/v1/apps/{app}/services/{service}/tags",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("service" = String, Path),
    ),
    request_body = dto::TagRequest,
    security(("token" = [])),
    responses(
        (status = 200, description = "tag set or removed"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 500, response = StoreFailed)
    )
)]
async fn tag(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    ApiJson(req): ApiJson<dto::TagRequest>,
) -> ApiResult<StatusCode> {
    let app = app_key(&app)?;
    s.controller
        .set_tag(&app, &service, &req.tag, req.revision)
        .await?;
    Ok(StatusCode::OK)
}

#[utoipa::path(
    get, path = "/v1/apps/{app}/services/{service}/rollout",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("service" = String, Path),
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "the service's rollout", body = dto::RolloutStatus),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = StoreFailed)
    )
)]
async fn rollout_status(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
) -> ApiResult<Json<dto::RolloutStatus>> {
    let app = app_key(&app)?;
    Ok(Json(s.controller.rollout_status(&app, &service)?))
}

#[utoipa::path(
    post, path = "/v1/apps/{app}/services/{service}/rollout/{action}",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("service" = String, Path),
        ("action" = RolloutActionName, Path),
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "the rollout after the action", body = dto::RolloutStatus),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = StoreFailed)
    )
)]
async fn rollout_action(
    State(s): State<ApiState>,
    Path((app, service, action)): Path<(String, String, String)>,
) -> ApiResult<Json<dto::RolloutStatus>> {
    let action: slipway_core::deploy::RolloutAction = action
        .parse()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let app = app_key(&app)?;
    Ok(Json(
        s.controller.rollout_action(&app, &service, action).await?,
    ))
}

#[utoipa::path(
    post, path = "/v1/apps/{app}/services/{service}/promote",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("service" = String, Path),
    ),
    request_body = dto::PromoteRequest,
    security(("token" = [])),
    responses(
        (status = 200, description = "a stream of newline-delimited `Progress` objects, the last one `done`; a failure, even an unknown app or service, is a `failed` line", content_type = "application/x-ndjson", body = dto::Progress),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity)
    )
)]
async fn promote(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    ApiJson(req): ApiJson<dto::PromoteRequest>,
) -> Response {
    let c = s.controller.clone();
    progress_stream(
        move |tx| async move { c.promote(&app_key(&app)?, &service, &req.from, tx).await },
    )
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

/// The app key in a path (`clinic`, `clinic@staging`), read once here; anything else is
/// refused (404) with the name rule before it can reach a file path.
fn app_key(text: &str) -> Result<AppKey, ControlError> {
    AppKey::parse(text).map_err(ControlError::NotFound)
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

// A request the extractors cannot read (a body that is not JSON or not of the declared shape, a
// query parameter of the wrong type, a path segment that is not UTF-8) gets axum's status code
// (400, 413, 415 or 422) and message, in the same JSON body as every other error.

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError(e.status(), e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError(e.status(), e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError(e.status(), e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(dto::ApiError { error: self.1 })).into_response()
    }
}

/// `axum::Json` whose rejection is an [`ApiError`].
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
struct ApiJson<T>(T);

/// `axum::extract::Path` whose rejection is an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
struct Path<T>(T);

/// `axum::extract::Query` whose rejection is an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
struct Query<T>(T);

/// A request to a path and method of no operation of the API.
async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!(
            "{method} {} is no operation of this server's API (slipway {}); /v1/openapi.json lists the ones it has",
            uri.path(),
            env!("CARGO_PKG_VERSION")
        ),
    )
}

/// A request with a method that its path does not take; axum adds the `Allow` header.
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not take {method}; the Allow header names the methods it takes",
            uri.path()
        ),
    )
}

type ApiResult<T> = Result<T, ApiError>;

#[utoipa::path(
    get, path = "/v1/server", security(("token" = [])),
    responses(
        (status = 200, description = "the server's version, process and addresses", body = dto::ServerInfo),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden)
    )
)]
async fn server_info(State(s): State<ApiState>) -> Json<dto::ServerInfo> {
    Json(s.info.clone())
}

#[utoipa::path(
    post, path = "/v1/server/stop", security(("token" = [])),
    responses(
        (status = 202, description = "the server stops its instances and exits"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden)
    )
)]
async fn server_stop(State(s): State<ApiState>) -> StatusCode {
    s.stop.notify_one();
    StatusCode::ACCEPTED
}

#[utoipa::path(
    post, path = "/v1/server/backup", security(("token" = [])),
    responses(
        (status = 200, description = "a platform backup: the store (online backup), code snapshots and artifacts, secrets still encrypted, no master key", body = dto::PlatformBackup),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, description = "the backup failed; the message says why", body = dto::ApiError)
    )
)]
async fn platform_backup(State(s): State<ApiState>) -> ApiResult<Json<dto::PlatformBackup>> {
    Ok(Json(s.controller.platform_backup().await?))
}

#[utoipa::path(
    get, path = "/v1/apps", security(("token" = [])),
    responses(
        (status = 200, description = "every registered app", body = Vec<dto::AppSummary>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = StoreFailed)
    )
)]
async fn list_apps(
    State(s): State<ApiState>,
    caller: Option<axum::Extension<crate::access::Caller>>,
) -> ApiResult<Json<Vec<dto::AppSummary>>> {
    let apps = s.controller.store().apps()?;
    Ok(Json(
        apps.into_iter()
            // A token limited to environments sees the apps in those only.
            .filter(|a| caller.as_ref().is_none_or(|c| c.sees(&a.environment)))
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

#[utoipa::path(
    post, path = "/v1/apps", request_body = dto::ApplyRequest, security(("token" = [])),
    responses(
        (status = 200, description = "the app is registered from its spec", body = dto::ApplyResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 500, response = StoreFailed)
    )
)]
async fn apply(
    State(s): State<ApiState>,
    ApiJson(req): ApiJson<dto::ApplyRequest>,
) -> ApiResult<Json<dto::ApplyResponse>> {
    let environment = req.environment.as_deref().unwrap_or(DEVELOPMENT);
    let (key, spec) = s
        .controller
        .apply(std::path::Path::new(&req.spec_path), environment)?;
    Ok(Json(dto::ApplyResponse {
        app: key.to_string(),
        environment: spec.environment,
        host: spec.host,
        services: spec.services.into_keys().collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "the app's services, revisions and instances", body = dto::AppStatus),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = StoreFailed)
    )
)]
async fn app_status(
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<dto::AppStatus>> {
    let app = app_key(&app)?;
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

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/deploy",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
    ),
    request_body = dto::DeployRequest,
    security(("token" = [])),
    responses(
        (status = 200, description = "a stream of newline-delimited `Progress` objects, the last one `done`; a failure, even an unknown app or service, is a `failed` line", content_type = "application/x-ndjson", body = dto::Progress),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity)
    )
)]
async fn deploy(
    State(s): State<ApiState>,
    Path(app): Path<String>,
    ApiJson(req): ApiJson<dto::DeployRequest>,
) -> Response {
    let c = s.controller.clone();
    progress_stream(move |tx| async move {
        c.deploy(
            &app_key(&app)?,
            &req.services,
            req.force,
            req.strategy,
            req.restart_databases,
            tx,
        )
        .await
    })
}

#[utoipa::path(
    post, path = "/v1/apps/{app}/services/{service}/rollback",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("service" = String, Path),
    ),
    request_body = dto::RollbackRequest,
    security(("token" = [])),
    responses(
        (status = 200, description = "a stream of newline-delimited `Progress` objects, the last one `done`; a failure, even an unknown app or service, is a `failed` line", content_type = "application/x-ndjson", body = dto::Progress),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity)
    )
)]
async fn rollback(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    ApiJson(req): ApiJson<dto::RollbackRequest>,
) -> Response {
    let c = s.controller.clone();
    progress_stream(
        move |tx| async move { c.rollback(&app_key(&app)?, &service, req.to, tx).await },
    )
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/down",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "every instance stopped"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = StoreFailed)
    )
)]
async fn down(State(s): State<ApiState>, Path(app): Path<String>) -> ApiResult<StatusCode> {
    let app = app_key(&app)?;
    s.controller.down(&app).await?;
    Ok(StatusCode::OK)
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/secrets",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "the app's secrets: names and versions, never values", body = Vec<dto::SecretInfo>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = StoreFailed)
    )
)]
async fn list_secrets(
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<dto::SecretInfo>>> {
    let app = app_key(&app)?;
    Ok(Json(s.controller.secrets(&app)?))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/databases/{name}/settings",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("name" = String, Path, description = "the database's name in the spec"),
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "the settings the spec set, with the running server's value of each", body = dto::DatabaseSettings),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = StoreFailed)
    )
)]
async fn database_settings(
    State(s): State<ApiState>,
    Path((app, name)): Path<(String, String)>,
) -> ApiResult<Json<dto::DatabaseSettings>> {
    let app = app_key(&app)?;
    Ok(Json(s.controller.database_settings(&app, &name).await?))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/databases/{name}/connection",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("name" = String, Path, description = "the database's name in the spec"),
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "how to connect to the database: its URL, password included (never on the read-only listener)", body = dto::DatabaseConnection),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = StoreFailed)
    )
)]
async fn database_connection(
    State(s): State<ApiState>,
    Path((app, name)): Path<(String, String)>,
) -> ApiResult<Json<dto::DatabaseConnection>> {
    let app = app_key(&app)?;
    Ok(Json(s.controller.database_connection(&app, &name).await?))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/databases/{name}/upgrade",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("name" = String, Path, description = "the database's name in the spec"),
    ),
    request_body = dto::UpgradeRequest,
    security(("token" = [])),
    responses(
        (status = 200, description = "the database was migrated (after a verified backup), reverted, or its kept cluster removed", body = dto::UpgradeOutcome),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "nothing was changed: the request says not one thing to do, the version is not installed or not newer, the backup failed, or pg_upgrade failed (the database runs as before)", body = dto::ApiError),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 500, response = StoreFailed)
    )
)]
async fn upgrade_database(
    State(s): State<ApiState>,
    Path((app, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<dto::UpgradeRequest>,
) -> ApiResult<Json<dto::UpgradeOutcome>> {
    let app = app_key(&app)?;
    Ok(Json(s.controller.upgrade_database(&app, &name, req).await?))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/backups",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "the app's backups in this environment, newest first", body = Vec<dto::BackupInfo>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = StoreFailed)
    )
)]
async fn list_backups(
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<dto::BackupInfo>>> {
    let app = app_key(&app)?;
    Ok(Json(s.controller.backups(&app)?))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/backups",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
    ),
    request_body = dto::BackupRequest,
    security(("token" = [])),
    responses(
        (status = 200, description = "the backups taken, each verified by a restore into a scratch instance", body = Vec<dto::BackupInfo>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "a backup failed or did not verify; the message says which and why", body = dto::ApiError),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 500, response = StoreFailed)
    )
)]
async fn create_backup(
    State(s): State<ApiState>,
    Path(app): Path<String>,
    ApiJson(req): ApiJson<dto::BackupRequest>,
) -> ApiResult<Json<Vec<dto::BackupInfo>>> {
    let app = app_key(&app)?;
    Ok(Json(
        s.controller
            .create_backups(&app, req.database.as_deref())
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/backups/{id}/verify",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("id" = String, Path, description = "the backup's id"),
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "the backup's files match its manifest and it restores with the same row counts", body = dto::BackupInfo),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "the backup does not verify: the file and the reason", body = dto::ApiError),
        (status = 500, response = StoreFailed)
    )
)]
async fn verify_backup(
    State(s): State<ApiState>,
    Path((app, id)): Path<(String, String)>,
) -> ApiResult<Json<dto::BackupInfo>> {
    let app = app_key(&app)?;
    Ok(Json(s.controller.verify_backup(&app, &id).await?))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/backups/{id}/restore",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("id" = String, Path, description = "the backup's id"),
    ),
    request_body = dto::RestoreRequest,
    security(("token" = [])),
    responses(
        (status = 200, description = "the database's contents were replaced (after a safety backup)", body = dto::RestoreOutcome),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "nothing was restored: the backup is damaged, or the safety backup failed", body = dto::ApiError),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 500, response = StoreFailed)
    )
)]
async fn restore_backup(
    State(s): State<ApiState>,
    Path((app, id)): Path<(String, String)>,
    ApiJson(req): ApiJson<dto::RestoreRequest>,
) -> ApiResult<Json<dto::RestoreOutcome>> {
    let app = app_key(&app)?;
    Ok(Json(
        s.controller
            .restore_backup(&app, &id, req.to.as_deref())
            .await?,
    ))
}

#[utoipa::path(
    put, path = "/v1/apps/{app}/secrets/{name}",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("name" = String, Path, description = "letters, digits and `_`, not starting with a digit"),
    ),
    request_body = dto::SetSecretRequest, security(("token" = [])),
    responses(
        (status = 200, description = "the secret's new version", body = dto::SecretInfo),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 500, response = StoreFailed)
    )
)]
async fn set_secret(
    State(s): State<ApiState>,
    Path((app, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<dto::SetSecretRequest>,
) -> ApiResult<Json<dto::SecretInfo>> {
    let app = app_key(&app)?;
    let version = s.controller.set_secret(&app, &name, req.value.as_bytes())?;
    Ok(Json(dto::SecretInfo {
        name,
        version,
        updated_at: slipway_state::now(),
    }))
}

#[utoipa::path(
    delete, path = "/v1/apps/{app}/secrets/{name}",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("name" = String, Path),
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "removed"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = StoreFailed)
    )
)]
async fn remove_secret(
    State(s): State<ApiState>,
    Path((app, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let app = app_key(&app)?;
    s.controller.remove_secret(&app, &name)?;
    Ok(StatusCode::OK)
}

#[utoipa::path(
    get, path = "/v1/apps/{app}/services/{service}/revisions",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("service" = String, Path),
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "the service's revisions, oldest first", body = Vec<dto::RevisionInfo>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = StoreFailed)
    )
)]
async fn revisions(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
) -> ApiResult<Json<Vec<dto::RevisionInfo>>> {
    let app = app_key(&app)?;
    Ok(Json(s.controller.revisions(&app, &service)?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct ReleaseQuery {
    /// Default: the newest revision that ran a release command.
    #[serde(default, deserialize_with = "revision_number")]
    #[param(minimum = 0)]
    revision: Option<u64>,
}

/// A revision number in a query: what `u64` reads, up to `i64::MAX` as the document says
/// (`format: int64`). Larger numbers are refused (400) rather than read as a revision that
/// cannot exist.
fn revision_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let n = Option::<u64>::deserialize(d)?;
    match n {
        Some(n) if i64::try_from(n).is_err() => Err(serde::de::Error::custom(format!(
            "revision {n} is larger than the largest revision number, {}",
            i64::MAX
        ))),
        n => Ok(n),
    }
}

#[utoipa::path(
    get, path = "/v1/apps/{app}/services/{service}/release",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("service" = String, Path),
        ReleaseQuery,
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "the output of the revision's release command", body = dto::ReleaseOutput),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = StoreFailed)
    )
)]
async fn release_output(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    Query(q): Query<ReleaseQuery>,
) -> ApiResult<Json<dto::ReleaseOutput>> {
    let app = app_key(&app)?;
    Ok(Json(
        s.controller.release_output(&app, &service, q.revision)?,
    ))
}

#[utoipa::path(
    post, path = "/v1/apps/{app}/services/{service}/runs",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("service" = String, Path),
    ),
    request_body = dto::RunRequest,
    security(("token" = [])),
    responses(
        (status = 200, description = "how to run the command", body = dto::RunPlan),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 500, response = StoreFailed)
    )
)]
async fn run_plan(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    ApiJson(req): ApiJson<dto::RunRequest>,
) -> ApiResult<Json<dto::RunPlan>> {
    let app = app_key(&app)?;
    Ok(Json(s.controller.run_plan(&app, &service, &req).await?))
}

#[utoipa::path(
    post, path = "/v1/apps/{app}/services/{service}/runs/finished",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("service" = String, Path),
    ),
    request_body = dto::RunExit,
    security(("token" = [])),
    responses(
        (status = 200, description = "recorded"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 500, response = StoreFailed)
    )
)]
async fn run_finished(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    ApiJson(req): ApiJson<dto::RunExit>,
) -> ApiResult<StatusCode> {
    let app = app_key(&app)?;
    s.controller.run_finished(&app, &service, &req)?;
    Ok(StatusCode::OK)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct LogsQuery {
    #[serde(default, deserialize_with = "revision_number")]
    #[param(minimum = 0)]
    revision: Option<u64>,
    /// How many of the latest lines to send first (default 100).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    tail: Option<u32>,
    /// Keep the answer open and send new lines as they are written.
    #[serde(default)]
    follow: bool,
}

#[utoipa::path(
    get, path = "/v1/apps/{app}/services/{service}/logs",
    params(
        ("app" = String, Path, description = "the app's key: `app`, or `app@environment` outside `development`"),
        ("service" = String, Path),
        LogsQuery,
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "a stream of newline-delimited `LogLine` objects; with `follow`, it stays open", content_type = "application/x-ndjson", body = dto::LogLine),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = StoreFailed)
    )
)]
async fn logs(
    State(s): State<ApiState>,
    Path((app, service)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let app = app_key(&app)?;
    let tail = q.tail.map_or(100, |t| t as usize);
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
    /// At most this many events.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/events",
    params(EventsQuery),
    security(("token" = [])),
    responses(
        (status = 200, description = "stored events, oldest first", body = Vec<dto::EventInfo>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = StoreFailed)
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/events/stream",
    params(EventsQuery),
    security(("token" = [])),
    responses(
        (status = 200, description = "server-sent events: one `event` per stored event (JSON `EventInfo`), ids are event ids; resumes after `after` or `Last-Event-ID`, and stays open", content_type = "text/event-stream", body = String),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden)
    )
)]
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
        actor: e.actor,
    }
}

/// The error answers of the document: each is an [`dto::ApiError`] body with a description
/// of when it happens. Operations list the ones they can give.
macro_rules! error_responses {
    ($($name:ident => $description:literal,)*) => {$(
        struct $name;

        impl<'r> utoipa::ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
                let body = ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ApiError")))
                    .build();
                let response = ResponseBuilder::new()
                    .description($description)
                    .content("application/json", body)
                    .build();
                (stringify!($name), response.into())
            }
        }
    )*};
}

error_responses! {
    BadRequest => "The request cannot be read: a path segment that is not UTF-8, a query parameter of the wrong type, a body that is not JSON, or a value the operation does not take.",
    Unauthorized => "On the admin listener: a request without a token (`Authorization: Bearer <token>`), or with one that is not valid, has expired or was revoked. The Unix socket needs no token.",
    Forbidden => "On the admin listener: the token's role or environments do not allow this call (viewer reads, deployer also changes deployments in its environments, admin also secrets, tokens and the server).",
    NotFound => "No such app, service, revision or secret, or a name that no app, service or environment can have. For `POST /v1/apps`: no spec file at that path.",
    Conflict => "The request cannot be carried out in the current state, e.g. a traffic split that does not add up to 100, a revision that is not ready, or a secret name or value the server does not take.",
    PayloadTooLarge => "The request body is larger than the server reads (2 MiB).",
    UnsupportedMediaType => "The request body is not sent as `Content-Type: application/json`.",
    UnprocessableEntity => "The body is JSON but not of the operation's shape (a missing field, a wrong type), or the spec file is not a valid spec.",
    StoreFailed => "The server could not read or write its state store.",
}

/// What to do with a canary rollout.
// The names of `slipway_core::deploy::RolloutAction` for the document; that type has no schema.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
enum RolloutActionName {
    Promote,
    Pause,
    Resume,
    Abort,
}

/// Adds the token's security scheme (`token`), which the operations name.
struct TokenScheme;

impl utoipa::Modify for TokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "On the admin listener (TCP) every call needs a token made with `slipway token create NAME --role viewer|deployer|admin|metrics [--env E]`, sent as `Authorization: Bearer slp_…`; its role and environments decide what it may do. Only `/healthz` and the dashboard's page are open. The Unix socket, which only the data directory's owner can open, needs no token.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("token", SecurityScheme::Http(scheme));
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
        platform_backup,
        list_apps,
        apply,
        app_status,
        deploy,
        rollback,
        down,
        list_secrets,
        database_connection,
        database_settings,
        upgrade_database,
        list_backups,
        create_backup,
        verify_backup,
        restore_backup,
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
        run_finished,
        tokens::create_token,
        tokens::list_tokens,
        tokens::revoke_token
    ),
    components(
        schemas(dto::ApiError, RolloutActionName, crate::access::Role),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            UnprocessableEntity,
            StoreFailed
        )
    ),
    modifiers(&TokenScheme)
)]
struct ApiDoc;

/// The OpenAPI document of this API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}
