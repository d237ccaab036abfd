//! Who may call each route: every route is declared with its access rule (a scope and an
//! organization rule) in its module's route table; the middleware looks the rule up by
//! method and pattern and enforces the scope before the body is read. The organization rule
//! says how the records a route touches are kept to the client's organizations.

use actix_web::http::Method;
use actix_web::web;

/// How a route keeps clients to their organizations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Org {
    /// Data of no organization in particular (the directory, schedules, free slots).
    Public,
    /// Records that belong to organizations (documents, appointments, restrictions,
    /// transaction records): a client sees and changes only those of organizations it acts
    /// for (or that it made); any other answers as if it did not exist (404, left out of
    /// lists). Operators (`admin`) see all.
    Records,
    /// A create for the organization the request names: the client must act for it (403).
    Named,
    /// The registry's own calls about the documents it was sent.
    Registry,
}

impl Org {
    /// The rule in words, for the README's route table.
    pub fn describe(self) -> &'static str {
        match self {
            Org::Public => "any organization (public schedule data; a citizen's own request)",
            Org::Records => "records of the client's organizations (others: 404 / not listed)",
            Org::Named => "the organization named in the request must be the client's (403)",
            Org::Registry => "the registry: documents it was sent",
        }
    }
}

/// The access rule of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials (health, metrics, FHIR metadata, the WSDL).
    Open,
    /// An authenticated client holding the scope.
    Scope(&'static str, Org),
    /// A SOAP endpoint: the scope depends on the operation named by the SOAPAction; an
    /// operation not listed needs only authentication (the service answers it with a Fault).
    Soap(&'static [(&'static str, &'static str, Org)]),
}

impl Access {
    /// The scope a request needs: for SOAP, the scope of the operation named by `action`.
    pub fn scope(&self, action: Option<&str>) -> Option<&'static str> {
        match self {
            Access::Open => None,
            Access::Scope(s, _) => Some(s),
            Access::Soap(ops) => {
                let op = action?.rsplit(['/', ':']).next()?;
                ops.iter()
                    .find(|(name, _, _)| *name == op)
                    .map(|(_, s, _)| *s)
            }
        }
    }
}

/// A route: method, pattern within its scope, access rule, and how to register it.
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// The path scope it is registered under (`/fhir`, `/soap`, `/api/admin`, or ``).
    pub scope: &'static str,
    /// The pattern within the scope.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Registers the handler on the scope's configuration.
    pub register: fn(&mut web::ServiceConfig),
}

impl Route {
    /// The full pattern, as actix reports it for a matched request.
    pub fn pattern(&self) -> String {
        format!("{}{}", self.scope, self.path)
    }
}

/// The access rules an app enforces, by method and full pattern (app data of the app the
/// middleware wraps).
#[derive(Debug, Clone, Default)]
pub struct AccessRules(std::collections::HashMap<(Method, String), Access>);

impl AccessRules {
    /// The rules of `routes`.
    pub fn of<'a>(routes: impl IntoIterator<Item = &'a Route>) -> AccessRules {
        AccessRules(
            routes
                .into_iter()
                .map(|r| ((r.method.clone(), r.pattern()), r.access))
                .collect(),
        )
    }

    /// Adds a rule (apps that serve routes of their own, such as tests).
    pub fn with(mut self, method: Method, pattern: &str, access: Access) -> AccessRules {
        self.0.insert((method, pattern.to_string()), access);
        self
    }

    /// The rule of `method` on the matched `pattern`, if the app serves it.
    pub fn rule(&self, method: &Method, pattern: &str) -> Option<Access> {
        self.0.get(&(method.clone(), pattern.to_string())).copied()
    }

    /// The methods served on `pattern` (for `405 Allow`).
    pub fn methods(&self, pattern: &str) -> Vec<Method> {
        let mut m: Vec<Method> = self
            .0
            .keys()
            .filter(|(_, p)| p == pattern)
            .map(|(m, _)| m.clone())
            .collect();
        m.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        m
    }
}

/// The route table as Markdown (route, scope, organization rule), for the README.
pub fn markdown_table<'a>(routes: impl IntoIterator<Item = &'a Route>) -> String {
    let mut out = String::from("| route | scope | organization rule |\n|---|---|---|\n");
    for r in routes {
        let (scope, org) = match r.access {
            Access::Open => ("open (no credentials)".to_string(), "none".to_string()),
            Access::Scope(s, o) => (format!("`{s}`"), o.describe().to_string()),
            Access::Soap(ops) => (
                group(ops, |(_, s, _)| format!("`{s}`")),
                group(ops, |(_, _, o)| o.describe().to_string()),
            ),
        };
        out.push_str(&format!(
            "| `{} {}` | {scope} | {org} |\n",
            r.method,
            r.pattern()
        ));
    }
    out
}

/// SOAP operations grouped by what `key` says of them: `key: Op, Op; key: Op`.
fn group(
    ops: &[(&'static str, &'static str, Org)],
    key: impl Fn(&(&'static str, &'static str, Org)) -> String,
) -> String {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for op in ops {
        let k = key(op);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, names)) => names.push(op.0),
            None => groups.push((k, vec![op.0])),
        }
    }
    groups
        .iter()
        .map(|(k, names)| format!("{k}: {}", names.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Declares a route: `route!(GET "/fhir" "/Slot" => handler, access)`.
#[macro_export]
macro_rules! route {
    ($method:ident $scope:literal $path:literal => $handler:path, $access:expr) => {
        $crate::http::access::Route {
            method: ::actix_web::http::Method::$method,
            scope: $scope,
            path: $path,
            access: $access,
            register: |cfg| {
                cfg.route(
                    $path,
                    ::actix_web::web::method(::actix_web::http::Method::$method).to($handler),
                );
            },
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soap_scopes_follow_the_action() {
        let a = Access::Soap(&[
            ("GetLPUList", "schedule:read", Org::Public),
            ("SetAppointment", "appointment:write", Org::Public),
        ]);
        let action = Some("http://tempuri.org/IHubService/SetAppointment");
        assert_eq!(a.scope(action), Some("appointment:write"));
        assert_eq!(a.scope(Some("urn:x:GetLPUList")), Some("schedule:read"));
        assert_eq!(a.scope(Some("http://tempuri.org/IHubService/Other")), None);
        assert_eq!(a.scope(None), None);
        assert_eq!(Access::Open.scope(action), None);
    }
}
