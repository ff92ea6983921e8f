//! The admin API: its route table, generated into `/openapi.json` from the same
//! handler annotations, so the document cannot drift from the code.

mod applications;
mod contacts;
mod events;
mod health;
mod licenses;
mod members;
mod notifications;
mod seats;
mod tokens;
mod usage;
pub(crate) use usage::summary_csv;
mod workspace;

use crate::AppState;
use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Leasehold",
        description = "Self-hosted software license server and license tracker: the admin API."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "tokens", description = "API tokens"),
        (name = "workspace", description = "The caller's workspace"),
        (name = "applications", description = "Software the licenses are for"),
        (name = "licenses", description = "Licenses, their keys and seats"),
        (name = "contacts", description = "People seats are assigned to"),
        (name = "audit", description = "Reminders and the audit log"),
        (name = "notifications", description = "Webhooks, their deliveries, and reminder emails"),
        (name = "usage", description = "Usage against what was bought, and renewal advice"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The API routes and the OpenAPI document describing exactly them.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(workspace::get_workspace))
        .routes(routes!(
            applications::create_application,
            applications::list_applications
        ))
        .routes(routes!(
            applications::get_application,
            applications::update_application,
            applications::delete_application
        ))
        .routes(routes!(licenses::create_license, licenses::list_licenses))
        .routes(routes!(
            licenses::get_license,
            licenses::update_license,
            licenses::delete_license
        ))
        .routes(routes!(licenses::reveal_key))
        .routes(routes!(licenses::license_queue))
        .routes(routes!(usage::license_usage))
        .routes(routes!(usage::usage_summary))
        .routes(routes!(seats::assign_seat, seats::list_seats))
        .routes(routes!(seats::reclaim_seat))
        .routes(routes!(contacts::create_contact, contacts::list_contacts))
        .routes(routes!(contacts::get_contact))
        .routes(routes!(contacts::terminate_contact))
        .routes(routes!(events::list_reminders))
        .routes(routes!(events::list_events))
        .routes(routes!(events::dismiss_reminder))
        .routes(routes!(crate::live::stream))
        .routes(routes!(members::create_member, members::list_members))
        .routes(routes!(members::update_member, members::delete_member))
        .routes(routes!(
            notifications::create_webhook,
            notifications::list_webhooks
        ))
        .routes(routes!(
            notifications::get_webhook,
            notifications::delete_webhook
        ))
        .routes(routes!(notifications::list_deliveries))
        .routes(routes!(notifications::resend_delivery))
        .routes(routes!(
            notifications::get_settings,
            notifications::update_settings
        ))
        .routes(routes!(notifications::test_email))
        .split_for_parts();
    let mut openapi = openapi;
    openapi.merge(<crate::client::ClientDoc as OpenApi>::openapi());
    openapi.merge(<crate::keygen::KeygenDoc as OpenApi>::openapi());
    document_errors(&mut openapi);
    (router, openapi)
}

/// Documents on every operation the errors any request to it may get, each an
/// `ErrorBody`: 400 where it reads a body, path or query; 401 and 403 where it needs a
/// token; 404 where it names a resource in its path. (Statuses an operation documents
/// itself keep their own words.)
fn document_errors(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
    let error = |description: &str| -> RefOr<Response> {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
            .into()
    };
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let parameters = operation.parameters.as_deref().unwrap_or_default();
            let reads_input = operation.request_body.is_some() || !parameters.is_empty();
            let names_resource = parameters
                .iter()
                .any(|p| p.parameter_in == ParameterIn::Path);
            let secured = operation
                .security
                .as_ref()
                .is_some_and(|requirements| !requirements.is_empty());
            let responses = &mut operation.responses.responses;
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| error(description));
            };
            if reads_input {
                add("400", "The body, path or query can't be read, or a field is invalid (`INVALID_REQUEST`)");
            }
            if secured {
                add("401", "No valid bearer token (`UNAUTHORIZED`)");
                add(
                    "403",
                    "The token's role lacks the permission this needs (`FORBIDDEN`)",
                );
            }
            if names_resource {
                add("404", "Not found in the caller's workspace (`NOT_FOUND`)");
            }
        }
    }
}
