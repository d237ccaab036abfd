//! Reading query parameters: the pairs of a query string, unknown FHIR parameters refused
//! by name, and the one parser each for counts and for dates or instants.

use actix_web::HttpRequest;

use super::{ApiError, ApiResult};
use crate::codec::fhir::IssueType;
use crate::model::time::Moment;
use crate::model::Oid;

/// The decoded `(name, value)` pairs of the request's query string, in order.
pub fn pairs(req: &HttpRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The first value of parameter `name`.
pub fn first<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Refuses parameters a FHIR search does not know, naming them.
pub fn check_params(params: &[(String, String)], known: &[&str]) -> ApiResult<()> {
    const GENERAL: [&str; 5] = ["_count", "_offset", "_format", "_pretty", "_summary"];
    for (k, _) in params {
        if !known.contains(&k.as_str()) && !GENERAL.contains(&k.as_str()) {
            return Err(ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                IssueType::NotSupported,
                "UNKNOWN_SEARCH_PARAMETER",
                format!(
                    "search parameter `{k}` is not supported; supported: {}",
                    known.join(", ")
                ),
            )
            .at(k.clone()));
        }
    }
    Ok(())
}

/// A count (`_count`, or the JSON API's `limit`): an integer from 1 to `max`.
pub fn count(name: &str, raw: &str, max: u32) -> ApiResult<u32> {
    let code = if name == "limit" {
        "INVALID_LIMIT"
    } else {
        "INVALID_PARAMETER"
    };
    raw.trim()
        .parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::invalid(
                code,
                name,
                format!("`{name}` must be an integer from 1 to {max}"),
            )
        })
}

/// Parameter `name` as a count, or `default` when absent.
pub fn count_param(
    params: &[(String, String)],
    name: &str,
    default: u32,
    max: u32,
) -> ApiResult<u32> {
    first(params, name).map_or(Ok(default), |v| count(name, v, max))
}

/// A date (`2026-11-23`) or an instant (RFC 3339, or a dateTime without offset as UTC).
pub fn moment(name: &str, raw: &str) -> ApiResult<Moment> {
    Moment::parse(raw).ok_or_else(|| {
        ApiError::invalid(
            "INVALID_DATE",
            name,
            format!("`{name}` must be a date (2026-11-23) or an instant (2026-11-23T09:00:00Z), got {raw:?}"),
        )
    })
}

/// An organization named by OID, as `Organization/<oid>`, `Location/<oid>` or bare; a bad
/// one is refused with `code`.
pub fn organization_as(code: &'static str, name: &str, raw: &str) -> ApiResult<Oid> {
    let oid = raw
        .trim_start_matches("Organization/")
        .trim_start_matches("Location/");
    Oid::parse_organization(oid).map_err(|e| ApiError::invalid(code, name, e.to_string()))
}

/// A search parameter naming an organization (see [`organization_as`]).
pub fn organization(name: &str, raw: &str) -> ApiResult<Oid> {
    organization_as("INVALID_PARAMETER", name, raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_bounded_and_named() {
        assert_eq!(count("_count", "20", 100).unwrap(), 20);
        for bad in ["0", "101", "-1", "x", ""] {
            let e = count("_count", bad, 100).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("_count"), "{bad}");
        }
    }

    #[test]
    fn moments_name_the_parameter() {
        assert!(matches!(moment("start", "2026-11-23"), Ok(Moment::Day(_))));
        let e = moment("end", "tomorrow").unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("INVALID_DATE", Some("end")));
    }

    #[test]
    fn organizations_are_frmo_oids_under_any_reference_form() {
        let oid = "1.2.643.5.1.13.13.12.2.77.7001";
        for raw in [
            oid.to_string(),
            format!("Organization/{oid}"),
            format!("Location/{oid}"),
        ] {
            assert_eq!(organization("organization", &raw).unwrap().as_str(), oid);
        }
        let e = organization("organization", "1.2.3").unwrap_err();
        assert_eq!(e.code, "INVALID_PARAMETER");
        assert_eq!(count("limit", "0", 10).unwrap_err().code, "INVALID_LIMIT");
    }
}
