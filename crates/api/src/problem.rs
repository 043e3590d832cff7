//! Errors as `application/problem+json` (RFC 9457): every failure this crate answers,
//! including axum's own rejections (bad JSON, wrong content type, body too large,
//! unknown route, wrong method), goes through [`Problem`].

use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The media type of every error body.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer: an HTTP status and a sentence saying what went wrong.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    kind: Kind,
    detail: String,
    /// Byte offset of the problem in an expression (rules), as an extension member.
    position: Option<usize>,
}

impl Problem {
    /// The sentence saying what went wrong.
    pub(crate) fn detail(&self) -> &str {
        &self.detail
    }
}

/// What kind of problem: fixes the `type` URI and the `title`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    UpgradeRequired,
    Internal,
    Unavailable,
}

impl Kind {
    fn slug(self) -> &'static str {
        match self {
            Kind::BadRequest => "bad-request",
            Kind::Unauthorized => "unauthorized",
            Kind::Forbidden => "forbidden",
            Kind::NotFound => "not-found",
            Kind::MethodNotAllowed => "method-not-allowed",
            Kind::Conflict => "conflict",
            Kind::PayloadTooLarge => "payload-too-large",
            Kind::UnsupportedMediaType => "unsupported-media-type",
            Kind::ValidationFailed => "validation-failed",
            Kind::UpgradeRequired => "upgrade-required",
            Kind::Internal => "internal",
            Kind::Unavailable => "unavailable",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::BadRequest => "Bad request",
            Kind::Unauthorized => "Unauthorized",
            Kind::Forbidden => "Forbidden",
            Kind::NotFound => "Not found",
            Kind::MethodNotAllowed => "Method not allowed",
            Kind::Conflict => "Conflict",
            Kind::PayloadTooLarge => "Payload too large",
            Kind::UnsupportedMediaType => "Unsupported media type",
            Kind::ValidationFailed => "Validation failed",
            Kind::UpgradeRequired => "Upgrade required",
            Kind::Internal => "Internal server error",
            Kind::Unavailable => "Service unavailable",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn from_status(status: StatusCode) -> Kind {
        match status {
            StatusCode::UNAUTHORIZED => Kind::Unauthorized,
            StatusCode::FORBIDDEN => Kind::Forbidden,
            StatusCode::NOT_FOUND => Kind::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Kind::MethodNotAllowed,
            StatusCode::CONFLICT => Kind::Conflict,
            StatusCode::PAYLOAD_TOO_LARGE => Kind::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Kind::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => Kind::ValidationFailed,
            StatusCode::UPGRADE_REQUIRED => Kind::UpgradeRequired,
            StatusCode::SERVICE_UNAVAILABLE => Kind::Unavailable,
            status if status.is_server_error() => Kind::Internal,
            _ => Kind::BadRequest,
        }
    }
}

impl Problem {
    fn new(kind: Kind, detail: impl Into<String>) -> Problem {
        Problem {
            status: kind.status(),
            kind,
            detail: detail.into(),
            position: None,
        }
    }

    /// 400: the request itself is malformed (query, path, JSON syntax).
    pub(crate) fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(Kind::BadRequest, detail)
    }

    /// 401, sent with `WWW-Authenticate: Bearer`.
    pub(crate) fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(Kind::Unauthorized, detail)
    }

    /// 403: the token's role does not allow this.
    pub(crate) fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(Kind::Forbidden, detail)
    }

    /// 404.
    pub(crate) fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(Kind::NotFound, detail)
    }

    /// 422: well-formed, but the values break a rule.
    pub(crate) fn validation(detail: impl Into<String>) -> Problem {
        Problem::new(Kind::ValidationFailed, detail)
    }

    /// 426, sent with `Upgrade: websocket`: a plain HTTP request to the WebSocket stream.
    pub(crate) fn upgrade_required(detail: impl Into<String>) -> Problem {
        Problem::new(Kind::UpgradeRequired, detail)
    }

    /// 500; the detail never carries internals (they are logged where they happen).
    pub(crate) fn internal() -> Problem {
        Problem::new(
            Kind::Internal,
            "the server failed to handle the request; the details are in its log",
        )
    }

    /// A problem with the status axum chose (rejections), keeping its message.
    pub(crate) fn with_status(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            kind: Kind::from_status(status),
            detail: detail.into(),
            position: None,
        }
    }
}

/// The JSON body of a problem (also its schema in the OpenAPI document).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(
    as = Problem,
    example = json!({
        "type": "urn:fleetwire:problem:not-found",
        "title": "Not found",
        "status": 404,
        "detail": "device \"d1\" not found"
    })
)]
pub(crate) struct ProblemBody<'a> {
    /// A URI naming the kind of problem: `urn:fleetwire:problem:<kind>`.
    #[serde(rename = "type")]
    problem_type: &'a str,
    /// A short summary of the kind of problem.
    title: &'a str,
    /// The HTTP status code.
    status: u16,
    /// What went wrong in this request.
    detail: &'a str,
    /// For a rule expression that does not compile: the byte offset of the problem in
    /// the expression the detail names.
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<usize>,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let problem_type = format!("urn:fleetwire:problem:{}", self.kind.slug());
        let body = ProblemBody {
            problem_type: &problem_type,
            title: self.kind.title(),
            status: self.status.as_u16(),
            detail: &self.detail,
            position: self.position,
        };
        let body = match serde_json::to_vec(&body) {
            Ok(body) => body,
            // Serializing strings cannot fail; answer something sensible regardless.
            Err(_) => b"{}".to_vec(),
        };
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response();
        match self.kind {
            Kind::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"fleetwire\""),
                );
            }
            // RFC 9110: a 426 names the protocol to upgrade to.
            Kind::UpgradeRequired => {
                response
                    .headers_mut()
                    .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            }
            _ => {}
        }
        response
    }
}

impl From<fleetwire_model::Error> for Problem {
    fn from(error: fleetwire_model::Error) -> Problem {
        Problem::new(Kind::ValidationFailed, error.to_string())
    }
}

/// The one place an error of the platform becomes an HTTP status.
impl From<fleetwire_platform::Error> for Problem {
    fn from(error: fleetwire_platform::Error) -> Problem {
        use fleetwire_platform::Error as PlatformError;
        match error {
            PlatformError::Payload(_) | PlatformError::InvalidDevice(_) => {
                Problem::bad_request(error.to_string())
            }
            PlatformError::InvalidQuery(message) => Problem::bad_request(message),
            PlatformError::InvalidCertificate { detail, .. } => Problem::bad_request(detail),
            PlatformError::NotFound { .. } => Problem::not_found(error.to_string()),
            PlatformError::Invalid(message) => Problem::new(Kind::ValidationFailed, message),
            PlatformError::InvalidExpression { detail, position } => Problem {
                position,
                ..Problem::new(Kind::ValidationFailed, detail)
            },
            PlatformError::Conflict(message) => Problem::new(Kind::Conflict, message),
            PlatformError::ShuttingDown => Problem::new(Kind::Unavailable, error.to_string()),
            PlatformError::Store(_) => {
                tracing::error!(
                    error = &error as &dyn std::error::Error,
                    "telemetry store failed"
                );
                Problem::new(
                    Kind::Unavailable,
                    "the telemetry store cannot take writes now; nothing of this request was \
                     stored; the details are in the server's log",
                )
            }
            // The registry, a thread that would not start, or a kind of failure added
            // later: logged with its sources, never shown.
            other => {
                tracing::error!(error = &other as &dyn std::error::Error, "platform failed");
                Problem::internal()
            }
        }
    }
}

/// `axum::Json`, with its rejections answered as problems: a body that is not JSON is a
/// 400, JSON of the wrong shape (missing or unknown fields, wrong types) a 422 naming
/// the field, a missing JSON content type a 415, a body over the limit a 413.
pub(crate) struct Json<T>(pub(crate) T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(rejection_problem(&rejection)),
        }
    }
}

fn rejection_problem(rejection: &JsonRejection) -> Problem {
    let detail = match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "expected a JSON body with `Content-Type: application/json`".to_owned()
        }
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            format!(
                "the request body is larger than the limit of {} bytes",
                crate::BODY_LIMIT
            )
        }
        // axum's text says what serde said: which field, which line and column.
        _ => rejection.body_text(),
    };
    Problem::with_status(rejection.status(), detail)
}

/// The raw request body, with its rejections (over the route's size limit, a broken
/// connection) answered as problems instead of axum's plain text.
pub(crate) struct RawBody(pub(crate) axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Problem;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        match axum::body::Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Problem::with_status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request body is larger than this route's limit",
                ))
            }
            Err(rejection) => Err(Problem::with_status(
                rejection.status(),
                rejection.body_text(),
            )),
        }
    }
}

/// Answers requests to paths no route matches.
pub(crate) async fn unknown_route(uri: axum::http::Uri) -> Problem {
    Problem::not_found(format!("no route for {}", uri.path()))
}

/// Answers requests with a method the matched route does not have.
pub(crate) async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Problem {
    Problem::new(
        Kind::MethodNotAllowed,
        format!("{} does not accept {method}", uri.path()),
    )
}
