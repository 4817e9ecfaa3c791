//! The API's side of access: the token operations (`/v1/tokens`) and the audit of every
//! call that changes something (an `api.request` event naming its actor).

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::{Extension, Json};
use slipway_core::events::EventKind;
use slipway_state::{NewEvent, TokenRow};

use super::{ApiError, ApiJson, ApiResult, ApiState, Path};
use crate::access::token::TokenValue;
use crate::access::{Caller, Role, decode};
use crate::dto;

/// Ten years: a longer lifetime is a typo.
const MAX_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

#[utoipa::path(
    post, path = "/v1/tokens", request_body = dto::CreateTokenRequest, security(("token" = [])),
    responses(
        (status = 200, description = "the token, with its value: the only time the value is shown (the server keeps its hash)", body = dto::CreatedToken),
        (status = 400, response = super::BadRequest),
        (status = 401, response = super::Unauthorized),
        (status = 403, response = super::Forbidden),
        (status = 409, response = super::Conflict),
        (status = 413, response = super::PayloadTooLarge),
        (status = 415, response = super::UnsupportedMediaType),
        (status = 422, response = super::UnprocessableEntity),
        (status = 500, response = super::StoreFailed)
    )
)]
pub(super) async fn create_token(
    State(s): State<ApiState>,
    ApiJson(req): ApiJson<dto::CreateTokenRequest>,
) -> ApiResult<Json<dto::CreatedToken>> {
    let conflict = |e: String| ApiError(StatusCode::CONFLICT, e);
    slipway_core::names::check_name("token", &req.name).map_err(conflict)?;
    for environment in &req.environments {
        slipway_core::names::check_name("environment", environment).map_err(conflict)?;
    }
    if !req.environments.is_empty() && matches!(req.role, Role::Admin | Role::Metrics) {
        return Err(conflict(format!(
            "a token with the {} role cannot be limited to environments: it acts on the whole server\n  hint: limit a viewer or deployer token, or leave out --env",
            req.role
        )));
    }
    let expires_at = match req.expires_in_seconds {
        None => None,
        Some(secs) if (1..=MAX_LIFETIME_SECS).contains(&secs) => {
            let at = jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_secs(secs as i64))
                .map_err(|e| conflict(e.to_string()))?;
            Some(format!("{at:.3}"))
        }
        Some(secs) => {
            return Err(conflict(format!(
                "a token's lifetime is 1 second to 10 years, not {secs} seconds"
            )));
        }
    };
    let mut environments = req.environments.clone();
    environments.sort();
    environments.dedup();
    let value =
        TokenValue::generate().map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let row = s
        .controller
        .store()
        .create_token(&slipway_state::NewToken {
            id: value.id(),
            name: &req.name,
            role: req.role.as_str(),
            environments: &environments,
            hash: &value.hash(),
            expires_at: expires_at.as_deref(),
        })
        .map_err(|e| match e {
            // The name is taken.
            slipway_state::StoreError::Invalid(why) => conflict(why),
            e => e.into(),
        })?;
    Ok(Json(dto::CreatedToken {
        info: info(row)?,
        token: value.as_str().to_owned(),
    }))
}

#[utoipa::path(
    get, path = "/v1/tokens", security(("token" = [])),
    responses(
        (status = 200, description = "the tokens that are not revoked, by name; never their values", body = Vec<dto::TokenInfo>),
        (status = 401, response = super::Unauthorized),
        (status = 403, response = super::Forbidden),
        (status = 500, response = super::StoreFailed)
    )
)]
pub(super) async fn list_tokens(State(s): State<ApiState>) -> ApiResult<Json<Vec<dto::TokenInfo>>> {
    let rows = s.controller.store().tokens()?;
    Ok(Json(rows.into_iter().map(info).collect::<ApiResult<_>>()?))
}

#[utoipa::path(
    delete, path = "/v1/tokens/{name}",
    params(("name" = String, Path, description = "the token's name")),
    security(("token" = [])),
    responses(
        (status = 200, description = "revoked: the token is refused from now on"),
        (status = 400, response = super::BadRequest),
        (status = 401, response = super::Unauthorized),
        (status = 403, response = super::Forbidden),
        (status = 404, response = super::NotFound),
        (status = 500, response = super::StoreFailed)
    )
)]
pub(super) async fn revoke_token(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if s.controller.store().revoke_token(&name)? {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("there is no token named {name}\n  hint: `slipway token list` shows them"),
        ))
    }
}

fn info(row: TokenRow) -> ApiResult<dto::TokenInfo> {
    let role =
        Role::parse(&row.role).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(dto::TokenInfo {
        name: row.name,
        role,
        environments: row.environments,
        created_at: row.created_at,
        expires_at: row.expires_at,
        last_used_at: row.last_used_at,
    })
}

/// Records every call that may change something (any method but GET and HEAD) as an
/// `api.request` event with its actor, once the answer's status is known (for a streamed
/// answer, when the stream starts). The caller comes from the request's [`Caller`]
/// extension, which the admin listener's gate and the Unix socket's server set.
pub(super) async fn audit(
    State(s): State<ApiState>,
    caller: Option<Extension<Caller>>,
    req: Request,
    next: Next,
) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let actor = caller.map_or_else(|| "unknown".to_owned(), |c| c.actor().to_owned());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let (app, service) = subject(&path);
    let event = NewEvent {
        app: &app,
        service: service.as_deref(),
        revision: None,
        kind: EventKind::ApiRequest,
        message: format!("{method} {path}: {}", response.status().as_u16()),
    };
    if let Err(e) = s.controller.store().add_event_by(&event, &actor) {
        tracing::warn!(error = %e, %actor, %method, %path, "cannot record an API call in the event log");
    }
    response
}

/// The app and service a path is about (`/v1/apps/{app}/services/{service}/…`); the app
/// is empty for calls about the server.
fn subject(path: &str) -> (String, Option<String>) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "apps", app, "services", service, ..] => (decode(app), Some(decode(service))),
        ["v1", "apps", app, ..] => (decode(app), None),
        _ => (String::new(), None),
    }
}
