//! Bearer-token authentication and role checks, as an extractor: a handler states the
//! least role it needs in its signature (`_: Authorized<Operator>`), so no route can
//! forget the check. Viewers read, operators also manage devices and credentials,
//! admins also manage API tokens.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use fleetwire_model::{ApiToken, Role};

use crate::AppState;
use crate::problem::Problem;

/// The least role a handler needs, as a type.
pub(crate) trait MinimumRole {
    /// The role.
    const ROLE: Role;
}

/// Read-only access.
pub(crate) enum Viewer {}
/// Read, and manage devices and their credentials.
pub(crate) enum Operator {}
/// Everything, including API tokens.
pub(crate) enum Admin {}

impl MinimumRole for Viewer {
    const ROLE: Role = Role::Viewer;
}
impl MinimumRole for Operator {
    const ROLE: Role = Role::Operator;
}
impl MinimumRole for Admin {
    const ROLE: Role = Role::Admin;
}

/// A request whose bearer token has at least role `R`: 401 without a valid token, 403
/// when its role is lower.
pub(crate) struct Authorized<R> {
    /// The token the request came with.
    pub(crate) token: ApiToken,
    role: PhantomData<R>,
}

impl<R: MinimumRole> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let bearer = bearer_token(parts)?;
        let token = state
            .platform
            .authenticate_token(bearer)
            .await?
            .ok_or_else(|| Problem::unauthorized("the API token is unknown or revoked"))?;
        if token.role < R::ROLE {
            return Err(Problem::forbidden(format!(
                "this needs the {} role; the token {:?} has the {} role",
                R::ROLE.as_str(),
                token.name,
                token.role.as_str()
            )));
        }
        Ok(Authorized {
            token,
            role: PhantomData,
        })
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme is case-insensitive).
fn bearer_token(parts: &Parts) -> Result<&str, Problem> {
    let missing = || {
        Problem::unauthorized("missing API token: send the header `Authorization: Bearer <token>`")
    };
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(missing)?;
    let value = value
        .to_str()
        .map_err(|_| Problem::unauthorized("the Authorization header is not ASCII text"))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Problem::unauthorized(
            "expected the header `Authorization: Bearer <token>`",
        ));
    }
    Ok(token)
}
