//! `/api/v1/tokens`: create, list and revoke API tokens (admin only).

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetwire_model::{ApiToken, NewToken, Role, TokenId};
use fleetwire_time::rfc3339;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Admin, Authorized};
use crate::problem::{Json, Problem};

/// What a token may do.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Role)]
pub(crate) enum RoleBody {
    /// Everything, including API tokens.
    Admin,
    /// Read, and manage devices and their credentials.
    Operator,
    /// Read only.
    Viewer,
}

impl From<Role> for RoleBody {
    fn from(role: Role) -> RoleBody {
        match role {
            Role::Admin => RoleBody::Admin,
            Role::Operator => RoleBody::Operator,
            Role::Viewer => RoleBody::Viewer,
        }
    }
}

impl From<RoleBody> for Role {
    fn from(role: RoleBody) -> Role {
        match role {
            RoleBody::Admin => Role::Admin,
            RoleBody::Operator => Role::Operator,
            RoleBody::Viewer => Role::Viewer,
        }
    }
}

/// An API token (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Token)]
pub(crate) struct TokenBody {
    /// Its id, for revoking it.
    id: String,
    /// The name given at creation (`bootstrap` for the data dir's admin token).
    #[schema(example = "grafana")]
    name: String,
    /// What it may do.
    role: RoleBody,
    /// When it was created (RFC 3339, UTC, milliseconds).
    #[schema(example = "2024-05-01T12:34:56.789Z")]
    created_at: String,
}

impl From<ApiToken> for TokenBody {
    fn from(token: ApiToken) -> TokenBody {
        TokenBody {
            id: token.id.0,
            name: token.name,
            role: token.role.into(),
            created_at: rfc3339(token.created_at),
        }
    }
}

/// A token just created, with its secret, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = CreatedToken)]
pub(crate) struct CreatedTokenBody {
    /// Its id, for revoking it.
    id: String,
    /// The name given.
    name: String,
    /// What it may do.
    role: RoleBody,
    /// When it was created (RFC 3339, UTC, milliseconds).
    created_at: String,
    /// The secret to send as `Authorization: Bearer <token>`; not shown again.
    token: String,
}

/// What `POST /api/v1/tokens` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewToken)]
pub(crate) struct CreateToken {
    /// A name saying who uses it, 1-128 characters (not `bootstrap`, the name of the
    /// data dir's admin token).
    #[schema(value_type = crate::constraints::TokenName, inline, example = "grafana")]
    name: String,
    /// What it may do.
    role: RoleBody,
}

/// Every token that is not revoked (one page: `next_cursor` is always `null`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = TokenPage)]
pub(crate) struct TokenPage {
    /// The tokens.
    items: Vec<TokenBody>,
    /// Always `null`: tokens fit in one page.
    next_cursor: Option<String>,
}

/// The token id of the path.
pub(crate) struct TokenPath(TokenId);

impl<S: Send + Sync> FromRequestParts<S> for TokenPath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| Problem::bad_request(rejection.body_text()))?;
        Ok(TokenPath(TokenId(id)))
    }
}

/// Creates an API token; its secret is shown only in this answer.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "The token, with its secret", body = CreatedTokenBody),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
pub(crate) async fn create_token(
    caller: Authorized<Admin>,
    State(app): State<AppState>,
    Json(body): Json<CreateToken>,
) -> Result<Response, Problem> {
    let new = NewToken {
        name: body.name,
        role: body.role.into(),
    };
    let (token, secret) = app.platform.create_token(new).await?;
    tracing::info!(
        token = %token.id.0,
        name = %token.name,
        role = token.role.as_str(),
        by = %caller.token.name,
        "API token created"
    );
    let token = TokenBody::from(token);
    let created = CreatedTokenBody {
        id: token.id,
        name: token.name,
        role: token.role,
        created_at: token.created_at,
        token: secret,
    };
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(created),
    )
        .into_response())
}

/// Lists the API tokens that are not revoked.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    responses((status = 200, description = "Every token", body = TokenPage))
)]
pub(crate) async fn list_tokens(
    _: Authorized<Admin>,
    State(app): State<AppState>,
) -> Result<axum::Json<TokenPage>, Problem> {
    let tokens = app.platform.list_tokens().await?;
    Ok(axum::Json(TokenPage {
        items: tokens.into_iter().map(TokenBody::from).collect(),
        next_cursor: None,
    }))
}

/// Revokes an API token: requests with it are refused from now on.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses(
        (status = 204, description = "The token was revoked"),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn revoke_token(
    caller: Authorized<Admin>,
    State(app): State<AppState>,
    TokenPath(id): TokenPath,
) -> Result<StatusCode, Problem> {
    app.platform.revoke_token(&id).await?;
    tracing::info!(token = %id.0, by = %caller.token.name, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}
