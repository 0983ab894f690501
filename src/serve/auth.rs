//! Who is asking: API tokens, users' passwords, browser sessions (kept in the
//! database, so a restart logs nobody out), and a limit on wrong guesses.
//!
//! A client address or user name with 10 failed logins or bad tokens within a
//! minute is answered `429` without any check until the minute has passed;
//! every failure is logged as one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use axum::extract::{ConnectInfo, Form, Query, Request, State as Extract};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use base64::Engine;
use minijinja::context;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::db;
use super::records::Session;
use super::web::{internal, Inner, State};
use super::webhook::constant_time_eq;

/// A browser session lasts this long.
const SESSION_SECONDS: i64 = 12 * 3600;
const COOKIE: &str = "es_session";
/// Failures allowed per address and per user within `WINDOW` seconds.
const MAX_FAILURES: usize = 10;
const WINDOW: i64 = 60;

/// Who is asking, and what they may do.
#[derive(Clone)]
pub struct Login {
    pub who: String,
    pub deploy: bool,
    /// Set for browser sessions, whose forms must carry it.
    pub csrf: Option<String>,
}

/// Recent failures per client address and per user name.
#[derive(Default)]
pub struct Limiter {
    failures: Mutex<HashMap<String, Vec<i64>>>,
}

impl Limiter {
    /// Seconds to wait when any of `keys` has too many recent failures.
    fn blocked(&self, keys: &[String]) -> Option<i64> {
        let now = db::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.retain(|_, times| {
            times.retain(|t| now - t < WINDOW);
            !times.is_empty()
        });
        keys.iter()
            .filter_map(|key| failures.get(key))
            .filter(|times| times.len() >= MAX_FAILURES)
            .map(|times| WINDOW - (now - times[times.len() - MAX_FAILURES]))
            .max()
    }

    fn failed(&self, keys: &[String]) {
        let now = db::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            failures.entry(key.clone()).or_default().push(now);
        }
    }
}

fn too_many(wait: i64) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, wait.max(1).to_string())],
        "too many failed logins: try again later",
    )
        .into_response()
}

fn address(request: &Request) -> String {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Every request with an `Authorization` header: refused at once while its
/// address is blocked, answered 401 (and counted) when the credentials are wrong.
pub async fn guard(Extract(state): Extract<State>, request: Request, next: Next) -> Response {
    if !request.headers().contains_key(header::AUTHORIZATION) {
        return next.run(request).await;
    }
    let addr = address(&request);
    let mut keys = vec![format!("address {addr}")];
    if let Some(user) = basic_user(request.headers()) {
        keys.push(format!("user {user}"));
    }
    if let Some(wait) = state.limiter.blocked(&keys) {
        eprintln!("es serve: credentials from {addr} refused unchecked: too many failures");
        return too_many(wait);
    }
    if state.login(request.headers()).is_none() {
        state.limiter.failed(&keys);
        eprintln!(
            "es serve: FAILED: wrong credentials from {addr} ({} {})",
            request.method(),
            request.uri().path()
        );
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "wrong credentials"})),
        )
            .into_response();
    }
    next.run(request).await
}

fn basic_user(headers: &HeaderMap) -> Option<String> {
    let (user, _) = basic(headers)?;
    Some(user)
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = auth.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// A session token as the database keeps it: hashed, so a copy of the
/// database logs nobody in.
fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn random_token() -> String {
    let mut bytes = [0u8; 24];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness, no sessions: a token nobody can guess is the only kind.
        return String::new();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Inner {
    pub fn login(&self, headers: &HeaderMap) -> Option<Login> {
        if let Some(auth) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            if let Some(token) = auth.strip_prefix("Bearer ") {
                return self.token(token.trim()).map(|(who, deploy)| Login {
                    who,
                    deploy,
                    csrf: None,
                });
            }
            let (user, password) = basic(headers)?;
            return self.user(&user, &password).map(|(who, deploy)| Login {
                who,
                deploy,
                csrf: None,
            });
        }
        let cookie = cookie(headers, COOKIE)?;
        let session = match self.db.session(&token_hash(&cookie)) {
            Ok(session) => session?,
            Err(err) => {
                eprintln!("es serve: reading a session: {err:#}");
                return None;
            }
        };
        Some(Login {
            who: session.who,
            deploy: session.deploy,
            csrf: Some(session.csrf),
        })
    }

    /// Who a token is and whether it may deploy: serve.token or serve.read_token.
    pub fn token(&self, token: &str) -> Option<(String, bool)> {
        let matches = |t: &Option<String>| {
            t.as_ref().is_some_and(|t| {
                !token.is_empty() && constant_time_eq(t.as_bytes(), token.as_bytes())
            })
        };
        if matches(&self.settings.token) {
            Some(("token".into(), true))
        } else if matches(&self.settings.read_token) {
            Some(("read token".into(), false))
        } else {
            None
        }
    }

    fn user(&self, name: &str, password: &str) -> Option<(String, bool)> {
        self.settings
            .users
            .iter()
            .find(|u| {
                constant_time_eq(u.name.as_bytes(), name.as_bytes())
                    & constant_time_eq(u.password.as_bytes(), password.as_bytes())
            })
            .map(|u| (u.name.clone(), u.deploy))
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

pub fn to_login(next: &str) -> Response {
    Redirect::to(&format!("/login?next={}", percent_encode(next))).into_response()
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where to go after a login: a path on this server only (`/x`, never
/// `//host` or `/\host`, which browsers take for another site).
fn local_path(next: &str) -> String {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control() || c == '\\');
    if local {
        next.to_string()
    } else {
        "/".to_string()
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

#[derive(Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    failed: Option<String>,
}

pub async fn login_page(Extract(state): Extract<State>, Query(q): Query<NextQuery>) -> Response {
    state.render(
        "login.html",
        context! { project => state.project, next => local_path(&q.next), failed => q.failed.is_some() },
    )
}

pub async fn login_post(
    Extract(state): Extract<State>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    let token = form.token.trim();
    let addr = peer.ip().to_string();
    let mut keys = vec![format!("address {addr}")];
    if token.is_empty() {
        keys.push(format!("user {}", form.user));
    }
    if let Some(wait) = state.limiter.blocked(&keys) {
        eprintln!("es serve: a login from {addr} refused unchecked: too many failures");
        return too_many(wait);
    }
    let found = if !token.is_empty() {
        state.token(token)
    } else {
        state.user(&form.user, &form.password)
    };
    let next = local_path(&form.next);
    let Some((who, deploy)) = found else {
        state.limiter.failed(&keys);
        eprintln!(
            "es serve: FAILED login from {addr} ({})",
            if token.is_empty() {
                format!("user {:?}", form.user)
            } else {
                "a token".to_string()
            }
        );
        return Redirect::to(&format!("/login?failed=1&next={}", percent_encode(&next)))
            .into_response();
    };
    let id = random_token();
    let csrf = random_token();
    if id.is_empty() || csrf.is_empty() {
        return internal(anyhow::anyhow!("no randomness for a session"));
    }
    eprintln!("es serve: {who} logged in from {addr}");
    let session = Session { who, deploy, csrf };
    if let Err(err) = state
        .db
        .save_session(&token_hash(&id), &session, db::now() + SESSION_SECONDS)
    {
        return internal(err);
    }
    // Behind a TLS proxy (public_url https://...), the cookie never travels in clear.
    let secure = match &state.settings.public_url {
        Some(url) if url.starts_with("https://") => "; Secure",
        _ => "",
    };
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECONDS}{secure}"
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub async fn logout(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let (Some(login), Some(id)) = (state.login(&headers), cookie(&headers, COOKIE)) {
        if login.csrf.as_deref() == Some(form.csrf.as_str()) {
            if let Err(err) = state.db.end_session(&token_hash(&id)) {
                eprintln!("es serve: ending a session: {err:#}");
            }
        }
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("es_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    response
}

pub fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({"error": "this login may read, not deploy"})),
    )
        .into_response()
}

/// A browser form that changes something: a deploy login and its CSRF token.
pub fn form_login(state: &Inner, headers: &HeaderMap, csrf: &str) -> Result<Login, Box<Response>> {
    let Some(login) = state.login(headers) else {
        return Err(Box::new(to_login("/")));
    };
    if !login.deploy {
        return Err(Box::new(forbidden()));
    }
    if let Some(expected) = &login.csrf {
        if !constant_time_eq(expected.as_bytes(), csrf.as_bytes()) {
            return Err(Box::new(
                (StatusCode::FORBIDDEN, "stale form: reload the page").into_response(),
            ));
        }
    }
    Ok(login)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_places_to_go_back_to() {
        assert_eq!(local_path("/jobs/3"), "/jobs/3");
        assert_eq!(local_path("//evil.example/x"), "/");
        assert_eq!(local_path("/\\evil.example/x"), "/");
        assert_eq!(local_path("/a\\b"), "/");
        assert_eq!(local_path("https://evil.example/"), "/");
        assert_eq!(local_path(""), "/");
    }

    #[test]
    fn the_eleventh_failure_within_a_minute_is_blocked() {
        let limiter = Limiter::default();
        let keys = vec!["address 10.0.0.1".to_string(), "user ann".to_string()];
        for _ in 0..MAX_FAILURES {
            assert_eq!(limiter.blocked(&keys), None);
            limiter.failed(&keys);
        }
        assert!(limiter.blocked(&keys).is_some_and(|wait| wait > 0));
        assert!(limiter.blocked(&["user ann".to_string()]).is_some());
        assert_eq!(limiter.blocked(&["address 10.0.0.2".to_string()]), None);
    }
}
