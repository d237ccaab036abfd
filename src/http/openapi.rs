//! The OpenAPI 3 document of the admin JSON API (`/api/admin/...`), generated from the route
//! table with utoipa's builders: every route with its method, path parameters, the scope it
//! needs (bearer security) and its organization rule, so the document cannot drift from what
//! the gateway serves; every refusal is the one problem document described as `Problem`.

use std::collections::BTreeMap;

use actix_web::HttpResponse;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::SchemaType;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder,
    PathItem, PathsBuilder, Ref, Required, Type,
};

use super::access::{Access, Route};

/// The document, built from the routes under `/api/admin`.
pub fn document() -> OpenApi {
    let mut items: BTreeMap<String, Vec<(HttpMethod, utoipa::openapi::path::Operation)>> =
        BTreeMap::new();
    for r in super::route_table().filter(|r| r.scope == "/api/admin") {
        let Some(method) = method(r) else { continue };
        items
            .entry(r.pattern())
            .or_default()
            .push((method, operation(r)));
    }
    let mut paths = PathsBuilder::new();
    for (path, ops) in items {
        let mut ops = ops.into_iter();
        let Some((m, first)) = ops.next() else {
            continue;
        };
        let mut item = PathItem::new(m, first);
        for (m, op) in ops {
            item.merge_operations(PathItem::new(m, op));
        }
        paths = paths.path(path, item);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("medgate admin API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The operators' JSON API of the regional gateway: transaction log, outbox and dead letters, documents, restrictions, jobs, statistics, appeals' figures. Bearer token; each route names the scope it needs and how it keeps clients to their organizations.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)))
                .schema("Problem", problem())
                .build(),
        ))
        .build()
}

fn method(r: &Route) -> Option<HttpMethod> {
    Some(match r.method.as_str() {
        "GET" => HttpMethod::Get,
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "DELETE" => HttpMethod::Delete,
        "PATCH" => HttpMethod::Patch,
        _ => return None,
    })
}

/// The problem document every refusal and failure of the admin API is.
fn problem() -> utoipa::openapi::Object {
    let text = |what: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(what))
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some("What was refused or failed, and where."))
        .property(
            "error",
            text("stable machine code, e.g. TRANSACTION_NOT_FOUND"),
        )
        .property("message", text("for a person"))
        .property(
            "field",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .description(Some("the parameter or field at fault, when one is")),
        )
        .property("request_id", text("quote it to support"))
        .required("error")
        .required("message")
        .required("request_id")
        .build()
}

fn operation(r: &Route) -> utoipa::openapi::path::Operation {
    let pattern = r.pattern();
    let json = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Object).build()))
                    .build(),
            )
            .build()
    };
    let refused = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    let mut op = OperationBuilder::new()
        .operation_id(Some(format!("{} {pattern}", r.method)))
        .summary(Some(format!("{} {pattern}", r.method)))
        .response("200", json("the answer"))
        .response(
            "400",
            refused("a parameter or field is wrong: the problem names it"),
        )
        .response("401", refused("no or unknown credentials"))
        .response("403", refused("the client lacks the scope"))
        .response(
            "404",
            refused("no such record, or not the client's organization's"),
        )
        .response("429", refused("over the client's rate: see Retry-After"))
        .response(
            "503",
            refused("overloaded or the database unavailable: nothing changed, see Retry-After"),
        );
    if r.method == actix_web::http::Method::POST || r.method == actix_web::http::Method::DELETE {
        op = op.response(
            "409",
            refused("the record is not in a state for this: the problem says why"),
        );
    }
    if let Access::Scope(scope, org) = r.access {
        op = op
            .description(Some(format!("Scope `{scope}`; {}.", org.describe())))
            .security(SecurityRequirement::new("bearer", [scope]));
    }
    for segment in pattern.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String).build())),
            );
        }
    }
    op.build()
}

/// `GET /api/admin/openapi.json`.
pub async fn serve() -> super::ApiResult<HttpResponse> {
    let body = document().to_json().map_err(|e| {
        super::ApiError::new(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            crate::codec::fhir::IssueType::Exception,
            "OPENAPI_UNAVAILABLE",
            format!("the API description could not be written: {e}"),
        )
    })?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}
