//! FHIR terminology routes over the reference books kept (NSI): `CodeSystem` search and
//! read, and `ValueSet/$expand` paging a version's codes. Reference books are public data
//! of no organization; every answer is bounded (a book of 17,000 codes is paged, never
//! sent whole).

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};

use super::access::{Access, Org, Route};
use super::fhir::{base_url, fhir_json, self_link};
use super::query::{check_params, count_param, first, pairs};
use super::{ApiError, ApiResult, AppState, Principal};
use crate::auth::scopes::NSI_READ;
use crate::codec::fhir::searchset;
use crate::codec::fhir::terminology::{code_system, code_system_id, expanded_value_set, Expansion};
use crate::model::nsi::StoredVersion;
use crate::model::Oid;
use crate::route;

/// The terminology routes, with who may call them.
pub const ROUTES: &[Route] = &[
    route!(GET "/fhir" "/CodeSystem" => search_code_systems, Access::Scope(NSI_READ, Org::Public)),
    route!(GET "/fhir" "/CodeSystem/{id}" => read_code_system, Access::Scope(NSI_READ, Org::Public)),
    route!(GET "/fhir" "/ValueSet/$expand" => expand, Access::Scope(NSI_READ, Org::Public)),
];

/// A version with at most this many codes is read with its concepts inline.
const INLINE_CONCEPTS: u64 = 1000;
/// The longest text filter.
const MAX_FILTER: usize = 100;

/// A book's canonical URL (`urn:oid:<oid>`) given in parameter `name`.
fn book_param(name: &str, raw: &str) -> ApiResult<Oid> {
    raw.strip_prefix("urn:oid:")
        .and_then(|oid| Oid::parse(oid).ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "INVALID_PARAMETER",
                name,
                format!("`{name}` must be a reference book's URL, urn:oid:<OID>"),
            )
        })
}

/// A non-negative offset given in parameter `name` (default 0).
fn offset_param(params: &[(String, String)], name: &str) -> ApiResult<u32> {
    first(params, name).map_or(Ok(0), |v| {
        v.trim().parse().map_err(|_| {
            ApiError::invalid(
                "INVALID_PARAMETER",
                name,
                format!("`{name}` must be a non-negative integer up to {}", u32::MAX),
            )
        })
    })
}

/// `GET /fhir/CodeSystem?url=urn:oid:OID&version=V`: the kept versions (of one book, or
/// all), without their concepts, paged by `_count` and `_offset`.
async fn search_code_systems(
    state: Data<AppState>,
    _principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = pairs(&req);
    check_params(&params, &["url", "version"])?;
    let book = first(&params, "url")
        .map(|u| book_param("url", u))
        .transpose()?;
    let version = first(&params, "version");
    let count = count_param(&params, "_count", 50, 200)?;
    let offset = offset_param(&params, "_offset")?;
    let matching: Vec<StoredVersion> = state
        .reference_books
        .versions(book.as_ref())
        .await?
        .into_iter()
        .filter(|v| version.is_none_or(|want| v.version == want))
        .collect();
    let base = base_url(&state, &req);
    let link = |off: u64| {
        let mut q: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "_count" && k != "_offset")
            .cloned()
            .collect();
        q.push(("_count".into(), count.to_string()));
        q.push(("_offset".into(), off.to_string()));
        self_link(&base, "CodeSystem", &q)
    };
    let start = (offset as usize).min(matching.len());
    let page = &matching[start..(start + count as usize).min(matching.len())];
    let more = start + page.len() < matching.len();
    let body = searchset(
        &link(u64::from(offset)),
        more.then(|| link(u64::from(offset) + u64::from(count))),
        page.iter()
            .map(|v| {
                (
                    format!("{base}/CodeSystem/{}", code_system_id(v)),
                    code_system(v, None),
                )
            })
            .collect(),
    );
    Ok(fhir_json(StatusCode::OK, &body))
}

/// `GET /fhir/CodeSystem/<oid>-<version>`: the version, its concepts inline when it has
/// at most [`INLINE_CONCEPTS`] codes.
async fn read_code_system(
    state: Data<AppState>,
    _principal: Principal,
    id: Path<String>,
) -> ApiResult<HttpResponse> {
    let not_found = || {
        ApiError::not_found(
            "CODESYSTEM_NOT_FOUND",
            format!(
                "no kept reference-book version {:?} (ids are <OID>-<version>)",
                id.as_str()
            ),
        )
        .at("CodeSystem.id")
    };
    let (oid, version) = id.split_once('-').ok_or_else(not_found)?;
    let oid = Oid::parse(oid).map_err(|_| not_found())?;
    let v = state
        .reference_books
        .version(&oid, Some(version))
        .await?
        .ok_or_else(not_found)?;
    let body = if v.rows <= INLINE_CONCEPTS {
        let (_, concepts) = state
            .reference_books
            .rows(&v, None, 0, INLINE_CONCEPTS as u32)
            .await?;
        code_system(&v, Some(&concepts))
    } else {
        code_system(&v, None)
    };
    Ok(fhir_json(StatusCode::OK, &body))
}

/// `GET /fhir/ValueSet/$expand?url=urn:oid:OID[&valueSetVersion=V][&filter=T][&count=N]
/// [&offset=M]`: a page of the codes of a kept version (the current one by default).
async fn expand(
    state: Data<AppState>,
    _principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = pairs(&req);
    check_params(
        &params,
        &["url", "valueSetVersion", "filter", "count", "offset"],
    )?;
    let url = first(&params, "url").ok_or_else(|| ApiError::required("url"))?;
    let oid = book_param("url", url)?;
    let version = first(&params, "valueSetVersion");
    let filter = first(&params, "filter")
        .map(str::trim)
        .filter(|f| !f.is_empty());
    if filter.is_some_and(|f| f.chars().count() > MAX_FILTER || f.contains('\0')) {
        return Err(ApiError::invalid(
            "INVALID_PARAMETER",
            "filter",
            format!("`filter` must be text of at most {MAX_FILTER} characters"),
        ));
    }
    let count = count_param(&params, "count", 100, 1000)?;
    let offset = offset_param(&params, "offset")?;
    let Some(v) = state.reference_books.version(&oid, version).await? else {
        let (field, what) = match version {
            Some(v) => (
                "valueSetVersion",
                format!("version {v} of {url} is not kept"),
            ),
            None => ("url", format!("no version of {url} is kept")),
        };
        return Err(ApiError::not_found("VALUESET_NOT_FOUND", what).at(field));
    };
    let (total, entries) = state
        .reference_books
        .rows(&v, filter, u64::from(offset), count)
        .await?;
    let body = expanded_value_set(
        &v,
        &Expansion {
            identifier: format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            at: crate::model::time::now_ms(),
            total,
            offset: u64::from(offset),
            count,
            filter,
        },
        &entries,
    );
    Ok(fhir_json(StatusCode::OK, &body))
}
