//! The operators' web dashboard at `/admin`: server-rendered pages (assets built into the
//! binary, charts drawn as SVG from the gateway's own data), a login with an argon2-checked
//! password and a session cookie (Secure, HttpOnly, SameSite=Strict), and a CSRF token in
//! every form. Each page is one service call, as the JSON routes are, under the same scope
//! and organization rules: a session acts as its operator's client.

use std::fmt::Write;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::web::{Bytes, Data, Path, Query};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};

use super::access::{Access, Org, Route};
use super::admin::ListParams;
use super::{ApiError, ApiResult, AppState, Principal};
use crate::auth::scopes::{
    APPEALS_ANSWER, APPEALS_READ, DOCUMENTS_READ, DOCUMENTS_RERUN, JOBS_READ, OUTBOX_RERUN,
    STATS_READ, TRANSACTIONS_READ, TRANSACTIONS_RERUN,
};
use crate::model::time::{from_ms, now_ms};
use crate::route;
use crate::services::appeals::{AppealQuery, GroupBy};
use crate::services::Caller;

/// The session cookie.
pub const SESSION_COOKIE: &str = "medgate_session";
/// The login form's CSRF cookie (double submit: a form must carry the cookie's value).
const LOGIN_COOKIE: &str = "medgate_login_csrf";

/// The CSRF token of the session a request came with (absent: a bearer token, which a
/// foreign page cannot send).
#[derive(Debug, Clone)]
pub struct SessionCsrf(pub String);

/// The dashboard's routes, with who may call them.
pub const ROUTES: &[Route] = &[
    route!(GET "/admin" "/login" => login_page, Access::Open),
    route!(POST "/admin" "/login" => login, Access::Open),
    route!(POST "/admin" "/logout" => logout, Access::Open),
    route!(GET "/admin" "/assets/dashboard.css" => stylesheet, Access::Open),
    route!(GET "/admin" "" => systems, Access::Scope(TRANSACTIONS_READ, Org::Records)),
    route!(GET "/admin" "/outbox" => outbox, Access::Scope(TRANSACTIONS_READ, Org::Records)),
    route!(POST "/admin" "/outbox/{id}/rerun" => rerun, Access::Scope(OUTBOX_RERUN, Org::Records)),
    route!(GET "/admin" "/appeals" => appeals, Access::Scope(APPEALS_READ, Org::Records)),
    route!(POST "/admin" "/appeals/{id}/answer" => answer, Access::Scope(APPEALS_ANSWER, Org::Records)),
    route!(GET "/admin" "/jobs" => jobs, Access::Scope(JOBS_READ, Org::Public)),
    route!(GET "/admin" "/transactions" => transactions, Access::Scope(TRANSACTIONS_READ, Org::Records)),
    route!(POST "/admin" "/transactions/{id}/rerun" => rerun_transaction, Access::Scope(TRANSACTIONS_RERUN, Org::Records)),
    route!(GET "/admin" "/documents" => documents, Access::Scope(DOCUMENTS_READ, Org::Records)),
    route!(POST "/admin" "/documents/{id}/rerun" => rerun_document, Access::Scope(DOCUMENTS_RERUN, Org::Records)),
    route!(GET "/admin" "/traffic" => traffic, Access::Scope(TRANSACTIONS_READ, Org::Records)),
    route!(GET "/admin" "/figures" => figures, Access::Scope(STATS_READ, Org::Records)),
];

const CSS: &str = include_str!("dashboard.css");

/// Text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn time(ms: i64) -> String {
    from_ms(ms).format("%Y-%m-%d %H:%M").to_string()
}

/// A page in the dashboard's frame: navigation, the operator, logout.
fn page(title: &str, principal: Option<&Principal>, csrf: &str, body: &str) -> HttpResponse {
    let nav = [
        ("/admin", "Systems"),
        ("/admin/outbox", "Dead letters"),
        ("/admin/documents", "Documents"),
        ("/admin/appeals", "Appeals"),
        ("/admin/traffic", "Traffic"),
        ("/admin/transactions", "Transactions"),
        ("/admin/figures", "Figures"),
        ("/admin/jobs", "Jobs"),
    ]
    .iter()
    .map(|(href, name)| format!(r#"<a href="{href}">{name}</a>"#))
    .collect::<Vec<_>>()
    .join("");
    let who = principal.map_or(String::new(), |p| {
        format!(
            r#"<form method="post" action="/admin/logout" class="logout"><span>{}</span><input type="hidden" name="csrf" value="{}"><button>Log out</button></form>"#,
            esc(&p.name),
            esc(csrf)
        )
    });
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("content-security-policy", "default-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"))
        .insert_header(("x-frame-options", "DENY"))
        .insert_header(("cache-control", "no-store"))
        .body(format!(
            r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t} · medgate</title><link rel="stylesheet" href="/admin/assets/dashboard.css"></head><body><header><b>medgate</b><nav>{nav}</nav>{who}</header><main><h1>{t}</h1>{body}</main></body></html>"#,
            t = esc(title)
        ))
}

/// A form of one button posting to `action` with the session's CSRF token.
fn rerun_button(action: &str, csrf: &str) -> String {
    format!(
        r#"<form method="post" action="{}"><input type="hidden" name="csrf" value="{}"><button>Rerun</button></form>"#,
        esc(action),
        esc(csrf)
    )
}

/// A table with `heads` over `rows`, or `empty` when there are none.
fn table_or(heads: &[&str], rows: &str, empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p>{empty}</p>");
    }
    let heads: String = heads.iter().map(|h| format!("<th>{h}</th>")).collect();
    format!(r#"<table><thead><tr>{heads}</tr></thead><tbody>{rows}</tbody></table>"#)
}

/// After a form: the browser goes on to `path` (so a reload does not send the form again).
fn see_other(path: impl Into<String>) -> HttpResponse {
    let path: String = path.into();
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, path))
        .finish()
}

fn csrf_of(req: &HttpRequest) -> String {
    req.extensions()
        .get::<SessionCsrf>()
        .map(|c| c.0.clone())
        .unwrap_or_default()
}

/// A form's fields.
fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A form sent with a session must carry the session's CSRF token.
fn check_csrf(req: &HttpRequest, f: &[(String, String)]) -> ApiResult<()> {
    match req.extensions().get::<SessionCsrf>() {
        None => Ok(()),
        Some(SessionCsrf(expected)) if field(f, "csrf") == Some(expected.as_str()) => Ok(()),
        Some(_) => Err(ApiError::forbidden(
            "the form's CSRF token is missing or not this session's",
        )
        .at("csrf")),
    }
}

fn cookie<'c>(state: &AppState, name: &'c str, value: String, max_age: i64) -> Cookie<'c> {
    let mut c = Cookie::new(name, value);
    c.set_http_only(true);
    c.set_same_site(SameSite::Strict);
    c.set_secure(state.settings.dashboard.secure_cookie);
    c.set_path("/admin");
    c.set_max_age(actix_web::cookie::time::Duration::seconds(max_age));
    c
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("cache-control", "max-age=3600"))
        .body(CSS)
}

fn login_form(state: &AppState, message: Option<&str>) -> HttpResponse {
    let token = crate::services::sessions::token();
    let note = message.map_or(String::new(), |m| {
        format!(r#"<p class="error">{}</p>"#, esc(m))
    });
    let mut res = page(
        "Log in",
        None,
        "",
        &format!(
            r#"{note}<form method="post" action="/admin/login" class="login"><label>Login <input name="login" autocomplete="username" required></label><label>Password <input name="password" type="password" autocomplete="current-password" required></label><input type="hidden" name="csrf" value="{token}"><button>Log in</button></form>"#
        ),
    );
    let _ = res.add_cookie(&cookie(state, LOGIN_COOKIE, token, 3600));
    res
}

async fn login_page(state: Data<AppState>) -> HttpResponse {
    login_form(&state, None)
}

async fn login(state: Data<AppState>, req: HttpRequest, body: Bytes) -> ApiResult<HttpResponse> {
    let f = form(&body);
    let expected = req.cookie(LOGIN_COOKIE).map(|c| c.value().to_string());
    if expected.is_none() || field(&f, "csrf") != expected.as_deref() {
        return Ok(login_form(&state, Some("The form expired: log in again.")));
    }
    let (user, password) = (
        field(&f, "login").unwrap_or_default(),
        field(&f, "password").unwrap_or_default(),
    );
    match state.sessions.login(user, password).await {
        Ok(s) => {
            let mut res = see_other("/admin");
            let max_age = i64::try_from(s.max_age_secs).unwrap_or(i64::MAX);
            let _ = res.add_cookie(&cookie(&state, SESSION_COOKIE, s.id, max_age));
            let _ = res.add_cookie(&cookie(&state, LOGIN_COOKIE, String::new(), 0));
            Ok(res)
        }
        Err(crate::services::sessions::LoginError::Refused) => {
            tracing::warn!("dashboard login refused");
            Ok(login_form(&state, Some("Wrong login or password.")))
        }
        Err(crate::services::sessions::LoginError::Store(e)) => Err(ApiError::storage(&e)),
    }
}

async fn logout(state: Data<AppState>, req: HttpRequest, body: Bytes) -> ApiResult<HttpResponse> {
    let f = form(&body);
    if let Some(id) = req.cookie(SESSION_COOKIE).map(|c| c.value().to_string()) {
        // Only the session's own form ends it (no logout by a foreign page).
        if let Ok(Some(s)) = state.sessions.resolve(&id).await {
            if field(&f, "csrf") == Some(s.csrf.as_str()) {
                state
                    .sessions
                    .logout(&id)
                    .await
                    .map_err(|e| ApiError::storage(&e))?;
            }
        }
    }
    let mut res = page(
        "Logged out",
        None,
        "",
        r#"<p><a href="/admin/login">Log in again</a></p>"#,
    );
    let _ = res.add_cookie(&cookie(&state, SESSION_COOKIE, String::new(), 0));
    Ok(res)
}

/// A line chart of (x, y) series as inline SVG.
fn line_chart(series: &[(String, Vec<(i64, f64)>)], from: i64, to: i64) -> String {
    let (w, h, pad) = (640.0, 200.0, 30.0);
    let max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0_f64, f64::max);
    let colours = [
        "#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#0a3069",
    ];
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="latency per minute, last hour"><line x1="{pad}" y1="{y0}" x2="{x1}" y2="{y0}" class="axis"/><text x="2" y="12">{max:.0} ms</text><text x="2" y="{y0}">0</text>"#,
        y0 = h - pad,
        x1 = w - 5.0
    );
    let span = (to - from).max(1) as f64;
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        let xy: Vec<(f64, f64)> = points
            .iter()
            .map(|(x, y)| {
                let px = pad + (w - pad - 5.0) * ((*x - from) as f64 / span);
                let py = (h - pad) - (h - pad - 15.0) * (y / max);
                (px, py)
            })
            .collect();
        let pts: Vec<String> = xy.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        // A dot per minute: a single minute of calls still shows.
        for (x, y) in &xy {
            let _ = write!(
                svg,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{colour}"/>"#
            );
        }
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/><text x="{}" y="{}" fill="{colour}">{}</text>"#,
            pts.join(" "),
            pad + 90.0 * i as f64,
            h - 8.0,
            esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Health of every connected system: calls, errors, last contact, breaker, latency chart.
async fn systems(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let now = now_ms();
    let health = state
        .operations
        .connected_systems(now)
        .await
        .map_err(|e| ApiError::storage(&e))?;
    let mut rows = String::new();
    for s in &health {
        let class = if s.circuit != "closed" || s.error_rate > 0.2 {
            "bad"
        } else {
            "ok"
        };
        let _ = write!(
            rows,
            r#"<tr class="{class}"><td>{}</td><td>{}</td><td>{}</td><td>{:.1}%</td><td>{}</td><td>{:.1}</td></tr>"#,
            esc(&s.partner),
            s.circuit,
            s.calls,
            s.error_rate * 100.0,
            s.last_contact.map(time).unwrap_or_else(|| "—".into()),
            s.mean_ms
        );
    }
    let series: Vec<(String, Vec<(i64, f64)>)> = health
        .iter()
        .filter(|s| !s.latency.is_empty())
        .map(|s| (s.partner.clone(), s.latency.clone()))
        .collect();
    let body = format!(
        r#"<p>Every system the gateway called in the last hour, and its circuit breaker.</p><table><thead><tr><th>System</th><th>Circuit</th><th>Calls (1 h)</th><th>Errors</th><th>Last contact</th><th>Mean latency, ms</th></tr></thead><tbody>{rows}</tbody></table><h2>Latency per minute, last hour</h2>{}"#,
        line_chart(&series, now - 3_600_000, now)
    );
    Ok(page(
        "Connected systems",
        Some(&principal),
        &csrf_of(&req),
        &body,
    ))
}

/// Who must act on a dead letter, from where it was going and why it was given up.
fn who_fixes(destination: &str, error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("no endpoint")
        || e.contains("not configured")
        || e.contains("no notification receiver")
    {
        "the regional operator (configuration)"
    } else if e.contains("refused")
        || e.contains("invalid")
        || e.contains("400")
        || e.contains("422")
    {
        "the sender (its data was refused)"
    } else if destination == "remd" {
        "the registry (or the network to it)"
    } else {
        "the network or the receiving system"
    }
}

/// Dead letters of the caller's organizations, with who must fix each and a rerun.
async fn outbox(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let caller = Caller::of(&principal);
    let dead = state
        .operations
        .outbox(caller, "dead", None, None, 200)
        .await
        .map_err(|e| ApiError::storage(&e))?;
    let csrf = csrf_of(&req);
    let mut rows = String::new();
    for d in &dead {
        let error = d.last_error.clone().unwrap_or_default();
        let _ = write!(
            rows,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            time(d.updated_at),
            esc(&d.destination),
            esc(&d.kind),
            esc(d.org.as_deref().unwrap_or("")),
            d.attempts,
            esc(&error),
            who_fixes(&d.destination, &error),
            rerun_button(&format!("/admin/outbox/{}/rerun", d.id), &csrf),
        );
    }
    let body = table_or(
        &[
            "Given up",
            "Destination",
            "Kind",
            "Organization",
            "Attempts",
            "Why",
            "Who must fix it",
            "",
        ],
        &rows,
        "No dead letters.",
    );
    Ok(page("Dead letters", Some(&principal), &csrf, &body))
}

async fn rerun(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: Path<String>,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    check_csrf(&req, &form(&body))?;
    let done = state
        .operations
        .rerun_dead_letter(Caller::of(&principal), &id, now_ms())
        .await
        .map_err(|e| ApiError::storage(&e))?;
    if !done {
        return Err(ApiError::not_found("DEAD_LETTER_NOT_FOUND", "no such dead letter").at("id"));
    }
    Ok(see_other("/admin/outbox"))
}

/// Open appeals with their deadlines (overdue in red) and answer forms, and the
/// per-district table of the last 30 days ordered by the share answered.
async fn appeals(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let caller = Caller::of(&principal);
    let now = now_ms();
    let open = state
        .appeals
        .search(
            caller,
            AppealQuery {
                status: Some(crate::model::appeal::AppealStatus::Open),
                ..AppealQuery::default()
            },
            200,
        )
        .await
        .map_err(super::appeals::to_api)?;
    let table = state
        .appeals
        .statistics(caller, now - 30 * 86_400_000, now + 1, GroupBy::District)
        .await
        .map_err(super::appeals::to_api)?;
    let csrf = csrf_of(&req);
    let mut rows = String::new();
    let mut sorted = open.clone();
    sorted.sort_by_key(|a| a.due_at);
    for a in &sorted {
        let class = if a.overdue(now) { "bad" } else { "ok" };
        let _ = write!(
            rows,
            r#"<tr class="{class}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><form method="post" action="/admin/appeals/{}/answer" class="answer"><input type="hidden" name="csrf" value="{}"><input name="answer" aria-label="answer" required><button>Answer</button></form></td></tr>"#,
            time(a.due_at),
            esc(&a.district),
            a.topic,
            a.channel,
            esc(a.org.as_ref().map_or("", |o| o.as_str())),
            esc(&a.text.chars().take(80).collect::<String>()),
            esc(&a.id),
            esc(&csrf)
        );
    }
    let mut districts = String::new();
    for r in &table {
        let _ = write!(
            districts,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><svg class="bar" width="96" height="10" aria-hidden="true"><rect width="{:.1}" height="10"/></svg> {:.1}%</td><td>{}</td></tr>"#,
            esc(&r.key),
            r.appeals,
            r.answered,
            r.answered_on_time,
            r.share_answered * 96.0,
            r.share_answered * 100.0,
            r.median_minutes_to_answer
                .map(|m| m.to_string())
                .unwrap_or_else(|| "—".into())
        );
    }
    let body = format!(
        r#"<h2>Waiting for an answer</h2><table><thead><tr><th>Due</th><th>District</th><th>Topic</th><th>Channel</th><th>Organization</th><th>Text</th><th></th></tr></thead><tbody>{rows}</tbody></table><h2>Districts, last 30 days</h2><p><a href="/api/admin/appeals/stats?from={}&amp;to={}&amp;format=csv">CSV</a></p><table class="districts"><thead><tr><th>District</th><th>Appeals</th><th>Answered</th><th>On time</th><th>Share answered</th><th>Median minutes</th></tr></thead><tbody>{districts}</tbody></table>"#,
        from_ms(now - 30 * 86_400_000).format("%Y-%m-%d"),
        from_ms(now).format("%Y-%m-%d"),
    );
    Ok(page("Appeals", Some(&principal), &csrf, &body))
}

async fn answer(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: Path<String>,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let f = form(&body);
    check_csrf(&req, &f)?;
    state
        .appeals
        .answer(
            Caller::of(&principal),
            &id,
            field(&f, "answer").unwrap_or_default(),
        )
        .await
        .map_err(super::appeals::to_api)?;
    Ok(see_other("/admin/appeals"))
}

/// The jobs, how they run, and their latest runs.
async fn jobs(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let jobs = state
        .operations
        .jobs()
        .await
        .map_err(|e| ApiError::storage(&e))?;
    let mut rows = String::new();
    for (info, last) in &jobs {
        let (when, outcome, counts) = match last {
            Some(r) => (
                time(r.started_at),
                r.outcome.as_str(),
                format!(
                    "{} / {} / {}",
                    r.counts.examined, r.counts.found, r.counts.repaired
                ),
            ),
            None => ("—".into(), "", String::new()),
        };
        let class = if outcome == "failed" { "bad" } else { "ok" };
        let _ = write!(
            rows,
            r#"<tr class="{class}"><td>{}</td><td>{}</td><td>{}</td><td>{when}</td><td>{outcome}</td><td>{counts}</td></tr>"#,
            esc(&info.name),
            info.mode,
            esc(info.cron.as_deref().unwrap_or("")),
        );
    }
    let body = format!(
        r#"<table><thead><tr><th>Job</th><th>Runs</th><th>Cron</th><th>Last run</th><th>Outcome</th><th>Examined / found / repaired</th></tr></thead><tbody>{rows}</tbody></table>"#
    );
    Ok(page("Jobs", Some(&principal), &csrf_of(&req), &body))
}

/// Horizontal bars of labelled values as inline SVG.
fn bar_chart(rows: &[(String, f64)], unit: &str) -> String {
    let max = rows.iter().map(|r| r.1).fold(1.0_f64, f64::max);
    let (w, row_h) = (640.0, 18.0);
    let h = row_h * rows.len().max(1) as f64 + 4.0;
    let mut svg = format!(r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img">"#);
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = 2.0 + row_h * i as f64;
        let len = (w - 260.0) * (v / max);
        let _ = write!(
            svg,
            r##"<text x="2" y="{:.1}">{}</text><rect x="200" y="{y:.1}" width="{len:.1}" height="{:.1}" fill="#1f6feb"/><text x="{:.1}" y="{:.1}">{v:.0} {unit}</text>"##,
            y + 12.0,
            esc(&label.chars().take(34).collect::<String>()),
            row_h - 4.0,
            205.0 + len,
            y + 12.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The transaction log: a search over the caller's records (operators: all), newest first,
/// paged, each failed inbound exchange with a rerun.
async fn transactions(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    params: Result<Query<ListParams>, actix_web::Error>,
) -> ApiResult<HttpResponse> {
    let Query(p) = params.map_err(|e| ApiError::malformed("INVALID_QUERY", e.to_string()))?;
    let (filter, limit) = p.filter()?;
    let records = state
        .operations
        .transactions(Caller::of(&principal), &filter, limit)
        .await
        .map_err(|e| ApiError::storage(&e))?;
    let csrf = csrf_of(&req);
    let may_rerun = principal.has_scope(TRANSACTIONS_RERUN);
    let mut rows = String::new();
    for r in &records {
        let action = if may_rerun && crate::services::operations::rerun_refusal(r).is_none() {
            rerun_button(&format!("/admin/transactions/{}/rerun", r.id), &csrf)
        } else {
            String::new()
        };
        let class = if r.status == "ok" { "ok" } else { "bad" };
        let _ = write!(
            rows,
            r#"<tr class="{class}"><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{:.1}</td><td>{}</td><td>{}</td><td><a href="/admin/transactions?trace_id={}">{}</a></td><td>{action}</td></tr>"#,
            time(r.started_at),
            esc(&r.id),
            esc(&r.direction),
            esc(&r.operation),
            esc(r.client_id.as_deref().unwrap_or("")),
            esc(&r.target),
            esc(&r.status),
            r.http_status.map_or(String::new(), |s| s.to_string()),
            r.duration_us as f64 / 1000.0,
            esc(r.error.as_deref().unwrap_or("")),
            esc(r.rerun_of.as_deref().unwrap_or("")),
            esc(r.trace_id.as_deref().unwrap_or("")),
            esc(r.trace_id.as_deref().map_or("", |t| &t[..t.len().min(8)])),
        );
    }
    let given = |v: &Option<String>| esc(v.as_deref().unwrap_or(""));
    let select = |name: &str, current: &Option<String>, options: &[&str]| {
        let mut out = format!(r#"<select name="{name}"><option value="">any {name}</option>"#);
        for o in options {
            let selected = if current.as_deref() == Some(*o) {
                " selected"
            } else {
                ""
            };
            let _ = write!(out, r#"<option{selected}>{o}</option>"#);
        }
        out.push_str("</select>");
        out
    };
    let search = format!(
        r#"<form method="get" action="/admin/transactions" class="search">{}{}<input name="protocol" placeholder="protocol" value="{}"><input name="operation" placeholder="operation" value="{}"><input name="client" placeholder="client" value="{}"><input name="trace_id" placeholder="trace" value="{}"><input name="from" placeholder="from (2026-12-01)" value="{}"><input name="to" placeholder="to" value="{}"><button>Search</button></form>"#,
        select(
            "status",
            &p.status,
            &["ok", "client-error", "server-error", "failed"]
        ),
        select("direction", &p.direction, &["inbound", "outbound"]),
        given(&p.protocol),
        given(&p.operation),
        given(&p.client),
        given(&p.trace_id),
        given(&p.from),
        given(&p.to),
    );
    let heading = match p.rerun_of.as_deref().filter(|r| !r.is_empty()) {
        Some(of) => format!("<p>Reruns of <code>{}</code>.</p>", esc(of)),
        None => String::new(),
    };
    let older = match (records.len() as u32 == limit, records.last()) {
        (true, Some(last)) => format!(
            r#"<p><a href="/admin/transactions?{}">Older</a></p>"#,
            esc(&p.next(limit, &last.id))
        ),
        _ => String::new(),
    };
    let table = table_or(
        &[
            "Started",
            "Record",
            "Direction",
            "Operation",
            "Client",
            "Target",
            "Status",
            "ms",
            "Error",
            "Rerun of",
            "Trace",
            "",
        ],
        &rows,
        "No exchanges match.",
    );
    let body = format!(
        r#"<p>Exchanges the gateway answered and made, newest first. A failed inbound exchange whose request was kept can be sent again, as the client that sent it.</p>{search}{heading}{table}{older}"#
    );
    Ok(page("Transactions", Some(&principal), &csrf, &body))
}

/// Reruns a failed inbound exchange; the browser goes on to the rerun's record.
async fn rerun_transaction(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: Path<String>,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    check_csrf(&req, &form(&body))?;
    let rerun = super::admin::rerun_one(&state, &principal, &id).await?;
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("rerun_of", &rerun.rerun_of)
        .finish();
    Ok(see_other(format!("/admin/transactions?{query}")))
}

/// Query of the documents page: the status listed (default: the refused and the
/// dead-lettered, the operators' work).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentsParams {
    status: Option<String>,
}

/// Documents of the caller's organizations by status, counted now, and the documents of one
/// status (by default the ones the registry refused or that ran out of retries), oldest
/// first, each refused one with a rerun.
async fn documents(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    params: Result<Query<DocumentsParams>, actix_web::Error>,
) -> ApiResult<HttpResponse> {
    use crate::model::document::DocumentStatus;
    use crate::services::documents::DocumentFilter;
    let Query(p) = params.map_err(|e| ApiError::malformed("INVALID_QUERY", e.to_string()))?;
    let listed: Vec<DocumentStatus> = match p.status.as_deref().filter(|s| !s.is_empty()) {
        None => vec![DocumentStatus::Rejected, DocumentStatus::DeadLettered],
        Some(s) => vec![DocumentStatus::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "INVALID_STATUS",
                "status",
                "`status` must be queued, sent, registered, rejected or dead-lettered",
            )
        })?],
    };
    let caller = Caller::of(&principal);
    let counts = state
        .documents
        .counts(caller)
        .await
        .map_err(super::documents::admin_error)?;
    let csrf = csrf_of(&req);
    let may_rerun = principal.has_scope(DOCUMENTS_RERUN);
    let mut rows = String::new();
    for status in &listed {
        let filter = DocumentFilter {
            status: Some(*status),
            ..DocumentFilter::default()
        };
        let found = state
            .documents
            .documents(caller, &filter, 100)
            .await
            .map_err(super::documents::admin_error)?;
        for d in &found {
            let action = if may_rerun && status.is_rerunnable() {
                rerun_button(&format!("/admin/documents/{}/rerun", d.id), &csrf)
            } else {
                String::new()
            };
            let class = if status.is_rerunnable() { "bad" } else { "ok" };
            let _ = write!(
                rows,
                r#"<tr class="{class}"><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>"#,
                time(d.updated_at),
                esc(&d.id),
                esc(d.org.as_str()),
                esc(&d.kind_code),
                status.as_str(),
                esc(d.emdr_id.as_deref().unwrap_or("")),
                d.error_class.map_or("", |c| c.as_str()),
                esc(&format!(
                    "{} {}",
                    d.error_codes.as_deref().unwrap_or(""),
                    d.error_message.as_deref().unwrap_or("")
                )),
            );
        }
    }
    let bars: Vec<(String, f64)> = counts.iter().map(|(s, n)| (s.clone(), *n as f64)).collect();
    let links = DocumentStatus::ALL
        .iter()
        .map(|s| {
            let n = counts
                .iter()
                .find(|(c, _)| c == s.as_str())
                .map_or(0, |c| c.1);
            format!(
                r#"<a href="/admin/documents?status={0}">{0} ({n})</a>"#,
                s.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join(" · ");
    let what = match p.status.as_deref().filter(|s| !s.is_empty()) {
        None => "Refused or out of retries".to_string(),
        Some(s) => format!("Status {}", esc(s)),
    };
    let table = table_or(
        &[
            "Changed",
            "Document",
            "Organization",
            "Kind",
            "Status",
            "Registry number",
            "Error class",
            "Why",
            "",
        ],
        &rows,
        "No documents.",
    );
    let body = format!(
        r#"<p>Documents by registration status, as they stand now.</p>{}<p>{links}</p><h2>{what}</h2><p>Oldest first (at most 100 of each status). A rerun sends a refused document to the registry again once its cause is fixed.</p>{table}"#,
        bar_chart(&bars, "")
    );
    Ok(page("Documents", Some(&principal), &csrf, &body))
}

/// Sends a refused or dead-lettered document to the registry again.
async fn rerun_document(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: Path<String>,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    check_csrf(&req, &form(&body))?;
    state
        .documents
        .rerun(Caller::of(&principal), &id)
        .await
        .map_err(super::documents::admin_error)?;
    Ok(see_other("/admin/documents"))
}

/// Throughput and latency per route over the last hour, from the transaction log.
async fn traffic(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let now = now_ms();
    let routes = state
        .operations
        .route_traffic(Caller::of(&principal), now - 3_600_000)
        .await
        .map_err(|e| ApiError::storage(&e))?;
    let mut rows = String::new();
    for r in &routes {
        let class = if r.errors * 10 > r.requests {
            "bad"
        } else {
            "ok"
        };
        let _ = write!(
            rows,
            r#"<tr class="{class}"><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td></tr>"#,
            esc(&r.operation),
            r.requests,
            r.requests as f64 / 3600.0,
            r.errors,
            r.mean_ms,
            r.max_ms
        );
    }
    let bars: Vec<(String, f64)> = routes
        .iter()
        .take(15)
        .map(|r| (r.operation.clone(), r.requests as f64))
        .collect();
    let body = format!(
        r#"<p>Requests the gateway answered in the last hour (its own transaction log), busiest first.</p>{}<table><thead><tr><th>Operation</th><th>Requests</th><th>Per second</th><th>Errors</th><th>Mean ms</th><th>Max ms</th></tr></thead><tbody>{rows}</tbody></table><p>Single exchanges: <a href="/admin/transactions">the transaction log</a>.</p>"#,
        bar_chart(&bars, "requests")
    );
    Ok(page("Traffic", Some(&principal), &csrf_of(&req), &body))
}

/// The figures of the last 30 days (the daily-stats job's): bookings per organization,
/// district and channel; documents by status; dead letters by organization and error class;
/// the referrals' funnel and their wait for an answer.
async fn figures(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let now = now_ms();
    let tz = state.settings.jobs.tz();
    let day = |ms: i64| from_ms(ms).with_timezone(&tz).date_naive().to_string();
    let stats = state
        .operations
        .daily_stats(
            Caller::of(&principal),
            &day(now - 30 * 86_400_000),
            &day(now),
            None,
        )
        .await
        .map_err(|e| ApiError::storage(&e))?;
    let sum = |metric: &str, key: &dyn Fn(&crate::services::operations::DailyStat) -> String| {
        let mut m: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
        for s in stats.iter().filter(|s| s.metric == metric) {
            *m.entry(key(s)).or_default() += s.value;
        }
        let mut v: Vec<(String, f64)> = m.into_iter().map(|(k, n)| (k, n as f64)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    };
    let table = |rows: &[(String, f64)], what: &str| {
        let mut t =
            format!(r#"<table><thead><tr><th>{what}</th><th>Count</th></tr></thead><tbody>"#);
        for (k, n) in rows {
            let _ = write!(t, "<tr><td>{}</td><td>{n:.0}</td></tr>", esc(k));
        }
        t.push_str("</tbody></table>");
        t
    };
    let by_org = sum("bookings", &|s| s.org.clone());
    let by_district = sum("bookings", &|s| s.district.clone());
    let by_channel = sum("bookings", &|s| s.channel.clone());
    let documents = sum("documents", &|s| s.status.clone());
    let dead = sum("documents_dead", &|s| format!("{} {}", s.org, s.status));
    let referrals = sum("referrals", &|s| s.status.clone());
    let waits: Vec<i64> = stats
        .iter()
        .filter(|s| s.metric == "referral_wait_minutes")
        .map(|s| s.value)
        .collect();
    let wait = if waits.is_empty() {
        "—".to_string()
    } else {
        format!(
            "{:.0}",
            waits.iter().sum::<i64>() as f64 / waits.len() as f64
        )
    };
    let body = format!(
        r#"<p>Days {} to {}, as the nightly daily-stats job counted them.</p><h2>Bookings by channel</h2>{}<h2>Bookings by district</h2>{}<h2>Bookings by organization</h2>{}<h2>Documents by status</h2>{}<h2>Dead letters of documents by organization and error class</h2>{}<h2>Referrals by status</h2>{}<p>Mean wait for an answer: {wait} minutes.</p>"#,
        day(now - 30 * 86_400_000),
        day(now),
        bar_chart(&by_channel, ""),
        table(&by_district, "District"),
        table(&by_org, "Organization"),
        bar_chart(&documents, ""),
        table(&dead, "Organization, error class"),
        bar_chart(&referrals, ""),
    );
    Ok(page("Figures", Some(&principal), &csrf_of(&req), &body))
}
