//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes
//! (collected by the router as it registers them, so a route cannot be left out) and
//! completed here: the bearer security scheme, and the problem responses every
//! `/api/v1` operation can give (401, 403, 500).

use utoipa::OpenApi;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{AdditionalProperties, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};

use crate::problem::{PROBLEM_JSON, ProblemBody};

/// Name of the security scheme in the document.
const BEARER: &str = "bearer";
/// Name of the device (HTTP Basic) security scheme.
const DEVICE: &str = "device";

/// The parts of the document that are not routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Fleetwire API",
        description = "Devices, telemetry, rules, alarms, commands and API tokens of a \
                       Fleetwire platform. Every `/api/v1` request needs `Authorization: \
                       Bearer <token>`; errors are `application/problem+json`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "devices", description = "Registered devices, their MQTT credentials and \
                                          pinned client certificates"),
        (name = "tokens", description = "API tokens (admin only)"),
        (name = "telemetry", description = "Writing and querying device telemetry"),
        (name = "influxdb", description = "InfluxDB v2 compatible write endpoint (Telegraf)"),
        (name = "rules", description = "Conditions over telemetry that raise alarms and act"),
        (name = "alarms", description = "Alarms raised by rules: acknowledge and clear"),
        (name = "commands", description = "Platform-to-device requests with a tracked result"),
        (name = "overview", description = "The fleet at a glance"),
        (name = "stream", description = "Live events over WebSocket"),
        (name = "operations", description = "Health, readiness, metrics and this document; \
                                             no token needed"),
    ),
    components(
        schemas(ProblemBody),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            ValidationFailed,
            UpgradeRequired,
            InternalError,
            Unavailable,
        )
    )
)]
pub(crate) struct ApiDoc;

/// Declares reusable problem responses: one uninhabited type per status, whose
/// `ToResponse` describes an `application/problem+json` body.
macro_rules! problem_responses {
    ($($name:ident => $description:literal,)*) => {
        $(
            #[doc = $description]
            pub(crate) enum $name {}

            impl<'s> utoipa::ToResponse<'s> for $name {
                fn response() -> (&'s str, RefOr<Response>) {
                    (stringify!($name), problem_response($description).into())
                }
            }
        )*
    };
}

problem_responses! {
    BadRequest => "Malformed request: bad query parameter, path id or JSON syntax, or a \
                  certificate to pin that is not one PEM certificate naming the device",
    Unauthorized => "Missing, unknown or revoked API token",
    Forbidden => "The token's role does not allow this",
    NotFound => "No such device, token, rule, alarm or command",
    Conflict => "The id is taken, or the change conflicts with the current state (an alarm already cleared)",
    PayloadTooLarge => "The body is larger than the route's limit (64 KiB; telemetry 1 MiB; line protocol 32 MiB)",
    UnsupportedMediaType => "The body is not sent as `Content-Type: application/json`",
    ValidationFailed => "JSON of the wrong shape (unknown or missing field, wrong type) or \
                         values breaking a rule (id syntax, sizes)",
    UpgradeRequired => "A plain HTTP request to a WebSocket endpoint: connect with a WebSocket \
                        client (the answer has `Upgrade: websocket`)",
    InternalError => "The server failed; details are in its log, never in the answer",
    Unavailable => "The server is shutting down or cannot store the data now; retry later",
}

fn problem_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// Completes the document the router collected: every `/api/v1` operation needs the
/// bearer token and may answer 401, 403 or 500; rule actions refuse unknown fields.
pub(crate) fn finish(document: &mut utoipa::openapi::OpenApi) {
    let components = document.components.get_or_insert_with(Default::default);
    // `RuleAction` is a tagged enum with `deny_unknown_fields`, which utoipa writes for
    // structs but not for the variants of an enum.
    if let Some(RefOr::T(Schema::OneOf(actions))) = components.schemas.get_mut("RuleAction") {
        for variant in &mut actions.items {
            if let RefOr::T(Schema::Object(variant)) = variant {
                variant.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API token: the data dir's admin.token, or one created with \
                     POST /api/v1/tokens",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        DEVICE,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Basic)
                .description(Some(
                    "A device's own credentials: user name = device id, password = the \
                     device secret (only for writing that device's telemetry)",
                ))
                .build(),
        ),
    );
    for (path, item) in document.paths.paths.iter_mut() {
        if !path.starts_with("/api/v1/") && !path.starts_with("/api/v2/") {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            // Operations that list their own schemes (bearer or device) keep them.
            operation.security.get_or_insert_with(|| {
                vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]
            });
            for (status, name) in [
                ("401", "Unauthorized"),
                ("403", "Forbidden"),
                ("500", "InternalError"),
            ] {
                operation
                    .responses
                    .responses
                    .insert(status.to_owned(), RefOr::Ref(Ref::from_response_name(name)));
            }
        }
    }
}
