//! The OpenAPI 3 document of the admin JSON API (`/api/admin/...`), generated from the route
//! table with utoipa's builders: every route with its method, path parameters, the scope it
//! needs (bearer security) and its organization rule, so the document cannot drift from what
//! the gateway serves.

use std::collections::BTreeMap;

use actix_web::HttpResponse;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder,
    PathItem, PathsBuilder, Required, Type,
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
    let mut op = OperationBuilder::new()
        .operation_id(Some(format!("{} {pattern}", r.method)))
        .summary(Some(format!("{} {pattern}", r.method)))
        .response("200", json("the answer"))
        .response(
            "400",
            json("a parameter or field is wrong: the problem names it"),
        )
        .response("401", json("no or unknown credentials"))
        .response("403", json("the client lacks the scope"))
        .response(
            "404",
            json("no such record, or not the client's organization's"),
        );
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
