//! `/api/v1/rules`: create, list, show, replace and delete rules. A rule is checked when
//! it is created or replaced: a bad expression is a 422 naming the expression, the column
//! and what was expected, with the byte offset in `position`.

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetwire_model::{DeviceId, Rule, RuleAction, RuleId, RuleMatch, RuleSpec, Severity};
use fleetwire_time::rfc3339;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Authorized, Operator, Viewer};
use crate::constraints::{
    CommandName, Cursor, DeviceType, Labels, PlainId, RepublishTopic, RuleDevices, RuleDuration,
    RuleName, SeverityName, WebhookUrl,
};
use crate::params::{Pagination, parse_duration};
use crate::problem::{Json, Problem};

/// Which devices a rule watches; every part given must hold, none given means every
/// device.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RuleMatch)]
pub(crate) struct MatchBody {
    /// Only these device ids (at most 1000).
    #[serde(default)]
    #[schema(value_type = RuleDevices, inline)]
    devices: Vec<String>,
    /// Only devices of this type.
    #[serde(rename = "type", default)]
    #[schema(value_type = Option<DeviceType>, inline)]
    device_type: Option<String>,
    /// Only devices with all these labels.
    #[serde(default)]
    #[schema(value_type = Labels, inline)]
    labels: BTreeMap<String, String>,
}

/// What a rule does when its alarm is raised (and, for alarms, webhooks and republish,
/// when it clears).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
#[schema(as = RuleAction)]
pub(crate) enum ActionBody {
    /// Open an alarm; the rule clears it.
    // A struct variant, so that `deny_unknown_fields` refuses other fields here too:
    // serde lets them through on a unit variant.
    Alarm {},
    /// POST a JSON document (event, rule, device, severity, values, alarm) to a URL, with
    /// retries and a circuit breaker.
    Webhook {
        /// `http://...` or `https://...`, at most 2048 characters.
        #[schema(value_type = WebhookUrl, inline)]
        url: String,
    },
    /// Publish the same document on an MQTT topic (`{device}` is replaced).
    Republish {
        /// Topic template, such as `alerts/{device}`: no wildcards, no leading `$`.
        #[schema(value_type = RepublishTopic, inline)]
        topic: String,
    },
    /// Send a command to the device (on raise only).
    Command {
        /// Command name.
        #[schema(value_type = CommandName, inline)]
        name: String,
        /// Its parameters: a JSON object, or `null` (or absent) for none.
        #[serde(default)]
        #[schema(value_type = Option<Object>)]
        params: serde_json::Value,
    },
}

/// A duration: `"10s"`, `"5m"`, `"1h30m"`, or a number of seconds.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum DurationBody {
    /// Seconds.
    Seconds(f64),
    /// With units.
    Text(String),
}

/// What `POST /api/v1/rules` and `PUT /api/v1/rules/{id}` take.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewRule)]
pub(crate) struct RuleInput {
    /// Chosen id (1-128 characters of `A-Z a-z 0-9 _ . -`); generated when absent. Only
    /// for `POST`.
    #[schema(value_type = Option<PlainId>, inline, example = "overheat")]
    id: Option<String>,
    /// Name for people, 1-256 characters.
    #[schema(value_type = RuleName, inline, example = "Overheating")]
    name: String,
    /// Which devices; every device when absent.
    #[serde(rename = "match", default)]
    matcher: MatchBody,
    /// Boolean expression over the message's fields and the device's latest values:
    /// numbers, `true`/`false`, `+ - * / %`, comparisons, `and or not`, parentheses,
    /// `abs`, `min`, `max`, `delta(field)`, `rate(field)`.
    #[schema(example = "temperature > 30")]
    condition: String,
    /// How long the condition must hold (data time) before the alarm is raised: a
    /// duration such as `"10s"`, or a number of seconds.
    #[serde(rename = "for")]
    #[schema(value_type = Option<RuleDuration>, inline)]
    for_duration: Option<DurationBody>,
    /// Expression that clears the alarm; without it, the alarm clears when the condition
    /// stops holding.
    #[schema(example = "temperature < 28")]
    clear: Option<String>,
    /// `low`, `medium` (default), `high` or `critical`.
    #[schema(value_type = Option<SeverityName>, inline, example = "high")]
    severity: Option<String>,
    /// What to do (at most 16 actions); `[{"type": "alarm"}]` when absent.
    #[schema(max_items = 16)]
    actions: Option<Vec<ActionBody>>,
    /// Whether the rule is evaluated (default true).
    enabled: Option<bool>,
}

/// The body of `PUT /api/v1/rules/{id}`: a `NewRule` without `id`, since the path names
/// the rule (an `id` in the body is accepted only when it is the path's).
pub(crate) enum RuleReplacement {}

impl utoipa::PartialSchema for RuleReplacement {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let mut schema = <RuleInput as utoipa::PartialSchema>::schema();
        if let utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(object)) =
            &mut schema
        {
            object.properties.remove("id");
            object.description =
                Some("What `PUT /api/v1/rules/{id}` takes: a `NewRule` without `id`.".to_owned());
        }
        schema
    }
}

impl utoipa::ToSchema for RuleReplacement {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <RuleInput as utoipa::ToSchema>::schemas(schemas);
    }
}

/// A rule, as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Rule)]
pub(crate) struct RuleBody {
    /// Its id.
    #[schema(example = "overheat")]
    id: String,
    /// Name.
    name: String,
    /// Which devices.
    #[serde(rename = "match")]
    matcher: MatchBody,
    /// The condition.
    condition: String,
    /// The duration, such as `"10s"`; `null` when none.
    #[serde(rename = "for")]
    for_duration: Option<String>,
    /// The clear expression; `null` when none.
    clear: Option<String>,
    /// Severity of its alarms.
    severity: String,
    /// What it does.
    actions: Vec<ActionBody>,
    /// Whether it is evaluated.
    enabled: bool,
    /// When it was created (RFC 3339).
    created_at: String,
    /// When it was last changed (RFC 3339).
    updated_at: String,
}

/// One page of rules.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RulePage {
    /// The rules of this page, ordered by id.
    items: Vec<RuleBody>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<String>,
}

impl From<Rule> for RuleBody {
    fn from(rule: Rule) -> RuleBody {
        let spec = rule.spec;
        RuleBody {
            id: rule.id.as_str().to_owned(),
            name: spec.name,
            matcher: MatchBody {
                devices: spec
                    .matcher
                    .devices
                    .iter()
                    .map(|id| id.as_str().to_owned())
                    .collect(),
                device_type: spec.matcher.device_type,
                labels: spec.matcher.labels,
            },
            condition: spec.condition,
            for_duration: spec.for_ms.map(format_duration),
            clear: spec.clear,
            severity: spec.severity.as_str().to_owned(),
            actions: spec
                .actions
                .into_iter()
                .map(|action| match action {
                    RuleAction::Alarm => ActionBody::Alarm {},
                    RuleAction::Webhook { url } => ActionBody::Webhook { url },
                    RuleAction::Republish { topic } => ActionBody::Republish { topic },
                    RuleAction::Command { name, params } => ActionBody::Command { name, params },
                })
                .collect(),
            enabled: spec.enabled,
            created_at: rfc3339(rule.created_at),
            updated_at: rfc3339(rule.updated_at),
        }
    }
}

/// `90000` → `"1m30s"`.
fn format_duration(millis: i64) -> String {
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut rest = millis;
    let mut text = String::new();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
        if rest >= size {
            text.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    text
}

impl RuleInput {
    /// The registry's form; 422 for values that cannot be one.
    fn into_spec(self) -> Result<(Option<String>, RuleSpec), Problem> {
        let for_ms = match self.for_duration {
            None => None,
            Some(DurationBody::Seconds(seconds)) => {
                if !(seconds.is_finite() && (0.0..=365.0 * 86_400.0).contains(&seconds)) {
                    return Err(Problem::validation(format!(
                        "for: expected a duration such as \"10s\" or a number of seconds from 0, got {seconds}"
                    )));
                }
                Some((seconds * 1000.0).round() as i64)
            }
            Some(DurationBody::Text(text)) => Some(
                parse_duration(&text)
                    .map_err(|error| Problem::validation(format!("for: {error}")))?
                    .as_millis() as i64,
            ),
        };
        let severity = match self.severity.as_deref() {
            None => Severity::Medium,
            Some(text) => Severity::parse(text)?,
        };
        let devices = self
            .matcher
            .devices
            .into_iter()
            .map(|id| DeviceId::new(id).map_err(Problem::from))
            .collect::<Result<Vec<_>, _>>()?;
        let actions = self
            .actions
            .unwrap_or_else(|| vec![ActionBody::Alarm {}])
            .into_iter()
            .map(|action| match action {
                ActionBody::Alarm {} => RuleAction::Alarm,
                ActionBody::Webhook { url } => RuleAction::Webhook { url },
                ActionBody::Republish { topic } => RuleAction::Republish { topic },
                ActionBody::Command { name, params } => RuleAction::Command { name, params },
            })
            .collect();
        Ok((
            self.id,
            RuleSpec {
                name: self.name,
                matcher: RuleMatch {
                    devices,
                    device_type: self.matcher.device_type,
                    labels: self.matcher.labels,
                },
                condition: self.condition,
                for_ms,
                clear: self.clear,
                severity,
                actions,
                enabled: self.enabled.unwrap_or(true),
            },
        ))
    }
}

/// A rule of the configuration file (`[[rules]]`): the document `POST /api/v1/rules`
/// takes, with `id` required (so that every start replaces the rule instead of adding
/// another). The error says what is wrong, as the API's 422 would. The expressions and
/// actions are checked by `Platform::validate_rule`, as for the API.
pub fn rule_from_document(document: serde_json::Value) -> Result<(RuleId, RuleSpec), String> {
    let input: RuleInput = serde_json::from_value(document).map_err(|error| error.to_string())?;
    let (id, spec) = input
        .into_spec()
        .map_err(|problem| problem.detail().to_owned())?;
    let id = id.ok_or_else(|| "id: required for a rule of the configuration file".to_owned())?;
    let id = RuleId::new(id).map_err(|error| format!("id: {error}"))?;
    Ok((id, spec))
}

/// The rule id of the path, validated.
pub(crate) struct RulePath(RuleId);

impl<S: Send + Sync> FromRequestParts<S> for RulePath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| Problem::bad_request(rejection.body_text()))?;
        RuleId::new(id)
            .map(RulePath)
            .map_err(|error| Problem::bad_request(error.to_string()))
    }
}

/// Creates a rule; it applies from the next message on.
#[utoipa::path(
    post,
    path = "/api/v1/rules",
    tag = "rules",
    request_body = RuleInput,
    responses(
        (status = 201, description = "The rule", body = RuleBody,
            headers(("Location" = String, description = "The rule's URL path"))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
pub(crate) async fn create_rule(
    caller: Authorized<Operator>,
    State(app): State<AppState>,
    Json(body): Json<RuleInput>,
) -> Result<Response, Problem> {
    let (id, spec) = body.into_spec()?;
    let id = id.map(RuleId::new).transpose()?;
    let rule = app.platform.create_rule(id, spec).await?;
    tracing::info!(rule = %rule.id, by = %caller.token.name, "rule created");
    let location = HeaderValue::try_from(format!("/api/v1/rules/{}", rule.id))
        .map_err(|_| Problem::internal())?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(RuleBody::from(rule)),
    )
        .into_response())
}

/// Lists rules ordered by id, one page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/rules",
    tag = "rules",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
        ("cursor" = inline(Option<Cursor>), Query, description = "The `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "One page of rules", body = RulePage),
        (status = 400, response = crate::openapi::BadRequest),
    )
)]
pub(crate) async fn list_rules(
    _: Authorized<Viewer>,
    State(app): State<AppState>,
    page: Pagination,
) -> Result<axum::Json<RulePage>, Problem> {
    let page = app
        .platform
        .list_rules(page.limit, page.cursor.as_deref())
        .await?;
    Ok(axum::Json(RulePage {
        items: page.items.into_iter().map(RuleBody::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Shows one rule.
#[utoipa::path(
    get,
    path = "/api/v1/rules/{id}",
    tag = "rules",
    params(("id" = inline(PlainId), Path, description = "Rule id")),
    responses(
        (status = 200, description = "The rule", body = RuleBody),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn get_rule(
    _: Authorized<Viewer>,
    State(app): State<AppState>,
    RulePath(id): RulePath,
) -> Result<axum::Json<RuleBody>, Problem> {
    Ok(axum::Json(RuleBody::from(app.platform.rule(&id).await?)))
}

/// Replaces a rule. Open alarms carry over; if its expressions changed, they clear by the
/// new logic.
#[utoipa::path(
    put,
    path = "/api/v1/rules/{id}",
    tag = "rules",
    params(("id" = inline(PlainId), Path, description = "Rule id")),
    request_body(content = inline(RuleReplacement)),
    responses(
        (status = 200, description = "The replaced rule", body = RuleBody),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 404, response = crate::openapi::NotFound),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
pub(crate) async fn replace_rule(
    caller: Authorized<Operator>,
    State(app): State<AppState>,
    RulePath(id): RulePath,
    Json(body): Json<RuleInput>,
) -> Result<axum::Json<RuleBody>, Problem> {
    let (body_id, spec) = body.into_spec()?;
    if body_id
        .as_deref()
        .is_some_and(|body_id| body_id != id.as_str())
    {
        return Err(Problem::validation(format!(
            "id: the body's id {body_id:?} is not the path's, {:?}",
            id.as_str()
        )));
    }
    let rule = app.platform.replace_rule(&id, spec).await?;
    tracing::info!(rule = %rule.id, by = %caller.token.name, "rule replaced");
    Ok(axum::Json(RuleBody::from(rule)))
}

/// Deletes a rule. Its open alarms stay, to be cleared by hand.
#[utoipa::path(
    delete,
    path = "/api/v1/rules/{id}",
    tag = "rules",
    params(("id" = inline(PlainId), Path, description = "Rule id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn delete_rule(
    caller: Authorized<Operator>,
    State(app): State<AppState>,
    RulePath(id): RulePath,
) -> Result<StatusCode, Problem> {
    app.platform.delete_rule(&id).await?;
    tracing::info!(rule = %id, by = %caller.token.name, "rule deleted");
    Ok(StatusCode::NO_CONTENT)
}
