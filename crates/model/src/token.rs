//! API tokens: their [`Role`]s, the metadata shown of them ([`ApiToken`], never the
//! secret) and what creating one takes ([`NewToken`]).

use fleetwire_time::TimestampMs;

use crate::error::Error;
use crate::id::TokenId;
use crate::name::check_text;

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read only.
    Viewer,
    /// Read, manage devices, credentials, rules, alarms, commands.
    Operator,
    /// Everything, including tokens.
    Admin,
}

impl Role {
    /// `admin`, `operator` or `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses `admin`, `operator` or `viewer`.
    pub fn parse(text: &str) -> Result<Role, Error> {
        match text {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(Error::Invalid(format!(
                "role {other:?}: expected admin, operator or viewer"
            ))),
        }
    }
}

/// An API token's metadata (never the secret).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    /// Its id.
    pub id: TokenId,
    /// Name given at creation (`bootstrap` for the admin token of the data dir).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was created.
    pub created_at: TimestampMs,
}

/// What `create_token` needs.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Name (1-128 characters).
    pub name: String,
    /// Role.
    pub role: Role,
}

/// Longest token name, in characters.
pub const MAX_TOKEN_NAME_CHARS: usize = 128;

impl NewToken {
    /// Checks the name: 1-128 characters, and not the name reserved for the bootstrap token.
    pub fn check(&self) -> Result<(), Error> {
        check_text("token name", &self.name, 1, MAX_TOKEN_NAME_CHARS)?;
        if self.name == BOOTSTRAP_TOKEN_NAME {
            return Err(Error::Invalid(format!(
                "token name {BOOTSTRAP_TOKEN_NAME:?}: reserved for the data dir's admin token, expected another name"
            )));
        }
        Ok(())
    }
}

/// Name of the bootstrap admin token.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap";
